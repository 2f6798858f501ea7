"""``fastes run`` and ``fastes demo``: classify every face of images, folders and videos
into a table (the work is :func:`fastes.batch.run`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import EXIT_FAILED, EXIT_OK, UsageError, detector_args, tta, tta_arg


def add_parser(sub) -> None:
    rn = sub.add_parser(
        "run",
        help="classify every face in images, folders and videos into a CSV/JSONL/Parquet table",
        description="Detect faces, place landmarks, draw sketches and classify them with a TFLite "
        "model. One row per face: source, frame, timestamp (s), face index, box, label, confidence "
        "and the 4 probabilities (optionally the 68 landmarks); a row with an error for each image "
        "without a face and each input that cannot be read, never dropped.",
        epilog="Exit status: 0 all inputs read, 1 some input unreadable (or the output could not be "
        "written), 2 usage error, 130/143 interrupted (finished rows are kept; --resume continues).",
    )
    rn.add_argument("inputs", nargs="*", metavar="INPUT", help="images, folders (recursive) or videos")
    rn.add_argument("--out", "-o", default="results.csv", metavar="FILE",
                    help="results table, .csv, .jsonl or .parquet (needs pyarrow) (default results.csv)")
    rn.add_argument("--model", "-m", default="default",
                    help="shipped model name, 'ensemble', or a .tflite/.keras path (default: two_stream_int8, the "
                    "most accurate on unseen people; vgg11_fast_int8 is the fastest sketch model)")
    rn.add_argument("--engine", choices=("local", "ray"), default="local",
                    help="local: worker threads in this process (default); ray: worker actors on a Ray "
                    "cluster (pip install 'fastes[ray]'), a local one with this machine's cores unless --address")
    rn.add_argument("--address", metavar="ADDR",
                    help="--engine ray: join the running Ray cluster at ADDR (e.g. 10.0.0.1:6379, or 'auto')")
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
    rn.add_argument("--threads", type=int, default=1, help="TFLite threads per worker (default 1)")
    tta_arg(rn)
    rn.add_argument("--workers", "-j", type=int, default=1, metavar="N",
                    help="worker threads (local) or actors (ray), default 1; each runs the whole per-image "
                    "path, so N cores give up to N times the images/s (2 threads measured 1.75-2.2x one here)")
    detector_args(rn)
    rn.add_argument("--no-progress", action="store_true")
    rn.add_argument("--quiet", "-q", action="store_true")
    rn.set_defaults(handler=run)

    dm = sub.add_parser(
        "demo",
        help="run the shipped model on the bundled London set samples",
        description="Classify the faces in the 6 bundled London set images (CC BY 4.0, DeBruine & "
        "Jones 2017) with the default model; print a table and write annotated images, sketches "
        "and results.csv into --out.",
    )
    dm.add_argument("--out", "-o", default="fastes-demo", metavar="DIR", help="default ./fastes-demo")
    dm.add_argument("--model", "-m", default="default")
    dm.set_defaults(handler=demo)


def _options(args: argparse.Namespace, **over):
    from ..batch import Options

    kw = dict(model=args.model, detector=args.detector, detect_size=args.detect_size, crop=getattr(args, "crop", None),
              threads=args.threads, tta=tta(args), every=args.every, detect_every=args.detect_every,
              smooth=args.smooth, landmarks=args.landmarks, save_sketches=args.save_sketches, annotate=args.annotate)
    return Options(**{**kw, **over})


def run(args: argparse.Namespace) -> int:
    if args.webcam is None and not args.inputs:
        raise UsageError("give INPUT files/folders/videos or --webcam N")
    on_rows = on_frame = None
    if args.webcam is not None:
        window = not args.no_window and _gui_available()
        if not window and not args.no_window:
            print("no GUI or display for a live window here (headless OpenCV?): printing a line per face",
                  file=sys.stderr)
        if window:
            on_frame = _show
        elif not args.quiet:
            on_rows = _print_rows
    summary = _job(args, _options(args), on_rows=on_rows, on_frame=on_frame)
    return EXIT_FAILED if summary.errors else EXIT_OK


def _job(args, opts, **kw):
    """Run the batch job; usage problems become usage errors, interruption keeps rows."""
    from ..batch import BatchError, Terminated, run as run_job
    from ..runtime import ModelError

    try:
        summary = run_job(args.inputs, args.out, engine=getattr(args, "engine", "local"), workers=args.workers,
                          address=getattr(args, "address", None), resume=args.resume, options=opts,
                          webcam=getattr(args, "webcam", None), progress=not args.no_progress, **kw)
    except (BatchError, ModelError) as e:
        raise UsageError(str(e)) from None
    except (KeyboardInterrupt, Terminated):
        print(f"fastes run: interrupted; the finished inputs' rows are in {args.out} (--resume continues)",
              file=sys.stderr)
        raise
    print(summary.line() + (f"; engine start-up {summary.startup_seconds:.1f} s" if summary.startup_seconds else ""),
          file=sys.stderr)
    return summary


def _print_rows(rows: list[dict]) -> None:
    """--webcam without a window: the rows are the live view."""
    for r in rows:
        if r.get("face") is not None:
            print(f"frame {r['frame']} face {r['face']} track {r['track']}: {r['label']} {r['confidence']:.2f} "
                  f"box {r['x']},{r['y']},{r['w']},{r['h']}", flush=True)


def _gui_available() -> bool:
    from ..annotate import gui_available

    return gui_available()


def _show(index, rows, annotated) -> bool:
    """The live window: False (stop) on q or Esc."""
    import cv2

    from ..annotate import WINDOW

    cv2.imshow(WINDOW, annotated)
    return (cv2.waitKey(1) & 0xFF) not in (27, ord("q"))


def demo(args: argparse.Namespace) -> int:
    import time

    from ..batch import read_rows
    from ..pipeline import Pipeline, model_path
    from ..runtime import ModelError
    from ..io import read_image
    from ..samples import ATTRIBUTION, sample_images

    out = Path(args.out)
    print(f"fastes demo: 6 {ATTRIBUTION}")
    try:
        print(f"model: {model_path(args.model).name}")
        # compile the kernels first (only a machine's first run does: Numba caches them),
        # so that the time printed below is the work, not the compiler
        t0 = time.perf_counter()
        for face in Pipeline(args.model).run(read_image(sample_images()[0])):
            face.sketch
    except ModelError as e:
        raise UsageError(str(e)) from None
    if time.perf_counter() - t0 > 2:
        print(f"kernels ready in {time.perf_counter() - t0:.1f} s (compiled on this machine's first run, "
              "cached for the next)")
    ns = argparse.Namespace(inputs=[str(p) for p in sample_images()], out=str(out / "results.csv"), workers=1,
                            resume=False, no_progress=True, model=args.model)
    from ..batch import Options

    opts = Options(model=args.model, save_sketches=str(out / "sketches"), annotate=str(out / "annotated"))
    summary = _job(ns, opts)
    print(f"{'image':<28} {'face':>4} {'label':<9} {'conf':>5}  {'pos':>5} {'neg':>5} {'awe':>5} {'neu':>5}")
    for r in read_rows(out / "results.csv"):
        if r.get("error"):
            print(f"{Path(r['source']).name:<28}    -  {r['error']}")
            continue
        print(f"{Path(r['source']).name:<28} {r['face']:>4} {r['label']:<9} {float(r['confidence']):>5.2f}  "
              + " ".join(f"{float(r['p_' + c]):>5.2f}" for c in ("positive", "negative", "awe", "neutral")))
    print(f"wrote {out / 'results.csv'}, {out / 'annotated'}/, {out / 'sketches'}/")
    return EXIT_FAILED if summary.errors else EXIT_OK
