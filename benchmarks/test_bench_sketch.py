"""Sketch kernels and the front end, each stage on one core; cv2 reference in the same run."""
from __future__ import annotations

import cv2
import numba
import numpy as np
import pytest

import fastes
from fastes.detect import FAST_PASS
from fastes.face import FaceFinder
from fastes.sketch import sketch_reference


def test_sketch_batch_1000_serial(benchmark, record, landmarks_1000):
    out = np.empty((1000, 250, 250), np.uint8)
    fastes.sketch(landmarks_1000[:2], parallel=False)
    benchmark(fastes.sketch, landmarks_1000, out=out, parallel=False)
    record("sketch_batch_1000_serial", benchmark)


def test_sketch_batch_64_serial(benchmark, record, landmarks_1000):
    """A network-batch-sized call into a reused buffer (4 MB: stays in cache)."""
    out = np.empty((64, 250, 250), np.uint8)
    fastes.sketch(landmarks_1000[:2], parallel=False)
    benchmark(fastes.sketch, landmarks_1000[:64], out=out, parallel=False)
    record("sketch_batch_64_serial", benchmark)


def test_sketch_batch_1000_parallel(benchmark, record, landmarks_1000):
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    out = np.empty((1000, 250, 250), np.uint8)
    fastes.sketch(landmarks_1000[:100], parallel=True)
    benchmark(fastes.sketch, landmarks_1000, out=out, parallel=True)
    record("sketch_batch_1000_parallel", benchmark)


def test_sketch_single(benchmark, record, landmarks_1000):
    lm = landmarks_1000[0]
    fastes.sketch(lm)
    benchmark(fastes.sketch, lm)
    record("sketch_single", benchmark)


def test_reference_cv2_per_sketch(benchmark, record, landmarks_1000):
    lms = landmarks_1000[:100]

    def run():
        for lm in lms:
            sketch_reference(lm)

    benchmark(run)
    record("reference_cv2_per_sketch", benchmark)


def test_remap_batch_1000(benchmark, record, landmarks_1000):
    fastes.remap(landmarks_1000[:2])
    benchmark(fastes.remap, landmarks_1000)
    record("remap_batch_1000", benchmark)


@pytest.fixture(scope="module")
def grey_640x480(frame_640x480):
    return cv2.cvtColor(frame_640x480, cv2.COLOR_BGR2GRAY)


def test_haar_full_640x480(benchmark, record, grey_640x480):
    finder = FaceFinder("haar", detect_size=640, fine_pass=False)
    assert len(finder.detect(grey_640x480)) == 1
    benchmark(finder.detect, grey_640x480)
    record("haar_full_640x480", benchmark)


def test_haar_downscaled_640x480(benchmark, record, grey_640x480):
    finder = FaceFinder("haar", detect_size=FAST_PASS.size)
    assert len(finder.detect(grey_640x480)) == 1
    benchmark(finder.detect, grey_640x480)
    record("haar_downscaled_640x480", benchmark)


@pytest.fixture(scope="module")
def one_crop(grey_640x480):
    finder = FaceFinder()
    return finder.crops(grey_640x480, finder.detect(grey_640x480))


def test_landmarks_per_crop(benchmark, record, one_crop):
    """dlib's 68-point model run by fastes.landmarks (the front end's path)."""
    finder = FaceFinder()
    benchmark(finder.landmarks, one_crop)
    record("landmarks_per_crop", benchmark)


def test_dlib_landmarks_per_crop(benchmark, record, one_crop):
    """The same model run by dlib itself, points read back as fastes does."""
    import dlib

    from fastes.landmarks import predictor_path

    sp = dlib.shape_predictor(str(predictor_path()))
    rect = dlib.rectangle(0, 0, one_crop.shape[2] - 1, one_crop.shape[1] - 1)

    def run():
        return np.array([[(p.x, p.y) for p in sp(c, rect).parts()] for c in one_crop], np.float32)

    np.testing.assert_array_equal(run(), FaceFinder().landmarks(one_crop))
    benchmark(run)
    record("dlib_landmarks_per_crop", benchmark)


@pytest.mark.parametrize("detector", ["blazeface", "haar"])
def test_image_to_sketch_640x480_one_face(benchmark, record, frame_640x480, detector):
    """Decoded BGR frame -> grey -> detect -> crop -> landmarks -> sketch, one face."""
    finder = FaceFinder(detector)

    def run():
        return fastes.sketch(finder(frame_640x480).landmarks)

    assert run().shape == (1, 250, 250)
    benchmark(run)
    record(f"image_to_sketch_640x480_{detector}", benchmark)
