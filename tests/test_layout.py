"""The shape of the code: no import cycle inside fastes/ (function-level imports too),
and every CLI module within 300 lines."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_no_import_cycle():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "make" / "import_cycles.py")], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip().endswith("0 cycles"), r.stdout[-3000:]


def test_cli_modules_are_small():
    sizes = {p.name: len(p.read_text().splitlines()) for p in (ROOT / "fastes" / "cli").glob("*.py")}
    assert sizes and max(sizes.values()) <= 300, sizes
