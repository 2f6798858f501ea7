"""Fit and check how a BlazeFace detection is turned into the crop dlib expects.

    python tools/make/calibrate_blazeface.py

dlib's 68-point predictor is sensitive to how its box frames the face. For each posed
image of ../shared/data found by both front ends, the Haar path's landmarks (landmark
cache) imply a crop: centre = landmark mean + c * jaw width, side = k * jaw width (c, k:
medians over the set). The BlazeFace crop is placed from the eye keypoints: centre = eye
midpoint + (dx, dy) * box width, side = s * box width; (dx, dy, s) are medians fitted on a
random half of the subjects. On the other half the tool runs dlib on the BlazeFace
crops and prints the landmark error vs the Haar path (mean distance over 68 points, in
units of the inter-ocular distance): its distribution overall and per dataset.
Compare with fastes.face.BLAZE_TO_CROP.
"""
from __future__ import annotations

import sys

import numpy as np

from fastes.data import LandmarkCache, data_root, read_manifest
from fastes.detect import BlazeFace
from fastes.face import CROP, FaceFinder, square_boxes
from fastes.io import read_image, to_grey


def main() -> int:
    samples = [s for s in read_manifest(data_root() / "faces" / "manifest.csv")
               if s.groups["dataset"] in ("jaffe", "ckplus", "fei", "london")]
    finder = FaceFinder("haar")
    found, _, boxes, lms = LandmarkCache(finder).get([s.path for s in samples])
    blaze = BlazeFace()
    rows = []
    for i, s in enumerate(samples):
        if not found[i]:
            continue
        img = read_image(s.path)
        det = blaze(img)
        if len(det) == 0:
            continue
        k = int(np.argmax(det.scores))
        rows.append((i, to_grey(img), det.boxes[k], det.keypoints[k]))
    idx = np.array([r[0] for r in rows])
    B = np.array([r[2] for r in rows])
    K = np.array([r[3] for r in rows])
    H = boxes[idx].astype(np.float64)
    L = lms[idx] * (H[:, 2:3, None] / CROP) + H[:, None, :2]  # Haar-path landmarks, image coords
    jaw = np.linalg.norm(L[:, 0] - L[:, 16], axis=1)
    hc = H[:, :2] + H[:, 2:] / 2
    c = np.median((hc - L.mean(1)) / jaw[:, None], 0)
    k_side = np.median(H[:, 2] / jaw)
    target_c, target_s = L.mean(1) + c * jaw[:, None], k_side * jaw  # the crop Haar's landmarks imply
    eye = (K[:, 0] + K[:, 1]) / 2
    w = B[:, 2]
    subjects = np.array([samples[i].subject for i in idx])
    uniq = np.unique(subjects)
    fit_subjects = set(np.random.default_rng(0).permutation(uniq)[: len(uniq) // 2])
    fit = np.array([s in fit_subjects for s in subjects])
    dx, dy = np.median((target_c[fit] - eye[fit]) / w[fit, None], 0)
    side = np.median(target_s[fit] / w[fit])
    print(f"fitted on {fit.sum()} faces: BLAZE_TO_CROP = ({dx:.3f}, {dy:.3f}, {side:.3f})")
    test = np.flatnonzero(~fit)
    crops = square_boxes(eye[test] + np.stack([dx * w[test], dy * w[test]], 1), side * w[test])
    err = []
    for j, box in zip(test, np.round(crops).astype(np.int32)):
        p = finder.landmarks(finder.crops(rows[j][1], box[None]))[0] * (box[2] / CROP) + box[:2]
        iod = np.linalg.norm(L[j, 36:42].mean(0) - L[j, 42:48].mean(0))
        err.append(np.linalg.norm(p - L[j], axis=1).mean() / iod)
    err = np.array(err)
    ds = np.array([samples[idx[j]].groups["dataset"] for j in test])
    q = lambda e: f"mean {e.mean():.4f} median {np.median(e):.4f} p90 {np.percentile(e, 90):.4f} " \
                  f"p99 {np.percentile(e, 99):.4f} max {e.max():.4f}"
    print(f"held-out {len(err)} faces, landmark error / inter-ocular distance: {q(err)}")
    for d in np.unique(ds):
        print(f"  {d:7s} n={int((ds == d).sum()):3d} {q(err[ds == d])}")
    print(f"share within 3 %: {(err <= 0.03).mean():.3f}, within 5 %: {(err <= 0.05).mean():.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
