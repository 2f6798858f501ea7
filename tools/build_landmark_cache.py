"""Run the face front end once over a manifest and cache the landmarks (resumable).

    python tools/build_landmark_cache.py [MANIFEST.csv]   # default: ../shared/data/faces/manifest.csv

Prints detection counts per dataset; images with no face are kept (found = False).
"""
from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

from fastes.data import LandmarkCache, data_root, read_manifest


def main(argv: list[str]) -> int:
    manifest = Path(argv[0]) if argv else data_root() / "faces" / "manifest.csv"
    samples = read_manifest(manifest)
    cache = LandmarkCache()
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
