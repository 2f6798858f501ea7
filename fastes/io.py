"""Image input: decode files, validate arrays, make the grey copies the front end needs
and the small colour copy the detector's network takes.

Errors are raised here, at the edge, as :class:`ImageError` with a message that names
the input; the rest of the pipeline assumes a 2-D ``uint8`` grey image.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from numba import njit

__all__ = ["ImageError", "read_image", "to_grey", "to_rgb_small", "rgb_small_into", "IMAGE_SUFFIXES",
           "looks_like_image", "atomic_write", "write_png_atomic", "write_text_atomic"]

# Suffixes OpenCV decodes; used to pick files out of folders.
IMAGE_SUFFIXES = frozenset(
    ".jpg .jpeg .jpe .png .bmp .dib .tif .tiff .webp .pgm .ppm .pbm .pnm .jp2 .sr .ras".split()
)


# Leading bytes of the formats above, for files whose name does not say what they are.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"II*\x00", b"MM\x00*", b"P1", b"P2", b"P3",
          b"P4", b"P5", b"P6", b"\x00\x00\x00\x0cjP  ")


def looks_like_image(path: str | os.PathLike) -> bool:
    """True when the suffix is an image suffix or the first bytes are an image header
    (JPEG, PNG, BMP, TIFF, PNM, JPEG 2000, WebP): folders are scanned by content too."""
    p = Path(path)
    if p.suffix.lower() in IMAGE_SUFFIXES:
        return True
    try:
        with open(p, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


class ImageError(ValueError):
    """An input that is not a usable image (missing, unreadable, wrong shape or type)."""


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file as OpenCV does (BGR order, 8 or 16 bit, EXIF rotation applied)."""
    p = Path(path)
    if not p.exists():
        raise ImageError(f"{p}: no such file")
    if p.is_dir():
        raise ImageError(f"{p}: is a folder, not an image")
    try:
        data = np.fromfile(p, dtype=np.uint8)  # np.fromfile + imdecode: non-ASCII paths work
    except OSError as e:
        raise ImageError(f"{p}: cannot read ({e.strerror or e})") from None
    if data.size == 0:
        raise ImageError(f"{p}: empty file")
    img = cv2.imdecode(data, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if img is None or img.size == 0:
        raise ImageError(f"{p}: not an image OpenCV can decode")
    return img


def as_uint8(image: np.ndarray, order: str) -> np.ndarray:
    """Validate an image array and return it as ``uint8`` (H, W) or (H, W, 3|4)."""
    if not isinstance(image, np.ndarray):
        raise ImageError(f"expected a numpy array, got {type(image).__name__}")
    if order not in ("bgr", "rgb"):
        raise ImageError(f"order must be 'bgr' or 'rgb', got {order!r}")
    img = image
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (3, 4)):
        raise ImageError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape {image.shape}")
    if img.shape[0] < 1 or img.shape[1] < 1:
        raise ImageError(f"empty image of shape {image.shape}")
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return (img >> 8).astype(np.uint8)
    if img.dtype.kind == "f":
        if not np.isfinite(img).all():
            raise ImageError("float image contains NaN or inf")
        return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    raise ImageError(f"unsupported image dtype {img.dtype} (use uint8, uint16 or float)")


def to_grey(image: np.ndarray, order: str = "bgr") -> np.ndarray:
    """Return a 2-D ``uint8`` grey copy (or view) of an image array.

    Accepts grey ``(H, W)`` or ``(H, W, 1)``, colour ``(H, W, 3)`` and ``(H, W, 4)`` in
    ``order`` ("bgr", OpenCV's, or "rgb"; alpha is ignored), as ``uint8``, ``uint16``
    (full 16-bit range) or float in [0, 1].
    """
    img = as_uint8(image, order)
    if img.ndim == 3:
        code = {
            ("bgr", 3): cv2.COLOR_BGR2GRAY, ("rgb", 3): cv2.COLOR_RGB2GRAY,
            ("bgr", 4): cv2.COLOR_BGRA2GRAY, ("rgb", 4): cv2.COLOR_RGBA2GRAY,
        }[order, img.shape[2]]
        img = cv2.cvtColor(np.ascontiguousarray(img), code)
    return np.ascontiguousarray(img)


def small_shape(h: int, w: int, long_side: int) -> tuple[int, int, float]:
    """``(h', w', s)``: the size whose long side is ``long_side`` px, and the scale."""
    s = long_side / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s)), s


def _presample(img: np.ndarray, s: float) -> np.ndarray:
    """Huge inputs: keep every k-th pixel first, leaving the area average >= 4x to do
    (4K -> 128 px: 23 ms -> under 1 ms in OpenCV)."""
    k = int(1 / (4 * s))
    return img[::k, ::k] if k >= 2 else img


def to_rgb_small(image: np.ndarray, long_side: int, order: str = "bgr") -> tuple[np.ndarray, float]:
    """A ``uint8`` RGB ``(h, w, 3)`` copy whose long side is ``long_side`` px, and the
    scale factor used (small / original). Resizes first, so a huge colour image is
    converted only at the small size. Takes what :func:`to_grey` takes."""
    img = as_uint8(image, order)
    sh, sw, s = small_shape(*img.shape[:2], long_side)
    # INTER_AREA when shrinking: bilinear would be 10x cheaper (0.06 vs 0.6 ms for
    # 640x480 -> 128 px) but aliases textures into false faces (4 of 70 synthetic scenes)
    img = cv2.resize(np.ascontiguousarray(_presample(img, s)), (sw, sh),
                     interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB), s
    code = {
        ("bgr", 3): cv2.COLOR_BGR2RGB, ("bgr", 4): cv2.COLOR_BGRA2RGB, ("rgb", 4): cv2.COLOR_RGBA2RGB,
    }.get((order, img.shape[2]))
    return (cv2.cvtColor(img, code) if code is not None else img), s


