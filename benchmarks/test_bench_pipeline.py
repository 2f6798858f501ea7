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


@pytest.fixture(scope="module")
def moving_clip():
    """30 frames of 640x480 with one face moving ~5 % of its width per frame."""
    face = cv2.resize(cv2.imread(str(sample_images()[0])), (300, 300))
    frames = []
    for t in range(30):
        f = np.full((480, 640, 3), 110, np.uint8)
        x, y = int(170 + 150 * np.sin(t / 10)), int(90 + 60 * np.cos(t / 7))
        f[y:y + 300, x:x + 300] = face
        frames.append(f)
    return frames


@pytest.mark.parametrize("every", [1, 5])
def test_pipeline_video_detect_every(benchmark, record, pipe, moving_clip, every):
    """Per clip of 30 frames: detection on every frame vs every 5th with tracking."""
    n = benchmark(lambda: sum(len(f) for f in pipe.run_video(moving_clip, detect_every=every)))
    assert n == len(moving_clip)
    record(f"video_30_frames_detect_every_{every}", benchmark)


@pytest.mark.parametrize("workers", [1, 2])
def test_pipeline_video_frames_workers(benchmark, record, moving_clip, workers):
    """30 frames of 640x480 through run_batch with 1 and 2 worker threads; pool started
    and warmed outside the timing."""
    with fastes.Pipeline(workers=workers) as p:
        list(p.run_batch(moving_clip[:4]))
        n = benchmark.pedantic(lambda: sum(len(f) for f in p.run_batch(moving_clip)), rounds=5, warmup_rounds=1)
    assert n == len(moving_clip)
    record(f"video_30_frames_workers_{workers}", benchmark)


@pytest.mark.parametrize("size", [(240, 320), (480, 640), (1080, 1920), (2160, 3840)],
                         ids=["320x240", "640x480", "1920x1080", "3840x2160"])
def test_pipeline_image_size(benchmark, record, pipe, size):
    """End to end per image, one face, as the image grows (decoded arrays)."""
    from fastes.testing import frame_with_face

    img = frame_with_face(cv2.imread(str(sample_images()[0])), size)
    assert len(pipe.run(img)) == 1
    benchmark(pipe.run, img)
    record(f"pipeline_{size[1]}x{size[0]}", benchmark)


@pytest.mark.parametrize("n", [1, 4, 16])
def test_pipeline_faces_per_image(benchmark, record, found, n):
    """End to end per 1920x1080 image with 1, 4 and 16 faces (the group detector)."""
    from fastes.testing import collage

    p = fastes.Pipeline(detector="blazeface-group")
    img = collage([cv2.imread(str(q)) for q in sample_images()], n, (1080, 1920))
    found[f"pipeline blazeface-group {n} faces"] = benchmark(lambda: len(p.run(img)))
    record(f"pipeline_1080p_{n}faces", benchmark)


@pytest.fixture(scope="module")
def sketch_model():
    """The fastest sketch model: sketches and landmarks alone, no face crop."""
    from fastes.pipeline import load_model

    return load_model("vgg11_fast_int8", threads=1)


@pytest.mark.parametrize("n", [1, 8, 64, 1000])
def test_sketch_and_model_batch(benchmark, record, sketch_model, landmarks_1000, n):
    """Sketch + vgg11_fast_int8 for a batch of n faces (per-face cost falls with batching)."""
    lms = landmarks_1000[:n]
    benchmark(sketch_model, lms)
    record(f"sketch_and_model_batch_{n}", benchmark)


@pytest.mark.parametrize("copies", [0, 8])
def test_sketch_and_model_tta(benchmark, record, sketch_model, landmarks_1000, copies):
    """One face's sketch + vgg11_fast_int8, plain and with test-time augmentation (8
    augmented copies in one batch: ``Pipeline(tta=8)``, ``--tta 8``)."""
    from fastes.runtime import Augmented

    clf = Augmented(sketch_model, copies) if copies else sketch_model
    lms = landmarks_1000[:1]
    clf(lms)
    benchmark(clf, lms)
    record(f"sketch_and_model_tta{copies}", benchmark)
