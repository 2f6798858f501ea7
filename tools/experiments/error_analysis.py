"""Where a cross-validated network's errors are: by landmark quality, group and class,
with a gallery of the sketches it got wrong.

    python tools/experiments/error_analysis.py [RUN@DIR] [--gallery OUT.png] [--gallery-datasets london]

``RUN@DIR`` (default: the shipped recipe, ``vgg11:48:none:60:dropout=0.1:width=0.25@runs/cv``)
names a run of ``tools/experiments/cross_validate.py RUN --workdir DIR``; its stored held-out
probabilities are read (no network is run, TensorFlow is not needed). The 68-point
logistic regression (``tools/experiments/baseline_logreg.py``) is scored on the same folds beside it.

Landmark quality has no ground truth in these data; its proxy here is how far apart the
two front ends (Haar crop + dlib, the training path; BlazeFace crop + dlib) put the 34
drawn points, in pixels of the 250-px sketch after the paper's normalization. A face
whose landmarks move a lot between two crops of the same image is one where dlib is
unsure. ``--gallery`` draws the wrongly classified faces of ``--gallery-datasets``
(default: london, the one set whose images may be redistributed, CC BY 4.0) as sketches
with truth, prediction and group; it is written to OUT.png.
Findings: docs/experiments.md, "Why are black subjects recognized worst? / Why is CK+ the hardest set?"
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, os.fspath(Path(__file__).resolve().parent))
sys.path.insert(1, os.fspath(Path(__file__).resolve().parents[2]))

from baseline_logreg import DRAWN  # noqa: E402  (tools/ on the path)

SHIPPED = "vgg11:48:none:60:dropout=0.1:width=0.25@runs/cv"


def drawn_shift(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean distance (sketch px) between the drawn points of two landmark sets of the
    same faces, after the paper's normalization; NaN where either is degenerate."""
    from fastes import remap

    out = np.full(len(a), np.nan)
    for i in range(len(a)):
        try:
            out[i] = np.linalg.norm(remap(a[i])[DRAWN] - remap(b[i])[DRAWN], axis=1).mean()
        except ValueError:  # degenerate landmarks (DegenerateFaceError)
            pass
    return out


