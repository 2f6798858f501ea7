"""Re-score a cross-dataset run's kept predictions: balanced decisions and ensembles,
without training again.

    python tools/experiments/rescore.py /tmp/cv/two_stream --tau 0 0.5 1
    python tools/experiments/rescore.py /tmp/cv/two_stream /tmp/cv/landmarks --tau 1

Each DIR is a ``fastes crossval ... --workdir DIR`` folder (``lodo-<set>.npz``,
``ferplus-valid.npz``). Several DIRs: the mean of their probabilities. ``--tau T``
divides the probabilities by the class shares of that split's own training rows to the
power T, what ``fastes crossval --balance T`` (``fastes.train.balance``) does inside the
model: the same decisions, computed from the kept probabilities. ``--within W`` (runs of
``--fine-labels``, which keep the 7 emotion probabilities) re-decides with each emotion
also divided by its share within its class to the power W, what ``--balance-within W``
does inside the model. Prints accuracy per held-out set, the LODO mean and lowest, and
FER+ valid (majority rows) where kept. Findings: docs/accuracy.md, "Balanced decisions"
and "Rare emotions lifted within their class".
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fastes import CLASSES
from fastes.data import EMOTION_CLASS, POSED, data_root
from fastes.evaluate import metrics
from fastes.protocol import ferplus_split, load_all, lodo_splits
from fastes.train import within_class_shift


def rescored(probs: np.ndarray, prior: np.ndarray, tau: float) -> np.ndarray:
    """Predictions from ``probs / prior**tau`` (a missed face, NaN, stays -1)."""
    p = probs / prior ** tau
    return np.where(np.isfinite(p).all(1), np.nan_to_num(p, nan=-1.0).argmax(1), -1)


def emotions(data) -> np.ndarray:
    """Each FaceSet row's original emotion, from the manifest (matched by path)."""
    import csv

    root = data_root() / "faces"
    with open(root / "manifest.csv", newline="") as f:
        by_path = {str((root / r["path"]).resolve()): r["emotion"] for r in csv.DictReader(f)}
    return np.array([by_path.get(str(Path(p).resolve()), "") for p in data.paths])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dirs", nargs="+", type=Path)
    ap.add_argument("--tau", type=float, nargs="+", default=[0.0, 1.0])
    ap.add_argument("--within", type=float, nargs="+", default=[],
                    help="fine-label runs: also re-decide from the kept emotion probabilities, each divided "
                    "by (its share within its class x the class's emotions) to the power W (the kept ones carry the run's --balance)")
    ap.add_argument("--groups", action="store_true",
                    help="also accuracy per gender, age and ethnicity over all held-out posed rows (n >= 20)")
    ap.add_argument("--emotions", action="store_true",
                    help="also, per held-out set, each original emotion's accuracy and where its faces went")
    args = ap.parse_args()
    data = load_all(progress=False)
    emotion = emotions(data) if args.emotions else None
    splits = [(f"lodo-{n}", tr, te) for n, tr, te in lodo_splits(data, POSED)]
    tr, te = ferplus_split(data, majority=False)
    splits.append(("ferplus-valid", tr, te))
    rules = [(tau, None) for tau in args.tau] + [(0.0, w) for w in args.within]
    for tau, within in rules:
        accs, f1s, pooled = {}, {}, []
        for name, train, test in splits:
            files = [d / f"{name}.npz" for d in args.dirs]
            if not all(f.exists() for f in files):
                continue
            if within is None:
                probs = np.mean([np.load(f)["probs"] for f in files], axis=0)
                prior = data.targets[train & data.found].mean(0)
                pred = rescored(probs, prior, tau)
            else:
                fine = np.mean([np.load(f)["fine"] for f in files], axis=0)
                shift = within_class_shift(data.fine[train & data.found].mean(0), EMOTION_CLASS)
                summed = (fine / np.exp(within * shift)) @ np.eye(len(CLASSES))[EMOTION_CLASS]
                pred = rescored(summed, np.ones(len(CLASSES)), 0.0)
            y = data.labels[test]
            if name.startswith("lodo-"):
                pooled.append((np.flatnonzero(test), pred == y))
                if emotion is not None and (tau, within) == rules[-1]:
                    e = emotion[test]
                    for k in sorted(set(e)):
                        m = e == k
                        print(f"  {name[5:]} {k} ({m.sum()}): accuracy {(pred[m] == y[m]).mean():.2f}, predicted "
                              + " ".join(f"{c} {n}" for c, n in zip(CLASSES, np.bincount(pred[m] + 1, minlength=5)[1:])))
            if name == "ferplus-valid":  # majority rows, as the protocol reports
                maj = data.majority[test]
                pred, y = pred[maj], y[maj]
            accs[name.removeprefix("lodo-")] = float((pred == y).mean())
            f1s[name.removeprefix("lodo-")] = metrics(y, pred, {})["macro_f1"]
        lodo = [accs[s] for s in POSED if s in accs]
        line = "  ".join(f"{k} {v:.3f}" for k, v in accs.items())
        if len(lodo) == len(POSED):
            line += (f"  | LODO mean {np.mean(lodo):.3f} lowest {min(lodo):.3f}, "
                     f"mean macro F1 {np.mean([f1s[s] for s in POSED]):.3f}")
        if "ferplus-valid" in f1s:
            line += f"  | FER+ valid macro F1 {f1s['ferplus-valid']:.3f}"
        print(f"{'tau' if within is None else 'within'} {tau if within is None else within:g}: {line}")
        if args.groups and pooled:
            idx = np.concatenate([i for i, _ in pooled])
            ok = np.concatenate([c for _, c in pooled])
            for col in ("gender", "age", "ethnicity"):
                g = np.asarray(data.groups[col])[idx]
                cells = [f"{v or 'unknown'} {ok[g == v].mean():.3f} ({(g == v).sum()})"
                         for v in sorted(set(g)) if (g == v).sum() >= 20]
                print(f"  {col}: " + ", ".join(cells))


if __name__ == "__main__":
    main()
