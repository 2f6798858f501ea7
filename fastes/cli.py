"""The ``fastes`` command line: a thin layer over the Python API.

Exit status: 0 when every input was processed, 1 when any input failed (unreadable,
not an image), 2 for usage errors (bad options, nothing to read). User mistakes are
reported in one line; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from importlib import resources
from pathlib import Path

from . import CLASSES
from .detect import DETECTORS
from .face import DEFAULT_DETECTOR, FaceFinder

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
TRAIN_DETECTOR = "haar"  # the front end the shipped models were trained on
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


class UsageError(Exception):
    """A mistake in how the command was called (exit status 2)."""


def sample_images() -> list[Path]:
    """The bundled London set sample images (CC BY 4.0; see their ATTRIBUTION.md)."""
    folder = resources.files("fastes") / "data" / "samples"
    return sorted(Path(str(p)) for p in folder.iterdir() if p.name.endswith(".jpg"))


def collect_inputs(inputs: list[str]) -> list[tuple[Path, Path]]:
    """Expand files and folders (recursive) into ``(file, name relative to its root)``.

    Folders contribute image files, recognized by suffix or by content; files named explicitly are always
    tried, whatever their suffix, so a mislabelled file is reported, not skipped.
    """
    from .io import looks_like_image

    out: list[tuple[Path, Path]] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() not in VIDEO_SUFFIXES
                           and looks_like_image(f))
            out.extend((f, f.relative_to(p)) for f in files)
        else:
            out.append((p, Path(p.name)))  # missing files are reported when read
    return out


def _build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="fastes",
        description="Fast facial-expression recognition on emotion sketches "
        "(Costache & Popescu): faces -> 68 landmarks -> normalized line drawings.",
    )
    parser.add_argument("--version", action="version", version=f"fastes {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    sk = sub.add_parser(
        "sketch",
        help="turn face photos into emotion sketches (one PNG per face)",
        description="Detect faces (BlazeFace by default, or the paper's Haar cascade), place 68 landmarks (dlib) and draw each "
        "face's emotion sketch: brows, eyes and mouth remapped as in the paper, 7-px lines "
        "on a 250x250 canvas. Writes <stem>_face<k>.png per face (k = 0, 1, ... left to "
        "right); files found in folders keep their sub-folder under --out.",
        epilog="With no INPUT, the bundled London set samples (CC BY 4.0) are used. "
        "Exit status: 0 all inputs read, 1 some input unreadable, 2 usage error.",
    )
    sk.add_argument("inputs", nargs="*", metavar="INPUT", help="image files or folders (searched recursively)")
    sk.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder (created if missing)")
    sk.add_argument("--size", type=int, default=250, help="sketch size in px; the drawing scales with it (default 250)")
    sk.add_argument("--thickness", type=float, default=7, help="line thickness at 250 px, OpenCV's convention (default 7)")
    sk.add_argument("--landmarks", action="store_true", help="also write <stem>_landmarks.png: the input with boxes and the 68 points drawn")
    _detector_args(sk)
    sk.add_argument("--no-progress", action="store_true", help="no progress bar")
    sk.add_argument("--quiet", "-q", action="store_true", help="print only errors and the summary")

    tr = sub.add_parser(
        "train",
        help="train a network on emotion sketches (needs the train extra)",
        description="Train VGG11, ResNet50 or CapsNet on sketches drawn on the fly from cached "
        "landmarks of a manifest's images (default: the posed sets of the shared data). Writes "
        "model.keras, history.json, config.json and report.md into --out; a checkpoint after each "
        "epoch lets --resume continue an interrupted run. Nothing half-written is ever left.",
    )
    tr.add_argument("--net", required=True, choices=["vgg11", "resnet50", "capsnet"])
    tr.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder")
    tr.add_argument("--manifest", metavar="CSV", help="manifest (default: $FASTES_DATA/faces/manifest.csv)")
    tr.add_argument("--datasets", default="jaffe,ckplus,fei,london",
                    help="comma-separated dataset values to train on, or 'all' (default: the posed sets)")
    tr.add_argument("--size", type=int, help="input size in px (default: 48 vgg11, 48 resnet50, 32 capsnet)")
    tr.add_argument("--epochs", type=int,
                    help="default: each net's shipped recipe, 60 vgg11, 40 capsnet, 20 resnet50 "
                    "(each under 30 min on 2 CPU cores)")
    tr.add_argument("--batch", type=int, default=32, help="default 32")
    tr.add_argument("--lr", type=float, default=1e-3, help="peak learning rate, cosine decay (default 1e-3)")
    tr.add_argument("--dropout", type=float, default=0.1, help="before the classifier (default 0.1)")
    tr.add_argument("--width", type=float, default=0.5,
                    help="VGG11 channel scale: 1.0 is 64..512 channels (default 0.5; 0.25 is ~4x faster)")
    tr.add_argument("--supersample", type=int, default=1, metavar="K",
                    help="the network takes a K-times larger binary sketch and averages K x K blocks first: "
                    "grey levels that keep where a line lies within a pixel (default 1; 4 gave the default recipe +1.0 "
                    "point in 5-fold CV over three seeds, not significant: models/README.md, session 10)")
    tr.add_argument("--pretrain", choices=["none", "mnist", "wild"], default="none",
                    help="pre-train on the MNIST test digits or on wild-set sketches first (default none)")
    tr.add_argument("--pretrain-epochs", type=int, default=5)
    tr.add_argument("--no-augment", action="store_true", help="no rotation/jitter/mirror augmentation")
    tr.add_argument("--detector", choices=DETECTORS, default=TRAIN_DETECTOR,
                    help=f"front end whose landmarks train the net (default {TRAIN_DETECTOR}); train on the "
                    "detector you will run with")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    tr.add_argument("--no-progress", action="store_true")

    ev = sub.add_parser(
        "evaluate",
        help="measure a model on a labelled manifest (detect -> landmarks -> sketch -> model)",
        description="Run the full pipeline on every row of MANIFEST (columns: path relative to the "
        "manifest's folder, class4; optional subject, dataset, gender, age, ethnicity) and report "
        "accuracy (a missed face counts as wrong), accuracy on detected faces, macro "
        "precision/recall/F1, the confusion matrix and accuracy per group.",
    )
    ev.add_argument("manifest", metavar="MANIFEST.csv")
    ev.add_argument("--model", "-m", action="append", required=True, metavar="PATH",
                    help=".keras or .tflite model, or a shipped model's name (default, vgg11_int8, "
                    "capsnet_int8, resnet50_int8, ...); repeat with --ensemble to average several")
    ev.add_argument("--ensemble", action="store_true", help="average the probabilities of all --model files")
    ev.add_argument("--json", metavar="FILE", help="write the metrics as JSON")
    ev.add_argument("--report", metavar="DIR", help="write report.md with confusion and per-group charts")
    ev.add_argument("--no-cache", action="store_true", help="run the front end afresh (no landmark cache)")
    ev.add_argument("--threads", type=int, default=None, help="TFLite threads (default 1)")
    _tta_arg(ev)
    _detector_args(ev)
    ev.add_argument("--no-progress", action="store_true")

    rn = sub.add_parser(
        "run",
        help="classify every face in images, folders and videos into a CSV/JSONL table",
        description="Detect faces, place landmarks, draw sketches and classify them with a TFLite "
        "model. One row per face: source, frame, timestamp (s), face index, box, label, confidence "
        "and the 4 probabilities (optionally the 68 landmarks); a row with an error for each image "
        "without a face or unreadable input, never dropped.",
        epilog="Exit status: 0 all inputs read, 1 some input unreadable, 2 usage error.",
    )
    rn.add_argument("inputs", nargs="*", metavar="INPUT", help="images, folders (recursive) or videos")
    rn.add_argument("--out", "-o", default="results.csv", metavar="FILE",
                    help="results table, .csv, .jsonl or .parquet (needs pyarrow) (default results.csv)")
    rn.add_argument("--model", "-m", default="default",
                    help="shipped model name, 'ensemble', or a .tflite/.keras path (default: default)")
    rn.add_argument("--webcam", type=int, metavar="N",
                    help="read camera N instead of INPUT (Ctrl-C stops); shows a live annotated window when "
                    "OpenCV has a GUI and a display, else prints a line per face as it goes (the headless "
                    "wheel has no GUI)")
    rn.add_argument("--no-window", action="store_true", help="--webcam: never open a window, print lines instead")
    rn.add_argument("--every", type=int, default=1, metavar="N", help="videos: every Nth frame (default 1)")
    rn.add_argument("--detect-every", type=int, default=1, metavar="N",
                    help="videos: run the detector on every Nth processed frame only and track faces from "
                    "their landmarks in between (re-detecting when tracking is lost; one process); default 1")
    rn.add_argument("--smooth", type=float, default=0.0, metavar="A",
                    help="videos: smooth each tracked face's probabilities over frames, "
                    "p = A * previous + (1 - A) * current (0 = off, the default; try 0.6)")
    rn.add_argument("--landmarks", action="store_true", help="add the 68 landmarks (image coordinates) to each row")
    rn.add_argument("--save-sketches", metavar="DIR", help="write each face's 250x250 sketch as PNG")
    rn.add_argument("--annotate", metavar="DIR", help="write copies of the images with boxes, points and labels")
    rn.add_argument("--resume", action="store_true", help="keep the rows of an existing --out and skip their inputs")
    rn.add_argument("--threads", type=int, default=1, help="TFLite threads (default 1)")
    _tta_arg(rn)
    rn.add_argument("--workers", "-j", type=int, default=1, metavar="N",
                    help="worker threads (default 1); each runs the whole per-image path, so N cores "
                    "give up to N times the images/s (2 threads measured 1.75-2.2x one here)")
    _detector_args(rn)
    rn.add_argument("--no-progress", action="store_true")
    rn.add_argument("--quiet", "-q", action="store_true")

    dm = sub.add_parser(
        "demo",
        help="run the shipped model on the bundled London set samples",
        description="Classify the faces in the 6 bundled London set images (CC BY 4.0, DeBruine & "
        "Jones 2017) with the default model; print a table and write annotated images, sketches "
        "and results.csv into --out.",
    )
    dm.add_argument("--out", "-o", default="fastes-demo", metavar="DIR", help="default ./fastes-demo")
    dm.add_argument("--model", "-m", default="default")

    bn = sub.add_parser(
        "bench",
        help="time fastes against the paper's pipeline, stage by stage (about a minute; --full a little more)",
        description="Time every stage (decode, detect, landmarks, remap, draw, model input, inference, and "
        "image -> sketch / label per face) for fastes and for a paper-style baseline (benchmarks/"
        "paper_baseline.py of the source checkout: Haar on the full image, per-point Python remapping, "
        "cv2.line drawing, PNG round trip, Keras predict), beside the paper's Table I; then faces/s with "
        "1..N worker threads. Prints a Markdown table; medians after a warm-up, one thread per stage.",
    )
    bn.add_argument("--json", metavar="FILE", help="write the results (stages, speedups, scaling, machine) as JSON")
    bn.add_argument("--chart", metavar="FILE.png", help="write a log-scale bar chart of baseline vs fastes")
    bn.add_argument("--full", action="store_true", help="longer timings and 240 images for scaling (several minutes)")
    bn.add_argument("--workers", type=int, default=2, metavar="N", help="scale up to N worker threads (default 2)")

    cv = sub.add_parser(
        "convert",
        help="convert a Keras model to TFLite (float, fp16, dynamic or full int8), verified",
        description="Convert MODEL.keras (any Keras model with one image input) to TFLite with builtin "
        "ops only. int8 is full-integer post-training quantization calibrated on real sketches (or "
        "--calibration). The result is checked against the Keras model on held-out inputs: top-1 "
        "agreement and both accuracies are printed, and nothing is written when agreement is below "
        "--min-agreement.",
    )
    cv.add_argument("model", metavar="MODEL.keras")
    cv.add_argument("--out", "-o", required=True, metavar="MODEL.tflite")
    cv.add_argument("--quantize", choices=["none", "fp16", "dynamic", "int8"], default="int8",
                    help="default int8")
    cv.add_argument("--int8-io", action="store_true", help="int8 input and output tensors (with --quantize int8)")
    cv.add_argument("--calibration", metavar="FILE.npy",
                    help="float inputs for calibration and verification, shaped like the model's input "
                    "(default: sketches from the landmark cache; needed for non-sketch models)")
    cv.add_argument("--min-agreement", type=float, default=0.98, help="default 0.98")
    cv.add_argument("--percentile", type=float, metavar="P",
                    help="int8 only: re-measure each activation's range on the calibration inputs and "
                    "clip it to their P-th percentile (and 100-P) instead of TFLite's min/max, which is "
                    "too wide around residual sums and stretched by outliers; 100 = exact min/max. "
                    "The shipped ResNet50 uses 99.9995 (models/README.md). Default: TFLite's min/max")
    return parser


def _detector_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--detector", choices=DETECTORS, default=DEFAULT_DETECTOR,
                   help=f"face detector (default {DEFAULT_DETECTOR}): blazeface = MediaPipe's short-range "
                   "model (fast, finds tight crops), blazeface-full = its full-range model (smaller faces), "
                   "blazeface-group = full range plus a 2x2 tile search (up to ~16 faces per image), "
                   "haar = the paper's cascade")
    p.add_argument("--detect-size", type=int, default=160, metavar="PX",
                   help="haar only: long side of the grey copy the cascade searches (default 160); "
                   "raise it for small faces in large images")


def _tta_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tta", type=int, default=0, metavar="N",
                   help="average each face's probabilities over N augmented copies of its landmarks "
                   "(rotated, jittered, mirrored; 0 = off, the default). 8 copies: +2.5 points of "
                   "subject-disjoint accuracy for the default model, ~7x its inference time (~5 ms per face)")


def _tta(args: argparse.Namespace) -> int:
    """The ``--tta`` copies (0 where the command has no such option; usage error if < 0)."""
    n = getattr(args, "tta", 0)
    if n < 0:
        raise UsageError("--tta must be >= 0")
    return n


def _finder(args: argparse.Namespace):
    """The front end the detector options ask for (usage errors for bad values)."""
    if args.detect_size < 32:
        raise UsageError(f"--detect-size must be >= 32, got {args.detect_size}")
    return FaceFinder(args.detector, detect_size=args.detect_size)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ log lines are noise here
    parser = _build_parser()
    args = parser.parse_args(argv)  # argparse exits with 2 on usage errors
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return {"sketch": cmd_sketch, "train": cmd_train, "evaluate": cmd_evaluate,
                "convert": cmd_convert, "run": cmd_run, "demo": cmd_demo, "bench": cmd_bench}[args.command](args)
    except UsageError as e:
        print(f"fastes {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("fastes: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # unexpected: one line unless --debug
        if args.debug:
            raise
        print(f"fastes {args.command}: error: {type(e).__name__}: {e} (run with --debug for details)", file=sys.stderr)
        return EXIT_FAILED


def cmd_sketch(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np
    from tqdm import tqdm

    from .io import ImageError, read_image, to_grey, write_png_atomic
    from .sketch import DegenerateFaceError, sketch

    if args.size < 8:
        raise UsageError(f"--size must be >= 8, got {args.size}")
    if not args.thickness > 0:
        raise UsageError(f"--thickness must be > 0, got {args.thickness}")
    finder = _finder(args)
    if args.inputs:
        items = collect_inputs(args.inputs)
    else:
        items = [(p, Path(p.name)) for p in sample_images()]
        if not args.quiet:
            print(f"no INPUT given: using the {len(items)} bundled London set samples (CC BY 4.0, "
                  "DeBruine & Jones 2017, doi:10.6084/m9.figshare.5047666.v5)", file=sys.stderr)
    if not items:
        raise UsageError("no image files found in the given inputs")
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir} exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)

    n_faces = n_noface = 0
    failed: list[str] = []
    taken: set[Path] = set()
    t0 = time.perf_counter()
    bar = tqdm(items, unit="img", disable=args.no_progress or len(items) < 2 or None, file=sys.stderr)
    for path, rel in bar:
        try:
            image = read_image(path)
            faces = finder(image)
        except ImageError as e:
            failed.append(str(path))
            tqdm.write(f"skipped: {e}", file=sys.stderr)
            continue
        stem = _unique_stem(out_dir / rel.parent / rel.stem, taken)
        stem.parent.mkdir(parents=True, exist_ok=True)
        if len(faces) == 0:
            n_noface += 1
            if not args.quiet:
                tqdm.write(f"no face: {path}", file=sys.stderr)
        for k in range(len(faces)):
            try:
                img = sketch(faces.landmarks[k], size=args.size, thickness=args.thickness)
            except DegenerateFaceError as e:
                tqdm.write(f"{path}: face {k} skipped: {e}", file=sys.stderr)
                continue
            write_png_atomic(f"{stem}_face{k}.png", img)
            n_faces += 1
        if args.landmarks:
            write_png_atomic(f"{stem}_landmarks.png", _overlay(to_grey(image), faces, cv2, np))
    dt = time.perf_counter() - t0
    n_images = len(items) - len(failed)
    print(f"{n_images} images, {n_faces} faces, {n_noface} images without a face, "
          f"{len(failed)} unreadable files; {dt:.2f} s; sketches in {out_dir}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    import json

    try:
        import keras  # noqa: F401
    except ImportError:
        raise UsageError("training needs the train extra: pip install 'fastes[train]'") from None
    from .data import ManifestError
    from .io import write_text_atomic
    from .train import DEFAULT_EPOCHS, TrainConfig, load_faces, train

    if args.epochs is None:
        args.epochs = DEFAULT_EPOCHS[args.net]
    for name in ("epochs", "batch"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name} must be >= 1")
    if args.size is not None and not 16 <= args.size <= 512:
        raise UsageError("--size must be between 16 and 512")
    if not 1 <= args.supersample <= 8:
        raise UsageError("--supersample must be between 1 and 8")
    out = Path(args.out)
    if (out / "model.keras").exists() and not (args.resume and (out / "checkpoint.json").exists()):
        raise UsageError(f"{out / 'model.keras'} exists (training finished); choose another --out")
    datasets = None if args.datasets == "all" else tuple(args.datasets.split(","))
    try:
        data = load_faces(args.manifest, datasets=datasets, progress=not args.no_progress, detector=args.detector)
    except ManifestError as e:
        raise UsageError(str(e)) from None
    if len(data) == 0 or data.found.sum() == 0:
        raise UsageError(f"no training faces (datasets: {args.datasets})")
    if len(set(data.labels[data.found].tolist())) < 2:
        raise UsageError("training needs at least two classes")
    cfg = TrainConfig(net=args.net, size=args.size, epochs=args.epochs, batch=args.batch, lr=args.lr,
                      seed=args.seed, augment=not args.no_augment, pretrain=args.pretrain,
                      pretrain_epochs=args.pretrain_epochs, dropout=args.dropout,
                      width=args.width, supersample=args.supersample)
    drawn = f" (drawn at {cfg.input_size() * cfg.supersample} px, averaged down)" if cfg.supersample > 1 else ""
    print(f"training {args.net} at {cfg.input_size()} px{drawn} on {int(data.found.sum())} faces "
          f"({len(data) - int(data.found.sum())} images without a face left out); data {data.digest()}",
          file=sys.stderr)
    model, history = train(data, cfg, out, progress=not args.no_progress, resume=args.resume)
    meta = json.loads((out / "config.json").read_text())
    meta["detector"] = args.detector  # the front end of the training landmarks: run the model with it
    write_text_atomic(out / "config.json", json.dumps(meta, indent=1))
    lines = [f"# {args.net} trained by fastes", "", f"- input {cfg.input_size()} px{drawn}, {len(history)} epochs, "
             f"seed {cfg.seed}, pre-training {cfg.pretrain}, landmarks from the {args.detector} front end",
             f"- {meta['n_train']} training faces, data digest `{meta['data_digest']}`",
             f"- final training loss {history[-1]['loss']:.4f}, accuracy {history[-1]['accuracy']:.3f} "
             "(augmented sketches)", f"- training time {meta['train_seconds']:.0f} s",
             "", "Measure it: `fastes evaluate MANIFEST.csv --model model.keras` (on people not seen "
             "in training)."]
    write_text_atomic(out / "report.md", "\n".join(lines) + "\n")
    print(f"wrote {out / 'model.keras'} ({meta['train_seconds']:.0f} s)", file=sys.stderr)
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from .data import ManifestError
    from .evaluate import evaluate_manifest, summary_lines, write_report
    from .io import write_text_atomic
    from .pipeline import model_path
    from .runtime import Augmented, Ensemble, ModelError, load_classifier

    if len(args.model) > 1 and not args.ensemble:
        raise UsageError("several --model files need --ensemble")
    tta = _tta(args)
    try:
        members = [load_classifier(model_path(m), args.threads) for m in args.model]
    except ModelError as e:
        raise UsageError(str(e)) from None
    clf = members[0] if len(members) == 1 else Ensemble(members)
    if tta:
        clf = Augmented(clf, tta)
    t0 = time.perf_counter()
    try:
        m, _, _ = evaluate_manifest(args.manifest, clf, cache=not args.no_cache, progress=not args.no_progress,
                                    finder=_finder(args))
    except ManifestError as e:
        raise UsageError(str(e)) from None
    m["model"] = [str(p) for p in args.model]
    m["detector"] = args.detector
    m["tta"] = tta
    m["seconds"] = time.perf_counter() - t0
    print("\n".join(summary_lines(m)))
    if args.json:
        write_text_atomic(args.json, json.dumps(m, indent=1))
    if args.report:
        write_report(m, args.report, title=f"fastes evaluate: {', '.join(Path(p).name for p in args.model)}")
    return EXIT_OK


FIELDS = ["source", "frame", "timestamp", "face", "track", "x", "y", "w", "h", "label", "confidence",
          *[f"p_{c}" for c in CLASSES], "error"]


def _frames(path: Path, every: int, webcam: int | None = None):
    """(frame index, timestamp s, BGR frame) decoded lazily: memory stays flat."""
    import cv2

    cap = cv2.VideoCapture(webcam if webcam is not None else str(path))
    if not cap.isOpened():
        raise UsageError(f"cannot open camera {webcam}" if webcam is not None else
                         f"{path}: cannot decode this video (unsupported codec or not a video)")
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    i = 0
    try:
        while True:
            ok = cap.grab()
            if not ok:
                break
            if i % every == 0:
                ok, frame = cap.retrieve()
                if ok:
                    yield i, (i / fps if fps > 0 else None), frame
            i += 1
    finally:
        cap.release()


class _Table:
    """Rows written as they come to a temp file, renamed over --out at the end (also after
    Ctrl-C), so the output is never half-written and --resume can continue. Parquet
    (needs pyarrow) is written from the temp file's JSON lines at the end."""

    def __init__(self, out: Path, resume: bool, with_landmarks: bool):
        import csv
        import json

        suffix = out.suffix.lower()
        self.out, self.parquet = out, suffix == ".parquet"
        self.json = suffix == ".jsonl" or self.parquet
        if self.parquet:
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise UsageError("--out .parquet needs pyarrow: pip install pyarrow") from None
        self.fields = FIELDS + (["landmarks"] if with_landmarks else [])
        self.done: set[str] = set()
        old = []
        if resume and out.exists():
            if self.parquet:
                import pyarrow.parquet as pq

                old = pq.read_table(out).to_pylist()
            else:
                with open(out, newline="", encoding="utf-8") as f:
                    old = [json.loads(x) for x in f if x.strip()] if self.json else list(csv.DictReader(f))
            self.done = {r["source"] for r in old}
        self.tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        self.f = open(self.tmp, "w", newline="", encoding="utf-8")
        if not self.json:
            self.w = csv.DictWriter(self.f, fieldnames=self.fields, extrasaction="ignore")
            self.w.writeheader()
        for r in old:
            self.write(r)

    def write(self, row: dict) -> None:
        import json

        if self.json:
            self.f.write(json.dumps(row) + "\n")
        else:
            self.w.writerow({k: (json.dumps(v) if isinstance(v, list) else v) for k, v in row.items()})

    def close(self) -> None:
        self.f.close()
        if not self.parquet:
            os.replace(self.tmp, self.out)
            return
        import json

        import pyarrow as pa
        import pyarrow.parquet as pq

        with open(self.tmp, encoding="utf-8") as f:
            rows = [json.loads(x) for x in f if x.strip()]
        # every row has every column (None where absent), in the CSV's order
        cols = self.fields + sorted({k for r in rows for k in r} - set(self.fields))
        table = pa.Table.from_pylist([{c: r.get(c) for c in cols} for r in rows])
        from .io import atomic_write

        atomic_write(self.out, lambda t: pq.write_table(table, t))
        os.unlink(self.tmp)


