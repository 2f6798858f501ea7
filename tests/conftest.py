"""Shared fixtures. Tests that need ../shared/data (or $FASTES_DATA) skip cleanly without it."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    return Path(os.environ.get("FASTES_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    d = data_dir() / "faces"
    if not (d / "manifest.csv").is_file():
        pytest.skip(f"face data not found at {d} (set FASTES_DATA)")
    return d


@pytest.fixture(scope="session")
def manifest(faces_dir) -> list[dict]:
    with open(faces_dir / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="session")
def finder():
    from fastes import FaceFinder

    return FaceFinder()


@pytest.fixture(scope="session")
def sample_paths():
    from fastes.cli import sample_images

    paths = sample_images()
    assert len(paths) >= 4
    return paths


@pytest.fixture(scope="session")
def sample_landmarks(finder, sample_paths) -> np.ndarray:
    """Landmarks of the bundled London samples (always available)."""
    from fastes import read_image

    lms = [finder(read_image(p)).landmarks for p in sample_paths]
    return np.concatenate(lms)


@pytest.fixture(scope="session")
def real_landmarks(finder, faces_dir, manifest) -> np.ndarray:
    """Landmarks from a fixed sample of every dataset in ../shared/data (12 images each)."""
    from fastes import read_image

    by_set: dict[str, list[dict]] = {}
    for row in manifest:
        by_set.setdefault(row["dataset"], []).append(row)
    rng = np.random.default_rng(0)
    out = []
    for name in sorted(by_set):
        rows = by_set[name]
        for i in rng.choice(len(rows), size=min(12, len(rows)), replace=False):
            faces = finder(read_image(faces_dir / rows[i]["path"]))
            out.extend(faces.landmarks)
    assert len(out) >= 40
    return np.asarray(out)
