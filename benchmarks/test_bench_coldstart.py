"""Cold start: a fresh process importing fastes and drawing its first sketch.

`warm cache` reuses Numba's on-disk cache (the normal case after the first run);
`first ever` points NUMBA_CACHE_DIR at an empty folder, so every kernel compiles.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

SCRIPT = (
    "import time; t=time.perf_counter(); import numpy as np, fastes; "
    "t1=time.perf_counter(); fastes.sketch(np.tile(np.linspace(10, 200, 68)[:, None], (1, 2))); "
    "t2=time.perf_counter(); print(f'{t1-t:.3f} {t2-t1:.3f}')"
)


def _run(env) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
    imp, first = map(float, out.stdout.split())
    return imp, first


@pytest.mark.parametrize("cache", ["warm", "first_ever"])
def test_cold_start(benchmark, record, cache, tmp_path):
    env = dict(os.environ)
    if cache == "first_ever":
        def setup():
            d = tmp_path / f"numba-{os.urandom(4).hex()}"
            env["NUMBA_CACHE_DIR"] = str(d)
            return (), {}
    else:
        _run(env)  # make sure the cache is filled
        def setup():
            return (), {}
    parts = []
    benchmark.pedantic(lambda: parts.append(_run(env)), setup=setup, rounds=3, iterations=1)
    imp, first = sorted(parts)[len(parts) // 2]
    print(f"\ncold start ({cache} cache): import {imp:.3f} s, first sketch {first:.3f} s")
    record(f"coldstart_{cache}_process", benchmark)
