"""Emotion sketches: the paper's landmark remapping and a Numba line rasterizer.

Landmarks are float ``(68, 2)`` or ``(N, 68, 2)`` arrays of (x, y) points in the
coordinates of a 250x250 face crop (dlib's 68-point layout). A sketch is a ``uint8``
image, 0 background and 255 lines, of the remapped brows, eyes and outer mouth.

Kernels (all ``@njit``, ``nogil``): ``_remap_face`` (paper eqs. 1-2 and the part
shifts), ``_draw_disc`` and ``_draw_quad`` (a thick line = a quad body and round caps,
rasterized by OpenCV's rules for non-antialiased thick lines, so that the sketches are
the paper's OpenCV drawings, pixel for pixel almost everywhere), ``_draw_face`` (one
sketch) and the serial / ``prange`` batch loops.

Speed: a segment's pixels (its start cap plus its body) depend only on the offset
between its whole-pixel ends, so ``_build_stamps`` draws every offset up to
``STAMP_REACH`` px once per line radius (~0.1 s, on first use) as runs of pixels, and a
segment well inside the canvas is drawn by filling its stamp's runs with a few wide
stores (``_fill_span``). Segments near the border or longer than the reach take the
direct path (same pixels; the tests compare both). ``remap_reference`` and
``sketch_reference`` are the plain NumPy / ``cv2.polylines`` twins the tests compare
against.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._jit import njit

__all__ = [
    "remap", "sketch", "render", "augment", "MIRROR", "remap_reference", "sketch_reference", "PARTS", "INNER_MOUTH",
    "CANVAS",
]

CANVAS = 250  # the paper's sketch size; `size` scales everything from here
THICKNESS = 7
# Paper targets: x0' (FL0), x16' (FL16), y27' (FL27), y33' (FL33).
X0_T, X16_T, Y27_T, Y33_T = 10.0, 240.0, 70.0, 210.0
EYE_BROW_SHIFT = 50.0  # brows and eyes move down
MOUTH_SHIFT = -70.0  # the whole mouth (48-67) moves up

# (first index, last index, closed) for each drawn part, in dlib's 68-point layout.
PARTS = (
    (17, 21, False),  # right brow
    (22, 26, False),  # left brow
    (36, 41, True),  # right eye
    (42, 47, True),  # left eye
    (48, 59, True),  # outer mouth
)
_PARTS = np.array([(a, b, int(c)) for a, b, c in PARTS], dtype=np.int64)
# Not drawn by the paper: the inner lip contour, which tells a closed mouth with full lips
# from an open one (an experiment's option, TrainConfig.inner_mouth; docs/experiments.md, "Why are black subjects recognized worst?").
INNER_MOUTH = (60, 67, True)


def _parts_array(parts) -> np.ndarray:
    if parts is PARTS:
        return _PARTS
    arr = np.array([(a, b, int(c)) for a, b, c in parts], dtype=np.int64).reshape(-1, 3)
    if len(arr) == 0 or (arr[:, 0] < 0).any() or (arr[:, 1] > 67).any() or (arr[:, 1] <= arr[:, 0]).any():
        raise ValueError("parts must be (first, last, closed) triples with 0 <= first < last <= 67")
    return arr

# Per-point vertical shift after remapping.
_SHIFT_Y = np.zeros(68, dtype=np.float64)
_SHIFT_Y[17:27] = EYE_BROW_SHIFT
_SHIFT_Y[36:48] = EYE_BROW_SHIFT
_SHIFT_Y[48:68] = MOUTH_SHIFT


# --------------------------------------------------------------------------- kernels
def _byte_ptr(context, builder, arrty, arr, offset, typ):
    """Codegen: a `typ`* pointer to byte `offset` of array `arr`'s data."""
    ary = context.make_array(arrty)(context, builder, arr)
    ptr = builder.gep(builder.bitcast(ary.data, ir.IntType(8).as_pointer()), [offset])
    return builder.bitcast(ptr, typ.as_pointer())


@intrinsic
def _poke(typingctx, arr, offset, value):
    """Store the integer `value` (8, 16, 32 or 64 bits) at byte `offset` of C-contiguous
    `arr`'s data, unaligned: one store sets up to 8 pixels of a span."""
    if not (isinstance(arr, types.Array) and isinstance(offset, types.Integer)
            and isinstance(value, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        typ = ir.IntType(signature.args[2].bitwidth)
        builder.store(args[2], _byte_ptr(context, builder, signature.args[0], args[0], args[1], typ), align=1)
        return context.get_dummy_value()

    return types.void(arr, offset, value), codegen


@intrinsic
def _stream32(typingctx, dst, doff, src, soff):
    """Copy 32 bytes from `src` (byte offset soff, any alignment) to `dst` (doff, which
    must be 32-byte aligned) with a non-temporal store: it skips the cache, so a big
    output is written without first being read in."""
    def codegen(context, builder, signature, args):
        vt = ir.VectorType(ir.IntType(64), 4)
        v = builder.load(_byte_ptr(context, builder, signature.args[2], args[2], args[3], vt), align=1)
        st = builder.store(v, _byte_ptr(context, builder, signature.args[0], args[0], args[1], vt), align=32)
        st.set_metadata("nontemporal", builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)]))
        return context.get_dummy_value()

    return types.void(dst, doff, src, soff), codegen


