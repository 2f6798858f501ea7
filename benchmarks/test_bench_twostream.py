"""The two-stream classifier per face (batch 1, one thread): the sketch drawn, the face
crop aligned, one int8 invoke (plain and with 8-copy test-time augmentation); beside the sketch and
landmark models on the same face."""
from __future__ import annotations

import cv2
import numba
import pytest

from fastes.cli import sample_images
from fastes.io import read_image, to_grey
from fastes.pipeline import load_model, shipped_models

pytestmark = pytest.mark.skipif("two_stream_int8" not in shipped_models(), reason="no shipped two-stream model")


@pytest.fixture(scope="module")
def face():
    from fastes import FaceFinder

    grey = to_grey(read_image(sample_images()[0]))
    found = FaceFinder()(grey)
    return grey, found.landmarks[:1], found.image_landmarks()[:1]


@pytest.mark.parametrize("copies", [0, 8])
def test_two_stream_per_face(benchmark, record, face, copies):
    from fastes.align import face_input
    from fastes.runtime import Augmented

    cv2.setNumThreads(1)
    numba.set_num_threads(1)
    clf = load_model("two_stream_int8", threads=1)
    clf = Augmented(clf, copies) if copies else clf
    grey, lm, image_lm = face

    def one():
        return clf.predict_faces(lm, face_input(grey, image_lm, clf.face_size))

    assert one().shape == (1, 4)
    benchmark(one)
    record(f"two_stream_int8{f'_tta{copies}' if copies else ''}_per_face_b1_t1", benchmark)


@pytest.mark.parametrize("name", ["vgg11_fast_int8", "landmarks_int8"])
def test_sketch_and_landmark_models_per_face(benchmark, record, face, name):
    clf = load_model(name, threads=1)
    _, lm, _ = face
    assert clf(lm).shape == (1, 4)
    benchmark(clf, lm)
    record(f"{name}_per_face_b1_t1", benchmark)
