"""Accuracy the honest way: every manifest row counts, a missed face counts as wrong.

:func:`metrics` turns truths and predictions (``-1`` = no face found) into the numbers
``fastes evaluate`` reports: accuracy over all rows and over detected faces, macro
precision/recall/F1 (a missed face lowers its class's recall), the 4x4 confusion matrix
over detected faces, the paper's Table V per-class figures and accuracy per group.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from . import CLASSES

__all__ = ["metrics", "group_value", "write_report", "evaluate_manifest"]

MISSED = -1


def group_value(column: str, value: str) -> str:
    """Report value of a group column: numeric ages are binned by decade ("20-29"), an
    empty value is "unknown"."""
    value = (value or "").strip()
    if not value or value.upper() in ("NA", "N/A", "NAN", "UNKNOWN"):
        return "unknown"
    if column == "age" and re.fullmatch(r"\d+", value):
        lo = int(value) // 10 * 10
        return f"{lo}-{lo + 9}"
    return value


def _safe_div(a, b):
    return float(a) / float(b) if b else 0.0


def metrics(y_true, y_pred, groups: dict | None = None, n_classes: int = len(CLASSES)) -> dict:
    """Metrics of predicted class indices ``y_pred`` (``-1`` where no face was found)
    against ``y_true``. ``groups``: column -> per-row values, for ``per_group``."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError("y_true and y_pred must have the same length")
    det = y_pred != MISSED
    correct = y_true == y_pred
    conf = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(conf, (y_true[det], y_pred[det]), 1)
    per_class = {}
    for c in range(n_classes):
        tp = int(conf[c, c])
        support = int((y_true == c).sum())          # missed faces included
        predicted = int(conf[:, c].sum())
        p, r = _safe_div(tp, predicted), _safe_div(tp, support)
        per_class[CLASSES[c] if n_classes == len(CLASSES) else str(c)] = {
            "support": support, "missed": int((~det & (y_true == c)).sum()), "predicted": predicted,
            "precision": p, "recall": r, "f1": _safe_div(2 * p * r, p + r),
        }
    # macro averages over the classes that occur in the truth or the predictions (as
    # scikit-learn does): a class predicted but never true counts with F1 = 0
    present = [v for v in per_class.values() if v["support"] > 0 or v["predicted"] > 0]
    out = {
        "n": int(len(y_true)),
        "detected": int(det.sum()),
        "accuracy": _safe_div(correct.sum(), len(y_true)),
        "accuracy_detected": _safe_div(correct[det].sum(), det.sum()),
        "macro_precision": float(np.mean([v["precision"] for v in present])) if present else 0.0,
        "macro_recall": float(np.mean([v["recall"] for v in present])) if present else 0.0,
        "macro_f1": float(np.mean([v["f1"] for v in present])) if present else 0.0,
        "confusion": conf.tolist(),
        "per_class": per_class,
        "per_group": {},
    }
    for col, values in (groups or {}).items():
        vals = np.array([group_value(col, v) for v in values])
        if (vals == "unknown").all():
            continue
        out["per_group"][col] = {
            v: {"n": int((vals == v).sum()), "detected": int(det[vals == v].sum()),
                "accuracy": _safe_div(correct[vals == v].sum(), (vals == v).sum())}
            for v in sorted(set(vals.tolist()))
        }
    return out


def group_accuracies(m: dict, column: str, with_n: bool = False) -> str:
    """One line of ``value accuracy`` pairs for a group column of :func:`metrics` output."""
    vals = m["per_group"].get(column, {})
    return ", ".join(f"{v} {d['accuracy']:.3f}" + (f" (n={d['n']})" if with_n else "") for v, d in vals.items())


def summary_lines(m: dict) -> list[str]:
    """A short human-readable summary of :func:`metrics` output."""
    lines = [
        f"rows {m['n']}, faces found {m['detected']} ({m['n'] - m['detected']} missed)",
        f"accuracy {m['accuracy']:.3f} (missed faces wrong), on detected faces "
        f"{m['accuracy_detected']:.3f}, macro F1 {m['macro_f1']:.3f}",
        "confusion (rows true, columns predicted; detected faces): " + " ".join(CLASSES),
    ]
    for c, row in zip(CLASSES, m["confusion"]):
        lines.append(f"  {c:>9} " + " ".join(f"{v:>8d}" for v in row))
    for col in m["per_group"]:
        lines.append(f"{col}: " + group_accuracies(m, col, with_n=True))
    return lines


