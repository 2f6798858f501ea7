"""Does the default front end cost accuracy on unseen faces? Cross-validated fold models
trained on one detector's landmarks, tested on their held-out faces with another's.

    python tools/experiments/cross_front_end.py RUN --workdir DIR [--train-detector haar] [--test-detector blazeface]
                                    [--tta N]

``RUN`` and ``DIR`` as given to ``tools/experiments/cross_validate.py RUN --workdir DIR`` (which keeps
each fold's weights): every fold's model is rebuilt from ``DIR/<run>/fold{f}.weights.h5``
and predicts its held-out faces twice, from the landmarks of each front end (a face the
front end misses counts as wrong, as everywhere). The folds are recomputed exactly as
the run made them (same rows, same seed). Prints both accuracies per fold and overall,
and the share of held-out faces whose label changes. ``--tta N`` also scores the
training front end's landmarks through ``fastes.runtime.Augmented`` (test-time
augmentation, N copies), the code ``--tta`` runs in ``fastes run`` / ``evaluate``.
Findings: docs/experiments.md, "Does the default front end (BlazeFace) cost accuracy? / Does test-time augmentation help?"
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="the run spec, e.g. vgg11:48:none:60:dropout=0.1:width=0.25")
    ap.add_argument("--workdir", required=True, help="the --workdir of tools/experiments/cross_validate.py")
    ap.add_argument("--train-detector", default="haar", help="front end the folds were trained on (default haar)")
    ap.add_argument("--test-detector", default="blazeface", help="front end to test with (default blazeface)")
    ap.add_argument("--tta", type=int, default=0, metavar="N", help="also score with N-copy test-time augmentation")
    a = ap.parse_args(argv)
    sys.path.insert(0, os.fspath(Path(__file__).resolve().parents[2]))
    from cross_validate import parse_run

    from fastes.data import subject_folds
    from fastes.evaluate import MISSED, group_accuracies, metrics
    from fastes.runtime import Augmented, KerasClassifier
    from fastes.train import fold_model, load_faces, predict

    cfg = parse_run(a.run)
    tag = "" if a.train_detector == "haar" else f"@{a.train_detector}"
    wd = Path(a.workdir) / (a.run.replace(":", "_") + tag)
    if not (wd / "fold0.weights.h5").exists():
        ap.error(f"no fold weights in {wd} (run tools/experiments/cross_validate.py {a.run} --workdir {a.workdir} first)")
    sets = {d: load_faces(detector=d) for d in (a.train_detector, a.test_detector)}
    ref = sets[a.train_detector]
    for d, s in sets.items():  # the same rows in the same order, whatever the front end
        if s.paths != ref.paths or not (s.labels == ref.labels).all():
            raise SystemExit(f"{d}: rows differ from {a.train_detector}'s")
    folds = subject_folds(ref.subjects, ref.labels, k=5, seed=0)
    pred = {d: np.full(len(ref), MISSED, np.int64) for d in sets}
    pred_tta = np.full(len(ref), MISSED, np.int64)
    for f in range(5):
        model = fold_model(cfg, wd, f)
        line = [f"fold {f}:"]
        for d, s in sets.items():
            te = (folds == f) & s.found
            pred[d][te] = predict(model, cfg.draw(s.landmarks[te])).argmax(1)
            held = folds == f
            line.append(f"{d} {(pred[d][held] == ref.labels[held]).mean():.3f}")
        if a.tta:
            te = (folds == f) & ref.found
            pred_tta[te] = Augmented(KerasClassifier.from_model(model, f"fold{f}"), a.tta)(ref.landmarks[te]).argmax(1)
            line.append(f"{a.train_detector}+tta{a.tta} {(pred_tta[held] == ref.labels[held]).mean():.3f}")
        print(" ".join(line), flush=True)
    if a.tta:
        m = metrics(ref.labels, pred_tta, ref.groups)
        per = group_accuracies(m, "dataset")
        print(f"{a.train_detector} landmarks, {a.tta}-copy TTA: accuracy {m['accuracy']:.3f}, "
              f"macro F1 {m['macro_f1']:.3f} ({per})")
    both = (pred[a.train_detector] != MISSED) & (pred[a.test_detector] != MISSED)
    for d in sets:
        m = metrics(ref.labels, pred[d], ref.groups)
        per = group_accuracies(m, "dataset")
        print(f"{d} landmarks: accuracy {m['accuracy']:.3f}, macro F1 {m['macro_f1']:.3f} ({per})")
    changed = (pred[a.train_detector][both] != pred[a.test_detector][both]).mean()
    print(f"label changed on {changed:.3f} of the {both.sum()} faces both front ends found")
    right = {d: pred[d] == ref.labels for d in sets}
    n_tr, n_te = int((right[a.train_detector] & ~right[a.test_detector]).sum()), int(
        (right[a.test_detector] & ~right[a.train_detector]).sum())
    print(f"right only with {a.train_detector}: {n_tr}, only with {a.test_detector}: {n_te} "
          f"(exact sign test, two-sided p = {sign_test(n_tr, n_te):.3f})")
    return 0


def sign_test(a: int, b: int) -> float:
    """Two-sided exact binomial (McNemar) p-value of ``a`` vs ``b`` discordant pairs."""
    n, k = a + b, min(a, b)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


if __name__ == "__main__":
    sys.exit(main())
