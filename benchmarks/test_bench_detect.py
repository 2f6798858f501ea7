"""Detectors side by side, one core: time per image from 320x240 to 4K (one face), and
time and faces found for 1 to 16 faces per 1920x1080 image (synthetic collages).
Detection rates on ../shared/data and false detections: tools/make/detector_table.py."""
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


@pytest.mark.parametrize("how", ["opencv", "fused"])
def test_blazeface_input_640x480(benchmark, record, faces, how):
    """BlazeFace's input, 640x480 BGR -> 128x96 RGB in [-1, 1] inside the letterbox:
    OpenCV's INTER_AREA + conversion (what fastes did) vs the fused Numba pass."""
    import numpy as np

    from fastes.io import rgb_small_into, to_rgb_small

    img = frame_with_face(faces[0], SIZES["640x480"])
    region = np.empty((1, 128, 128, 3), np.float32)[0, 16:112]

    def opencv():
        small, _ = to_rgb_small(img, 128)
        np.multiply(small, np.float32(1 / 127.5), out=region, dtype=np.float32)
        np.subtract(region, np.float32(1), out=region)

    def fused():
        rgb_small_into(img, region, "bgr", -1.0, 1.0)

    fn = opencv if how == "opencv" else fused
    fn()  # compiled / loaded from the Numba cache outside the timing
    benchmark(fn)
    record(f"blazeface_input_640x480_{how}", benchmark)
