"""Detectors side by side, one core: time per image from 320x240 to 4K (one face), and
time and faces found for 1 to 16 faces per 1920x1080 image (synthetic collages).
Detection rates on ../shared/data and false detections: tools/detector_table.py."""
from __future__ import annotations

import pytest

from fastes import read_image
from fastes.cli import sample_images
from fastes.detect import make_detector
from fastes.testing import collage, frame_with_face

DETECTORS = ["blazeface", "blazeface-full", "blazeface-group", "haar"]
SIZES = {"320x240": (240, 320), "640x480": (480, 640), "1920x1080": (1080, 1920), "3840x2160": (2160, 3840)}


@pytest.fixture(scope="module")
def faces():
    return [read_image(p) for p in sample_images()]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", DETECTORS)
def test_detect_one_face(benchmark, record, faces, name, size):
    det = make_detector(name)
    img = frame_with_face(faces[0], SIZES[size])
    assert len(det(img)) == 1
    benchmark(det, img)
    record(f"detect_{name}_{size}", benchmark)


@pytest.mark.parametrize("n", [1, 4, 16])
@pytest.mark.parametrize("name", DETECTORS)
def test_detect_faces_per_image(benchmark, record, found, faces, name, n):
    det = make_detector(name)
    img = collage(faces, n, (1080, 1920))
    found[f"{name} {n} faces"] = benchmark(lambda: len(det(img)))
    record(f"detect_{name}_{n}faces_1080p", benchmark)