def rgb_small_into(image: np.ndarray, out: np.ndarray, order: str = "bgr", lo: float = 0.0,
                   hi: float = 255.0) -> float:
    """Write ``image`` resized to ``out``'s size (float32 ``(h, w, 3)``, any strides: a
    region of a model's input; :func:`small_shape` gives the size that keeps the
    aspect) as RGB with 0..255 mapped to ``lo..hi``. Returns the scale, long side of
    ``out`` over long side of ``image``. Takes what :func:`to_grey` takes.

    Shrinking is the area average of OpenCV's ``INTER_AREA`` fused with the channel
    swap and the scaling in one Numba pass, unrounded: ~2.3x faster than OpenCV's
    area resize + conversion for a 640x480 frame to 128x96 (benchmarks/
    test_bench_detect.py; OpenCV vectorizes area resizing only for a factor of 2).
    Enlarging is bilinear, as OpenCV's."""
    img = as_uint8(image, order)
    h, w = out.shape[:2]
    s = max(h, w) / max(img.shape[:2])
    if s >= 1 or h > img.shape[0] or w > img.shape[1]:
        small = cv2.resize(np.ascontiguousarray(img), (w, h), interpolation=cv2.INTER_LINEAR)
        if small.ndim == 2:
            small = small[:, :, None]
        channels = [0, 0, 0] if small.shape[2] == 1 else [2, 1, 0] if order == "bgr" else [0, 1, 2]
        np.multiply(small[:, :, channels], np.float32((hi - lo) / 255), out=out, dtype=np.float32)
        np.add(out, np.float32(lo), out=out)
        return s
    img = np.ascontiguousarray(_presample(img, s))
    if img.ndim == 2:
        img = img[:, :, None]
    _area_into(img, out, img.shape[2] > 1 and order == "bgr", (hi - lo) / 255.0, lo)
    return s


@njit(nogil=True, cache=True)
def _span(j, f, n):
    """Destination index ``j`` of an area resize covers source ``[j * f, (j + 1) * f)``
    (``f = n_src / n_dst >= 1``, as in OpenCV): its first and last source index and the
    weights of those two (the ones between weigh 1)."""
    a, b = j * f, (j + 1) * f
    i0, i1 = int(a), min(int(np.ceil(b)) - 1, n - 1)
    return i0, i1, np.float32(min(i0 + 1.0, b) - a), np.float32(b - i1 if i1 > i0 else 0.0)


@njit(nogil=True, cache=True)
def _area_into(img, out, swap, gain, bias):
    """out[y, x] = gain * (area mean of img's first three channels, or of its only one;
    R and B swapped if ``swap``) + bias, for a C-contiguous ``img``. Per destination
    row, its source rows are summed into a flat row (contiguous: vectorized), which is
    then reduced along x, channels in registers. Measured on a 640x480 frame -> 128x96:
    0.15 ms; picking channels through a tuple index instead of ``swap`` cost 0.1 ms
    more, and a row spill buffer for fractional factors another 0.04."""
    H, W, C = img.shape
    h, w = out.shape[0], out.shape[1]
    flat = img.reshape(H, W * C)
    fy, fx = H / h, W / w
    first, last = np.empty(w, np.int64), np.empty(w, np.int64)
    wfirst, wlast = np.empty(w, np.float32), np.empty(w, np.float32)
    for x in range(w):
        first[x], last[x], wfirst[x], wlast[x] = _span(x, fx, W)
    norm = np.float32(gain * (h / H) * (w / W))
    bias = np.float32(bias)
    acc = np.empty(W * C, np.float32)
    for j in range(h):
        y0, y1, a, b = _span(j, fy, H)
        src = flat[y0]
        for i in range(W * C):
            acc[i] = a * np.float32(src[i])
        for y in range(y0 + 1, y1):
            src = flat[y]
            for i in range(W * C):
                acc[i] += src[i]
        if y1 > y0:
            src = flat[y1]
            for i in range(W * C):
                acc[i] += b * np.float32(src[i])
        row = out[j]
        for x in range(w):
            i0, i1, a = first[x] * C, last[x] * C, wfirst[x]
            s0 = a * acc[i0]
            s1 = a * acc[i0 + 1] if C > 1 else s0
            s2 = a * acc[i0 + 2] if C > 1 else s0
            for i in range(i0 + C, i1, C):
                s0 += acc[i]
                if C > 1:
                    s1 += acc[i + 1]
                    s2 += acc[i + 2]
            if i1 > i0:
                b = wlast[x]
                s0 += b * acc[i1]
                if C > 1:
                    s1 += b * acc[i1 + 1]
                    s2 += b * acc[i1 + 2]
            if C == 1:
                s1 = s2 = s0
            if swap:
                s0, s2 = s2, s0
            row[x, 0] = s0 * norm + bias
            row[x, 1] = s1 * norm + bias
            row[x, 2] = s2 * norm + bias


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(tmp_path)`` then rename the temp file over ``path``: readers never see
    a half-written file, and a failure leaves the old file (or none) in place."""
    p = Path(path)
    ext = "".join(p.suffixes)  # all of them: savers check it (Keras wants ".weights.h5")
    tmp = p.with_name(f".{p.name[:len(p.name) - len(ext)]}.{os.getpid()}.tmp{ext}")
    try:
        write(str(tmp))
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_png_atomic(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write a PNG atomically."""
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise ImageError(f"{path}: PNG encoding failed")
    atomic_write(path, lambda t: Path(t).write_bytes(buf.tobytes()))


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    atomic_write(path, lambda t: Path(t).write_text(text, encoding="utf-8"))