@intrinsic
def _sfence(typingctx):
    """Order the non-temporal stores before anything after (x86 sfence)."""
    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                            "llvm.x86.sse.sfence")
        builder.call(fn, [])
        return context.get_dummy_value()

    return types.void(), codegen


@njit(nogil=True, cache=True)
def _stream_copy(dst, src):
    """dst[...] = src (same size, C-contiguous uint8), the aligned middle streamed."""
    n = src.size
    addr = dst.ctypes.data
    head = min(n, (32 - addr % 32) % 32)
    d = dst.reshape(-1)
    s_ = src.reshape(-1)
    for i in range(head):
        d[i] = s_[i]
    o = head
    while o + 32 <= n:
        _stream32(dst, o, src, o)
        o += 32
    for i in range(o, n):
        d[i] = s_[i]


@njit(nogil=True, cache=True, inline="always")
def _fill_span(img, y, a, b):
    """Set pixels a..b (0 <= a <= b < width) of row y of a C-contiguous uint8 image to
    255 with a few wide stores: 8 bytes at a time, the last store ending at b."""
    base = y * img.shape[1]
    n = b - a + 1
    if n >= 8:
        o = base + a
        end = base + b - 7
        while o < end:
            _poke(img, o, np.int64(-1))
            o += 8
        _poke(img, end, np.int64(-1))
    elif n >= 4:
        _poke(img, base + a, np.int32(-1))
        _poke(img, base + b - 3, np.int32(-1))
    elif n >= 2:
        _poke(img, base + a, np.int16(-1))
        _poke(img, base + b - 1, np.int16(-1))
    else:
        _poke(img, base + a, np.int8(-1))


@njit(nogil=True, cache=True)
def _remap_face(lm, shift_y, scale, out):
    """Paper eqs. (1)-(2) and the part shifts for one face, scaled by `scale`.

    Written exactly as the paper's equations and without fastmath, so that results
    are bit-identical to `remap_reference`: dlib's integer landmarks often land on a
    half pixel, and a last-bit difference would round a whole line one pixel away.
    """
    x0 = lm[0, 0]
    x16 = lm[16, 0]
    y27 = lm[27, 1]
    y33 = lm[33, 1]
    for i in range(lm.shape[0]):
        x = lm[i, 0]
        y = lm[i, 1]
        xr = (X16_T * (x - x0) + X0_T * (x16 - x)) / (x16 - x0)
        yr = (Y33_T * (y - y27) + Y27_T * (y33 - y)) / (y33 - y27) + shift_y[i]
        out[i, 0] = xr * scale
        out[i, 1] = yr * scale


@njit(nogil=True, cache=True)
def _outcode(x, y, right, bottom):
    return (x < 0) + (x > right) * 2 + (y < 0) * 4 + (y > bottom) * 8


@njit(nogil=True, cache=True)
def _clip_side(ax, ay, bx, by, right, bottom):
    """Clip integer segment AB to [0, right] x [0, bottom], rows first, then columns,
    truncating as OpenCV's clipLine does. Used on quad sides (16.16 fixed point: the
    clipped start sets where samples fall) and on whole segments (whole pixels)."""
    c1 = _outcode(ax, ay, right, bottom)
    c2 = _outcode(bx, by, right, bottom)
    if (c1 & c2) == 0 and (c1 | c2) != 0:
        if c1 & 12:
            a = 0 if c1 < 8 else bottom
            ax += _div_trunc((a - ay) * (bx - ax), by - ay)
            ay = a
            c1 = _outcode(ax, 0, right, bottom)
        if c2 & 12:
            a = 0 if c2 < 8 else bottom
            bx += _div_trunc((a - by) * (bx - ax), by - ay)
            by = a
            c2 = _outcode(bx, 0, right, bottom)
        if (c1 & c2) == 0 and (c1 | c2) != 0:
            if c1:
                a = 0 if c1 == 1 else right
                ay += _div_trunc((a - ax) * (by - ay), bx - ax)
                ax = a
                c1 = 0
            if c2:
                a = 0 if c2 == 1 else right
                by += _div_trunc((a - bx) * (by - ay), bx - ax)
                bx = a
                c2 = 0
    return ax, ay, bx, by, (c1 | c2) == 0


