"""Synthetic inputs shared by tests, benchmarks and ``fastes bench``: scenes without
faces (for false detections), collages of faces (for several faces per image) and hostile
files (inputs that must each become an error row, never end a run)."""
from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

__all__ = ["nonface_images", "collage", "frame_with_face", "huge_png", "hostile_corpus", "HOSTILE_KINDS",
           "exif_jpeg"]


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


def exif_jpeg(image: np.ndarray, orientation: int, quality: int = 95) -> bytes:
    """A JPEG of ``image`` stored as is, with an EXIF APP1 segment whose orientation tag
    (0x0112) is ``orientation`` (6: turn 90 degrees clockwise to view): a camera's
    sideways photo, made without PIL."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    jpg = buf.tobytes()
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) + struct.pack(
        "<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    body = b"Exif\x00\x00" + tiff
    return jpg[:2] + b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body + jpg[2:]


# What each file of hostile_corpus is, and what reading it gives: "error" (read_image
# raises ImageError: an error row), "image" (decodes; a face may or may not be found),
# "face" (decodes, with one face the default front end finds), "any" (an image or an
# error, by the decoder's version: never anything else).
HOSTILE_KINDS = {
    "face": "face",  # bundled London samples (CC BY 4.0), copied
    "face_16bit_png": "face", "face_grey_png": "face", "face_rgba_png": "face",
    "face_exif_rotated": "face",  # stored sideways, EXIF orientation 6
    "face_png_named_jpg": "face",  # content, not suffix, decides
    "face_unicode_name": "face", "face_non_utf8_name": "face",  # b"bad\xff face.jpg"
    "face_sideways": "face", "face_upside_down": "face",  # pixels turned 90 and 180 degrees
    "one_pixel": "image", "no_face": "image",
    "truncated_jpeg": "any",  # some libjpeg builds pad a cut JPEG with grey, OpenCV 4.14 refuses it
    "truncated_png": "error", "zero_bytes": "error", "random_bytes": "error", "text_as_png": "error",
    "huge_header_png": "error",  # IHDR claims 100000 x 100000, the data is 40 bytes
    "huge_png": "error",  # a valid 30000 x 30000 PNG (900 Mpx): over the pixel limit
    "huge_header_jpeg": "error",  # a cut JPEG whose frame header claims 65000 x 65000
    "broken_symlink": "error",
    "unreadable": "error",  # chmod 000; a face where the reader is root (see hostile_corpus)
    "folder_named_jpg": "error", "not_a_video": "error",
    "fifo": "error",  # only with fifo=True: a named pipe, which a plain read blocks on
}


def hostile_corpus(folder: str | os.PathLike, fifo: bool = False) -> dict[str, str]:
    """Write a corpus of hostile inputs into ``folder`` (made if missing) and return
    ``{file name: kind}`` (``HOSTILE_KINDS`` says what reading each kind gives). Names
    are as ``os.listdir`` returns them: the non-UTF-8 one (``b"bad\\xff face.jpg"``) with
    surrogate escapes (``os.fsencode`` gives its bytes back). Faces are the bundled London
    samples (CC BY 4.0): no restricted image is used. Entries the file system refuses
    (non-UTF-8 names, symbolic links, FIFOs on some systems) are left out of the result.

    ``unreadable`` is chmod 000: still readable for root (CI containers often run as
    root), where it decodes as a face; callers check ``os.access`` to know which to expect.
    ``fifo=True`` adds a named pipe with an image suffix (a reader that does not check
    for regular files blocks on it forever)."""
    from .samples import sample_images

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    faces = sample_images()
    face = cv2.imread(str(faces[0]), cv2.IMREAD_COLOR)
    jpg = faces[0].read_bytes()
    png = cv2.imencode(".png", face)[1].tobytes()
    grey = cv2.cvtColor(face, cv2.COLOR_BGR2GRAY)
    made: dict[str, str] = {}

    def put(name, kind: str, data: bytes | None = None) -> None:
        try:
            if data is not None:
                with open(os.path.join(os.fsencode(out), name if isinstance(name, bytes) else os.fsencode(name)),
                          "wb") as f:
                    f.write(data)
        except (OSError, ValueError):
            return  # the file system refuses the name
        made[os.fsdecode(name)] = kind

    for i, p in enumerate(faces[:2]):
        put(f"face_{i + 1}.jpg", "face", p.read_bytes())
    put("face_16bit.png", "face_16bit_png", cv2.imencode(".png", grey.astype(np.uint16) * 257)[1].tobytes())
    put("face_grey.png", "face_grey_png", cv2.imencode(".png", grey)[1].tobytes())
    alpha = np.full(face.shape[:2], 200, np.uint8)
    put("face_rgba.png", "face_rgba_png", cv2.imencode(".png", np.dstack([face, alpha]))[1].tobytes())
    put("face_exif_rotated.jpg", "face_exif_rotated", exif_jpeg(cv2.rotate(face, cv2.ROTATE_90_COUNTERCLOCKWISE), 6))
    put("face_png_named.jpg", "face_png_named_jpg", png)
    put("ünïcödé face.jpg", "face_unicode_name", jpg)
    put(b"bad\xff face.jpg", "face_non_utf8_name", jpg)
    for name, kind, code in (("face_sideways.jpg", "face_sideways", cv2.ROTATE_90_CLOCKWISE),
                             ("face_upside_down.jpg", "face_upside_down", cv2.ROTATE_180)):
        put(name, kind, cv2.imencode(".jpg", cv2.rotate(face, code))[1].tobytes())
    put("one_pixel.png", "one_pixel", cv2.imencode(".png", np.full((1, 1, 3), 128, np.uint8))[1].tobytes())
    put("no_face.jpg", "no_face", cv2.imencode(".jpg", nonface_images(6, seed=3)[5])[1].tobytes())
    put("truncated.jpg", "truncated_jpeg", jpg[:len(jpg) // 2])
    put("truncated.png", "truncated_png", png[:len(png) // 3])
    put("zero_bytes.jpg", "zero_bytes", b"")
    put("random_bytes.jpg", "random_bytes", np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    put("notes.png", "text_as_png", "these are notes, not a picture\n".encode() * 20)
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    put("huge_header.png", "huge_header_png", b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(bytes(40))) + _png_chunk(b"IEND", b""))
    put("huge.png", "huge_png", huge_png(30000, 30000))
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, 65000, 65000, 1) + b"\x01\x11\x00"
    sos = b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00"
    put("huge_header.jpg", "huge_header_jpeg", b"\xff\xd8" + sof + sos + bytes(64))
    put("not_a_video.mp4", "not_a_video", b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    try:
        link = out / "broken_link.jpg"
        if link.is_symlink():
            link.unlink()
        link.symlink_to(out / "no such target.jpg")
        made["broken_link.jpg"] = "broken_symlink"
    except (OSError, NotImplementedError):
        pass
    put("unreadable.jpg", "unreadable", jpg)
    if "unreadable.jpg" in made:
        os.chmod(out / "unreadable.jpg", 0)
    (out / "folder.jpg").mkdir(exist_ok=True)
    made["folder.jpg"] = "folder_named_jpg"
    if fifo and hasattr(os, "mkfifo"):
        try:
            if not (out / "pipe.jpg").exists():
                os.mkfifo(out / "pipe.jpg")
            made["pipe.jpg"] = "fifo"
        except OSError:
            pass
    return made
