"""Ensembles of cross-validated networks (and the landmark regression), scored on the
same held-out faces: does averaging what the folds learned reach the issue's targets?

    python tools/experiments/ensemble_cv.py RUN@DIR [RUN@DIR ...] [--tta 8] [--logreg]

``RUN@DIR``: a run spec and the ``--workdir`` it was cross-validated with by
``tools/experiments/cross_validate.py RUN --workdir DIR`` (5-fold subject-disjoint, Haar landmarks).
Each member's held-out probabilities come from its stored folds (``fold{f}.npz``);
with ``--tta N`` every fold model is rebuilt from its weights and predicts its held-out
faces through ``fastes.runtime.Augmented`` (N copies; cached beside the weights as
``heldout_tta{N}.npy``). ``--logreg`` adds the softmax regression on all 68 remapped
points (``tools/experiments/baseline_logreg.py``, same folds). Members are averaged with equal
weight. Every subset of members is scored; choosing the best subset on the faces it is
scored on is optimistic, so the ensemble of all members is the figure to quote.
A missed face counts as wrong, as everywhere.
Findings: docs/experiments.md, "Do ensembles help?"
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path

import numpy as np


def member_probs(spec: str, workdir: Path, faces, folds: np.ndarray, tta: int) -> np.ndarray:
    """(N, 4) held-out probabilities of one cross-validation run (NaN: no face)."""
    from cross_validate import parse_run

    from fastes.runtime import Augmented, KerasClassifier
    from fastes.train import fold_model

    wd = workdir / spec.replace(":", "_")
    if not (wd / "fold4.npz").exists():
        raise SystemExit(f"{wd}: no finished folds (run tools/experiments/cross_validate.py {spec} --workdir {workdir})")
    cache = wd / f"heldout_tta{tta}.npy"
    if tta and cache.exists():
        return np.load(cache)
    cfg = parse_run(spec)
    probs = np.full((len(faces), 4), np.nan, np.float32)
    for f in range(5):
        te = (folds == f) & faces.found
        if tta:
            clf = KerasClassifier.from_model(fold_model(cfg, wd, f), f"fold{f}")
            probs[te] = Augmented(clf, tta)(faces.landmarks[te])
        else:
            probs[te] = np.load(wd / f"fold{f}.npz")["probs"]
    if tta:
        np.save(cache, probs)
    return probs


def logreg_probs(faces, folds: np.ndarray, points: np.ndarray | None = None) -> np.ndarray:
    """(N, 4) held-out probabilities of the softmax regression on the remapped landmarks
    (all 68, or ``points``); NaN where no face was found."""
    from baseline_logreg import fit_proba

    from fastes import remap

    idx = np.arange(68) if points is None else np.asarray(points)
    x = np.zeros((len(faces), 2 * len(idx)))
    x[faces.found] = remap(faces.landmarks[faces.found])[:, idx].reshape(-1, 2 * len(idx))
    probs = np.full((len(faces), 4), np.nan, np.float32)
    for f in range(5):
        tr, te = faces.found & (folds != f), faces.found & (folds == f)
        probs[te] = fit_proba(x[tr], faces.labels[tr], x[te])
    return probs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("members", nargs="+", metavar="RUN@DIR", help="a run spec and its --workdir")
    ap.add_argument("--tta", type=int, default=0, metavar="N", help="N-copy test-time augmentation per network")
    ap.add_argument("--logreg", action="store_true", help="add the 68-point logistic regression as a member")
    a = ap.parse_args(argv)
    sys.path.insert(0, os.fspath(Path(__file__).resolve().parents[2]))
    from fastes.data import subject_folds
    from fastes.evaluate import MISSED, group_accuracies, metrics
    from fastes.train import load_faces

    faces = load_faces()
    folds = subject_folds(faces.subjects, faces.labels, k=5, seed=0)
    members: dict[str, np.ndarray] = {}
    for m in a.members:
        if "@" not in m:
            ap.error(f"{m}: expected RUN@DIR")
        spec, wd = m.split("@", 1)
        members[spec] = member_probs(spec, Path(wd), faces, folds, a.tta)
    if a.logreg:
        members["logreg68"] = logreg_probs(faces, folds)

    def score(names):
        p = np.mean([members[n] for n in names], 0)
        pred = np.where(np.isnan(p[:, 0]), MISSED, np.nan_to_num(p).argmax(1))
        return metrics(faces.labels, pred, faces.groups)

    def line(names, m):
        g = m["per_group"]
        eth = {k: v["accuracy"] for k, v in g["ethnicity"].items() if v["n"] >= 20}
        ds = group_accuracies(m, "dataset")
        return (f"{m['accuracy']:.3f}  F1 {m['macro_f1']:.3f}  groups {min(eth.values()):.3f}-"
                f"{max(eth.values()):.3f}  ({ds})  {' + '.join(names)}")

    tag = f", {a.tta}-copy TTA" if a.tta else ""
    print(f"{len(faces)} posed faces, 5-fold subject-disjoint{tag}; accuracy, macro F1, "
          f"worst-best ethnicity (>= 20 images), per dataset, members")
    results = []
    for r in range(1, len(members) + 1):
        for names in itertools.combinations(members, r):
            results.append((names, score(names)))
    for names, m in sorted(results, key=lambda t: -t[1]["accuracy"]):
        print(line(names, m))
    every = results[-1][1]
    print(f"\nall {len(members)} members: {line(results[-1][0], every)}")
    print("confusion (rows true; positive, negative, awe, neutral):")
    for row in every["confusion"]:
        print("  " + " ".join(f"{v:4d}" for v in row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
