"""The batch runner's engines on the same 2,000 images in one run: the local engine with
1 and 2 worker threads and the Ray engine with 2 actors (a local 2-CPU cluster), images/s
with Ray's start-up (cluster, actors, first task) reported apart.

Images: the first 2,000 of the shared wild set (350x350 web photos) where it is present,
else 2,000 rescaled copies of the bundled London samples.
"""
from __future__ import annotations

import csv
import os
import time

import cv2
import numpy as np
import pytest

from fastes.batch import run
from fastes.cli import sample_images
from fastes.pipeline import shipped_models

pytestmark = pytest.mark.skipif(not shipped_models(), reason="no shipped model")
N = 2000
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


@pytest.fixture(scope="module")
def warm(images):
    run(images[:4], progress=False)  # kernels compiled and cached outside the timings


@pytest.mark.parametrize("workers", [1, 2])
def test_local_engine(benchmark, record, images, warm, workers, tmp_path):
    s = benchmark.pedantic(lambda: run(images, tmp_path / "r.csv", workers=workers, progress=False),
                           rounds=1, iterations=1)
    assert s.inputs == len(images)
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
    try:
        s = benchmark.pedantic(lambda: run(images, tmp_path / "r.csv", engine="ray", workers=2, progress=False),
                               rounds=1, iterations=1)
    finally:
        if started:
            ray.shutdown()
    assert s.inputs == len(images)
    _rates["ray_2"] = len(images) / s.seconds
    record(f"engine_ray_2_workers_{len(images)}_images", benchmark)
    lines = [f"images/s, {len(images)} images: " + ", ".join(f"{k} {v:.1f}" for k, v in _rates.items()),
             f"Ray start-up: local cluster {cluster_s:.1f} s, then actors and first task {s.startup_seconds:.1f} s"]
    if "local_1" in _rates:
        lines.append(f"Ray 2 actors vs local 1 worker: {_rates['ray_2'] / _rates['local_1']:.2f}x; per-image "
                     f"overhead per actor {1e3 * (2 / _rates['ray_2'] - 1 / _rates['local_1']):.2f} ms")
    if "local_2" in _rates:
        lines.append(f"Ray 2 actors vs local 2 threads: {_rates['ray_2'] / _rates['local_2']:.2f}x")
    NOTES.extend(lines)
