"""Property-based tests at the edges: the sketch kernels on any finite landmarks, image
reading on random and mutated bytes, manifest reading on mutated CSVs. Each input is
either handled or refused with the module's own error, never anything else."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import fastes
from fastes.io import ImageError, read_image
from fastes.sketch import MAX_COORD, DegenerateFaceError, remap_reference, sketch_reference

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# any finite coordinate, from tiny to far off the canvas; and a face-like base to perturb
coords = st.floats(-MAX_COORD, MAX_COORD, allow_nan=False, allow_infinity=False, width=64)
wild_landmarks = arrays(np.float64, (68, 2), elements=coords)
near_landmarks = arrays(np.float64, (68, 2), elements=st.floats(-300, 550, allow_nan=False, width=32))


def _degenerate(lm: np.ndarray) -> bool:
    return lm[16, 0] == lm[0, 0] or lm[33, 1] == lm[27, 1]


def _drawable(lm: np.ndarray) -> np.ndarray:
    """``lm`` with a zero face width or nose height made the smallest nonzero one (the
    remapped coordinates then reach 1e15 and more: the clipping is what is tested)."""
    lm = lm.copy()
    if lm[16, 0] == lm[0, 0]:
        lm[16, 0] = np.nextafter(lm[0, 0], np.inf) if lm[0, 0] < MAX_COORD else np.nextafter(lm[0, 0], -np.inf)
    if lm[33, 1] == lm[27, 1]:
        lm[33, 1] = np.nextafter(lm[27, 1], np.inf) if lm[27, 1] < MAX_COORD else np.nextafter(lm[27, 1], -np.inf)
    return lm


# ----------------------------------------------------------------------------- remap / sketch
@FAST
@given(st.one_of(wild_landmarks, near_landmarks))
def test_remap_agrees_with_the_papers_equations_on_any_finite_landmarks(lm):
    """Bit for bit where the reference's float64 arithmetic is finite; a degenerate face
    (zero width or nose height) is a DegenerateFaceError, never inf or NaN out."""
    if _degenerate(lm):
        with pytest.raises(DegenerateFaceError):
            fastes.remap(lm)
        return
    with np.errstate(all="ignore"):
        ref = remap_reference(lm)
    got = fastes.remap(lm)
    assert got.shape == (68, 2) and got.dtype == np.float64
    finite = np.isfinite(ref)
    np.testing.assert_array_equal(got[finite], ref[finite])


@FAST
@given(st.one_of(wild_landmarks, near_landmarks), st.sampled_from([8, 48, 64, 250]),
       st.sampled_from([1.0, 3.0, 7.0]))
def test_sketch_writes_only_its_canvas_and_only_0_or_255(lm, size, thickness):
    """The output sits between guard bytes: whatever the landmarks (points 1e6 px away,
    near-zero face width: remapped coordinates of 1e15), nothing outside is written and
    every pixel is 0 or 255; lines leaving the canvas are clipped to it."""
    lm = _drawable(lm)
    if round(thickness * size / 250) > size:
        return
    guard = 64
    raw = np.full(size * size + 2 * guard, 77, np.uint8)
    out = raw[guard:guard + size * size].reshape(size, size)
    fastes.sketch(lm, size=size, thickness=thickness, out=out)
    assert (raw[:guard] == 77).all() and (raw[guard + size * size:] == 77).all()
    assert set(np.unique(out)) <= {0, 255}


@FAST
@given(near_landmarks)
def test_sketch_matches_the_opencv_reference_where_it_can_draw(lm):
    """Near the canvas (cv2 works in int32 fixed point), the drawing is OpenCV's: a few
    pixels differ (rounding at line ends): IoU 0.9 or more."""
    lm = _drawable(lm)
    r = fastes.remap(lm)
    if np.abs(r).max() >= 1e4:
        return
    ours, ref = fastes.sketch(lm), sketch_reference(lm)
    a, b = ours > 0, ref > 0
    assert (a & b).sum() >= 0.9 * max(1, (a | b).sum())


@settings(max_examples=25, deadline=None)
@given(st.lists(st.one_of(wild_landmarks, near_landmarks), min_size=1, max_size=9))
def test_batches_equal_single_faces_serial_or_parallel(faces):
    batch = np.stack(faces)
    bad = [i for i, lm in enumerate(faces) if _degenerate(lm)]
    if bad:
        with pytest.raises(DegenerateFaceError) as info:
            fastes.sketch(batch)
        assert info.value.face_index == bad[0]
        return
    serial, parallel = fastes.sketch(batch, size=64, parallel=False), fastes.sketch(batch, size=64, parallel=True)
    np.testing.assert_array_equal(serial, parallel)
    for i, lm in enumerate(faces):
        np.testing.assert_array_equal(serial[i], fastes.sketch(lm, size=64))


@FAST
@given(arrays(np.float64, (68, 2), elements=st.floats(allow_nan=True, allow_infinity=True, width=64)))
def test_non_finite_or_huge_landmarks_are_refused_by_name(lm):
    assume(not (np.isfinite(lm).all() and np.abs(lm).max() <= MAX_COORD))
    with pytest.raises(DegenerateFaceError, match="face 0"):
        fastes.sketch(lm)


# ----------------------------------------------------------------------------- image reading
def _seeds() -> dict[str, bytes]:
    """Real encoded images of every format read_image sizes from the header."""
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8), (5, 5), 0)
    out = {}
    for ext in (".jpg", ".png", ".bmp", ".tif", ".webp", ".gif", ".ppm"):
        ok, buf = cv2.imencode(ext, img)
        assert ok
        out[ext] = buf.tobytes()
    out[".pgm"] = cv2.imencode(".pgm", img[:, :, 0])[1].tobytes()
    out["16.png"] = cv2.imencode(".png", img[:, :, 0].astype(np.uint16) * 257)[1].tobytes()
    return out


SEEDS = _seeds()


def _read_bytes(data: bytes, suffix: str = ".img", max_pixels: int = 4_000_000):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"fuzz{suffix}"
        p.write_bytes(data)
        try:
            img = read_image(p, max_pixels=max_pixels)
        except ImageError as e:
            assert str(e).startswith(str(p)), e  # names the file
            return None
    assert isinstance(img, np.ndarray) and img.size > 0 and img.dtype in (np.uint8, np.uint16, np.float32)
    return img


@FAST
@given(st.binary(max_size=4096), st.sampled_from([".jpg", ".png", ".bin", ""]))
def test_random_bytes_are_an_image_or_an_image_error(data, suffix):
    _read_bytes(data, suffix)


@st.composite
def mutated(draw):
    """A real encoded image with bytes flipped, inserted, deleted, or cut short: the
    headers whose size fields the pixel limit trusts are mutated most."""
    name = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[name])
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "huge"]))
        i = draw(st.integers(0, max(0, min(len(data) - 1, draw(st.sampled_from([40, 400, 1 << 20]))))))
        if not data:
            break
        if kind == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[i] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[i:i + draw(st.integers(1, 16))]
        elif kind == "truncate":
            del data[i:]
        else:  # a size field at its maximum
            data[i:i + 4] = b"\xff\xff\xff\x7f"
    return name, bytes(data)


@settings(max_examples=150, deadline=None)
@given(mutated(), st.sampled_from([4_000_000, 1000]))
def test_mutated_images_are_an_image_or_an_image_error(case, limit):
    """(At 1000 px the 56x40 seeds are over the limit: JPEGs take the reduced decoding.)"""
    name, data = case
    img = _read_bytes(data, os.path.splitext(name)[1] or name, limit)
    if img is not None:
        assert img.shape[0] * img.shape[1] <= limit  # never over the limit


def test_the_seeds_decode_unmutated():
    for name, data in SEEDS.items():
        assert _read_bytes(data, name) is not None, name


# ----------------------------------------------------------------------------- manifests
GOOD_CSV = (
    "path,dataset,subject,emotion,class4,gender,age,ethnicity,setting,votes\n"
    "a/1.png,x,s1,happiness,positive,female,adult,asian,posed,\n"
    "a/2.png,x,s2,sadness,negative,male,adult,white,posed,0;1;2;0;0;0;0;0;0;0\n"
    "b/3.png,y,,surprise,awe,,,,wild,\n"
)


@st.composite
def mutated_csv(draw):
    data = bytearray(GOOD_CSV.encode())
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "special"]))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if not data:
            break
        if kind == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=12))
        elif kind == "delete":
            del data[i:i + draw(st.integers(1, 30))]
        elif kind == "truncate":
            del data[i:]
        else:
            data[i:i] = draw(st.sampled_from([b",", b"\n", b'"', b"\x00", b"\r", b"\xff\xfe", b",,,,,,,,,,,,",
                                              "é".encode(), b"\\"]))
    return bytes(data)


@settings(max_examples=200, deadline=None)
@given(mutated_csv())
def test_mutated_manifests_are_samples_or_a_manifest_error(data):
    from fastes.data import CLASSES, ManifestError, read_manifest

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "manifest.csv"
        p.write_bytes(data)
        try:
            samples = read_manifest(p)
        except ManifestError as e:
            assert str(p) in str(e)
            return
    for s in samples:
        assert 0 <= s.label < len(CLASSES) and isinstance(s.subject, str) and s.subject


def test_the_unmutated_manifest_reads():
    from fastes.data import read_manifest

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "manifest.csv"
        p.write_text(GOOD_CSV)
        assert [s.label for s in read_manifest(p)] == [0, 1, 2]