def gallery(faces, rows, pred, probs, path: Path, parts: tuple, size: int = 125, cols: int = 8) -> None:
    """A grid of sketches (drawn with ``parts``, as the run drew them), one per row index
    in ``rows``, captioned truth > predicted."""
    import cv2

    from fastes import CLASSES, sketch
    from fastes.io import write_png_atomic

    cap = 30
    n_rows = max(1, -(-len(rows) // cols))
    img = np.full((n_rows * (size + cap), cols * size), 255, np.uint8)
    for k, i in enumerate(rows):
        y, x = (k // cols) * (size + cap), (k % cols) * size
        tile = 255 - sketch(faces.landmarks[i], size=size, parts=parts)
        cv2.rectangle(tile, (0, 0), (size - 1, size - 1), 200, 1)
        img[y:y + size, x:x + size] = tile
        eth = faces.groups.get("ethnicity", np.array([""] * len(faces)))[i]
        lines = (f"{CLASSES[faces.labels[i]][:3]}>{CLASSES[pred[i]][:3]} {probs[i].max():.2f}",
                 f"{Path(faces.paths[i]).stem[:12]} {eth[:5]}")
        for j, t in enumerate(lines):
            cv2.putText(img, t, (x + 3, y + size + 12 + 13 * j), cv2.FONT_HERSHEY_SIMPLEX, 0.33, 0, 1, cv2.LINE_AA)
    write_png_atomic(path, img)


def ckplus_section(faces, pred, ok) -> None:
    """CK+ has no neutral images, yet networks call many of its faces neutral: per source
    emotion, how often, and how many happiness / surprise faces show the expression in
    their landmarks at all (mouth width / inner-lip opening, as fractions of the face
    width, against the 90th percentile of the other sets' neutral faces)."""
    import csv

    from fastes import CLASSES
    from fastes.data import data_root

    ds = faces.groups["dataset"]
    if not (ds == "ckplus").any():
        return
    manifest = data_root() / "faces" / "manifest.csv"
    with open(manifest, newline="") as f:  # paths resolved as fastes.data.read_manifest does
        emotion = {(manifest.parent / r["path"]).resolve(): r["emotion"] for r in csv.DictReader(f)}
    emo = np.array([emotion.get(Path(p), "") for p in faces.paths])
    lm = faces.landmarks
    width = lm[:, 16, 0] - lm[:, 0, 0]
    with np.errstate(invalid="ignore"):  # NaN landmarks where no face was found
        measures = {  # source emotion: its class, the measure that shows it, values
            "happiness": ("positive", "a mouth width", np.linalg.norm(lm[:, 54] - lm[:, 48], axis=1) / width),
            "surprise": ("awe", "an inner-lip opening", np.linalg.norm(lm[:, 66] - lm[:, 62], axis=1) / width)}
    neutral = ok & (faces.labels == CLASSES.index("neutral")) & (ds != "ckplus")
    neu = pred == CLASSES.index("neutral")
    print("\nCK+ (no neutral images in the set): per source emotion, n, network accuracy, share called neutral")
    for e in sorted(set(emo[ds == "ckplus"].tolist())):
        m = ok & (ds == "ckplus") & (emo == e)
        print(f"  {e:10s} {m.sum():4d}  {(pred[m] == faces.labels[m]).mean():.3f}  {neu[m].mean():.2f}")
    for e, (label, name, v) in measures.items():
        m = ok & (ds == "ckplus") & (emo == e)
        thr = np.percentile(v[neutral], 90)
        flat = m & (v <= thr)
        others = ok & (ds != "ckplus") & (faces.labels == CLASSES.index(label))
        print(f"  {e}: {flat.sum()} of {m.sum()} with {name} no larger than 9 in 10 neutral faces' ({thr:.3f} of the "
              f"face width; other sets' {label} faces: {(v[others] <= thr).mean():.2f}); of the network's "
              f"{(m & neu).sum()} neutral calls, {(flat & neu).sum()} are among them")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", nargs="?", default=SHIPPED, help=f"RUN@DIR (default {SHIPPED})")
    ap.add_argument("--gallery", type=Path, help="write the wrongly classified faces' sketches here (PNG)")
    ap.add_argument("--gallery-datasets", default="london", help="comma-separated datasets for --gallery")
    a = ap.parse_args(argv)
    if "@" not in a.run:
        ap.error("RUN@DIR: a run spec and its --workdir")
    spec, workdir = a.run.rsplit("@", 1)

    from ensemble_cv import logreg_probs, member_probs
    from cross_validate import parse_run

    from fastes import CLASSES
    from fastes.data import subject_folds
    from fastes.evaluate import MISSED
    from fastes.train import load_faces

    faces = load_faces(progress=False)                       # Haar path: what the runs trained on
    other = load_faces(progress=False, detector="blazeface")
    if other.paths != faces.paths:
        raise SystemExit("the two front ends' caches hold different rows")
    folds = subject_folds(faces.subjects, faces.labels, k=5, seed=0)
    probs = member_probs(spec, Path(workdir), faces, folds, tta=0)
    ok = ~np.isnan(probs[:, 0])
    pred = np.where(ok, np.nan_to_num(probs).argmax(1), MISSED)
    right = pred == faces.labels
    def regression_right(points=None) -> np.ndarray:
        p = logreg_probs(faces, folds, points)
        return ~np.isnan(p[:, 0]) & (np.nan_to_num(p).argmax(1) == faces.labels)

    lr_right = regression_right()
    both = faces.found & other.found
    shift = np.full(len(faces), np.nan)
    shift[both] = drawn_shift(faces.landmarks[both], other.landmarks[both])
    has = ~np.isnan(shift)

    print(f"{spec}: {len(faces)} posed faces, {int(ok.sum())} with a face, accuracy {right.mean():.3f} "
          f"(68-point regression on the same folds {lr_right.mean():.3f})")
    print(f"\nlandmark shift between the two front ends (mean over the 34 drawn points, px of the 250-px "
          f"sketch), {int(has.sum())} faces found by both: median {np.median(shift[has]):.1f}, "
          f"90th percentile {np.percentile(shift[has], 90):.1f}, max {shift[has].max():.1f}")
    edges = np.percentile(shift[has], [0, 25, 50, 75, 90, 100])
    print("  shift range       faces  network  regression")
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = has & (shift >= lo) & (shift <= hi)
        print(f"  {lo:5.1f} - {hi:5.1f} px {m.sum():8d}  {right[m].mean():7.3f}  {lr_right[m].mean():10.3f}")
    wrong = has & ~right
    print(f"  errors: median shift {np.median(shift[wrong]):.1f} px vs {np.median(shift[has & right]):.1f} "
          f"on the right answers")

    print("\nper group (>= 20 images): n, network, regression, median landmark shift (px)")
    for col in ("dataset", "ethnicity", "gender"):
        vals = faces.groups.get(col)
        if vals is None:
            continue
        for v in sorted(set(vals.tolist())):
            m = vals == v
            if m.sum() < 20 or v in ("", "unknown"):
                continue
            print(f"  {col:9s} {v:12s} {m.sum():4d}  {right[m].mean():.3f}  {lr_right[m].mean():.3f}  "
                  f"{np.nanmedian(shift[m]):.1f}")

    eth = faces.groups.get("ethnicity")
    if eth is not None and (eth == "black").any():
        m = eth == "black"
        conf = np.zeros((4, 4), int)
        np.add.at(conf, (faces.labels[m & ok], pred[m & ok]), 1)
        print(f"\nblack subjects ({m.sum()} images, {len(set(faces.subjects[m]))} people): confusion "
              "(rows true, columns predicted; " + ", ".join(CLASSES) + ")")
        for c, row in zip(CLASSES, conf):
            print(f"  {c:>9s} " + " ".join(f"{v:3d}" for v in row))
        for s in sorted(set(faces.subjects[m].tolist())):
            ms = m & (faces.subjects == s)
            print(f"  subject {s}: {right[ms].sum()}/{ms.sum()} right (regression {lr_right[ms].sum()}), "
                  f"median shift {np.nanmedian(shift[ms]):.1f} px")

    # The mouth: the sketch draws the outer lip contour only, 70 px above where the paper's
    # normalization puts it. Full lips make a closed mouth's outline tall, like an open one's.
    from fastes import remap
    r = np.full((len(faces), 68, 2), np.nan)
    r[faces.found] = remap(faces.landmarks[faces.found])
    outer = r[:, 48:60, 1]
    height = outer.max(1) - outer.min(1)
    opening = np.linalg.norm(r[:, 66] - r[:, 62], axis=1)  # inner lips apart
    off = outer.max(1) + 4.5 > 250  # the 9-px line's lower edge leaves the 250-px canvas
    print("\nthe drawn mouth per ethnicity (>= 20 images): share running off the canvas, median outer "
          "height, inner opening, outer height - opening (lips), px of the 250-px sketch")
    for v in sorted(set(eth.tolist())) if eth is not None else []:
        m = (eth == v) & ok
        if m.sum() >= 20 and v not in ("", "unknown"):
            print(f"  {v:12s} {m.sum():4d}  off canvas {off[m].mean():.2f}  height {np.median(height[m]):3.0f}  "
                  f"opening {np.median(opening[m]):4.1f}  lips {np.median(height[m] - opening[m]):3.0f}")
    if eth is not None:
        ds = faces.groups["dataset"]
        print("  london, same classes: n, network accuracy, median outer height, opening")
        for c in range(len(CLASSES)):
            for v in ("black", "white"):
                m = (eth == v) & ok & (faces.labels == c) & (ds == "london")
                if m.any():
                    print(f"    {CLASSES[c]:9s} {v:6s} {m.sum():3d}  {right[m].mean():.3f}  "
                          f"{np.median(height[m]):3.0f}  {np.median(opening[m]):4.1f}")
    print("  the regression on point subsets (same folds): all faces / black subjects")
    for name, rr in (("34 drawn points", regression_right(DRAWN)),
                     ("+ inner lips (60-67)", regression_right(np.r_[DRAWN, 60:68])),
                     ("+ jaw (0-16)", regression_right(np.r_[DRAWN, 0:17])), ("all 68", lr_right)):
        print(f"    {name:22s} {rr.mean():.3f} / {rr[eth == 'black'].mean() if eth is not None else float('nan'):.3f}")

    ckplus_section(faces, pred, ok)

    if a.gallery:
        sets = set(a.gallery_datasets.split(","))
        ds = faces.groups["dataset"]
        rows = [i for i in np.flatnonzero(ok & ~right) if ds[i] in sets]
        rows.sort(key=lambda i: (faces.labels[i], pred[i]))
        gallery(faces, rows, pred, probs, a.gallery, parse_run(spec).parts())
        print(f"\n{len(rows)} wrong faces of {', '.join(sorted(sets))} drawn to {a.gallery}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
