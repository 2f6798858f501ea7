"""The two-stream classifier's time per face by face-crop size and member count, side by side.

Weights do not change an int8 model's time, so the models are untrained (seeded) and
calibrated on random inputs; each is timed at batch 1, one thread, the rounds interleaved
so that a shared machine's load falls on all of them alike.

    python tools/experiments/face_size_speed.py [--sizes 48 64] [--members 1 2] [--rounds 5]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def int8_file(face_size: int, members: int, path: str) -> None:
    import keras

    from fastes.convert import convert
    from fastes.twostream import FACE, SKETCH, average, build

    keras.utils.set_random_seed(0)
    models = [build(48, face_size, width=0.25, fine=True) for _ in range(members)]
    model = average(models) if members > 1 else models[0]
    rng = np.random.default_rng(0)
    x = {SKETCH: rng.random((64, 48, 48, 1), np.float32),
         FACE: rng.random((64, face_size, face_size, 1), np.float32)}
    convert(model, out=path, calibration=x, verify=x, min_agreement=0.0)


def per_call_ms(interp, n: int) -> float:
    interp.invoke()
    t = time.perf_counter()
    for _ in range(n):
        interp.invoke()
    return (time.perf_counter() - t) / n * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[48, 64])
    ap.add_argument("--members", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=500)
    args = ap.parse_args()
    from fastes.runtime import interpreter_class

    Interpreter = interpreter_class()
    interps, times = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for s in args.sizes:
            for k in args.members:
                path = os.path.join(tmp, f"ts{s}_{k}.tflite")
                int8_file(s, k, path)
                it = Interpreter(model_path=path, num_threads=1)
                it.allocate_tensors()
                for d in it.get_input_details():
                    it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
                interps[s, k], times[s, k] = it, []
                print(f"face {s} px, {k} member(s): {os.path.getsize(path) / 1e6:.2f} MB")
        for _ in range(args.rounds):
            for key, it in interps.items():
                times[key].append(per_call_ms(it, args.calls))
    for (s, k), t in times.items():
        print(f"face {s} px, {k} member(s): median {np.median(t):.3f} ms per face (rounds {min(t):.3f}-{max(t):.3f})")


if __name__ == "__main__":
    main()
