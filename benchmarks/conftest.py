"""Benchmarks run on one core unless a test says otherwise; ratios printed at the end.

Run: python -m pytest benchmarks            (see README, "Performance")
"""
from __future__ import annotations

import cv2
import numba
import numpy as np
import pytest

# Pairs (name, faster, slower, unit divisor) whose ratio is printed after the run.
RATIOS = [
    ("sketch batch vs cv2.polylines reference (per sketch)", "sketch_batch_1000_serial", "reference_cv2_per_sketch", (1000, 100)),
    ("sketch batch of 64 (reused buffer) vs cv2.polylines reference (per sketch)", "sketch_batch_64_serial", "reference_cv2_per_sketch", (64, 100)),
    ("sketch batch, 2 threads vs 1", "sketch_batch_1000_parallel", "sketch_batch_1000_serial", (1000, 1000)),
    ("68 landmarks per crop, fastes kernel vs dlib", "landmarks_per_crop", "dlib_landmarks_per_crop", (1, 1)),
    ("Haar on downscaled copy vs full 640x480", "haar_downscaled_640x480", "haar_full_640x480", (1, 1)),
    ("BlazeFace vs Haar (160-px copy), 640x480", "detect_blazeface_640x480", "detect_haar_640x480", (1, 1)),
    ("video frames, detect every 5th + tracking vs every frame", "video_30_frames_detect_every_5", "video_30_frames_detect_every_1", (1, 1)),
    ("640x480 video frames, 2 worker threads vs 1", "video_30_frames_workers_2", "video_30_frames_workers_1", (1, 1)),
    ("640x480 image to sketch, BlazeFace vs Haar", "image_to_sketch_640x480_blazeface", "image_to_sketch_640x480_haar", (1, 1)),
    ("one face, sketch + vgg11_fast_int8, plain vs 8-copy test-time augmentation", "sketch_and_model_tta0", "sketch_and_model_tta8", (1, 1)),
    ("one face, two_stream_int8, plain vs 8-copy test-time augmentation", "two_stream_int8_per_face_b1_t1", "two_stream_int8_tta8_per_face_b1_t1", (1, 1)),
    *[(f"{n} int8 TFLite vs Keras predict, batch 1, 1 thread", f"{n}_tflite_int8_b1_t1", f"{n}_keras_predict_b1", (1, 1))
      for n in ("vgg11_fast", "vgg11", "capsnet", "resnet50")],
]
_results: dict[str, float] = {}
_found: dict[str, int] = {}  # faces found per synthetic group image, by detector
NOTES: list[str] = []  # lines a benchmark computes itself (e.g. rates without start-up)


@pytest.fixture(autouse=True)
def one_core():
    cv2.setNumThreads(1)
    numba.set_num_threads(1)
    yield


@pytest.fixture
def found():
    return _found


@pytest.fixture
def record():
    def _record(name: str, benchmark) -> None:
        if benchmark.stats is not None:  # None with --benchmark-disable (a smoke run)
            _results[name] = benchmark.stats.stats.median
    return _record


def pytest_terminal_summary(terminalreporter):
    if not _results and not NOTES:
        return
    tr = terminalreporter
    tr.section("fastes: per-item medians and ratios (same run)")
    for line in NOTES:
        tr.write_line(line)
    for name, med in sorted(_results.items()):
        tr.write_line(f"{name:40s} {med * 1e6:12.1f} us (whole call)")
    if "pipeline_frame_640x480" in _results:
        tr.write_line(f"640x480 one-face frames, one core: {1 / _results['pipeline_frame_640x480']:.1f} frames/s")
    for n in (1, 8, 64, 1000):
        if f"sketch_and_model_batch_{n}" in _results:
            tr.write_line(f"sketch + vgg11_fast_int8, batch of {n}: "
                          f"{_results[f'sketch_and_model_batch_{n}'] / n * 1e3:.3f} ms per face")
    for w in (1, 2):
        if f"video_30_frames_workers_{w}" in _results:
            tr.write_line(f"640x480 one-face frames, {w} worker thread(s): "
                          f"{30 / _results[f'video_30_frames_workers_{w}']:.1f} frames/s")
    if "pipeline_london_6_images" in _results:
        tr.write_line(f"London images (600x600, decode included), one core: "
                      f"{6 / _results['pipeline_london_6_images']:.1f} images/s")
    for k, v in _found.items():
        tr.write_line(f"faces found, {k} (1920x1080 collage): {v}")
    for label, fast, slow, (nf, ns) in RATIOS:
        if fast in _results and slow in _results:
            f, s = _results[fast] / nf, _results[slow] / ns
            tr.write_line(f"{label}: {f * 1e6:.2f} us vs {s * 1e6:.2f} us -> {s / f:.1f}x")


@pytest.fixture(scope="session")
def landmarks_1000() -> np.ndarray:
    """1,000 real landmark sets: the bundled samples' faces, jittered by up to 2 px."""
    from fastes import FaceFinder, read_image
    from fastes.cli import sample_images

    finder = FaceFinder()
    base = np.concatenate([finder(read_image(p)).landmarks for p in sample_images()])
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(base), 1000)
    return (base[idx] + rng.uniform(-2, 2, (1000, 68, 2))).astype(np.float32)


@pytest.fixture(scope="session")
def frame_640x480() -> np.ndarray:
    """A 640x480 BGR frame with one face (a bundled sample, scaled to 400 px, on grey)."""
    from fastes import read_image
    from fastes.cli import sample_images

    face = cv2.resize(read_image(sample_images()[0]), (400, 400), interpolation=cv2.INTER_AREA)
    frame = np.full((480, 640, 3), 120, np.uint8)
    frame[40:440, 120:520] = face
    return frame
