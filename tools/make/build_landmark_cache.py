"""Run the face front end once over a manifest and cache the landmarks (resumable).

    python tools/make/build_landmark_cache.py [MANIFEST.csv] [--datasets jaffe ckplus fei london]
    python tools/make/build_landmark_cache.py --datasets jaffe      # smallest check

MANIFEST defaults to ../shared/data/faces/manifest.csv (``$FASTES_DATA`` overrides); the
cache is ``$FASTES_CACHE`` or ``~/.cache/fastes``, keyed by image content and front-end
settings, so a replaced image is simply recomputed. ``--datasets`` keeps only those rows
(the shared manifest also holds ~30,000 FER+ faces that training does not read).
``--detector`` picks the front end (default haar: what ``fastes train`` uses).
Prints detection counts per dataset; images with no face are kept (found = False).
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

from fastes.data import LandmarkCache, data_root, read_manifest
from fastes.face import FaceFinder


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("manifest", nargs="?", type=Path, help="manifest CSV (default: the shared data's)")
    ap.add_argument("--datasets", nargs="+", metavar="NAME", help="only these datasets (default: every row)")
    ap.add_argument("--detector", default="haar", help="front end (default haar, as fastes train)")
    a = ap.parse_args(argv)
    samples = read_manifest(a.manifest or data_root() / "faces" / "manifest.csv")
    if a.datasets:
        samples = [s for s in samples if s.groups["dataset"] in a.datasets]
        if not samples:
            ap.error(f"no rows of dataset(s) {', '.join(a.datasets)}")
    cache = LandmarkCache(FaceFinder(a.detector))
    t = time.perf_counter()
    found, n_faces, _, _ = cache.get([s.path for s in samples])
    dt = time.perf_counter() - t
    total, hit, multi, bad = Counter(), Counter(), Counter(), Counter()
    for s, f, n in zip(samples, found, n_faces):
        d = s.groups["dataset"] or "-"
        total[d] += 1
        hit[d] += bool(f)
        multi[d] += n > 1
        bad[d] += n < 0
    print(f"cache {cache.file} ({len(cache)} entries), {dt:.1f} s")
    print("| dataset | images | face found | rate | >1 face | unreadable |")
    print("|---|---|---|---|---|---|")
    for d in sorted(total):
        print(f"| {d} | {total[d]} | {hit[d]} | {hit[d] / total[d]:.3f} | {multi[d]} | {bad[d]} |")
    print(f"| all | {sum(total.values())} | {sum(hit.values())} | {sum(hit.values()) / sum(total.values()):.3f} | "
          f"{sum(multi.values())} | {sum(bad.values())} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
