"""``fastes train``: training a network on emotion sketches."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..detect import DETECTORS
from .common import EXIT_OK, UsageError, TRAIN_DETECTOR


def add_parser(sub) -> None:
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
                    "grey levels that keep where a line lies within a pixel (default 1; 4 gave the vgg11_fast recipe +1.0 "
                    "point in 5-fold CV over three seeds, not significant: docs/experiments.md, 'Does a finer sketch help?')")
    tr.add_argument("--pretrain", choices=["none", "mnist", "wild"], default="none",
                    help="pre-train on the MNIST test digits or on wild-set sketches first (default none)")
    tr.add_argument("--pretrain-epochs", type=int, default=5)
    tr.add_argument("--no-augment", action="store_true", help="no rotation/jitter/mirror augmentation")
    tr.add_argument("--detector", choices=DETECTORS, default=TRAIN_DETECTOR,
                    help=f"front end whose landmarks train the net (default {TRAIN_DETECTOR}); train on the "
                    "detector you will run with")
    tr.add_argument("--average", type=float, default=0.0, metavar="F",
                    help="average the weights over the last share F of the training steps (every step; batch-norm "
                    "statistics re-estimated for the mean: SWA), a flatter minimum that may carry better to "
                    "unseen faces (default 0 = the last step's weights)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    tr.add_argument("--no-progress", action="store_true")
    tr.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import json

    try:
        import keras  # noqa: F401
    except ImportError:
        raise UsageError("training needs the train extra: pip install 'fastes[train]'") from None
    from ..data import ManifestError
    from ..io import write_text_atomic
    from ..train import DEFAULT_EPOCHS, TrainConfig, load_faces, train

    if args.epochs is None:
        args.epochs = DEFAULT_EPOCHS[args.net]
    for name in ("epochs", "batch"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name} must be >= 1")
    if args.size is not None and not 16 <= args.size <= 512:
        raise UsageError("--size must be between 16 and 512")
    if not 1 <= args.supersample <= 8:
        raise UsageError("--supersample must be between 1 and 8")
    if not 0 <= args.average <= 1:
        raise UsageError("--average must be between 0 and 1")
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
                      width=args.width, supersample=args.supersample, average=args.average)
    drawn = f" (drawn at {cfg.input_size() * cfg.supersample} px, averaged down)" if cfg.supersample > 1 else ""
    print(f"training {args.net} at {cfg.input_size()} px{drawn} on {int(data.found.sum())} faces "
          f"({len(data) - int(data.found.sum())} images without a face left out); data {data.digest()}",
          file=sys.stderr)
    try:
        model, history = train(data, cfg, out, progress=not args.no_progress, resume=args.resume)
    except ValueError as e:  # a resume the settings do not allow
        raise UsageError(str(e)) from None
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
