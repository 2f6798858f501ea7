"""Aligned face crops: the transform puts eyes and mouth where CANON says, the OpenCV
path agrees with the NumPy reference, and faces of any size, roll or place look alike."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from fastes.align import CANON, _anchors, align_matrices, aligned_crops, aligned_crops_reference, similarity
from fastes.io import read_image, to_grey


def test_similarity_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    a, s, t = np.radians(23), 1.7, np.array([4.0, -9.0])
    r = s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    m = similarity(src, src @ r.T + t)
    np.testing.assert_allclose(m[:, :2], r, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], t, atol=1e-9)
    with pytest.raises(ValueError):
        similarity(np.ones((3, 2)), src[:3])


def test_anchors_land_on_the_canonical_points(sample_paths, finder):
    grey = to_grey(read_image(sample_paths[0]))
    lm = finder(grey).image_landmarks()
    m = align_matrices(lm, 64)[0]
    mapped = _anchors(lm)[0] @ m[:, :2].T + m[:, 2]
    # three points, four degrees of freedom: the fit is close, not exact
    assert np.abs(mapped - CANON * 64).max() < 0.06 * 64


def test_opencv_path_matches_reference(sample_paths, finder):
    grey = to_grey(read_image(sample_paths[1]))
    grey = cv2.resize(grey, (200, 200))  # faces small enough that no pre-shrink happens
    lm = finder(grey).image_landmarks()
    assert len(lm) == 1
    a, b = aligned_crops(grey, lm, 48), aligned_crops_reference(grey, lm, 48)
    assert a.shape == b.shape == (1, 48, 48)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 2  # OpenCV's fixed-point weights


def test_rolled_shifted_and_scaled_faces_give_the_same_crop(sample_paths, finder):
    grey = to_grey(read_image(sample_paths[0]))
    lm = finder(grey).image_landmarks()
    base = aligned_crops(grey, lm, 48)[0].astype(float)
    h, w = grey.shape
    for angle, scale, shift in [(15, 1.0, (0, 0)), (-10, 0.6, (30, -20)), (0, 1.4, (-40, 10))]:
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
        m[:, 2] += shift
        moved = cv2.warpAffine(grey, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
        lm2 = lm[0] @ m[:, :2].T + m[:, 2]
        crop = aligned_crops(moved, lm2[None], 48)[0].astype(float)
        assert np.abs(crop - base).mean() < 8  # grey levels out of 255: the same face, framed alike
    other = aligned_crops(to_grey(read_image(sample_paths[2])), finder(to_grey(read_image(sample_paths[2]))).image_landmarks(), 48)[0]
    assert np.abs(other.astype(float) - base).mean() > np.abs(crop - base).mean()  # a test that can fail


def test_bad_input_and_no_faces():
    with pytest.raises(ValueError):
        aligned_crops(np.zeros((10, 10, 3), np.uint8), np.zeros((1, 68, 2)))
    assert aligned_crops(np.zeros((10, 10), np.uint8), np.zeros((0, 68, 2)), 32).shape == (0, 32, 32)
