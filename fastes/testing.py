"""Synthetic inputs shared by tests, benchmarks and ``fastes bench``: scenes without
faces (for false detections), collages of faces (for several faces per image) and hostile
files (inputs that must each become an error row, never end a run)."""
from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np

__all__ = ["nonface_images", "collage", "frame_with_face", "huge_png"]


def nonface_images(n: int = 100, size: tuple[int, int] = (480, 640), seed: int = 0) -> list[np.ndarray]:
    """``n`` BGR images with no face: noise (white and smoothed), gradients, stripes,
    checkerboards, random ellipses and rectangles, text, and mixes of these."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for i in range(n):
        kind = i % 7
        if kind == 0:
            img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        elif kind == 1:
            img = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
            img = cv2.GaussianBlur(cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC), (0, 0), rng.uniform(1, 6))
        elif kind == 2:
            a = rng.uniform(0, 2 * np.pi)
            g = (np.cos(a) * xx + np.sin(a) * yy) / max(h, w)
            img = np.dstack([(255 * (g * rng.uniform(0.5, 1.5) + c) % 256) for c in rng.uniform(0, 1, 3)]).astype(np.uint8)
        elif kind == 3:
            period = rng.uniform(6, 60)
            a = rng.uniform(0, np.pi)
            s = np.sin((np.cos(a) * xx + np.sin(a) * yy) * 2 * np.pi / period)
            img = np.repeat(((s > 0) * 255).astype(np.uint8)[:, :, None], 3, 2)
        elif kind == 4:
            c = int(rng.integers(8, 64))
            board = ((xx // c + yy // c) % 2 * 255).astype(np.uint8)
            img = np.repeat(board[:, :, None], 3, 2)
        elif kind == 5:
            img = np.full((h, w, 3), rng.integers(0, 256, 3), np.uint8)
            for _ in range(int(rng.integers(5, 30))):
                col = tuple(int(v) for v in rng.integers(0, 256, 3))
                ctr = (int(rng.integers(0, w)), int(rng.integers(0, h)))
                if rng.random() < 0.5:
                    axes = (int(rng.integers(5, w // 4)), int(rng.integers(5, h // 4)))
                    cv2.ellipse(img, ctr, axes, float(rng.uniform(0, 180)), 0, 360, col, -1)
                else:
                    cv2.rectangle(img, ctr, (ctr[0] + int(rng.integers(5, w // 3)), ctr[1] + int(rng.integers(5, h // 3))), col, -1)
        else:
            img = np.full((h, w, 3), rng.integers(150, 256), np.uint8)
            for k in range(int(rng.integers(3, 12))):
                text = "".join(chr(int(c)) for c in rng.integers(65, 91, int(rng.integers(3, 12))))
                cv2.putText(img, text, (int(rng.integers(0, w // 2)), int(rng.integers(20, h))),
                            cv2.FONT_HERSHEY_SIMPLEX, float(rng.uniform(0.5, 3)), (0, 0, 0), int(rng.integers(1, 5)))
        out.append(img)
    return out


def collage(faces: list[np.ndarray], n: int, size: tuple[int, int] = (1080, 1920)) -> np.ndarray:
    """A BGR ``size`` image with ``n`` faces (cycled from ``faces``) on a near-square grid,
    each filling about 70 % of its cell, on a mid-grey background."""
    h, w = size
    cols = int(np.ceil(np.sqrt(n * w / h)))
    rows = int(np.ceil(n / cols))
    cell = min(h // rows, w // cols)
    side = int(cell * 0.7)
    img = np.full((h, w, 3), 120, np.uint8)
    for k in range(n):
        r, c = divmod(k, cols)
        face = cv2.resize(faces[k % len(faces)], (side, side), interpolation=cv2.INTER_AREA)
        y, x = r * cell + (cell - side) // 2, c * cell + (cell - side) // 2
        img[y:y + side, x:x + side] = face if face.ndim == 3 else face[:, :, None]
    return img


def frame_with_face(face: np.ndarray, size: tuple[int, int] = (480, 640), scale: float = 0.83) -> np.ndarray:
    """A BGR frame of ``size`` with ``face`` scaled to ``scale`` of its height, centred on grey."""
    h, w = size
    side = int(h * scale)
    f = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
    frame = np.full((h, w, 3), 120, np.uint8)
    y, x = (h - side) // 2, (w - side) // 2
    frame[y:y + side, x:x + side] = f if f.ndim == 3 else f[:, :, None]
    return frame


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_png(width: int, height: int) -> bytes:
    """A valid all-black 8-bit grey PNG of any size, built in milliseconds: 30000x30000
    (900 Mpx) is 0.9 MB. The zlib stream repeats one block of rows compressed after a full
    flush (which resets the compressor: every block compresses to the same bytes); the
    Adler-32 of all-zero data of length n is ``(n mod 65521) << 16 | 1``."""
    row = width + 1  # the filter byte (0: none), then the pixels
    rows = max(1, min(height, (1 << 24) // row))
    full, rest = divmod(height, rows)
    parts = [b"\x78\xda"]
    for count, times in ((rows, full), (rest, 1)):
        if count and times:
            c = zlib.compressobj(9, zlib.DEFLATED, -15)
            parts.append((c.compress(bytes(row * count)) + c.flush(zlib.Z_FULL_FLUSH)) * times)
    parts.append(b"\x03\x00")  # an empty final block
    parts.append(struct.pack(">I", ((row * height) % 65521) << 16 | 1))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", b"".join(parts))
            + _png_chunk(b"IEND", b""))
