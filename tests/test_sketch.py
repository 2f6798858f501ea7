"""Sketch kernels: the paper's remap, the Numba rasterizer against cv2.polylines, bad input."""
from __future__ import annotations

import importlib
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import fastes
from fastes.sketch import INNER_MOUTH, PARTS, DegenerateFaceError, remap_reference, render, sketch_reference


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return (a & b).sum() / max(1, (a | b).sum())


def frontal_face() -> np.ndarray:
    """A simple, plausible 68-point layout in 250x250 crop coordinates."""
    lm = np.zeros((68, 2))
    lm[0:17, 0] = np.linspace(30, 220, 17)  # jaw, FL0 at x=30, FL16 at x=220
    lm[0:17, 1] = 120 + 80 * np.sin(np.linspace(0, np.pi, 17))
    lm[17:22] = np.c_[np.linspace(50, 110, 5), [90, 80, 78, 80, 88]]  # brows
    lm[22:27] = np.c_[np.linspace(140, 200, 5), [88, 80, 78, 80, 90]]
    lm[27:31] = np.c_[[125] * 4, np.linspace(95, 150, 4)]  # nose bridge, FL27 y=95
    lm[31:36] = np.c_[np.linspace(105, 145, 5), [160, 163, 165, 163, 160]]  # FL33 y=165
    eye = np.array([[0, 0], [8, -5], [18, -5], [26, 0], [18, 4], [8, 4]], float)
    lm[36:42] = eye + [65, 110]
    lm[42:48] = eye + [160, 110]
    t = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    lm[48:60] = np.c_[125 - 35 * np.cos(t), 195 + 14 * np.sin(t)]
    lm[60:68] = np.c_[125 - 25 * np.cos(t[::-1][:8]), 195 + 5 * np.sin(t[:8])]
    return lm


# ----------------------------------------------------------------------------- remap
def test_remap_hits_the_paper_targets():
    lm = frontal_face()
    r = fastes.remap(lm)
    assert r.shape == (68, 2)
    assert r[0, 0] == pytest.approx(10) and r[16, 0] == pytest.approx(240)
    assert r[27, 1] == pytest.approx(70) and r[33, 1] == pytest.approx(210)


def test_remap_hand_computed_points_and_shifts():
    lm = frontal_face()
    r = fastes.remap(lm)
    # x' = (240 (x - 30) + 10 (220 - x)) / 190 ; y' = (210 (y - 95) + 70 (165 - y)) / 70
    def ex(x):
        return (240 * (x - 30) + 10 * (220 - x)) / 190

    def ey(y):
        return (210 * (y - 95) + 70 * (165 - y)) / 70

    assert r[19, 0] == pytest.approx(ex(lm[19, 0]))
    assert r[19, 1] == pytest.approx(ey(lm[19, 1]) + 50)  # brow: 50 px down
    assert r[37, 1] == pytest.approx(ey(lm[37, 1]) + 50)  # eye: 50 px down
    assert r[51, 1] == pytest.approx(ey(lm[51, 1]) - 70)  # mouth: 70 px up
    assert r[62, 1] == pytest.approx(ey(lm[62, 1]) - 70)  # inner mouth too
    assert r[30, 1] == pytest.approx(ey(lm[30, 1]))  # nose: not shifted
    assert r[5, 0] == pytest.approx(ex(lm[5, 0]))  # jaw: not shifted


def test_remap_batch_matches_reference_bit_for_bit(sample_landmarks):
    got = fastes.remap(sample_landmarks)
    assert got.shape == sample_landmarks.shape
    np.testing.assert_array_equal(got, remap_reference(sample_landmarks))


# ----------------------------------------------------------------------------- sketch vs cv2
def _compare_with_reference(lms: np.ndarray, size: int = 250) -> list[float]:
    ious = []
    for lm in lms:
        ours, ref = fastes.sketch(lm, size=size), sketch_reference(lm, size=size)
        ious.append(iou(ours, ref))
        # identical at the canvas borders: clipped as OpenCV clips, nothing wraps around
        for sl in (np.s_[0, :], np.s_[-1, :], np.s_[:, 0], np.s_[:, -1]):
            np.testing.assert_array_equal(ours[sl], ref[sl])
    return ious