@njit(nogil=True, cache=True)
def _draw_side(img, fax, fay, fbx, fby, right, bottom):
    """Step one quad side (16.16 fixed point) a pixel at a time along its major axis."""
    one = 65536
    inside = (0 <= fax <= right and 0 <= fbx <= right and 0 <= fay <= bottom and 0 <= fby <= bottom)
    if not inside:
        fax, fay, fbx, fby, visible = _clip_side(fax, fay, fbx, fby, right, bottom)
        if not visible:
            return
    shallow = abs(fbx - fax) > abs(fby - fay)
    # Step from the end with the smaller major coordinate, one whole pixel at a time
    # along the major axis; the minor coordinate moves by a truncated 16.16 increment.
    if (fbx < fax) if shallow else (fby < fay):
        fax, fay, fbx, fby = fbx, fby, fax, fay
    _put(img, (fbx + (one >> 1)) >> 16, (fby + (one >> 1)) >> 16)  # the far end, always
    ex = fbx - fax
    ey = fby - fay
    if shallow:
        sx, sy, n = one, _div_trunc(ey * one, ex | 1), ex >> 16
    else:
        sx, sy, n = _div_trunc(ex * one, ey | 1), one, ey >> 16
    x = fax + (one >> 1)
    y = fay + (one >> 1)
    for _ in range(n + 1):
        _put(img, x >> 16, y >> 16)
        x += sx
        y += sy


