"""End to end with the shipped default model, one core: images/s on the bundled London
images (decode included) and frames/s on 640x480 one-face video frames."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

import fastes
from fastes.cli import sample_images
from fastes.pipeline import shipped_models

pytestmark = pytest.mark.skipif(not shipped_models(), reason="no shipped model")


@pytest.fixture(scope="module")
def pipe():
    p = fastes.Pipeline()
    p.run(sample_images()[0])  # load and JIT outside the timing
    return p


def test_pipeline_london_images(benchmark, record, pipe):
    paths = sample_images()
    n = benchmark(lambda: sum(len(pipe.run(p)) for p in paths))
    assert n == len(paths)
    record("pipeline_london_6_images", benchmark)


def test_pipeline_video_frame_640x480(benchmark, record, pipe):
    face = cv2.resize(cv2.imread(str(sample_images()[0])), (360, 360))
    frame = np.full((480, 640, 3), 90, np.uint8)
    frame[60:420, 140:500] = face
    assert len(pipe.run(frame)) == 1
    benchmark(pipe.run, frame)
    record("pipeline_frame_640x480", benchmark)
