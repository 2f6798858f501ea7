"""Image input at the edge: decoding, dtypes, channels, clear errors."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from fastes.io import ImageError, read_image, to_grey, write_png_atomic


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
