"""``fastes convert``: Keras to TFLite conversion, verified."""
from __future__ import annotations

import argparse
import sys

from .common import EXIT_FAILED, EXIT_OK, UsageError


def add_parser(sub) -> None:
    cv = sub.add_parser(
        "convert",
        help="convert a Keras model to TFLite (float, fp16, dynamic or full int8), verified",
        description="Convert MODEL.keras (a sketch, landmark or two-stream model, or any Keras model with "
        "one input) to TFLite with builtin ops only. int8 is full-integer post-training quantization "
        "calibrated on real faces' sketches, landmarks or aligned crops (or --calibration). The result is checked against the Keras model on held-out inputs: top-1 "
        "agreement and both accuracies are printed, and nothing is written when agreement is below "
        "--min-agreement.",
    )
    cv.add_argument("model", metavar="MODEL.keras")
    cv.add_argument("--out", "-o", required=True, metavar="MODEL.tflite")
    cv.add_argument("--quantize", choices=["none", "fp16", "dynamic", "int8"], default="int8",
                    help="default int8")
    cv.add_argument("--int8-io", action="store_true", help="int8 input and output tensors (with --quantize int8)")
    cv.add_argument("--calibration", metavar="FILE.npy|.npz",
                    help="float inputs for calibration and verification, shaped like the model's input "
                    "(an .npz of arrays named after the inputs for a model with several, e.g. sketch and face); "
                    "the first half calibrates, the second verifies (default: real faces from the landmark "
                    "cache; needed for other models)")
    cv.add_argument("--min-agreement", type=float, default=0.98, help="default 0.98")
    cv.add_argument("--percentile", type=float, metavar="P",
                    help="int8 only: re-measure each activation's range on the calibration inputs and "
                    "clip it to their P-th percentile (and 100-P) instead of TFLite's min/max, which is "
                    "too wide around residual sums and stretched by outliers; 100 = exact min/max. "
                    "The shipped ResNet50 uses 99.9995 (docs/experiments.md). Default: TFLite's min/max")
    cv.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    try:
        from ..convert import ConversionError, convert, percentile_problem
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
            loaded = np.load(args.calibration, allow_pickle=False)
            arrays = {k: loaded[k].astype(np.float32) for k in loaded.files} if hasattr(loaded, "files") \
                else {"": loaded.astype(np.float32)}
        except (OSError, ValueError) as e:
            raise UsageError(f"--calibration {args.calibration}: {e}") from None
        n = min(len(a) for a in arrays.values())
        cal = {k: a[: n // 2] for k, a in arrays.items()}  # halves: calibrate, verify
        ver = {k: a[n // 2: n] for k, a in arrays.items()}
        if list(arrays) == [""]:
            cal, ver = cal[""], ver[""]
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
