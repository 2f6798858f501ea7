"""Write FER+ valid's majority rows as a manifest for ``fastes evaluate``.

    python tools/make/fer_valid_manifest.py fer_valid_majority.csv
    fastes evaluate fer_valid_majority.csv --model two_stream_int8

The rows of the shared manifest under ``ferplus/valid/`` whose top emotion has more than
5 of 10 votes (``fastes.data.is_majority``; 2,857 of 3,401), paths made absolute so the
file works from any folder: the test rows of ``fastes crossval ferplus``.
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

from fastes.data import data_root, is_majority


def main(out: str) -> None:
    root = data_root() / "faces"
    with open(root / "manifest.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if r["dataset"] == "ferplus" and r["path"].replace("\\", "/").startswith("ferplus/valid/")
                and r["votes"] and is_majority([int(v) for v in r["votes"].split(";")])]
        fields = reader.fieldnames
    for r in rows:
        r["path"] = str((root / r["path"]).resolve())
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    print(f"{out}: {len(rows)} rows")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip().splitlines()[0] + "\nusage: python tools/make/fer_valid_manifest.py OUT.csv")
    main(sys.argv[1])
