"""The batch runner's engines on the same 2,000 images in one run: the local engine with
1 and 2 worker threads and the Ray engine with 2 actors (a local 2-CPU cluster), images/s
with Ray's start-up (cluster, actors, first task) reported apart.

Images: the first 2,000 of the shared wild set (350x350 web photos) where it is present,
else 2,000 rescaled copies of the bundled London samples.
"""
from __future__ import annotations

import csv
import os
import resource
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from fastes.batch import run
from fastes.cli import sample_images
from fastes.pipeline import shipped_models

pytestmark = pytest.mark.skipif(not shipped_models(), reason="no shipped model")
N = int(os.environ.get("FASTES_BENCH_ENGINE_IMAGES", 2000))  # fewer for a quick check
_rates: dict[str, float] = {}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[str]:
    from fastes.data import data_root

    manifest = data_root() / "faces" / "manifest.csv"
    if manifest.is_file():
        with open(manifest, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r["dataset"] == "wild"][:N]
        if len(rows) == N:
            return [str(manifest.parent / r["path"]) for r in rows]
    d = tmp_path_factory.mktemp("engine_images")
    rng = np.random.default_rng(0)
    out = []
    for i, p in enumerate(sample_images() * (N // len(sample_images()) + 1)):
        if i == N:
            break
        img = cv2.imread(str(p))
        img = cv2.resize(img, None, fx=rng.uniform(0.4, 0.7), fy=rng.uniform(0.4, 0.7))
        cv2.imwrite(str(d / f"{i:05d}.jpg"), img)
        out.append(str(d / f"{i:05d}.jpg"))
    return out


def _actor_rss() -> list[int]:
    """Resident bytes of each Ray actor of the engine (Linux /proc)."""
    out = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and b"FastesWorker" in (d / "cmdline").read_bytes():
                kb = next(int(x.split()[1]) for x in (d / "status").read_text().splitlines() if x.startswith("VmRSS"))
                out.append(kb * 1024)
        except (OSError, StopIteration):
            pass
    return out


@pytest.fixture(scope="module")
def warm(images):
    run(images[:4], progress=False)  # kernels compiled and cached outside the timings


@pytest.mark.parametrize("workers", [1, 2])
def test_local_engine(benchmark, record, images, warm, workers, tmp_path):
    s = benchmark.pedantic(lambda: run(images, tmp_path / "r.csv", workers=workers, progress=False),
                           rounds=1, iterations=1)
    assert s.inputs == len(images)
    if workers == 1:
        from conftest import NOTES

        NOTES.append(f"output: {(tmp_path / 'r.csv').stat().st_size / (s.faces + s.no_face + len(s.errors)):.0f} "
                     "bytes per row as CSV")
    _rates[f"local_{workers}"] = len(images) / s.seconds
    record(f"engine_local_{workers}_workers_{len(images)}_images", benchmark)


def test_ray_engine(benchmark, record, images, warm, tmp_path):
    ray = pytest.importorskip("ray")
    from conftest import NOTES

    started = not ray.is_initialized()
    t0 = time.perf_counter()
    if started:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    cluster_s = time.perf_counter() - t0
    rss: list[int] = []

    def sample_rss(rows, seen=[0]):
        seen[0] += 1
        if seen[0] % 100 == 0:
            rss.append(sum(_actor_rss()))

    try:
        s = benchmark.pedantic(lambda: run(images, tmp_path / "r.parquet", engine="ray", workers=2, progress=False,
                                           on_rows=sample_rss), rounds=1, iterations=1)
    finally:
        if started:
            ray.shutdown()
    assert s.inputs == len(images)
    _rates["ray_2"] = (len(images) - s.startup_inputs) / s.seconds  # the first task is in the start-up
    record(f"engine_ray_2_workers_{len(images)}_images", benchmark)
    from fastes.batch import read_rows

    n_rows = len(read_rows(tmp_path / "r.parquet"))
    lines = [f"images/s, {len(images)} images: " + ", ".join(f"{k} {v:.1f}" for k, v in _rates.items()),
             f"memory: 2 Ray actors {max(rss, default=0) / 2 / 2**20:.0f} MiB resident each (peak sampled); "
             f"this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB peak",
             f"output: {(tmp_path / 'r.parquet').stat().st_size / n_rows:.0f} bytes per row as Parquet "
             f"({n_rows} rows)",
             f"Ray start-up: local cluster {cluster_s:.1f} s, then actors and first task ({s.startup_inputs} images) "
             f"{s.startup_seconds:.1f} s"]
    if "local_1" in _rates:
        lines.append(f"Ray 2 actors vs local 1 worker: {_rates['ray_2'] / _rates['local_1']:.2f}x; per-image "
                     f"overhead per actor {1e3 * (2 / _rates['ray_2'] - 1 / _rates['local_1']):.2f} ms")
    if "local_2" in _rates:
        lines.append(f"Ray 2 actors vs local 2 threads: {_rates['ray_2'] / _rates['local_2']:.2f}x")
    NOTES.extend(lines)