_WINDOW = "fastes (q or Esc to stop)"  # the --webcam live window's title


class _WindowClosed(Exception):
    """The user closed the live window (q or Esc)."""


def _gui_available() -> bool:
    """True when OpenCV can open a window here: a build with highgui (not the headless
    wheel) and, on Linux, a display to open it on."""
    import cv2

    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        cv2.namedWindow(_WINDOW)
        return True
    except cv2.error:
        return False


def _annotate(image, faces):
    import cv2
    import numpy as np

    from .io import to_grey

    vis = image.copy() if image.ndim == 3 and image.shape[2] == 3 else cv2.cvtColor(to_grey(image), cv2.COLOR_GRAY2BGR)
    if vis.dtype != np.uint8:
        vis = cv2.cvtColor(to_grey(image), cv2.COLOR_GRAY2BGR)
    s = max(1, round(max(vis.shape[:2]) / 500))
    for f in faces:
        x, y, w, h = f.box
        cv2.rectangle(vis, (x, y), (x + w, y + h), (0, 200, 0), s)
        for px, py in np.round(f.landmarks).astype(int):
            cv2.circle(vis, (int(px), int(py)), s, (0, 0, 255), -1)
        cv2.putText(vis, f"{f.label} {f.confidence:.2f}", (x, max(12 * s, y - 4 * s)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.5 * s, (0, 255, 255), s, cv2.LINE_AA)
    return vis


def _process(args, items: list[tuple[Path, Path]], webcam: int | None = None) -> tuple[int, list[dict]]:
    """Shared by ``run`` and ``demo``: returns (exit status, rows of this run)."""
    from collections import deque

    import numpy as np
    from tqdm import tqdm

    from .io import ImageError, read_image, write_png_atomic
    from .pipeline import Pipeline, Tracker
    from .runtime import ModelError

    out = Path(args.out)
    if out.suffix.lower() not in (".csv", ".jsonl", ".parquet"):
        raise UsageError("--out must end in .csv, .jsonl or .parquet")
    if args.every < 1:
        raise UsageError("--every must be >= 1")
    if getattr(args, "detect_every", 1) < 1:
        raise UsageError("--detect-every must be >= 1")
    if not 0 <= getattr(args, "smooth", 0.0) < 1:
        raise UsageError("--smooth must be in [0, 1)")
    if args.workers < 1:
        raise UsageError("--workers must be >= 1")
    try:
        pipe = Pipeline(args.model, _finder(args), threads=args.threads, workers=args.workers, tta=_tta(args))
    except ModelError as e:
        raise UsageError(str(e)) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    table = _Table(out, args.resume, args.landmarks)
    todo = [(p, r) for p, r in items if str(p) not in table.done]
    if webcam is not None:
        todo = [(Path(f"webcam{webcam}"), Path(f"webcam{webcam}"))]
    sketch_dir = Path(args.save_sketches) if args.save_sketches else None
    ann_dir = Path(args.annotate) if args.annotate else None
    # --webcam shows an annotated live window where OpenCV has a GUI and a display;
    # otherwise (headless OpenCV, no display, --no-window) it prints a line per face
    window = webcam is not None and not args.no_window and _gui_available()
    live_rows = webcam is not None and not window and not getattr(args, "quiet", False)
    if live_rows and not args.no_window:
        print("no GUI or display for a live window here (headless OpenCV?): printing a line per face",
              file=sys.stderr)
    n_img = n_faces = n_noface = 0
    failed: list[str] = []
    rows: list[dict] = []
    t0 = time.perf_counter()
    bar = tqdm(total=len(todo), unit="input", disable=args.no_progress or len(todo) < 2 or None, file=sys.stderr)

    video_out: dict = {}  # the annotated video being written, per source

    def emit(source, frame, ts, image, rel, faces, tracker=None):
        """Rows, sketches and annotations of one image or frame (``image`` is only
        needed with --annotate)."""
        nonlocal n_img, n_faces, n_noface
        tracks = tracker.update(faces) if tracker is not None else [None] * len(faces)
        n_img += 1
        base = {"source": source, "frame": frame, "timestamp": ts}
        if not faces:
            n_noface += 1
            row = {**base, "face": None, "error": "no face found"}
            table.write(row)
            rows.append(row)
        stem = rel.with_suffix("") if frame is None else rel.with_suffix("") / f"frame{frame:07d}"
        for k, f in enumerate(faces):
            x, y, w, h = f.box
            row = {**base, "face": k, "track": tracks[k], "x": x, "y": y, "w": w, "h": h, "label": f.label,
                   "confidence": round(f.confidence, 4),
                   **{f"p_{c}": round(float(p), 4) for c, p in zip(CLASSES, f.probs)},
                   "error": ""}
            if args.landmarks:
                row["landmarks"] = np.round(f.landmarks, 2).tolist()
            table.write(row)
            rows.append(row)
            n_faces += 1
            if live_rows:  # --webcam without a window: the rows are the live view
                print(f"frame {frame} face {k} track {tracks[k]}: {f.label} {f.confidence:.2f} "
                      f"box {x},{y},{w},{h}", flush=True)
            if sketch_dir:
                (sketch_dir / stem).parent.mkdir(parents=True, exist_ok=True)
                write_png_atomic(sketch_dir / f"{stem}_face{k}.png", f.sketch)
        vis = _annotate(image, faces) if ann_dir or window else None  # drawn once, used by both
        if ann_dir and frame is None:
            (ann_dir / stem).parent.mkdir(parents=True, exist_ok=True)
            write_png_atomic(ann_dir / f"{stem}.png", vis)
        elif ann_dir:  # video input: an annotated video (MJPG .avi: every OpenCV build writes it)
            if source not in video_out:
                import cv2

                target = ann_dir / rel.with_suffix(".avi")
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.stem}.{os.getpid()}.tmp.avi")
                h, w = image.shape[:2]
                fps = 25.0 / args.every
                video_out[source] = (cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h)), tmp, target)
            video_out[source][0].write(vis)
        if window:
            import cv2

            cv2.imshow(_WINDOW, vis)
            if cv2.waitKey(1) & 0xFF in (27, ord("q")):
                raise _WindowClosed
        bar.set_postfix(faces_per_s=f"{n_faces / max(1e-9, time.perf_counter() - t0):.1f}")

    def fail(path, message):
        failed.append(str(path))
        table.write({"source": str(path), "error": message})
        tqdm.write(f"skipped: {message}", file=sys.stderr)

    def run_video(path, rel):
        tracker = Tracker(getattr(args, "smooth", 0.0))
        meta: deque = deque()  # frames in flight to the workers, in order

        def frames():
            for i, ts, frame in _frames(path, args.every, webcam):
                meta.append((i, ts, frame if ann_dir or window else None))
                yield frame

        try:
            if args.detect_every > 1:
                stream = pipe.run_video(frames(), args.detect_every)
            else:
                stream = pipe.run_batch(frames())
            for faces in stream:
                i, ts, frame = meta.popleft()
                emit(str(path), i, None if ts is None else round(ts, 3), frame, rel, faces, tracker)
        except _WindowClosed:
            pass
        finally:
            if str(path) in video_out:
                writer, tmp, target = video_out.pop(str(path))
                writer.release()
                os.replace(tmp, target)

    def run_images(group):
        meta: deque = deque()

        def paths():
            for path, rel in group:
                meta.append((path, rel))
                yield path

        for faces in pipe.run_batch(paths(), errors="return"):
            path, rel = meta.popleft()
            if isinstance(faces, ImageError):
                fail(path, str(faces))
            else:
                emit(str(path), None, None, read_image(path) if ann_dir else None, rel, faces)
            bar.update(1)

    try:
        group: list = []  # consecutive images go to the workers together
        for path, rel in todo + [(None, None)]:
            if path is not None and webcam is None and path.suffix.lower() not in VIDEO_SUFFIXES:
                group.append((path, rel))
                continue
            run_images(group)
            group = []
            if path is None:
                break
            try:
                run_video(path, rel)
            except UsageError as e:
                fail(path, str(e))
            bar.update(1)
    finally:
        pipe.close()
        bar.close()
        table.close()
    dt = time.perf_counter() - t0
    # the summary line is printed even with --quiet, as in `fastes sketch`
    print(f"{n_img} images/frames, {n_faces} faces, {n_noface} without a face, {len(failed)} errors; "
          f"{dt:.2f} s, {n_faces / max(dt, 1e-9):.1f} faces/s; results in {out}"
          + (f" ({len(table.done)} earlier inputs kept)" if table.done else ""), file=sys.stderr)
    return (EXIT_FAILED if failed else EXIT_OK), rows


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import bar_chart, markdown, run_bench, write_json

    if args.workers < 1:
        raise UsageError("--workers must be >= 1")
    if args.chart and not args.chart.lower().endswith(".png"):
        raise UsageError("--chart must end in .png")
    t0 = time.perf_counter()
    res = run_bench(full=args.full, workers=tuple(range(1, args.workers + 1)),
                    progress=lambda m: print(m, file=sys.stderr))
    res["seconds"] = time.perf_counter() - t0
    if res["baseline"] is None:
        print("note: benchmarks/paper_baseline.py not found (run from a source checkout for the baseline column)",
              file=sys.stderr)
    print(markdown(res))
    print(f"\nlandmarks -> sketch: {res['landmarks_to_sketch_speedup_vs_paper']:,.0f}x faster than the paper's "
          f"1.16 s; image -> label: {res['end_to_end_speedup_vs_paper']:,.0f}x faster than its ~3.2 s on one core, "
          f"{res['throughput_speedup_vs_paper']:,.0f}x per face with {max(res['scaling'], key=res['scaling'].get)} "
          f"worker(s); {res['seconds']:.0f} s in all")
    if args.json:
        write_json(res, args.json)
    if args.chart:
        bar_chart(res, args.chart)
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    if args.webcam is not None:
        return _process(args, [], webcam=args.webcam)[0]
    if not args.inputs:
        raise UsageError("give INPUT files/folders/videos or --webcam N")
    items = _collect_media(args.inputs)
    if not items:
        raise UsageError("no image or video files found in the given inputs")
    return _process(args, items)[0]