def test_sketch_matches_cv2_polylines_on_bundled_faces(sample_landmarks):
    ious = _compare_with_reference(sample_landmarks)
    assert min(ious) >= 0.97


@pytest.mark.parametrize("size", [250, 128, 64, 48])
def test_sketch_matches_cv2_polylines_on_shared_data(real_landmarks, size):
    ious = _compare_with_reference(real_landmarks, size)
    assert min(ious) >= 0.97, f"worst IoU {min(ious):.4f}"
    # The rasterizer follows OpenCV's rules for thick (and, at 48 px, thin) lines,
    # so nearly every sketch is the reference pixel for pixel.
    assert np.mean([i == 1.0 for i in ious]) >= 0.95


def test_sketch_draws_the_parts_it_is_given(sample_landmarks):
    with_inner = PARTS + (INNER_MOUTH,)
    for lm in sample_landmarks:
        plain, more = fastes.sketch(lm), fastes.sketch(lm, parts=with_inner)
        assert iou(more, sketch_reference(lm, parts=with_inner)) >= 0.97
        assert (more >= plain).all() and (more > plain).any()  # the inner lips add ink, remove none
        mouth = fastes.sketch(lm, parts=(PARTS[-1],))
        assert plain[:100].any() and not mouth[:100].any() and mouth.any()  # only the mouth: no brows
    np.testing.assert_array_equal(fastes.sketch(sample_landmarks[0], parts=tuple(PARTS)), fastes.sketch(sample_landmarks[0]))
    batch = render(sample_landmarks, 48, parts=with_inner)
    assert batch.shape == (len(sample_landmarks), 48, 48, 1) and batch.sum() > render(sample_landmarks, 48).sum()
    for bad in ((), ((48, 48, True),), ((60, 68, True),), ((-1, 5, False),)):
        with pytest.raises(ValueError, match="parts"):
            fastes.sketch(sample_landmarks[0], parts=bad)


def test_sketch_is_the_papers_drawing():
    s = fastes.sketch(frontal_face())
    assert s.shape == (250, 250) and s.dtype == np.uint8
    assert set(np.unique(s)) == {0, 255}
    r = fastes.remap(frontal_face())
    for a, b, _ in PARTS:  # every drawn point is on a line ...
        for x, y in np.round(r[a : b + 1]).astype(int):
            assert s[y, x] == 255
    x, y = np.round(r[30]).astype(int)  # ... and the nose, jaw and inner mouth are not drawn
    assert s[y, x] == 0
    # eyes are closed polylines: the segment 41 -> 36 is drawn; brows are open: 21 -> 17 is not
    mid = np.round((r[41] + r[36]) / 2).astype(int)
    assert s[mid[1], mid[0]] == 255
    mid = np.round((r[21] + r[17]) / 2).astype(int)
    assert s[mid[1], mid[0]] == 0


def test_batch_equals_single_and_parallel_equals_serial(sample_landmarks):
    lms = np.concatenate([sample_landmarks] * 20)  # above the parallel threshold
    batch = fastes.sketch(lms)
    assert batch.shape == (len(lms), 250, 250)
    np.testing.assert_array_equal(batch, fastes.sketch(lms, parallel=False))
    np.testing.assert_array_equal(batch, fastes.sketch(lms, parallel=True))
    for i in range(len(sample_landmarks)):
        np.testing.assert_array_equal(batch[i], fastes.sketch(lms[i]))


def test_out_argument_is_filled_and_checked(sample_landmarks):
    out = np.full((len(sample_landmarks), 250, 250), 7, np.uint8)
    res = fastes.sketch(sample_landmarks, out=out)
    assert res is out
    np.testing.assert_array_equal(out, fastes.sketch(sample_landmarks))
    with pytest.raises(ValueError, match="out must be"):
        fastes.sketch(sample_landmarks, out=np.zeros((1, 250, 250), np.uint8))