@njit(nogil=True, cache=True)
def _div_trunc(a, b):
    """Integer division rounding toward zero (C's), not toward -inf (Python's)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


@njit(nogil=True, cache=True)
def _put(img, x, y):
    if 0 <= x < img.shape[1] and 0 <= y < img.shape[0]:
        img[y, x] = 255


@njit(nogil=True, cache=True)
def _disc_table(r):
    """Half-widths of a disc of radius `r` (inclusive) for each row offset 0..floor(r)."""
    n = int(math.floor(r + 1e-9))
    half = np.empty(n + 1, dtype=np.int64)
    for dy in range(n + 1):
        half[dy] = int(math.floor(math.sqrt(max(0.0, r * r - dy * dy) + 1e-9)))
    return half


@njit(nogil=True, cache=True)
def _draw_disc(img, cx, cy, half):
    """A filled disc at the whole-pixel centre (cx, cy): a round line cap or joint."""
    h, w = img.shape
    n = half.shape[0] - 1
    for dy in range(-n, n + 1):
        y = cy + dy
        if 0 <= y < h:
            hw = half[abs(dy)]
            a = max(0, cx - hw)
            b = min(w - 1, cx + hw)
            if a <= b:
                _fill_span(img, y, a, b)


@njit(nogil=True, cache=True)
def _draw_quad(img, px, py, qx, qy, r, fx, fy, top, bot, x0, step, spans):
    """Segment PQ swept `r` px to each side, drawn as OpenCV draws a thick line's body,
    so that sketches match the paper's OpenCV figures pixel for pixel almost everywhere.

    The quad's 4 sides are stepped pixel by pixel along their major axis (16.16 fixed
    point, as OpenCV does, so exact half-pixel ties round alike); its inside is then
    filled row by row, corners' rows rounded, each side's x stepping by a rounded
    increment from its upper corner, each span rounded to whole pixels. Nothing is
    written outside the canvas. `fx`..`step` are scratch arrays of 4, `spans` (2, H).
    """
    h, w = img.shape
    dx = qx - px
    dy = qy - py
    length = math.sqrt(dx * dx + dy * dy)
    if length < 1e-9:
        return
    ox = -dy / length * r
    oy = dx / length * r
    one = 65536
    # corners in 16.16 fixed point
    # Ends are whole pixels; the offsets are rounded on their own, so a quad moved by
    # whole pixels is the same pixels moved (what lets `_stamps` precompute them).
    ix = np.int64(math.floor(ox * one + 0.5))
    iy = np.int64(math.floor(oy * one + 0.5))
    jx = np.int64(math.floor(-ox * one + 0.5))
    jy = np.int64(math.floor(-oy * one + 0.5))
    fx[0] = np.int64(px) * one + ix
    fy[0] = np.int64(py) * one + iy
    fx[1] = np.int64(px) * one + jx
    fy[1] = np.int64(py) * one + jy
    fx[2] = np.int64(qx) * one + jx
    fy[2] = np.int64(qy) * one + jy
    fx[3] = np.int64(qx) * one + ix
    fy[3] = np.int64(qy) * one + iy
    right = np.int64(w) * one - 1
    bottom = np.int64(h) * one - 1
    for k in range(4):
        j = (k + 1) & 3
        if k & 1 == 1 and abs(fx[j] - fx[k]) > abs(fy[j] - fy[k]):
            # Only the long shallow sides add pixels beyond the spans (the short ones lie
            # inside the caps; a steep one rounds to the span ends).
            _draw_side(img, fx[k], fy[k], fx[j], fy[j], right, bottom)
        ka, kb = (k, j) if fy[k] <= fy[j] else (j, k)
        top[k] = (fy[ka] + (one >> 1)) >> 16
        bot[k] = (fy[kb] + (one >> 1)) >> 16
        x0[k] = fx[ka]
        rows = bot[k] - top[k]
        d = fx[kb] - fx[ka]
        step[k] = _div_trunc(d * 2 + rows, 2 * rows) if rows > 0 else d
    y_lo = max(0, min(min(top[0], top[1]), min(top[2], top[3])))
    y_hi = min(h - 1, max(max(bot[0], bot[1]), max(bot[2], bot[3])))
    n = y_hi - y_lo + 1
    if n <= 0:
        return
    xl = spans[0]
    xh = spans[1]
    for i in range(n):
        xl[i] = np.int64(1) << 60
        xh[i] = -(np.int64(1) << 60)
    for k in range(4):  # side by side, each over the rows it spans
        if top[k] == bot[k]:  # a flat side: both its ends on its row
            i = top[k] - y_lo
            if 0 <= i < n:
                xa = min(x0[k], x0[k] + step[k])
                xb = max(x0[k], x0[k] + step[k])
                xl[i] = min(xl[i], xa)
                xh[i] = max(xh[i], xb)
            continue
        ys = max(top[k], y_lo)
        ye = min(bot[k], y_hi)
        x = x0[k] + (ys - top[k]) * step[k]
        for y in range(ys - y_lo, ye - y_lo + 1):
            xl[y] = min(xl[y], x)
            xh[y] = max(xh[y], x)
            x += step[k]
    half_px = one >> 1
    for i in range(n):
        if xl[i] <= xh[i]:
            a = max(np.int64(0), (xl[i] + half_px) >> 16)
            b = min(np.int64(w - 1), (xh[i] + half_px) >> 16)
            if a <= b:  # else the span is off the canvas
                _fill_span(img, y_lo + i, a, b)


@njit(nogil=True, cache=True)
def _clip_float(px, py, qx, qy, lo_x, lo_y, hi_x, hi_y):
    """Liang-Barsky: clip segment PQ to a box; returns (visible, px, py, qx, qy)."""
    t0 = 0.0
    t1 = 1.0
    dx = qx - px
    dy = qy - py
    for p_, q_ in ((-dx, px - lo_x), (dx, hi_x - px), (-dy, py - lo_y), (dy, hi_y - py)):
        if p_ == 0.0:
            if q_ < 0.0:
                return False, px, py, qx, qy
        else:
            t = q_ / p_
            if p_ < 0.0:
                t0 = max(t0, t)
            else:
                t1 = min(t1, t)
    if t0 > t1:
        return False, px, py, qx, qy
    return True, px + t0 * dx, py + t0 * dy, px + t1 * dx, py + t1 * dy


@njit(nogil=True, cache=True)
def _draw_thin(img, x1, y1, x2, y2):
    """A 1-px, 8-connected line between whole pixels (Bresenham, stepped left to right
    along the major axis; the minor step is taken while the error is negative, the
    tie rule OpenCV uses), clipped to the canvas first."""
    h, w = img.shape
    x1, y1, x2, y2, ok = _clip_side(x1, y1, x2, y2, np.int64(w - 1), np.int64(h - 1))
    if not ok:
        return
    if x2 < x1:
        x1, y1, x2, y2 = x2, y2, x1, y1
    dx = x2 - x1
    dy = abs(y2 - y1)
    sy = 1 if y2 >= y1 else -1
    steep = dy > dx
    major, minor = (dy, dx) if steep else (dx, dy)
    err = major - 2 * minor
    x, y = x1, y1
    for _ in range(major + 1):
        img[y, x] = 255
        if err < 0:
            err += 2 * major - 2 * minor
            if steep:
                x += 1
            else:
                y += sy
        else:
            err -= 2 * minor
        if steep:
            y += sy
        else:
            x += 1


STAMP_REACH = 48  # segments up to this many px along each axis are stamped (99.9 % at 250 px)


@njit(nogil=True, cache=True)
def _build_stamps(r, reach):
    """Every segment's pixels at once: for each whole-pixel offset (dx, dy) with
    |dx|, |dy| <= reach, the runs (row, first, last), relative to the start point, of the
    start point's round cap plus the quad to (dx, dy), drawn by `_draw_disc` and
    `_draw_quad` on a scratch canvas. ``index[dy + reach, dx + reach]`` gives the
    stamp's slice of ``runs``. Returns (index, runs)."""
    m = r + 2  # how far a drawing reaches past its end points (corners round outwards)
    size = 2 * reach + 2 * m + 1
    c = reach + m
    canvas = np.zeros((size, size), np.uint8)
    half = _disc_table(float(r))
    quad = np.empty((6, 4), np.int64)  # _draw_quad's scratch, as in _draw_face
    spans = np.empty((2, size), np.int64)
    n_side = 2 * reach + 1
    index = np.empty((n_side, n_side, 2), np.int64)
    runs = np.empty((1 << 16, 3), np.int16)
    n = 0
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            _draw_disc(canvas, c, c, half)
            _draw_quad(canvas, float(c), float(c), float(c + dx), float(c + dy), float(r),
                       quad[0], quad[1], quad[2], quad[3], quad[4], quad[5], spans)
            start = n
            for y in range(c + min(0, dy) - m, c + max(0, dy) + m + 1):
                x = c + min(0, dx) - m
                x_end = c + max(0, dx) + m
                while x <= x_end:
                    if canvas[y, x]:
                        a = x
                        while x <= x_end and canvas[y, x]:
                            canvas[y, x] = 0
                            x += 1
                        if n == runs.shape[0]:
                            grown = np.empty((2 * n, 3), np.int16)
                            grown[:n] = runs
                            runs = grown
                        runs[n, 0] = y - c
                        runs[n, 1] = a - c
                        runs[n, 2] = x - 1 - c
                        n += 1
                    x += 1
            index[dy + reach, dx + reach, 0] = start
            index[dy + reach, dx + reach, 1] = n
    return index, runs[:n].copy()