def write_report(m: dict, folder, title: str = "fastes evaluation") -> Path:
    """``report.md`` with a confusion-matrix PNG and a per-group accuracy bar chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    conf = np.array(m["confusion"])
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(conf, cmap="Blues")
    ax.set_xticks(range(len(CLASSES)), CLASSES, rotation=30)
    ax.set_yticks(range(len(CLASSES)), CLASSES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), v in np.ndenumerate(conf):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > conf.max() / 2 else "black")
    fig.tight_layout()
    fig.savefig(folder / "confusion.png", dpi=120)
    plt.close(fig)

    bars = [(f"{col}={v}", d["accuracy"], d["n"]) for col, vals in m["per_group"].items() for v, d in vals.items()]
    fig, ax = plt.subplots(figsize=(7, 0.3 * max(4, len(bars)) + 1))
    ax.barh([b[0] for b in bars][::-1], [b[1] for b in bars][::-1], color="tab:blue")
    ax.axvline(m["accuracy"], color="k", ls="--", lw=1, label=f"all rows {m['accuracy']:.3f}")
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy (missed faces count as wrong)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(folder / "groups.png", dpi=120)
    plt.close(fig)

    md = [f"# {title}", "", "```", *summary_lines(m), "```", "",
          "## Per class (the paper's Table V)", "", "| class | precision | recall | F1 | support | missed |",
          "|---|---|---|---|---|---|"]
    for c, v in m["per_class"].items():
        md.append(f"| {c} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['support']} | {v['missed']} |")
    md += ["", "![confusion matrix](confusion.png)", "", "## Per group", "",
           "| column | value | n | detected | accuracy |", "|---|---|---|---|---|"]
    for col, vals in m["per_group"].items():
        for v, d in vals.items():
            md.append(f"| {col} | {v} | {d['n']} | {d['detected']} | {d['accuracy']:.3f} |")
    md += ["", "![per-group accuracy](groups.png)", ""]
    (folder / "report.md").write_text("\n".join(md))
    return folder / "report.md"


def evaluate_manifest(manifest, classifier, cache: bool = True, progress: bool = True,
                      finder=None) -> tuple[dict, np.ndarray, np.ndarray]:
    """Run detect -> landmarks -> sketch -> ``classifier`` on every manifest row.

    ``classifier(landmarks (N, 68, 2)) -> probs (N, 4)``. Returns ``(metrics, y_pred,
    probs)``. With ``cache``, front-end results come from (and go to) the landmark cache.
    """
    from .data import LandmarkCache, read_manifest

    from .face import FaceFinder

    finder = finder or FaceFinder()
    samples = read_manifest(manifest)
    if not samples:
        raise ValueError(f"{manifest}: no rows")
    if cache:
        found, _, boxes, lms = LandmarkCache(finder=finder).get([s.path for s in samples], progress=progress)
    else:
        found, boxes, lms = _front_end([s.path for s in samples], finder, progress)
    probs = np.full((len(samples), len(CLASSES)), np.nan, np.float32)
    if found.any() and getattr(classifier, "needs_face", False):  # two-stream: + aligned crops
        idx = np.flatnonzero(found)
        faces = face_inputs([samples[i].path for i in idx], boxes[idx], lms[idx], classifier.face_size)
        probs[idx] = classifier.predict_faces(lms[idx], faces)
    elif found.any():
        probs[found] = classifier(lms[found])
    y_pred = np.where(found, np.nan_to_num(probs, nan=-1).argmax(1), MISSED)
    groups = {c: [s.groups[c] for s in samples] for c in samples[0].groups}
    return metrics([s.label for s in samples], y_pred, groups), y_pred, probs


def _front_end(paths, finder, progress):
    from tqdm import tqdm

    from .data import largest_face
    from .face import FaceFinder

    finder = finder or FaceFinder()
    res = [largest_face(finder, p) for p in tqdm(paths, desc="faces", unit="img", disable=None if progress else True)]
    return (np.array([r[0] for r in res], bool), np.array([r[2] for r in res], np.int32).reshape(-1, 4),
            np.array([r[3] for r in res], np.float32).reshape(-1, 68, 2))


def face_inputs(paths, boxes: np.ndarray, landmarks: np.ndarray, size: int) -> np.ndarray:
    """A two-stream model's ``face`` inputs for one face per image: each image read again
    and its face cut aligned by the landmarks (crop coordinates in ``boxes``, mapped back
    to the image by :meth:`fastes.Faces.image_landmarks`, as for an unrolled face)."""
    from .align import face_input
    from .face import Faces
    from .io import read_image, to_grey

    image_lms = Faces(np.asarray(boxes, np.int32).reshape(-1, 4),
                      np.asarray(landmarks, np.float32).reshape(-1, 68, 2)).image_landmarks()
    out = [face_input(to_grey(read_image(p)), lm[None], size) for p, lm in zip(paths, image_lms)]
    return np.concatenate(out) if out else np.zeros((0, size, size, 1), np.float32)