@pytest.mark.parametrize("size", [32, 64, 128, 250, 500])
def test_size_scales_the_whole_drawing(size):
    lm = frontal_face()
    s = fastes.sketch(lm, size=size)
    assert s.shape == (size, size) and set(np.unique(s)) == {0, 255}
    # every drawn point lands where the scaled remap puts it
    pts = np.floor(fastes.remap(lm) * size / 250 + 0.5).astype(int)
    for a, b, _ in PARTS:
        for x, y in pts[a : b + 1]:
            assert s[y, x] == 255
    # the line width scales too (at small sizes OpenCV's whole-pixel rounding dominates)
    if size >= 128:
        big = fastes.sketch(lm, size=1000)
        assert (s > 0).mean() == pytest.approx((big > 0).mean(), rel=0.3)


def test_thickness_changes_line_width():
    lm = frontal_face()
    thin, thick = fastes.sketch(lm, thickness=3), fastes.sketch(lm, thickness=11)
    assert (thin > 0).sum() < (fastes.sketch(lm) > 0).sum() < (thick > 0).sum()
    assert ((thin > 0) & ~(thick > 0)).sum() == 0  # thinner lines lie inside thicker ones
    with pytest.raises(ValueError):
        fastes.sketch(lm, thickness=0)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "edit, why",
    [
        (lambda lm: lm.__setitem__((16, 0), lm[0, 0]), "x16 == x0"),
        (lambda lm: lm.__setitem__((33, 1), lm[27, 1]), "y33 == y27"),
        (lambda lm: lm.__setitem__((40, 1), np.nan), "NaN"),
        (lambda lm: lm.__setitem__((5, 0), np.inf), "NaN, inf"),
        (lambda lm: lm.__setitem__((5, 0), 1e300), "1e\\+06"),
    ],
)
def test_degenerate_faces_raise_naming_the_face(edit, why):
    batch = np.stack([frontal_face()] * 5)
    edit(batch[3])
    for fn in (fastes.sketch, fastes.remap):
        with pytest.raises(ValueError, match=f"face 3: .*{why}") as info:
            fn(batch)
        assert isinstance(info.value, DegenerateFaceError) and info.value.face_index == 3
    with pytest.raises(DegenerateFaceError, match="face 0"):
        fastes.sketch(batch[3])


def test_first_bad_face_is_reported():
    batch = np.stack([frontal_face()] * 4)
    batch[2, 16, 0] = batch[2, 0, 0]
    batch[1, 0, 0] = np.nan
    with pytest.raises(DegenerateFaceError) as info:
        fastes.sketch(batch)
    assert info.value.face_index == 1


@pytest.mark.parametrize("shape", [(68,), (67, 2), (68, 3), (2, 68, 2, 1), (0, 68)])
def test_wrong_shapes_raise(shape):
    with pytest.raises(ValueError, match="shape"):
        fastes.sketch(np.zeros(shape))


def test_non_numeric_raises():
    with pytest.raises(TypeError):
        fastes.sketch(np.full((68, 2), "a"))


def test_empty_batch():
    assert fastes.sketch(np.zeros((0, 68, 2))).shape == (0, 250, 250)