def _collect_media(inputs: list[str]) -> list[tuple[Path, Path]]:
    """Every file of the given folders (recursive; hidden files skipped) and every file
    named: ``run`` reports each one — an image, a video, or a row saying why not."""
    out: list[tuple[Path, Path]] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            out += [(f, f.relative_to(p)) for f in sorted(p.rglob("*"))
                    if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts)]
        else:
            out.append((p, Path(p.name)))
    return out


def cmd_demo(args: argparse.Namespace) -> int:
    from .pipeline import model_path

    out = Path(args.out)
    ns = argparse.Namespace(out=str(out / "results.csv"), model=args.model, every=1, landmarks=False,
                            save_sketches=str(out / "sketches"), annotate=str(out / "annotated"), resume=False,
                            threads=1, workers=1, detect_every=1, no_window=True, detector=DEFAULT_DETECTOR, detect_size=160, no_progress=True, quiet=False)
    items = [(p, Path(p.name)) for p in sample_images()]
    print("fastes demo: 6 London set images, CC BY 4.0: DeBruine & Jones (2017), Face Research Lab "
          "London Set, doi:10.6084/m9.figshare.5047666.v5")
    try:
        print(f"model: {model_path(args.model).name}")
    except Exception as e:
        raise UsageError(str(e)) from None
    # Compile the kernels first (only the first run on a machine does: Numba caches
    # them), so that the time printed below is the work, not the compiler.
    from .pipeline import Pipeline
    from .io import read_image

    t0 = time.perf_counter()
    for face in Pipeline(args.model).run(read_image(items[0][0])):
        face.sketch
    if time.perf_counter() - t0 > 2:
        print(f"kernels ready in {time.perf_counter() - t0:.1f} s (compiled on this machine's first run, "
              "cached for the next)")
    rc, rows = _process(ns, items)
    print(f"{'image':<28} {'face':>4} {'label':<9} {'conf':>5}  {'pos':>5} {'neg':>5} {'awe':>5} {'neu':>5}")
    for r in rows:
        if r.get("error"):
            print(f"{Path(r['source']).name:<28}    -  {r['error']}")
            continue
        print(f"{Path(r['source']).name:<28} {r['face']:>4} {r['label']:<9} {r['confidence']:>5.2f}  "
              + " ".join(f"{r['p_' + c]:>5.2f}" for c in ("positive", "negative", "awe", "neutral")))
    print(f"wrote {out / 'results.csv'}, {out / 'annotated'}/, {out / 'sketches'}/")
    return rc


