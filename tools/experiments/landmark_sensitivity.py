"""How much a two-stream file's accuracy moves when the cached landmarks move a little:
random noise per point, and one shift of every point.

    python tools/experiments/landmark_sensitivity.py MANIFEST.csv MODEL.tflite [MODEL ...]

MANIFEST: e.g. FER+ valid's majority rows (``tools/make/fer_valid_manifest.py``). Landmarks
come from the landmark cache (the default front end, as ``fastes evaluate``); the crops are
cut again from the moved landmarks (``fastes.evaluate.face_inputs``). Prints accuracy and
the share of labels that stay as unmoved. Findings: docs/accuracy.md, "Seven emotions,
summed into four".
"""
from __future__ import annotations

import argparse

import numpy as np

from fastes.data import LandmarkCache, read_manifest
from fastes.evaluate import face_inputs
from fastes.face import FaceFinder
from fastes.runtime import load_classifier

MOVES = [("none", 0.0, (0, 0)), ("noise", 0.25, (0, 0)), ("noise", 0.5, (0, 0)), ("noise", 1.0, (0, 0)),
         ("shift", 0.0, (1, 0)), ("shift", 0.0, (0, 1)), ("shift", 0.0, (1, 1)), ("shift", 0.0, (2, 2))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifest")
    ap.add_argument("models", nargs="+")
    a = ap.parse_args(argv)
    rows = read_manifest(a.manifest)
    found, _, boxes, lms = LandmarkCache(FaceFinder()).get([r.path for r in rows], progress=False)
    idx = np.flatnonzero(found)
    y, paths = np.array([r.label for r in rows])[idx], [rows[i].path for i in idx]
    print("| model | move | px | accuracy | same label as unmoved |")
    print("|---|---|---|---|---|")
    for name in a.models:
        clf = load_classifier(name)
        if not getattr(clf, "needs_face", False):
            ap.error(f"{name}: not a two-stream model")
        base = None
        for kind, sigma, (dx, dy) in MOVES:
            lm = lms[idx] + np.float32([dx, dy])
            if sigma:
                lm = lm + np.random.default_rng(0).normal(0, sigma, lm.shape).astype(np.float32)
            pred = clf.predict_faces(lm, face_inputs(paths, boxes[idx], lm, clf.face_size)).argmax(1)
            base = pred if base is None else base
            px = sigma if kind == "noise" else f"({dx}, {dy})"
            print(f"| {name} | {kind} | {px} | {np.mean(pred == y):.3f} | {np.mean(pred == base):.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
