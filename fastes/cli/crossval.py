"""``fastes crossval``: the cross-dataset protocols (``fastes.protocol``), one command each."""
from __future__ import annotations

import argparse
import sys

from .common import EXIT_OK, UsageError

PROTOCOLS = ("lodo", "ferplus", "kfold")
RECIPES = ("landmarks", "logreg", "vgg11", "resnet50", "capsnet", "two-stream")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "crossval",
        help="cross-dataset accuracy: leave-one-dataset-out, FER+ valid, 5-fold posed",
        description="Train a recipe and test it on data it has never seen. lodo: for each posed set "
        "(jaffe, ckplus, fei, london) train on every other row of the shared data (other posed sets, "
        "wild, FER+ train; never FER+ valid), test on the held-out set. ferplus: train on all but FER+ "
        "valid, test on its majority rows (top emotion > 5 of 10 votes). kfold: 5-fold "
        "subject-disjoint over the posed sets. Missed faces count as wrong. Prints accuracy, macro F1, "
        "confusion and per-group accuracy; --workdir keeps each split (an interrupted run resumes).",
    )
    p.add_argument("protocol", choices=PROTOCOLS)
    p.add_argument("--model", choices=RECIPES, default="landmarks",
                   help="recipe: landmarks = the landmark network (default), logreg = softmax regression "
                   "on the same points, vgg11/resnet50/capsnet = the paper's nets on sketches, two-stream = "
                   "VGG11 on the sketch plus a branch on the landmark-aligned face crop (fastes.twostream)")
    p.add_argument("--epochs", type=int, help="training epochs (default: the recipe's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, help="sketch nets: input size (default: the net's)")
    p.add_argument("--width", type=float, default=0.25, help="vgg11: channel scale (default 0.25, the shipped one)")
    p.add_argument("--posed-weight", type=float, default=1.0,
                   help="landmarks, two-stream: loss weight of the posed sets' training rows (default 1)")
    p.add_argument("--face-warp", type=float, default=0.0, metavar="K",
                   help="two-stream: random rotation/scale/shift of the training crops, K times "
                   "fastes.twostream.FACE_WARP (8 degrees, 8 %%, 5 %% of the frame; default 0 = off)")
    p.add_argument("--fine-labels", action="store_true",
                   help="landmarks, two-stream: learn the 7 emotions (FER+ votes, the manifest's emotion column) and sum "
                   "them into the 4 classes inside the model (default: learn the 4 classes)")
    p.add_argument("--tta", type=int, default=0, metavar="N",
                   help="landmarks, two-stream: test-time augmentation, the mean over N augmented copies (as "
                   "'fastes run --tta N'; default 0 = off)")
    p.add_argument("--balance", type=float, default=0.0, metavar="TAU",
                   help="two-stream: after training, divide the probabilities by the training rows' class "
                   "shares to the power TAU, inside the model (logit adjustment; 1 = decide as if the four "
                   "classes were equally likely; default 0 = off)")
    p.add_argument("--balance-within", type=float, default=0.0, metavar="W",
                   help="two-stream with --fine-labels and --balance: also decide as if each emotion of a "
                   "class were as likely as the others (rare ones such as fear beside surprise lifted; "
                   "fastes.train.within_class_shift, to the power W; default 0 = off)")
    p.add_argument("--members", type=int, default=1, metavar="K",
                   help="two-stream: train K models (seeds SEED, SEED+1, ...) and average their probabilities "
                   "inside one model (one file; K times the training and the classifier's time; default 1)")
    p.add_argument("--face-norm", action="store_true",
                   help="two-stream: standardize each face crop (zero mean, unit variance) inside the model")
    p.add_argument("--part-drop", type=float, default=0.0, metavar="P",
                   help="two-stream: in each epoch hide brows and eyes (P/2 of the rows) or the mouth (P/2) "
                   "from both the sketch and the crop, so the network learns every part (default 0 = off)")
    p.add_argument("--face-size", type=int, default=48, metavar="PX",
                   help="two-stream: side of the aligned face crop in pixels, a multiple of 16 from 32 to 128 "
                   "(default 48; a larger crop costs classifier time)")
    p.add_argument("--face-width", type=float, default=1.0, metavar="K",
                   help="two-stream: scale of the face branch's channels (16..128 at 1, the shipped one; its "
                   "classifier time grows about as K squared)")
    p.add_argument("--held-out", metavar="SETS",
                   help="lodo: hold out only these posed sets, comma-separated (default: all of "
                   "jaffe, ckplus, fei, london; the mean is then over these)")
    p.add_argument("--average", type=float, default=0.0, metavar="F",
                   help="two-stream, sketch nets: average the weights over the last share F of the training steps "
                   "(every step; batch-norm statistics re-estimated for the mean: SWA), a flatter minimum "
                   "that may carry better to unseen faces (default 0 = the last step's weights)")
    p.add_argument("--ferplus-limit", type=int, metavar="N",
                   help="sketch nets: train on at most N FER+ rows (a seeded draw), to fit a 2-core CPU's time")
    p.add_argument("--extra", action="store_true", help="kfold: each fold also trains on wild and FER+ train")
    p.add_argument("--detector", default="blazeface", help="front end of every row (default blazeface)")
    p.add_argument("--crop", default="auto", help="crop mode (default auto: see fastes.face.CROP_MODES)")
    p.add_argument("--workdir", metavar="DIR", help="keep each split's predictions here; resume from them")
    p.add_argument("--json", metavar="FILE", help="write the full result (metrics per set and group) here")
    p.add_argument("--save-model", metavar="DIR",
                   help="ferplus with --model landmarks or two-stream: keep the model it trains (on all the shared data "
                   "but FER+ valid) as DIR/model.keras with DIR/config.json (recipe, data digest): the "
                   "model to ship, then 'fastes convert DIR/model.keras --out MODEL.tflite'")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=run)


def make_recipe(args: argparse.Namespace, data=None):
    """``make() -> Learner`` for the options (usage errors for bad values); ``data``: the
    whole FaceSet the protocol splits (the two-stream recipe looks its crops up there)."""
    from .. import protocol
    from ..train import DEFAULT_EPOCHS, LandmarkConfig, TrainConfig

    if args.epochs is not None and args.epochs < 1:
        raise UsageError("--epochs must be >= 1")
    progress = not args.no_progress
    save = getattr(args, "save_model", None)
    if save and (args.protocol != "ferplus" or args.model not in ("landmarks", "two-stream")):
        raise UsageError("--save-model goes with 'ferplus --model landmarks' or 'ferplus --model two-stream'")
    if args.tta < 0:
        raise UsageError("--tta must be >= 0")
    if args.tta and args.model not in ("landmarks", "two-stream"):
        raise UsageError("--tta goes with --model landmarks or two-stream")
    if args.balance and args.model != "two-stream":
        raise UsageError("--balance goes with --model two-stream")
    if args.balance_within and not (args.fine_labels and args.balance):
        raise UsageError("--balance-within goes with --fine-labels and --balance")
    if args.members < 1:
        raise UsageError("--members must be >= 1")
    if args.fine_labels and args.model not in ("landmarks", "two-stream"):
        raise UsageError("--fine-labels goes with --model landmarks or two-stream")
    for flag, on in (("--face-warp", args.face_warp), ("--members", args.members != 1), ("--face-norm", args.face_norm),
                     ("--part-drop", args.part_drop), ("--face-size", args.face_size != 48),
                     ("--face-width", args.face_width != 1)):
        if on and args.model != "two-stream":
            raise UsageError(f"{flag} goes with --model two-stream")
    if args.face_warp < 0 or args.posed_weight <= 0:
        raise UsageError("--face-warp must be >= 0 and --posed-weight > 0")
    if not (32 <= args.face_size <= 128 and args.face_size % 16 == 0):
        raise UsageError("--face-size must be a multiple of 16 from 32 to 128 (the face branch halves it 4 times)")
    if args.face_width <= 0:
        raise UsageError("--face-width must be > 0")
    if not 0 <= args.part_drop <= 1:
        raise UsageError("--part-drop must be between 0 and 1")
    if not 0 <= args.average <= 1:
        raise UsageError("--average must be between 0 and 1")
    if args.average and args.model in ("landmarks", "logreg"):
        raise UsageError("--average goes with --model two-stream, vgg11, resnet50 or capsnet")
    if args.posed_weight != 1 and args.model not in ("landmarks", "two-stream"):
        raise UsageError("--posed-weight goes with --model landmarks or two-stream")
    if args.model == "landmarks":
        cfg = LandmarkConfig(seed=args.seed, posed_weight=args.posed_weight, fine_labels=args.fine_labels,
                             **({"epochs": args.epochs} if args.epochs else {}))
        return lambda: protocol.LandmarkLearner(cfg, progress=progress, out_dir=save, tta=args.tta)
    if args.model == "logreg":
        return lambda: protocol.LogRegLearner()
    if args.model == "two-stream":
        from ..twostream import TwoStreamLearner

        cfg = TrainConfig(net="vgg11", size=args.size or 48, epochs=args.epochs or 6, batch=64, seed=args.seed,
                          width=args.width, average=args.average)
        front = {"detector": args.detector, "crop": args.crop}
        return lambda: TwoStreamLearner(data, cfg, face_size=args.face_size, front_end=front, progress=progress, out_dir=save,
                                        balance=args.balance, tta=args.tta, posed_weight=args.posed_weight,
                                        face_warp=args.face_warp, fine_labels=args.fine_labels,
                                        balance_within=args.balance_within, members=args.members,
                                        face_norm=args.face_norm, part_drop=args.part_drop,
                                        face_width=args.face_width)
    cfg = TrainConfig(net=args.model, size=args.size, epochs=args.epochs or DEFAULT_EPOCHS[args.model],
                      seed=args.seed, width=args.width, average=args.average)
    return lambda: protocol.SketchLearner(cfg, progress=progress, ferplus_limit=args.ferplus_limit)


def held_out_sets(args: argparse.Namespace) -> tuple[str, ...]:
    """The posed sets ``lodo`` holds out (``--held-out``), checked before the data loads."""
    from ..data import POSED

    if args.held_out is None:
        return tuple(POSED)
    if args.protocol != "lodo":
        raise UsageError("--held-out goes with lodo")
    sets = tuple(dict.fromkeys(s.strip() for s in args.held_out.split(",") if s.strip()))
    bad = [s for s in sets if s not in POSED]
    if bad or not sets:
        raise UsageError(f"--held-out takes posed sets from {', '.join(POSED)}; got {args.held_out!r}")
    return sets


def run(args: argparse.Namespace) -> int:
    try:
        import keras  # noqa: F401
    except ImportError:
        if args.model != "logreg":
            raise UsageError("training needs the train extra: pip install 'fastes[train]'") from None
    from .. import protocol
    from ..evaluate import summary_lines
    from ..face import CROP_MODES

    if args.crop not in CROP_MODES:
        raise UsageError(f"--crop must be one of {', '.join(CROP_MODES)}")
    held_out = held_out_sets(args)
    make_recipe(args)  # usage errors before the data loads
    data = protocol.load_all(progress=not args.no_progress, detector=args.detector, crop=args.crop)
    make = make_recipe(args, data)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if args.protocol == "lodo":
        res = protocol.lodo(data, make, held_out=held_out, workdir=args.workdir, log=log)
        for name, m in res["sets"].items():
            print(f"== held out: {name}")
            print("\n".join(summary_lines(m)))
        print("== all held-out rows together")
        print("\n".join(summary_lines(res["pooled"])))
        print(f"LODO mean accuracy {res['mean_accuracy']:.3f} (lowest {res['min_accuracy']:.3f}), "
              f"mean macro F1 {res['mean_macro_f1']:.3f}")
    elif args.protocol == "ferplus":
        res = protocol.ferplus_valid(data, make, workdir=args.workdir, log=log)
        print("== FER+ valid, majority rows")
        print("\n".join(summary_lines(res["majority"])))
        print(f"all FER+ valid rows (plurality labels): accuracy {res['all']['accuracy']:.3f}")
    else:
        res = protocol.posed_kfold(data, make, extra=args.extra, workdir=args.workdir, log=log)
        print("\n".join(summary_lines(res)))
    res["recipe"] = {k: v for k, v in vars(args).items() if k not in ("handler",)}
    res["data_digest"] = data.digest()
    if args.json:
        protocol.save_result(res, args.json)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """``python -m fastes.cli.crossval ...``: the command on its own (same options)."""
    parser = argparse.ArgumentParser(prog="fastes")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["crossval", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.handler(args)
    except UsageError as e:
        print(f"fastes crossval: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
