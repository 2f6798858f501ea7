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


# ----------------------------------------------------------------------------- bounded, total decoding
def _encoded(ext: str, img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, img)
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp", ".tif", ".webp", ".ppm", ".pgm", ".ras", ".gif"])
def test_image_size_reads_the_header_of_each_format(tmp_path, ext):
    """The pixel limit is only as good as the header reading: each format's size is read
    without decoding, and agrees with what OpenCV decodes."""
    from fastes.io import image_size

    img = np.random.default_rng(1).integers(0, 256, (123, 457, 3), dtype=np.uint8)
    p = tmp_path / f"a{ext}"
    p.write_bytes(_encoded(ext, img[:, :, 0] if ext == ".pgm" else img))
    assert image_size(p) == (457, 123) == read_image(p).shape[1::-1]
    if ext == ".webp":  # the lossless bitstream has its own header
        p.write_bytes(cv2.imencode(".webp", img, [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes())
        assert image_size(p) == (457, 123)


def test_image_size_of_a_jpeg_after_large_metadata_segments(tmp_path):
    from fastes.io import image_size

    jpg = _encoded(".jpg", np.zeros((40, 70, 3), np.uint8))
    app = b"\xff\xe1" + (65535).to_bytes(2, "big") + bytes(65533)  # three 64 KB APP1 segments first
    p = tmp_path / "meta.jpg"
    p.write_bytes(jpg[:2] + app * 3 + jpg[2:])
    assert image_size(p) == (70, 40)
    assert read_image(p).shape == (40, 70, 3)


def test_an_image_over_the_limit_is_refused_by_size_or_decoded_reduced(tmp_path):
    img = np.random.default_rng(2).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    png, jpg = tmp_path / "big.png", tmp_path / "big.jpg"
    png.write_bytes(_encoded(".png", img))
    jpg.write_bytes(_encoded(".jpg", img))
    with pytest.raises(ImageError, match=r"big.png: 400x300 image .* over the limit of 0.1 Mpx"):
        read_image(png, max_pixels=100_000)
    # JPEG: libjpeg's reduced decoding, the least reduction that fits
    for limit, shape in ((120_000, (300, 400)), (100_000, (150, 200)), (30_000, (150, 200)),
                         (29_999, (75, 100)), (2_000, (38, 50))):
        assert read_image(jpg, max_pixels=limit).shape[:2] == shape, limit
    with pytest.raises(ImageError, match="over the limit"):
        read_image(jpg, max_pixels=1_000)  # 1/8 is the least libjpeg decodes


def test_the_limit_is_a_module_constant(tmp_path, monkeypatch):
    import fastes.io as fio

    p = tmp_path / "a.png"
    p.write_bytes(_encoded(".png", np.zeros((50, 60), np.uint8)))
    monkeypatch.setattr(fio, "MAX_PIXELS", 2999)
    with pytest.raises(ImageError, match="over the limit"):
        read_image(p)
    monkeypatch.setattr(fio, "MAX_PIXELS", 3000)
    assert read_image(p).shape == (50, 60)


def test_the_limit_from_the_environment(monkeypatch):
    import fastes.io as fio

    for raw, want in (("", 100_000_000), ("2500000", 2_500_000), ("5e7", 50_000_000), ("1_000", 1000)):
        monkeypatch.setenv("FASTES_MAX_PIXELS", raw)
        assert fio._env_max_pixels() == want
    for raw in ("lots", "0", "-5"):
        monkeypatch.setenv("FASTES_MAX_PIXELS", raw)
        with pytest.raises(ValueError, match="FASTES_MAX_PIXELS"):
            fio._env_max_pixels()


def test_a_bad_limit_in_the_environment_is_one_line_not_a_failed_import():
    r = _python("import fastes.io as fio; print(fio.MAX_PIXELS)", FASTES_MAX_PIXELS="lots")
    assert r.returncode == 0 and r.stdout.strip() == "100000000"
    assert r.stderr.strip().splitlines() == ["fastes: FASTES_MAX_PIXELS must be a positive number of pixels, "
                                             "got 'lots'; using 100 Mpx"]


def _python(code: str, **env):
    """Run ``code`` in a fresh interpreter (limits are read at import) with ``env`` added."""
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def test_opencv_gets_the_same_limit_as_a_backstop(tmp_path):
    """A format whose header is not read here (Radiance HDR) is still refused above the
    limit, by OpenCV's own check, which fastes sets before importing cv2."""
    p = tmp_path / "a.hdr"
    p.write_bytes(_encoded(".hdr", np.zeros((100, 100, 3), np.float32)))
    code = (f"import os, fastes, fastes.io as fio\n"
            f"print(os.environ['OPENCV_IO_MAX_IMAGE_PIXELS'], fio.MAX_PIXELS)\n"
            f"try:\n    fastes.read_image({str(p)!r}, max_pixels=10**9)\n"
            f"except fastes.ImageError as e:\n    print(e)\n")
    r = _python(code, FASTES_MAX_PIXELS="5000")
    assert r.returncode == 0, r.stderr
    limits, err = r.stdout.splitlines()
    assert limits == "5000 5000"
    assert "a.hdr: not an image OpenCV can decode (over OpenCV's pixel limit" in err
    r = _python(f"import fastes; print(fastes.read_image({str(p)!r}).shape[:2])")  # within the default limit
    assert r.stdout.strip() == "(100, 100)", r.stderr


def test_a_30000_pixel_square_png_is_refused_without_allocating_it(tmp_path):
    """A real, valid 30000x30000 grey PNG (900 Mpx, 0.9 MB compressed): decoding it would
    take 900 MB; refused from its header, the peak memory of the process barely moves."""
    from fastes.testing import huge_png

    p = tmp_path / "huge.png"
    p.write_bytes(huge_png(30000, 30000))
    code = ("import resource, fastes\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            f"try:\n    fastes.read_image({str(p)!r})\n"
            "except fastes.ImageError as e:\n    print(e)\n"
            "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n")
    r = _python(code)
    assert r.returncode == 0, r.stderr
    message, grown_mb = r.stdout.splitlines()
    assert "huge.png: 30000x30000 image (900 Mpx) is over the limit" in message
    assert int(grown_mb) < 50


def test_huge_png_is_a_valid_png():
    """The generator behind the 30000x30000 test writes a PNG OpenCV decodes (small here)."""
    from fastes.testing import huge_png

    img = cv2.imdecode(np.frombuffer(huge_png(700, 1234), np.uint8), cv2.IMREAD_UNCHANGED)
    assert img.shape == (1234, 700) and img.dtype == np.uint8 and not img.any()


def test_every_decoder_failure_is_an_image_error_naming_the_file(tmp_path, monkeypatch):
    import fastes.io as fio

    p = tmp_path / "ok.png"
    p.write_bytes(_encoded(".png", np.zeros((5, 5), np.uint8)))
    for exc in (cv2.error("boom"), MemoryError(), RuntimeError("codec"), OverflowError("x"), SystemError("y")):
        def decode(*a, exc=exc):
            raise exc

        monkeypatch.setattr(fio.cv2, "imdecode", decode)
        with pytest.raises(ImageError, match="ok.png: "):
            read_image(p)


def test_non_utf8_names_broken_links_and_special_files(tmp_path):
    import os

    good = _encoded(".png", np.full((6, 7), 9, np.uint8))
    name = os.fsencode(tmp_path) + b"/bad\xff name.png"
    with open(name, "wb") as f:
        f.write(good)
    assert read_image(name).shape == (6, 7)  # bytes paths work, and their str twin too
    assert read_image(os.fsdecode(name)).shape == (6, 7)
    with open(name, "wb") as f:
        f.write(b"junk")
    with pytest.raises(ImageError) as info:
        read_image(name)
    msg = str(info.value)
    assert "bad\\xff name.png: not an image" in msg
    msg.encode("utf-8")  # printable: no lone surrogates in the message
    assert os.fsencode(info.value.path) == name  # the exact name is kept
    (tmp_path / "link.jpg").symlink_to(tmp_path / "gone.jpg")
    with pytest.raises(ImageError, match="link.jpg: broken symbolic link"):
        read_image(tmp_path / "link.jpg")
    os.mkfifo(tmp_path / "pipe.jpg")  # would block a plain read forever
    with pytest.raises(ImageError, match="pipe.jpg: not a regular file"):
        read_image(tmp_path / "pipe.jpg")


def test_display_path_is_lossless_for_utf8_and_printable_for_anything():
    import os

    from fastes.io import display_path

    assert display_path("ünïcode/名前.jpg") == "ünïcode/名前.jpg"
    assert display_path(b"a/b\xff\xfe.jpg") == "a/b\\xff\\xfe.jpg"
    assert display_path(os.fsdecode(b"b\xff.jpg")) == "b\\xff.jpg"


# ----------------------------------------------------------------------------- hostile corpus
def test_hostile_corpus_writes_what_it_says(tmp_path):
    import os

    from fastes.io import image_size
    from fastes.testing import HOSTILE_KINDS, hostile_corpus

    made = hostile_corpus(tmp_path / "c", fifo=True)
    d = tmp_path / "c"
    assert sorted(os.listdir(d)) == sorted(made)  # every file it names, nothing else
    assert set(made.values()) <= set(HOSTILE_KINDS)
    by_kind = {k: n for n, k in made.items()}
    assert {"face", "zero_bytes", "huge_png", "broken_symlink", "face_non_utf8_name", "fifo"} <= set(by_kind)
    assert (d / by_kind["zero_bytes"]).stat().st_size == 0
    assert image_size(d / by_kind["huge_png"]) == (30000, 30000) and (d / by_kind["huge_png"]).stat().st_size < 2e6
    assert image_size(d / by_kind["huge_header_png"]) == (100_000, 100_000)
    link = d / by_kind["broken_symlink"]
    assert link.is_symlink() and not link.exists()
    assert os.fsencode(by_kind["face_non_utf8_name"]) == b"bad\xff face.jpg"
    assert (d / by_kind["unreadable"]).stat().st_mode & 0o777 == 0
    assert (d / by_kind["folder_named_jpg"]).is_dir()
    assert sum(k == "face" for k in made.values()) == 2
    assert hostile_corpus(d) == {n: k for n, k in made.items() if k != "fifo"}  # rewriting over it works


def test_each_hostile_input_is_an_image_or_an_image_error(tmp_path, finder):
    """What the batch runner relies on: every file gives an array or an ImageError that
    names it, as HOSTILE_KINDS says; the faces among them are found, upright."""
    import os

    from fastes.testing import HOSTILE_KINDS, hostile_corpus

    made = hostile_corpus(tmp_path, fifo=True)
    for name, kind in made.items():
        path = tmp_path / name
        want = HOSTILE_KINDS[kind]
        if kind == "unreadable" and os.access(path, os.R_OK):
            want = "face"  # root reads a chmod 000 file
        try:
            img = read_image(path)
        except ImageError as e:
            assert want in ("error", "any"), (name, e)
            assert name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace") in str(e)
            continue
        assert want in ("image", "face", "any"), name
        assert isinstance(img, np.ndarray) and img.size > 0
        if want == "face":
            faces = finder(img)
            assert len(faces) == 1, name
            lm = faces.landmarks[0]
            assert lm[36:48, 1].mean() < lm[48:60, 1].mean(), name  # upright


def test_exif_jpeg_is_turned_upright_by_read_image():
    from fastes.testing import exif_jpeg

    img = np.zeros((20, 40, 3), np.uint8)
    img[:, :5] = 255  # a white band on the left of the stored image
    data = exif_jpeg(img, 6)  # 6: turn 90 degrees clockwise to view
    back = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH)
    assert back.shape[:2] == (40, 20) and back[:5].mean() > 200  # the band now on top


def test_the_limit_holds_for_headers_not_read_here(tmp_path):
    """A format whose size is not read from its header (Radiance HDR) is checked once
    decoded (OpenCV's own limit bounds that decode): never an array over max_pixels."""
    p = tmp_path / "a.hdr"
    p.write_bytes(_encoded(".hdr", np.zeros((100, 100, 3), np.float32)))
    assert read_image(p, max_pixels=10_000).shape[:2] == (100, 100)
    with pytest.raises(ImageError, match=r"a.hdr: 100x100 image is over the limit of 0.005 Mpx"):
        read_image(p, max_pixels=5_000)


def test_jpeg_size_is_found_past_garbage_between_segments(tmp_path):
    """libjpeg skips bytes that are not a marker; so does the header reading (found by
    fuzzing: a JPEG whose second marker was mutated to a stuffed 0 was decoded at full
    size past a lower limit)."""
    from fastes.io import image_size

    jpg = _encoded(".jpg", np.zeros((40, 56, 3), np.uint8))
    p = tmp_path / "g.jpg"
    p.write_bytes(jpg[:2] + b"\xff\x00garbage" + jpg[2:])
    assert image_size(p) == (56, 40)
    assert read_image(p, max_pixels=1000).shape[:2] == (20, 28)
