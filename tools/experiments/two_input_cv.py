"""Experiment: VGG11 on the sketch plus the exact remapped landmark coordinates.

    python tools/experiments/two_input_cv.py [--points 34|68] [--width 0.25] [--epochs 60] [--jitter 1.5]
                                 [--rotate 8] [--no-mirror] [--out FILE.jsonl]

The networks lose to logistic regression on the points themselves (0.73 vs 0.77,
docs/experiments.md), and the sketch quantizes each point to ~5 px at 48 px input. This
feeds the remapped points (the 34 drawn ones, or all 68) as a second input beside the
sketch: VGG11's conv trunk on the sketch, a 2-layer MLP on the points, concatenated
before the classifier. Same 5-fold subject-disjoint folds, augmentation and schedule as
``tools/experiments/cross_validate.py``; prints accuracy, macro F1 and per-dataset accuracy, and
appends one JSON line to ``--out``. A measurement only: the runtime feeds sketches alone.
Findings: docs/experiments.md, "Why do the networks not beat a linear model on the landmarks?"
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from baseline_logreg import DRAWN  # tools/: the 34 points the sketch draws


def model(size: int, n_points: int, width: float, dropout: float):
    import keras
    from keras import layers

    from fastes.nets import vgg11

    trunk = vgg11(size, width=width, dropout=dropout)
    feat = trunk.get_layer("flatten").output
    pts = keras.Input((n_points * 2,), name="points")
    p = layers.Dense(128, activation="relu")(pts)
    p = layers.Dense(128, activation="relu")(p)
    x = layers.Concatenate()([feat, p])
    for j in range(2):
        x = layers.Dense(256, activation="relu")(x)
        x = layers.Dropout(dropout)(x)
    out = layers.Dense(4, activation="softmax")(x)
    return keras.Model([trunk.input, pts], out, name="vgg11_points")


def points(lms: np.ndarray, idx: np.ndarray) -> np.ndarray:
    from fastes.sketch import remap

    p = remap(lms)[:, idx]  # sketch coordinates, 0..250
    return ((p - 125.0) / 125.0).reshape(len(p), -1).astype(np.float32)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, choices=(34, 68), default=68)
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--jitter", type=float, default=1.5, help="augmentation point jitter, px (default 1.5)")
    ap.add_argument("--rotate", type=float, default=8.0, help="augmentation rotation, degrees (default 8)")
    ap.add_argument("--no-mirror", action="store_true", help="no mirrored copies in the augmentation")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import keras

    from fastes.data import subject_folds
    from fastes.evaluate import metrics
    from fastes.sketch import render
    from fastes.train import TrainConfig, augment, fit, load_faces, predict

    cfg = TrainConfig(net="vgg11", size=args.size, epochs=args.epochs, width=args.width, jitter=args.jitter,
                      rotate=args.rotate, mirror=not args.no_mirror)
    idx = DRAWN if args.points == 34 else np.arange(68)

    def inputs(lms):
        return [render(lms, args.size), points(lms, idx)]

    data = load_faces(progress=False)
    folds = subject_folds(data.subjects, data.labels, k=5, seed=0)
    probs = np.full((len(data), 4), np.nan, np.float32)
    t0 = time.perf_counter()
    for f in range(5):
        tr = (folds != f) & data.found
        lms = data.landmarks[tr]
        keras.utils.set_random_seed(cfg.seed)
        m = model(args.size, args.points, args.width, cfg.dropout)
        fit(m, lambda ep: inputs(augment(lms, np.random.default_rng((cfg.seed, ep)), **cfg.augmentation())),
            data.labels[tr], cfg, cfg.epochs, progress=False)
        te = (folds == f) & data.found
        probs[te] = predict(m, inputs(data.landmarks[te]))
        print(f"fold {f + 1}/5 done, {time.perf_counter() - t0:.0f} s", flush=True)
    pred = np.where(data.found, np.nan_to_num(probs).argmax(1), -1)
    res = metrics(data.labels, pred, data.groups)
    acc, f1 = res["accuracy"], res["macro_f1"]
    per = {k: round(v["accuracy"], 3) for k, v in res["per_group"]["dataset"].items()}
    rec = {"net": "vgg11+points", "points": args.points, "width": args.width, "size": args.size,
           "epochs": args.epochs, **cfg.augmentation(), "accuracy": acc, "macro_f1": f1, "per_dataset": per,
           "confusion": res["confusion"], "seconds": time.perf_counter() - t0,
           "per_group": {c: {v: round(d["accuracy"], 3) for v, d in g.items() if d["n"] >= 20}
                         for c, g in res["per_group"].items()}}
    print(json.dumps(rec))
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(json.dumps(rec) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
