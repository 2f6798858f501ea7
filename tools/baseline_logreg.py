"""The floor to beat: multinomial logistic regression on remapped landmark coordinates,
5-fold subject-disjoint over the posed sets (jaffe, ckplus, fei, london).

    python tools/baseline_logreg.py            # needs the landmark cache (built on demand)

Features: the 34 drawn points (brows, eyes, outer mouth) after `fastes.remap`, or all
68 remapped points; standardized per fold on the training part. A missed face counts
as wrong in `accuracy`; `accuracy_detected` leaves those rows out.
"""
from __future__ import annotations

import sys

import numpy as np

from fastes import CLASSES, remap
from fastes.data import LandmarkCache, data_root, read_manifest, subject_folds
from fastes.sketch import PARTS

DRAWN = np.concatenate([np.arange(a, b + 1) for a, b, _ in PARTS])


def fit_predict(xtr, ytr, xte, l2=1e-4, steps=3000, lr=0.5):
    """Softmax regression by full-batch gradient descent (small data: this is enough)."""
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    k = len(CLASSES)
    w = np.zeros((xtr.shape[1], k))
    b = np.zeros(k)
    onehot = np.eye(k)[ytr]
    for _ in range(steps):
        z = xtr @ w + b
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        g = (p - onehot) / len(xtr)
        w -= lr * (xtr.T @ g + l2 * w)
        b -= lr * g.sum(0)
    return (xte @ w + b).argmax(1)


def main() -> int:
    samples = [s for s in read_manifest(data_root() / "faces" / "manifest.csv")
               if s.groups["dataset"] in ("jaffe", "ckplus", "fei", "london")]
    found, _, _, lms = LandmarkCache().get([s.path for s in samples])
    y = np.array([s.label for s in samples])
    folds = subject_folds([s.subject for s in samples], y, k=5, seed=0)
    print(f"{len(samples)} posed images, {found.sum()} with a face")
    ok = found.copy()
    r = np.zeros_like(lms, dtype=np.float64)
    r[ok] = remap(lms[ok])
    for name, idx in (("34 drawn points", DRAWN), ("all 68 points", np.arange(68))):
        x = r[:, idx].reshape(len(r), -1)
        correct = np.zeros(len(y), dtype=bool)
        for f in range(5):
            tr, te = ok & (folds != f), ok & (folds == f)
            correct[te] = fit_predict(x[tr], y[tr], x[te]) == y[te]
        print(f"{name}: accuracy {correct.mean():.3f} (missed faces wrong), "
              f"accuracy_detected {correct[ok].mean():.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