@njit(nogil=True, cache=True, inline="always")
def _apply_stamp(img, runs, lo, hi, x, y):
    for k in range(lo, hi):
        _fill_span(img, y + runs[k, 0], x + runs[k, 1], x + runs[k, 2])


@njit(nogil=True, cache=True)
def _draw_face(img, pts, parts, r, margin, half, scratch, spans, index, runs, reach):
    """Clear `img` and draw every part of one remapped face (points `pts`, float).

    Like OpenCV, each segment's whole-pixel end points are first clipped to the canvas
    grown by `margin` px (the line thickness) on every side; that changes where a line
    leaving the canvas samples its rows, so it matters for matching pixel for pixel.
    Far-off points (bad landmarks) are first brought within +-2**20 px in floating
    point, so the fixed-point arithmetic cannot overflow.
    """
    img[:] = 0
    h, w = img.shape
    big = float(1 << 20)
    fx = scratch[0]
    fy = scratch[1]
    top = scratch[2]
    bot = scratch[3]
    x0 = scratch[4]
    step = scratch[5]
    for k in range(parts.shape[0]):
        a = parts[k, 0]
        b = parts[k, 1]
        closed = parts[k, 2]
        for i in range(a, b + 1):
            # Whole-pixel end points, as OpenCV draws integer points (the paper's figures).
            xi = math.floor(pts[i, 0] + 0.5)
            yi = math.floor(pts[i, 1] + 0.5)
            if not (math.isfinite(xi) and math.isfinite(yi)):
                continue  # overflowed to inf in the remap: nothing drawable from here
            if reach >= 0:  # the common case: a precomputed cap + body, well inside
                dx = dy = 0.0
                if i < b or closed:
                    j = i + 1 if i < b else a
                    dx = math.floor(pts[j, 0] + 0.5) - xi  # NaN/inf fail the tests below
                    dy = math.floor(pts[j, 1] + 0.5) - yi
                m = r + 2
                if (abs(dx) <= reach and abs(dy) <= reach
                        and min(xi, xi + dx) >= m and max(xi, xi + dx) <= w - 1 - m
                        and min(yi, yi + dy) >= m and max(yi, yi + dy) <= h - 1 - m):
                    s = index[np.int64(dy) + reach, np.int64(dx) + reach]
                    _apply_stamp(img, runs, s[0], s[1], np.int64(xi), np.int64(yi))
                    continue
            if r > 0 and -r - 1 <= xi <= w + r and -r - 1 <= yi <= h + r:
                _draw_disc(img, np.int64(xi), np.int64(yi), half)
            if i < b or closed:
                j = i + 1 if i < b else a
                xj = math.floor(pts[j, 0] + 0.5)
                yj = math.floor(pts[j, 1] + 0.5)
                if not (math.isfinite(xj) and math.isfinite(yj)):
                    continue
                lo = -margin
                if (lo <= xi <= w - 1 + margin and lo <= xj <= w - 1 + margin
                        and lo <= yi <= h - 1 + margin and lo <= yj <= h - 1 + margin):
                    # the common case: nothing to clip
                    ix1, iy1 = np.int64(xi) + margin, np.int64(yi) + margin
                    ix2, iy2 = np.int64(xj) + margin, np.int64(yj) + margin
                else:
                    ok, x1, y1, x2, y2 = _clip_float(xi, yi, xj, yj, -big, -big, big, big)
                    if not ok:
                        continue
                    ix1, iy1, ix2, iy2, ok = _clip_side(
                        np.int64(math.floor(x1 + 0.5)) + margin, np.int64(math.floor(y1 + 0.5)) + margin,
                        np.int64(math.floor(x2 + 0.5)) + margin, np.int64(math.floor(y2 + 0.5)) + margin,
                        np.int64(w - 1) + 2 * margin, np.int64(h - 1) + 2 * margin,
                    )
                    if not ok:
                        continue
                if r == 0:  # one pixel wide: an 8-connected line
                    _draw_thin(img, ix1 - margin, iy1 - margin, ix2 - margin, iy2 - margin)
                else:
                    _draw_quad(img, float(ix1 - margin), float(iy1 - margin),
                               float(ix2 - margin), float(iy2 - margin),
                               float(r), fx, fy, top, bot, x0, step, spans)