@pytest.mark.parametrize("dx, dy", [(-200, 0), (200, 0), (0, -150), (0, 180), (5000, 5000), (-1e5, 3e5)])
def test_points_off_canvas_are_clipped_not_wrapped(dx, dy):
    """Move the mouth (and only the mouth) far off: the rest is drawn, nothing wraps."""
    lm = frontal_face()
    full = fastes.sketch(lm)
    lm2 = lm.copy()
    lm2[48:60] += [dx, dy]
    s = fastes.sketch(lm2)
    ref = sketch_reference(lm2) if max(abs(dx), abs(dy)) < 1e4 else None
    no_mouth = lm.copy()
    no_mouth[48:60] = [1e5, 1e5]  # far away: draws nothing on the canvas
    rest = fastes.sketch(no_mouth)
    assert set(np.unique(s)) <= {0, 255}
    assert ((rest > 0) & ~(s > 0)).sum() == 0  # brows and eyes unchanged
    assert (s > 0).sum() <= (full > 0).sum() + (rest > 0).sum()
    if ref is not None:
        assert iou(s, ref) >= 0.97


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float64, (68, 2), elements=st.floats(-400, 650, allow_nan=False)),
)
def test_any_valid_landmarks_give_a_binary_sketch_close_to_cv2(lm):
    if lm[16, 0] == lm[0, 0] or lm[33, 1] == lm[27, 1]:
        with pytest.raises(DegenerateFaceError):
            fastes.sketch(lm)
        return
    s = fastes.sketch(lm)
    assert s.shape == (250, 250) and set(np.unique(s)) <= {0, 255}
    r = fastes.remap(lm)
    if np.abs(r).max() < 1e4:  # cv2 works in int32 fixed point: compare where it can
        assert iou(s, sketch_reference(lm)) >= 0.9


def test_lines_leaving_the_left_edge_do_not_streak_across_the_row():
    """A thick line's span that lies wholly left of the canvas once wrapped around
    (a negative slice end) and painted its row almost end to end."""
    rng = np.random.default_rng(3)
    base = frontal_face()
    worst = 1.0
    for _ in range(300):
        lm = base + rng.uniform(-2, 2, base.shape)
        lm[17:22, 0] -= rng.uniform(90, 140)  # right brow partly off the left edge
        lm[36:42, 0] -= rng.uniform(50, 120)  # and the right eye
        s = fastes.sketch(lm)
        ref = sketch_reference(lm)
        assert (s > 0).sum(axis=1).max() < 120, "a row painted across the canvas"
        worst = min(worst, iou(s, ref))
    assert worst >= 0.99


@pytest.mark.parametrize("size", [250, 128, 100])
def test_stamped_segments_are_the_directly_drawn_pixels(sample_landmarks, size):
    """Segments well inside the canvas are drawn from precomputed stamps: the same
    pixels as drawing each cap and quad directly (reach -1 turns the stamps off)."""
    sk = importlib.import_module("fastes.sketch")  # the module (fastes.sketch is the function)

    rng = np.random.default_rng(5)
    lms = np.concatenate([sample_landmarks + rng.uniform(-3, 3, sample_landmarks.shape) for _ in range(40)])
    lms = np.concatenate([lms, [frontal_face()]]).astype(np.float64)
    scale, r, margin = sk._scale_and_radius(size, 7)
    index, runs, reach = sk._stamps(r)
    assert reach > 0
    out = {}
    for name, rch in (("stamps", reach), ("direct", -1)):
        out[name] = np.empty((len(lms), size, size), np.uint8)
        sk._sketch_serial(lms, sk._SHIFT_Y, sk._PARTS, scale, np.int64(r), np.int64(margin), index, runs,
                          np.int64(rch), False, out[name])
    np.testing.assert_array_equal(out["stamps"], out["direct"])
    assert (out["stamps"] > 0).sum() > 1000 * len(lms) * (size / 250) ** 2