def cmd_convert(args: argparse.Namespace) -> int:
    import numpy as np

    try:
        from .convert import ConversionError, convert, percentile_problem
        import tensorflow  # noqa: F401
    except ImportError:
        raise UsageError("conversion needs TensorFlow: pip install 'fastes[train]'") from None
    if not args.out.endswith(".tflite"):
        raise UsageError("--out must end in .tflite")
    if not 0 <= args.min_agreement <= 1:
        raise UsageError("--min-agreement must be between 0 and 1")
    if problem := percentile_problem(args.quantize, args.percentile):
        raise UsageError(problem)
    cal = ver = None
    if args.calibration:
        try:
            arr = np.load(args.calibration, allow_pickle=False).astype(np.float32)
        except (OSError, ValueError) as e:
            raise UsageError(f"--calibration {args.calibration}: {e}") from None
        cal, ver = arr[: len(arr) // 2], arr[len(arr) // 2:]  # halves: calibrate, verify
    try:
        r = convert(args.model, args.out, args.quantize, args.int8_io, cal, ver, min_agreement=args.min_agreement,
                    percentile=args.percentile)
    except ConversionError as e:
        print(f"fastes convert: error: {e}", file=sys.stderr)
        return EXIT_FAILED
    acc = ""
    if "keras_accuracy" in r:
        acc = f", accuracy Keras {r['keras_accuracy']:.3f} / TFLite {r['tflite_accuracy']:.3f}"
    print(f"{args.out}: {r['size'] / 1e6:.2f} MB, {args.quantize}; top-1 agreement {r['agreement']:.3f} "
          f"on {r['n_verify']} held-out inputs{acc}")
    return EXIT_OK


def _unique_stem(stem: Path, taken: set[Path]) -> Path:
    """Output stems never collide: a second `a.jpg` from another input becomes `a_2`."""
    cand, i = stem, 1
    while cand in taken:
        i += 1
        cand = stem.with_name(f"{stem.name}_{i}")
    taken.add(cand)
    return cand


def _overlay(grey, faces, cv2, np):
    """The input (grey, as the front end saw it) with boxes and the 68 points drawn."""
    vis = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    scale = max(1, round(max(grey.shape) / 500))
    for (x, y, w, h), pts in zip(faces.boxes, faces.image_landmarks()):
        cv2.rectangle(vis, (int(x), int(y)), (int(x + w), int(y + h)), (0, 200, 0), scale)
        for px, py in np.round(pts).astype(int):
            cv2.circle(vis, (int(px), int(py)), scale + 1, (0, 0, 255), -1)
    return vis


if __name__ == "__main__":  # python -m fastes.cli
    sys.exit(main())
