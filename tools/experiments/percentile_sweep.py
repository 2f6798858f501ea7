"""int8 agreement with Keras for several percentile calibrations (``fastes convert --percentile``).

    python tools/experiments/percentile_sweep.py runs/resnet50/model.keras [--calibration 256 1024]
        [--percentiles 100 99.9995 99.999 99.998 99.995 99.99]

Wild faces of the landmark cache, shuffled as ``fastes.convert.sketch_sets`` does: the
first 600 are its verification faces; calibration takes the next n/2 wild faces and n/2
posed ones (n = 256 is ``fastes convert``'s own set); the wild faces after the largest
calibration set are a *selection* set, for choosing P without looking at the 600.
Prints top-1 agreement of TFLite's own min/max calibration and of each P on both sets.
Calibration runs once per size; each P only re-quantizes. Needs the ``train`` extra.
Measured on the shipped ResNet50 (docs/experiments.md, int8): 0.972 -> 0.983 at 99.9995.
"""
from __future__ import annotations

import argparse

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--calibration", type=int, nargs="+", default=[256, 1024], metavar="N")
    ap.add_argument("--percentiles", type=float, nargs="+", default=[100, 99.9995, 99.999, 99.998, 99.995, 99.99])
    args = ap.parse_args(argv)

    from fastes.convert import (_calibrate, _load, _quantize_at, calibration_landmarks, int8_setup,
                                run_tflite, saved_model_converter, shuffled_faces)
    from fastes.sketch import render

    m = _load(args.model)
    size = int(m.inputs[0].shape[1])
    posed, wild, wi, pi = shuffled_faces()  # the order of sketch_sets
    sets = {"verification": wi[:600], "selection": wi[600 + max(args.calibration) // 2:]}
    x = {k: render(wild.landmarks[v], size) for k, v in sets.items()}
    ref = {k: np.asarray(m.predict(v, batch_size=128, verbose=0)).argmax(1) for k, v in x.items()}
    print(f"selection {len(sets['selection'])} faces, verification {len(sets['verification'])}")

    def report(label, content):
        agree = {k: float((run_tflite(content, v).argmax(1) == ref[k]).mean()) for k, v in x.items()}
        print(f"{label:28s} selection {agree['selection']:.4f}  verification {agree['verification']:.4f}",
              flush=True)

    for n in args.calibration:
        cal = render(calibration_landmarks(posed, wild, wi, pi, n, 600), size)
        with saved_model_converter(m) as conv:
            int8_setup(conv, cal)
            report(f"n={n} TFLite min/max", conv.convert())
        with saved_model_converter(m) as conv:
            int8_setup(conv, cal)
            calibrated, tails = _calibrate(conv, cal, min(args.percentiles))
        for p in args.percentiles:
            report(f"n={n} P={p}", _quantize_at(calibrated, tails, p, False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
