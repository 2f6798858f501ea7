"""What the detectors' orientation check keeps: upright faces found with it on and off,
and of the same faces turned 180 degrees, how many are found and how many wrongly kept
as upright (a roll within 90 degrees of 0).

    python tools/experiments/orientation_check.py [--detectors blazeface blazeface-full] [--n 400]

Faces: a seeded draw of ``--n`` rows of jaffe, fei, london and wild (the shared data),
each as stored and centred on a 1920x1080 grey frame at 0.83 of its height (the
benchmark's one-face frame). Findings: docs/experiments.md, "Does the orientation check
drop upright faces?".
"""
from __future__ import annotations

import argparse

import cv2
import numpy as np

from fastes.data import data_root, read_manifest
from fastes.detect import BlazeFace
from fastes.io import read_image
from fastes.testing import frame_with_face

RANGES = {"blazeface": "short", "blazeface-full": "full"}


def count(det, images) -> tuple[int, int, int]:
    """(upright images with a face, turned images with a face, turned kept as upright)."""
    up = sum(len(det(im)) > 0 for im in images)
    turned = wrong = 0
    for im in images:
        r = det(cv2.rotate(im, cv2.ROTATE_180))
        turned += len(r) > 0
        if len(r) and r.rolls is not None:
            wrong += int((np.abs((r.rolls + 180) % 360 - 180) < 90).any())
    return up, turned, wrong


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detectors", nargs="+", choices=RANGES, default=list(RANGES))
    ap.add_argument("--n", type=int, default=400, help="faces drawn (default 400)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    rows = [s for s in read_manifest(data_root() / "faces" / "manifest.csv")
            if s.groups["dataset"] in ("jaffe", "fei", "london", "wild")]
    pick = np.random.default_rng(a.seed).choice(len(rows), min(a.n, len(rows)), replace=False)
    stored = [read_image(rows[i].path) for i in pick]
    framed = [frame_with_face(im, (1080, 1920), 0.83) for im in stored]
    print("| detector | images | check | upright found | turned found | turned kept as upright |")
    print("|---|---|---|---|---|---|")
    for name in a.detectors:
        for label, images in (("as stored", stored), ("1080p frame", framed)):
            for upright in (False, True):
                up, turned, wrong = count(BlazeFace(RANGES[name], upright=upright), images)
                print(f"| {name} | {label} | {'on' if upright else 'off'} | {up} / {len(images)} | {turned} | "
                      f"{wrong if upright else '-'} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