@njit(nogil=True, cache=True)
def _remap_batch(lms, shift_y, scale, out):
    for n in range(lms.shape[0]):
        _remap_face(lms[n], shift_y, scale, out[n])


@njit(nogil=True, cache=True)
def _sketch_one(lm, img, buf, stream, shift_y, parts, scale, r, margin, half, index, runs, reach, work):
    """Remap one face and draw it into `img`; with `stream`, draw it in the scratch
    image `buf` (which stays in cache) and stream that to `img`."""
    pts, scratch, spans = work
    _remap_face(lm, shift_y, scale, pts)
    _draw_face(buf if stream else img, pts, parts, r, margin, half, scratch, spans, index, runs, reach)
    if stream:
        _stream_copy(img, buf)


@njit(nogil=True, cache=True)
def _scratch(lms, out, stream):
    """Per-thread work arrays: remapped points, quad scratch, row spans; and `buf`."""
    work = (np.empty((lms.shape[1], 2), dtype=np.float64), np.empty((6, 4), dtype=np.int64),
            np.empty((2, out.shape[1]), dtype=np.int64))
    buf = np.empty((out.shape[1], out.shape[2]) if stream else (0, 0), np.uint8)
    return work, buf


@njit(nogil=True, cache=True)
def _sketch_serial(lms, shift_y, parts, scale, r, margin, index, runs, reach, stream, out):
    half = _disc_table(float(r))
    work, buf = _scratch(lms, out, stream)
    for n in range(lms.shape[0]):
        _sketch_one(lms[n], out[n], buf, stream, shift_y, parts, scale, r, margin, half, index, runs, reach, work)
    if stream:
        _sfence()


@njit(nogil=True, cache=True, parallel=True)
def _sketch_parallel(lms, shift_y, parts, scale, r, margin, index, runs, reach, stream, out):
    half = _disc_table(float(r))
    for n in prange(lms.shape[0]):
        work, buf = _scratch(lms, out, stream)
        _sketch_one(lms[n], out[n], buf, stream, shift_y, parts, scale, r, margin, half, index, runs, reach, work)
    if stream:
        _sfence()


# --------------------------------------------------------------------------- validation
MAX_COORD = 1e6


@njit(nogil=True, cache=True)
def _first_bad(lms, max_coord):
    """(index, why) of the first face that cannot be remapped, or (-1, 0). why: 1 a
    coordinate NaN, inf or beyond +-max_coord; 2 x16 == x0; 3 y33 == y27."""
    for n in range(lms.shape[0]):
        for i in range(lms.shape[1]):
            for k in range(2):
                if not abs(lms[n, i, k]) <= max_coord:  # also true for NaN
                    return n, 1
        if lms[n, 16, 0] == lms[n, 0, 0]:
            return n, 2
        if lms[n, 33, 1] == lms[n, 27, 1]:
            return n, 3
    return -1, 0


def drawable(landmarks: np.ndarray) -> np.ndarray:
    """bool ``(N,)``: which faces' landmarks can be remapped and drawn (finite, within
    +-MAX_COORD, non-zero face width and nose height): the others would raise
    :class:`DegenerateFaceError`."""
    lm = np.asarray(landmarks, np.float64).reshape(-1, 68, 2)
    ok = (np.abs(lm) <= MAX_COORD).all(axis=(1, 2))  # False for NaN too
    ok &= lm[:, 16, 0] != lm[:, 0, 0]
    ok &= lm[:, 33, 1] != lm[:, 27, 1]
    return ok


def _as_batch(landmarks) -> tuple[np.ndarray, bool]:
    """Validate landmarks; return a C-contiguous float64 (N, 68, 2) array and `single`."""
    arr = np.asarray(landmarks)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"landmarks must be a numeric array, got dtype {arr.dtype}")
    single = arr.ndim == 2
    if single:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != (68, 2):
        raise ValueError(
            f"landmarks must have shape (68, 2) or (N, 68, 2), got {np.shape(landmarks)}"
        )
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    # Beyond +-1e6 px of a 250 px crop a point is garbage, and the remap could overflow.
    i, why = _first_bad(arr, MAX_COORD)
    if i >= 0:
        raise DegenerateFaceError(int(i), (
            f"NaN, inf or |coordinate| > {MAX_COORD:g} in its points", "x16 == x0 (zero face width)",
            "y33 == y27 (zero nose height)")[why - 1])
    return arr, single


class DegenerateFaceError(ValueError):
    """Landmarks that cannot be remapped. ``face_index`` is the first bad face in the batch."""

    def __init__(self, face_index: int, why: str):
        self.face_index = face_index
        super().__init__(f"degenerate landmarks for face {face_index}: {why}")


