"""Which layers does int8 hurt? TensorFlow's quantization debugger on a sketch model.

    python tools/quant_debug.py runs/resnet50/model.keras [--deny 5 10 20]

Converts the model to int8 (calibration and verification sketches as `fastes convert`
makes them), prints the layers with the largest quantization error (rmse / scale:
uniform rounding alone gives 1/sqrt(12) = 0.289), then, for each ``--deny`` N, keeps
the N worst layers in float and prints top-1 agreement with Keras on the 600
verification sketches and the file size. Needs the ``train`` extra.
Measured on the shipped-recipe ResNet50: every layer 0.29-0.31; keeping 5 / 10 / 20
layers in float: agreement 0.975 / 0.973 / 0.978 (all-int8 0.970-0.977).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--deny", type=int, nargs="*", default=[5, 10, 20])
    ap.add_argument("--top", type=int, default=15, help="layers to list (default 15)")
    args = ap.parse_args(argv)
    import tensorflow as tf

    from fastes.convert import _load, int8_setup, run_tflite, saved_model_converter, sketch_sets

    m = _load(args.model)
    xc, xv, _ = sketch_sets(int(m.inputs[0].shape[1]))
    ref = np.asarray(m.predict(xv, batch_size=128, verbose=0)).argmax(1)
    stack = contextlib.ExitStack()  # each debugger gets its own converter (same export)

    def converter():
        conv = stack.enter_context(saved_model_converter(m))
        int8_setup(conv, xc)
        conv.target_spec.supported_ops += [tf.lite.OpsSet.TFLITE_BUILTINS]  # denied layers stay float
        return conv

    debug = tf.lite.experimental.QuantizationDebugger(
        converter=converter(), debug_dataset=lambda: ([xv[i:i + 1]] for i in range(0, len(xv), 6)))
    debug.run()
    buf = io.StringIO()
    debug.layer_statistics_dump(buf)
    buf.seek(0)
    rows = []
    for r in csv.DictReader(buf):
        try:
            r["rmse/scale"] = float(r["mean_squared_error"]) ** 0.5 / float(r["scale"])
        except (ValueError, ZeroDivisionError):
            continue
        rows.append(r)
    rows.sort(key=lambda r: -r["rmse/scale"])
    for r in rows[:args.top]:
        print(f"{r['rmse/scale']:.3f}  {r['op_name']:16s} {r['tensor_name'][:80]}")
    for n in args.deny:
        opts = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=[r["tensor_name"] for r in rows[:n]])
        d = tf.lite.experimental.QuantizationDebugger(
            converter=converter(), debug_dataset=lambda: ([xv[i:i + 1]] for i in range(2)), debug_options=opts)
        content = d.get_nondebug_quantized_model()
        agree = float((run_tflite(content, xv).argmax(1) == ref).mean())
        print(f"{n} worst layers in float: agreement {agree:.3f}, {len(content) / 1e6:.1f} MB")
    stack.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