@pytest.mark.parametrize("parallel", [False, True])
def test_streamed_output_equals_drawing_in_place(sample_landmarks, parallel):
    """Big outputs are drawn in a scratch image and streamed out (non-temporal stores
    from the first 32-byte aligned byte on): same bytes, at any output alignment."""
    sk = importlib.import_module("fastes.sketch")
    rng = np.random.default_rng(6)
    lms = np.concatenate([sample_landmarks + rng.uniform(-2, 2, sample_landmarks.shape) for _ in range(6)])
    lms = lms.astype(np.float64)
    scale, r, margin = sk._scale_and_radius(250, 7)
    index, runs, reach = sk._stamps(r)
    kernel = sk._sketch_parallel if parallel else sk._sketch_serial
    args = (lms, sk._SHIFT_Y, sk._PARTS, scale, np.int64(r), np.int64(margin), index, runs, np.int64(reach))
    direct = np.empty((len(lms), 250, 250), np.uint8)
    kernel(*args, False, direct)
    for offset in (0, 1, 7, 31):
        raw = np.full(direct.size + 64, 77, np.uint8)
        out = raw[offset:offset + direct.size].reshape(direct.shape)
        kernel(*args, True, out)
        np.testing.assert_array_equal(out, direct)
        assert (raw[:offset] == 77).all() and (raw[offset + direct.size:] == 77).all()  # nothing outside


# ----------------------------------------------------------------------------- Numba cache
def test_no_writable_cache_folder_falls_back_to_temp_then_to_no_cache(tmp_path, monkeypatch):
    """A read-only install with no writable HOME: Numba would refuse to define the kernels
    (import fastes failed); fastes picks a temp folder, else compiles without a cache."""
    from numba.core import config

    from fastes import _jit

    src = tmp_path / "pkg"
    src.mkdir()
    (src / "__pycache__").write_text("")  # the package's own cache folder cannot be made
    (src / "mod.py").write_text("")
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    monkeypatch.setenv("HOME", str(blocked))
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked / "cache"))
    monkeypatch.setattr(config, "CACHE_DIR", "")
    ok, folder, note = _jit.choose_cache(str(src / "mod.py"), temp_root=str(tmp_path / "tmp"))
    assert ok and folder == str(tmp_path / "tmp" / f"fastes-numba-cache-{os.getuid()}")
    assert note.count("\n") == 0 and folder in note and "is writable" in note
    ok, folder, note = _jit.choose_cache(str(src / "mod.py"), temp_root=str(blocked / "tmp"))
    assert (ok, folder) == (False, None) and "no cache" in note
    monkeypatch.setattr(config, "CACHE_DIR", str(blocked / "numba"))  # an unwritable NUMBA_CACHE_DIR is said
    (src / "__pycache__").unlink()
    ok, folder, note = _jit.choose_cache(str(src / "mod.py"))
    assert ok and folder is None and "NUMBA_CACHE_DIR" in note and str(src / "__pycache__") in note
    monkeypatch.setattr(config, "CACHE_DIR", "")
    assert _jit.choose_cache(str(src / "mod.py")) == (True, None, None)  # the normal case says nothing


def test_a_read_only_install_without_home_still_imports_and_runs(tmp_path):
    """The package copied where its __pycache__ cannot be made, HOME a file: import and
    remap in a fresh process (import fastes raised RuntimeError); one line on stderr says
    where the kernels are cached, and they are."""
    import shutil
    import subprocess
    import sys

    pkg = Path(fastes.__file__).parent
    shutil.copytree(pkg, tmp_path / "fastes", ignore=shutil.ignore_patterns("__pycache__", "data"))
    (tmp_path / "fastes" / "__pycache__").write_text("")
    (tmp_path / "home").write_text("")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1", "HOME": str(tmp_path / "home"),
           "XDG_CACHE_HOME": str(tmp_path / "home" / "cache"), "TMPDIR": str(tmp_path)}
    env.pop("NUMBA_CACHE_DIR", None)
    np.save(tmp_path / "lm.npy", frontal_face())
    code = ("import fastes, numpy as np\n"  # remap: a cached kernel compiled and saved (sketch's take 20 s)
            "print(fastes.__file__, int(fastes.remap(np.load('lm.npy'))[0, 0]))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(tmp_path / "fastes" / "__init__.py"), "10"]  # x0 goes to 10
    assert any((tmp_path / f"fastes-numba-cache-{os.getuid()}").rglob("*.nbi"))  # and it was cached there
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("fastes:")]
    assert len(lines) == 1 and "fastes-numba-cache-" in lines[0], r.stderr