def _scale_and_radius(size: int, thickness: float) -> tuple[float, int, int]:
    """Scale factor, line radius and clip margin for a sketch of `size` px.

    Thickness follows OpenCV (which drew the paper's figures): scaled with the canvas
    and rounded to a whole pixel count t; a line then covers the pixels within
    r = ceil(t / 2) of its axis (``cv2.line(..., 7)`` is 9 px wide), and t = 1 draws
    a thin 8-connected line. Thick segments are clipped to the canvas grown by t px.
    """
    if not isinstance(size, (int, np.integer)) or size < 8:
        raise ValueError(f"size must be an integer >= 8, got {size!r}")
    if not (np.isfinite(thickness) and thickness > 0):
        raise ValueError(f"thickness must be a finite number > 0, got {thickness!r}")
    scale = size / CANVAS
    t = max(1, int(round(thickness * scale)))
    if t > size:
        raise ValueError(f"thickness {thickness} is wider than a {size} px canvas")
    if t == 1:  # thin lines are clipped to the canvas itself
        return scale, 0, 0
    return scale, (t + (t & 1)) // 2, t


# --------------------------------------------------------------------------- public API
# Outputs bigger than this are drawn in a cached scratch image and streamed out
# (non-temporal stores skip reading the output into the cache first): measured here,
# 1,000 sketches at 250 px 14.4 -> 9.7 us each, while 64 (4 MB, which stays in cache)
# are faster drawn in place (7.4 vs 8.5 us).
STREAM_MIN_BYTES = 8 << 20

# From this many faces on, the prange path wins (measured on the 2-core machine, min of
# 200 runs: 4 faces 29 -> 21 us per sketch, 64 faces 22 -> 15 us). Single faces stay serial.
PARALLEL_MIN_BATCH = 4


STAMP_MAX_RADIUS = 16  # thicker lines (huge canvases) draw directly: their stamps would be big


