"""Image input at the edge: decoding, dtypes, channels, clear errors."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from fastes.io import ImageError, read_image, rgb_small_into, small_shape, to_grey, to_rgb_small, write_png_atomic


def test_to_grey_accepts_all_layouts():
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    g = to_grey(bgr)
    assert g.shape == (20, 30) and g.dtype == np.uint8
    np.testing.assert_array_equal(g, cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    # RGB order gives the same grey as the BGR image it came from
    np.testing.assert_array_equal(to_grey(bgr[:, :, ::-1].copy(), order="rgb"), g)
    bgra = np.dstack([bgr, np.full((20, 30), 7, np.uint8)])
    np.testing.assert_array_equal(to_grey(bgra), g)  # alpha ignored
    np.testing.assert_array_equal(to_grey(g[:, :, None]), g)
    np.testing.assert_array_equal(to_grey(g.astype(np.uint16) * 257), g)  # 16 bit
    np.testing.assert_array_equal(to_grey(g / 255.0), g)  # float in [0, 1]


@pytest.mark.parametrize("shape", [(480, 640, 3), (481, 641, 3), (350, 350, 3), (300, 200, 4),
                                   (479, 333), (129, 1000, 3), (2160, 3840, 3), (60, 40, 3)])
@pytest.mark.parametrize("order", ["bgr", "rgb"])
def test_rgb_small_into_matches_opencv(shape, order):
    """The fused Numba area resize equals OpenCV's INTER_AREA (which rounds to uint8:
    hence 0.5) for integer and fractional factors, grey/colour/alpha, huge images
    (pre-subsampled alike), and enlarging (bilinear, same as OpenCV's)."""
    rng = np.random.default_rng(sum(shape))
    img = cv2.GaussianBlur(rng.integers(0, 256, shape, dtype=np.uint8), (0, 0), 1.5)
    h, w, s = small_shape(*shape[:2], 128)
    buf = np.full((h + 2, w + 4, 3), 7.0, np.float32)  # a region inside a bigger buffer
    got = rgb_small_into(img, buf[1:-1, 2:-2], order, -1.0, 1.0)
    ref, s_ref = to_rgb_small(img, 128, order)
    assert got == pytest.approx(s_ref)
    np.testing.assert_allclose((buf[1:-1, 2:-2] + 1) * 127.5, ref, atol=0.5 + 1e-3)
    assert (buf[0] == 7).all() and (buf[-1] == 7).all() and (buf[:, :2] == 7).all() and (buf[:, -2:] == 7).all()
    if len(shape) == 3 and shape[2] == 3:  # channel order: a red image is red
        red = np.zeros(shape, np.uint8)
        red[..., 2 if order == "bgr" else 0] = 255
        out = np.empty((h, w, 3), np.float32)
        rgb_small_into(red, out, order)
        np.testing.assert_allclose(out[..., 0], 255, atol=1e-3)
        np.testing.assert_allclose(out[..., 1:], 0, atol=1e-3)


@pytest.mark.parametrize(
    "arr, msg",
    [
        (np.zeros((5, 5, 2), np.uint8), "shape"),
        (np.zeros((5,), np.uint8), "shape"),
        (np.zeros((0, 5), np.uint8), "empty"),
        (np.zeros((5, 5), np.int32), "dtype"),
        (np.full((5, 5), np.nan), "NaN"),
    ],
)
def test_to_grey_rejects_bad_arrays(arr, msg):
    with pytest.raises(ImageError, match=msg):
        to_grey(arr)


def test_to_grey_rejects_non_arrays_and_bad_order():
    with pytest.raises(ImageError, match="numpy array"):
        to_grey([[1, 2], [3, 4]])
    with pytest.raises(ImageError, match="order"):
        to_grey(np.zeros((4, 4, 3), np.uint8), order="hsv")
    out = np.zeros((8, 8, 3), np.float32)
    with pytest.raises(ImageError, match="numpy array"):
        rgb_small_into([[1, 2], [3, 4]], out)
    with pytest.raises(ImageError, match="shape"):
        rgb_small_into(np.zeros((40, 40, 2), np.uint8), out)


def test_read_image_roundtrip_and_16_bit(tmp_path):
    img = (np.arange(40 * 50, dtype=np.uint16).reshape(40, 50) * 30).astype(np.uint16)
    p = tmp_path / "deep.png"
    cv2.imwrite(str(p), img)
    back = read_image(p)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, img)
    q = tmp_path / "ünïcode name.png"  # non-ASCII paths work
    cv2.imencode(".png", img.astype(np.uint8))[1].tofile(q)
    assert read_image(q).shape == (40, 50)


def test_read_image_errors_name_the_file(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        read_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="folder"):
        read_image(tmp_path)
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="empty.jpg: empty file"):
        read_image(tmp_path / "empty.jpg")
    (tmp_path / "notes.jpg").write_text("this is not a picture")
    with pytest.raises(ImageError, match="notes.jpg: not an image"):
        read_image(tmp_path / "notes.jpg")


def test_write_png_atomic_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "a.png"
    write_png_atomic(target, np.zeros((4, 4), np.uint8))
    assert read_image(target).shape == (4, 4)

    import fastes.io as fio

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(fio.os, "replace", boom)
    with pytest.raises(OSError):
        write_png_atomic(tmp_path / "b.png", np.zeros((4, 4), np.uint8))
    assert not (tmp_path / "b.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]  # temp file removed


def test_atomic_write_keeps_every_suffix_for_savers_that_check_it(tmp_path):
    from fastes.io import atomic_write

    seen = []
    atomic_write(tmp_path / "pretrained.weights.h5", lambda t: (seen.append(t), open(t, "w").close()))
    assert seen[0].endswith(".weights.h5") and seen[0] != str(tmp_path / "pretrained.weights.h5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pretrained.weights.h5"]
