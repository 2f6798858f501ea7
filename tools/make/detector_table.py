"""Detection rate per dataset of ../shared/data and false detections on synthetic
non-face scenes, for each detector, in one run (a Markdown table on stdout).

    python tools/make/detector_table.py [--nonface 210] [--datasets jaffe ckplus fei london wild]
    python tools/make/detector_table.py --datasets jaffe --nonface 10     # smallest check

Default datasets: the posed sets and the wild set (the FER+ faces, 48x48 tight crops,
are left out unless named: ~30,000 images, and the detectors are not built for them).

Timings per image size and per number of faces: python -m pytest benchmarks -k detect
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

from tqdm import tqdm

from fastes.data import data_root, read_manifest
from fastes.detect import DETECTORS, make_detector
from fastes.io import ImageError, read_image
from fastes.testing import nonface_images
from fastes.train import POSED


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nonface", type=int, default=210, help="synthetic non-face images (default 210)")
    ap.add_argument("--datasets", nargs="+", metavar="NAME", default=list(POSED) + ["wild"],
                    help="datasets of the shared manifest (default: the posed sets and wild)")
    args = ap.parse_args()
    samples = [s for s in read_manifest(data_root() / "faces" / "manifest.csv")
               if s.groups["dataset"] in args.datasets]
    if not samples:
        ap.error(f"no rows of dataset(s) {', '.join(args.datasets)}")
    dets = {n: make_detector(n) for n in DETECTORS}
    total, hit = Counter(), {n: Counter() for n in dets}
    secs = Counter()
    for s in tqdm(samples, unit="img", desc="datasets"):
        ds = s.groups["dataset"]
        total[ds] += 1
        try:
            img = read_image(s.path)
        except ImageError:
            continue
        for n, d in dets.items():
            t0 = time.perf_counter()
            hit[n][ds] += len(d(img)) > 0
            secs[n] += time.perf_counter() - t0
    scenes = nonface_images(args.nonface)
    false = {n: sum(len(d(im)) > 0 for im in scenes) for n, d in dets.items()}
    print("| dataset | images | " + " | ".join(dets) + " |")
    print("|---|---|" + "---|" * len(dets))
    for ds in sorted(total):
        print(f"| {ds} | {total[ds]} | " + " | ".join(f"{hit[n][ds] / total[ds]:.4f}" for n in dets) + " |")
    posed = [d for d in total if d in POSED]
    npos = sum(total[d] for d in posed)
    if npos and len(posed) > 1:
        print(f"| posed sets | {npos} | " + " | ".join(f"{sum(hit[n][d] for d in posed) / npos:.4f}" for n in dets) + " |")
    print(f"| non-face scenes with a false face | {len(scenes)} | "
          + " | ".join(f"{false[n]} ({false[n] / len(scenes):.1%})" for n in dets) + " |")
    print("| mean detect time per dataset image (ms) | | "
          + " | ".join(f"{1000 * secs[n] / len(samples):.1f}" for n in dets) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