@functools.lru_cache(maxsize=None)
def _stamps(r: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The stamp table for line radius `r`, built once per radius and process (~0.1 s
    at 250 px). Thin lines (r = 0) and very thick ones draw directly: reach -1."""
    if r == 0 or r > STAMP_MAX_RADIUS:
        return np.zeros((1, 1, 2), np.int64), np.zeros((1, 3), np.int16), -1
    index, runs = _build_stamps(np.int64(r), np.int64(STAMP_REACH))
    return index, runs, STAMP_REACH


def remap(landmarks: np.ndarray) -> np.ndarray:
    """Map landmarks from 250x250 crop coordinates to sketch coordinates.

    Every point goes through the paper's equations (1) and (2) (face sides FL0, FL16
    to x = 10, 240; nose top and tip FL27, FL33 to y = 70, 210); then brows and eyes
    move 50 px down and the mouth (48-67) 70 px up.

    Returns a float64 array of the input's shape, ``(68, 2)`` or ``(N, 68, 2)``.
    Raises :class:`DegenerateFaceError` (a ``ValueError``) naming the first face whose
    landmarks are NaN/inf (or beyond +-1e6) or have ``x16 == x0`` or ``y33 == y27``.
    """
    lms, single = _as_batch(landmarks)
    out = np.empty_like(lms)
    _remap_batch(lms, _SHIFT_Y, 1.0, out)
    return out[0] if single else out


def sketch(
    landmarks: np.ndarray,
    size: int = CANVAS,
    thickness: float = THICKNESS,
    *,
    out: np.ndarray | None = None,
    parallel: bool | None = None,
    parts: tuple = PARTS,
) -> np.ndarray:
    """Draw emotion sketches from 68-point landmarks in 250x250 crop coordinates.

    ``(68, 2)`` gives a ``uint8 (size, size)`` image, ``(N, 68, 2)`` gives
    ``(N, size, size)``; pixels are 0 or 255. Brows are open polylines, eyes and the
    outer mouth closed ones, ``thickness`` as OpenCV counts it at 250 px (7 paints lines
    9 px wide, the paper's figures; rounded to whole pixels when scaled). A ``size`` other than
    250 scales the whole drawing (targets, shifts and thickness), so a network input
    is rasterized at its own resolution with no resize. Lines leaving the canvas are
    clipped.

    ``out`` may be a preallocated C-contiguous uint8 array of the result's shape.
    ``parallel`` forces the threaded batch path on or off (default: on for batches of
    at least ``PARALLEL_MIN_BATCH`` faces). ``parts``: the ``(first, last, closed)``
    polylines to draw (default the paper's :data:`PARTS`).

    A batch with any degenerate face raises :class:`DegenerateFaceError` (a
    ``ValueError`` whose ``face_index`` is the first bad face) and draws nothing;
    check faces beforehand with ``remap`` in a try block if you need to skip them.
    """
    lms, single = _as_batch(landmarks)
    part_table = _parts_array(parts)
    scale, r, margin = _scale_and_radius(size, thickness)
    shape = (lms.shape[0], size, size)
    if out is None:
        out = np.empty(shape, dtype=np.uint8)
        target = out
    else:
        want = shape[1:] if single else shape
        if out.shape != want or out.dtype != np.uint8 or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous uint8 array of shape {want}")
        target = out[None] if single else out
    if parallel is None:
        parallel = lms.shape[0] >= PARALLEL_MIN_BATCH
    kernel = _sketch_parallel if parallel else _sketch_serial
    index, runs, reach = _stamps(r)
    stream = target.nbytes > STREAM_MIN_BYTES
    kernel(lms, _SHIFT_Y, part_table, scale, np.int64(r), np.int64(margin), index, runs, np.int64(reach), stream, target)
    return target[0] if single else out


def render(landmarks: np.ndarray, size: int, found: np.ndarray | None = None, parts: tuple = PARTS) -> np.ndarray:
    """Network input ``(N, size, size, 1)`` float32 in {0, 1}; rows without a face (or
    with degenerate landmarks) are left blank. ``parts`` as for :func:`sketch`."""
    n = len(landmarks)
    out = np.zeros((n, size, size), np.uint8)
    ok = np.ones(n, bool) if found is None else np.asarray(found, bool).copy()
    if ok.any():
        try:
            out[ok] = sketch(landmarks[ok], size=size, parts=parts)
        except ValueError:  # a degenerate face: draw one by one, leave the bad ones blank
            for i in np.flatnonzero(ok):
                try:
                    out[i] = sketch(landmarks[i], size=size, parts=parts)
                except ValueError:
                    pass
    return (out[..., None] > 0).astype(np.float32)


# --------------------------------------------------------------------------- augmentation
# Landmark-level augmentation lives beside the drawing because both training
# (fastes.train) and test-time augmentation (fastes.runtime.Augmented) use it.
# Index of each point's mirror image in the iBUG 68-point scheme.
MIRROR = np.array(
    list(range(16, -1, -1))                      # jaw
    + list(range(26, 21, -1)) + list(range(21, 16, -1))  # brows swap
    + [27, 28, 29, 30] + [35, 34, 33, 32, 31]     # nose
    + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40]  # eyes swap
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]     # outer mouth
    + [64, 63, 62, 61, 60, 67, 66, 65]                     # inner mouth
)


def augment(landmarks: np.ndarray, rng: np.random.Generator, rotate: float = 8.0,
            jitter: float = 1.5, mirror: bool = True) -> np.ndarray:
    """Randomly rotated (degrees, uniform ±``rotate``), jittered (Gaussian, px) and
    mirrored (p = 0.5) copies of ``(N, 68, 2)`` crop-space landmarks."""
    lm = np.array(landmarks, dtype=np.float64)
    n = len(lm)
    if mirror:
        flip = rng.random(n) < 0.5
        lm[flip] = lm[flip][:, MIRROR]
        lm[flip, :, 0] = 249.0 - lm[flip, :, 0]
    if rotate:
        a = np.deg2rad(rng.uniform(-rotate, rotate, n))
        c, s = np.cos(a)[:, None], np.sin(a)[:, None]
        centre = lm.mean(1, keepdims=True)
        d = lm - centre
        lm = centre + np.stack([c * d[..., 0] - s * d[..., 1], s * d[..., 0] + c * d[..., 1]], -1)
    if jitter:
        lm += rng.normal(0.0, jitter, lm.shape)
    return lm.astype(np.float32)


# --------------------------------------------------------------------------- references
def remap_reference(landmarks: np.ndarray) -> np.ndarray:
    """NumPy twin of :func:`remap`, written as the paper's equations."""
    lm = np.asarray(landmarks, dtype=np.float64)
    x, y = lm[..., 0], lm[..., 1]
    x0, x16 = lm[..., 0:1, 0], lm[..., 16:17, 0]
    y27, y33 = lm[..., 27:28, 1], lm[..., 33:34, 1]
    xr = (X16_T * (x - x0) + X0_T * (x16 - x)) / (x16 - x0)
    yr = (Y33_T * (y - y27) + Y27_T * (y33 - y)) / (y33 - y27) + _SHIFT_Y
    return np.stack([xr, yr], axis=-1)




def sketch_reference(landmarks: np.ndarray, size: int = CANVAS, thickness: int = THICKNESS,
                     parts: tuple = PARTS) -> np.ndarray:
    """OpenCV twin of :func:`sketch` for one face: ``cv2.polylines`` at ``thickness``."""
    import cv2

    scale = size / CANVAS
    pts = np.floor(remap_reference(landmarks) * scale + 0.5).astype(np.int32)
    img = np.zeros((size, size), dtype=np.uint8)
    t = max(1, int(round(thickness * scale)))
    for a, b, closed in parts:
        cv2.polylines(img, [pts[a : b + 1]], closed, 255, t, cv2.LINE_8)
    return img
