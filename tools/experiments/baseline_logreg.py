"""The floor to beat: multinomial logistic regression on remapped landmark coordinates,
5-fold subject-disjoint over the posed sets (jaffe, ckplus, fei, london).

    python tools/experiments/baseline_logreg.py            # needs the landmark cache (built on demand)
    python tools/experiments/baseline_logreg.py --train-detector haar --test-detector blazeface
    python tools/experiments/baseline_logreg.py --augmented

The second form trains each fold on one front end's landmarks and tests on another's:
does a model fitted on the paper's Haar path lose accuracy on BlazeFace landmarks?

Features: the 34 drawn points (brows, eyes, outer mouth) after `fastes.remap`, or all
68 remapped points; standardized per fold on the training part. A missed face counts
as wrong in `accuracy`; `accuracy_detected` leaves those rows out.

``--augmented`` also fits each fold on 8 augmented copies of its training faces, with
the networks' augmentation (``fastes.sketch.augment``) and variants of it: how much of
the floor's lead over the networks comes from training on plain landmarks.
Findings: docs/experiments.md, "Why do the networks not beat a linear model on the landmarks?"
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from fastes import CLASSES, remap
from fastes.data import LandmarkCache, data_root, read_manifest, subject_folds
from fastes.face import FaceFinder
from fastes.sketch import PARTS

DRAWN = np.concatenate([np.arange(a, b + 1) for a, b, _ in PARTS])


def fit_predict(xtr, ytr, xte, l2=1e-4, steps=3000, lr=0.5):
    """Class of each row of ``xte`` (see :func:`fit_proba`)."""
    return fit_proba(xtr, ytr, xte, l2, steps, lr).argmax(1)


def fit_proba(xtr, ytr, xte, l2=1e-4, steps=3000, lr=0.5):
    """Softmax regression by full-batch gradient descent (small data: this is enough);
    class probabilities of the rows of ``xte``."""
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
    z = xte @ w + b
    p = np.exp(z - z.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)


def _remapped(samples, detector: str):
    found, _, _, lms = LandmarkCache(FaceFinder(detector)).get([s.path for s in samples])
    r = np.zeros_like(lms, dtype=np.float64)
    r[found] = remap(lms[found])
    return found, r, lms


AUGMENTATIONS = {  # name -> fastes.sketch.augment settings
    "networks' (rotate 8, jitter 1.5, mirror)": {},
    "mirror only": {"rotate": 0.0, "jitter": 0.0},
    "no mirror": {"mirror": False},
    "jitter 0.5": {"jitter": 0.5},
}


def augmented_accuracy(lms, found, y, folds, idx, settings: dict, copies: int = 8) -> float:
    """Accuracy (missed faces wrong) of the regression fitted on augmented copies."""
    from fastes.sketch import augment

    correct = np.zeros(len(y), dtype=bool)
    for f in range(5):
        tr, te = found & (folds != f), found & (folds == f)
        rng = np.random.default_rng(f)
        a = np.concatenate([augment(lms[tr], rng, **settings) for _ in range(copies)]).astype(np.float64)
        x_tr = remap(a)[:, idx].reshape(len(a), -1)
        x_te = remap(lms[te].astype(np.float64))[:, idx].reshape(te.sum(), -1)
        correct[te] = fit_predict(x_tr, np.tile(y[tr], copies), x_te) == y[te]
    return float(correct.mean())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train-detector", default="haar", help="front end of the training folds (default haar)")
    ap.add_argument("--test-detector", help="front end of the test folds (default: the same)")
    ap.add_argument("--augmented", action="store_true",
                    help="also fit on augmented copies (the networks' augmentation and variants)")
    args = ap.parse_args()
    samples = [s for s in read_manifest(data_root() / "faces" / "manifest.csv")
               if s.groups["dataset"] in ("jaffe", "ckplus", "fei", "london")]
    found_tr, r_tr, lms_tr = _remapped(samples, args.train_detector)
    found_te, r_te, _ = (found_tr, r_tr, lms_tr) if args.test_detector in (None, args.train_detector) \
        else _remapped(samples, args.test_detector)
    y = np.array([s.label for s in samples])
    folds = subject_folds([s.subject for s in samples], y, k=5, seed=0)
    print(f"{len(samples)} posed images, {found_tr.sum()} / {found_te.sum()} with a face "
          f"(train / test front end: {args.train_detector} / {args.test_detector or args.train_detector})")
    ok = found_te
    for name, idx in (("34 drawn points", DRAWN), ("all 68 points", np.arange(68))):
        x_tr = r_tr[:, idx].reshape(len(r_tr), -1)
        x_te = r_te[:, idx].reshape(len(r_te), -1)
        correct = np.zeros(len(y), dtype=bool)
        for f in range(5):
            tr, te = found_tr & (folds != f), ok & (folds == f)
            correct[te] = fit_predict(x_tr[tr], y[tr], x_te[te]) == y[te]
        print(f"{name}: accuracy {correct.mean():.3f} (missed faces wrong), "
              f"accuracy_detected {correct[ok].mean():.3f}")
        if args.augmented and args.test_detector in (None, args.train_detector):
            for aug, settings in AUGMENTATIONS.items():
                acc = augmented_accuracy(lms_tr, found_tr, y, folds, idx, settings)
                print(f"  fitted on 8 augmented copies, {aug}: accuracy {acc:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
