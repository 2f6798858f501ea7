"""Face detectors: the paper's Haar cascade and BlazeFace on LiteRT.

Both take an image array and return :class:`Detections` in original image coordinates.

* :class:`HaarDetector` is the paper's method made cheap: the cascade runs on a grey
  copy whose long side is ``detect_size`` px (default 160) instead of the full image.
  When that finds nothing, a second pass pads the copy (a tight face crop leaves the
  cascade no room for its window) and searches more finely: that finds faces in the
  small, tight crops of in-the-wild sets.
* :class:`BlazeFace` runs MediaPipe's BlazeFace models (shipped in
  ``fastes/data/blazeface``, Apache-2.0; see PROVENANCE.md there) with the LiteRT
  interpreter only, no MediaPipe code: letterbox to the model's square input, one
  invoke, anchor decoding and non-maximum suppression here. It also returns 6
  keypoints per face (eyes, nose tip, mouth, ear tragions).

Both make sure of each face's orientation (``upright``, on by default): BlazeFace gives
the in-plane roll of faces turned any way (``Detections.rolls``), judging the doubtful
ones upright against turned 180 degrees (see ``ROLL_MIN``); Haar keeps only the boxes
that are upright faces. Neither returns an upright box on an upside-down face.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from ._jit import njit
from .io import as_uint8, rgb_small_into, small_shape, to_grey

__all__ = ["Detections", "HaarDetector", "BlazeFace", "DETECTORS", "make_detector", "nms", "box_iou"]


class ModelFileError(RuntimeError):
    """A model file the front end needs is missing from the installation."""


@dataclass(frozen=True)
class Detections:
    """Faces found in one image, in original image coordinates, in no set order.

    ``boxes``: float32 ``(K, 4)`` x, y, w, h; ``scores``: float32 ``(K,)``;
    ``keypoints``: float32 ``(K, 6, 2)`` (BlazeFace: right eye, left eye, nose tip,
    mouth, right ear, left ear, "right" as seen by the person) or ``None`` (Haar).
    ``rolls``: float32 ``(K,)`` degrees, the in-plane rotation of each face that its crop
    must undo (clockwise as seen; 0: crop axis-aligned, the upright path), or ``None``.
    """

    boxes: np.ndarray
    scores: np.ndarray
    keypoints: np.ndarray | None = None
    rolls: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls, keypoints: bool = False) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                   np.zeros((0, 6, 2), np.float32) if keypoints else None,
                   np.zeros(0, np.float32) if keypoints else None)

    def take(self, keep) -> "Detections":
        """The detections at indices (or mask) ``keep``."""
        return Detections(self.boxes[keep], self.scores[keep], None if self.keypoints is None else self.keypoints[keep],
                          None if self.rolls is None else self.rolls[keep])


# -- Haar -----------------------------------------------------------------------------

def _cascade(name: str = "haarcascade_frontalface_default.xml") -> cv2.CascadeClassifier:
    """A new classifier (~25 ms to load). Never share one between threads:
    ``detectMultiScale`` keeps per-call buffers in the object, and two threads on one
    classifier were seen to return a face twice."""
    path = Path(cv2.data.haarcascades) / name
    casc = cv2.CascadeClassifier(str(path))
    if casc.empty():
        raise ModelFileError(f"cannot load Haar cascade {path} (OpenCV >= 5 wheels lack it: use opencv<5)")
    return casc


@dataclass(frozen=True)
class _Pass:
    size: int  # long side of the detection copy, px
    pad: float  # replicated border on each side, as a fraction of that long side
    scale_factor: float
    min_neighbors: int


# Measured on ../shared/data (see the README's front-end notes): the fast pass alone finds
# 99-100 % of the posed faces at ~9 ms/image; adding the padded fine pass on misses lifts
# the tight in-the-wild crops from 78 % to 95 % for ~11 ms/image on average.
FAST_PASS = _Pass(160, 0.0, 1.2, 4)
FINE_PASS = _Pass(160, 0.25, 1.1, 3)


class HaarDetector:
    """OpenCV's ``haarcascade_frontalface_default.xml`` on a small grey copy.

    ``detect_size`` sets the long side of the grey copy the cascade searches: faces
    smaller than about ``24 / detect_size`` of the image's long side are not found
    (raise it for group photos; it costs time roughly with its square).
    ``fine_pass=False`` skips the slower second search on images with no face found.

    ``upright`` (default on): the cascade also fires on upside-down faces (219 of 480
    images of ../shared/data turned 180 degrees), where dlib then places an upright face
    shape: nonsense. Each box is judged by BlazeFace (short range) cut as found and
    turned 180 degrees (``BlazeFace._judge``, one more invoke per face): a face that
    scores higher turned (by ``ORIENT_MARGIN``), or is found rolled by more than
    ``HAAR_MAX_ROLL``, or scores within the margin both ways, is dropped as no face (the
    cascade's upright box does not frame it as the crop expects); the others are kept as
    before (rolls 0), those BlazeFace sees neither way (small, tight faces) included.
    Measured on those 480 images: upside-down faces kept 219 -> 24; upright ones
    found 461 -> 457.
    """

    name = "haar"

    def __init__(self, detect_size: int = FAST_PASS.size, fine_pass: bool = True, upright: bool = True):
        if not isinstance(detect_size, (int, np.integer)) or detect_size < 32:
            raise ValueError(f"detect_size must be an integer >= 32, got {detect_size!r}")
        self.upright = bool(upright)
        self._judge = None  # the BlazeFace that judges orientation, made on first use
        self._args = (int(detect_size), bool(fine_pass), self.upright)
        self.passes = [replace(FAST_PASS, size=int(detect_size))]
        if fine_pass:
            self.passes.append(replace(FINE_PASS, size=max(int(detect_size), FINE_PASS.size)))
        self._cascade = _cascade()  # this detector's own: see _cascade

    def __reduce__(self):  # picklable and deep-copied by its settings: a copy loads its own cascade
        return HaarDetector, self._args

    @property
    def tag(self) -> str:
        """Settings that change results (for caches keyed by front-end settings)."""
        # (the orientation check changes nothing for upright faces: not in the tag, which keys caches)
        return "-".join(f"{p.size}_{p.pad}_{p.scale_factor}_{p.min_neighbors}" for p in self.passes) + (
            "" if self.upright else "_noup")

    def __call__(self, image: np.ndarray, order: str = "bgr") -> Detections:
        grey = image if image.ndim == 2 and image.dtype == np.uint8 else to_grey(image, order)
        for p in self.passes:
            boxes = self._detect_pass(grey, p)
            if len(boxes):
                found = Detections(boxes, np.ones(len(boxes), np.float32))
                return self._orient(grey, found) if self.upright else found
        return Detections.empty()

    def _orient(self, grey: np.ndarray, det: Detections) -> Detections:
        """Rolls (0 or 180) for the cascade's boxes, the unclear ones dropped (see the class)."""
        if self._judge is None:
            self._judge = BlazeFace("short", upright=False)
        rolls, keep = np.zeros(len(det), np.float32), np.ones(len(det), bool)
        for k, b in enumerate(det.boxes):
            centre, side = b[:2] + b[2:] / 2, ORIENT_CONTEXT * float(b[2])
            found = self._judge._judge(grey, "bgr", centre, side, 0.0)
            s0, s1 = (0.0 if f is None else f[0] for f in found)
            # an upside-down or sideways face's box is not framed as the calibrated crop
            # expects: no face rather than the landmarks of a misframed one
            if s1 - s0 >= ORIENT_MARGIN:
                keep[k] = False  # upside down
            elif s0 - s1 >= ORIENT_MARGIN:
                keep[k] = abs(keypoint_rolls(found[0][2][None])[0]) <= HAAR_MAX_ROLL  # not a sideways face
            else:  # no telling: dropped, unless BlazeFace sees no face either way (small, tight
                keep[k] = s0 == s1 == 0  # faces): then the cascade's word stands
        return Detections(det.boxes, det.scores, None, rolls).take(keep)

    def _detect_pass(self, grey: np.ndarray, p: _Pass) -> np.ndarray:
        h, w = grey.shape
        s = p.size / max(h, w)
        sw, sh = max(1, round(w * s)), max(1, round(h * s))
        interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
        small = cv2.resize(grey, (sw, sh), interpolation=interp)
        pad = int(round(p.pad * max(sw, sh)))
        if pad:
            small = cv2.copyMakeBorder(small, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        found = self._cascade.detectMultiScale(
            small, scaleFactor=p.scale_factor, minNeighbors=p.min_neighbors, minSize=(24, 24)
        )
        if len(found) == 0:
            return np.zeros((0, 4), dtype=np.float32)
        b = np.asarray(found, dtype=np.float32)
        b[:, :2] -= pad
        return b / s


# -- BlazeFace --------------------------------------------------------------------------

def _blazeface_dir() -> Path:
    return Path(str(resources.files("fastes"))) / "data" / "blazeface"


@dataclass(frozen=True)
class _BlazeModel:
    file: str
    size: int  # square input, px
    strides: tuple  # feature-map strides
    per_cell: tuple  # anchors per cell at each stride


# MediaPipe's SsdAnchorsCalculator settings for the two models (fixed anchor size 1,
# centres at the cell centres): 16x16x2 + 8x8x6 = 896 and 48x48x1 = 2,304 anchors.
_MODELS = {
    "short": _BlazeModel("face_detection_short_range.tflite", 128, (8, 16), (2, 6)),
    "full": _BlazeModel("face_detection_full_range_sparse.tflite", 192, (4,), (1,)),
}


@functools.lru_cache(maxsize=None)
def _anchors(kind: str) -> np.ndarray:
    m = _MODELS[kind]
    out = []
    for stride, n in zip(m.strides, m.per_cell):
        g = m.size // stride
        c = (np.arange(g, dtype=np.float32) + 0.5) / g
        cy, cx = np.meshgrid(c, c, indexing="ij")
        out.append(np.repeat(np.stack([cx.ravel(), cy.ravel()], 1), n, axis=0))
    return np.concatenate(out)  # (A, 2) x, y in [0, 1] of the model input


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of x, y, w, h boxes along the last axis (broadcast:
    one box against many, or row by row)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    iw = np.clip(np.minimum(a[..., 0] + a[..., 2], b[..., 0] + b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 1] + a[..., 3], b[..., 1] + b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    return inter / np.maximum(a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression (highest score first, ties in
    input order). ``boxes`` are x, y, w, h."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    return _greedy_nms(np.asarray(boxes, np.float64).reshape(-1, 4), order, float(iou))


@njit(nogil=True, cache=True)
def _greedy_nms(boxes, order, iou):
    """The boxes kept when visiting ``order`` (best first): a box is kept unless a kept
    box overlaps it by ``iou`` or more. One kernel for :func:`nms` and :func:`_decode`."""
    keep = np.empty(order.shape[0], np.int64)
    m = 0
    for t in order:
        ok = True
        for q in range(m):
            j = keep[q]
            iw = min(boxes[t, 0] + boxes[t, 2], boxes[j, 0] + boxes[j, 2]) - max(boxes[t, 0], boxes[j, 0])
            ih = min(boxes[t, 1] + boxes[t, 3], boxes[j, 1] + boxes[j, 3]) - max(boxes[t, 1], boxes[j, 1])
            inter = max(iw, 0.0) * max(ih, 0.0)
            union = boxes[t, 2] * boxes[t, 3] + boxes[j, 2] * boxes[j, 3] - inter
            if inter / max(union, 1e-9) >= iou:
                ok = False
                break
        if ok:
            keep[m] = t
            m += 1
    return keep[:m]


def keypoint_rolls(keypoints: np.ndarray) -> np.ndarray:
    """In-plane roll (degrees, clockwise as seen, in (-180, 180]) of faces from BlazeFace
    keypoints ``(K, 6, 2)``: the mean direction of the eye line (right eye to left eye)
    and of the mouth-to-eyes line turned by 90 degrees. 0 for an upright face."""
    kp = np.asarray(keypoints, np.float64)
    eyes = kp[:, 1] - kp[:, 0]
    up = (kp[:, 0] + kp[:, 1]) / 2 - kp[:, 3]
    a1 = np.arctan2(eyes[:, 1], eyes[:, 0])
    a2 = np.arctan2(up[:, 0], -up[:, 1])
    return np.degrees(np.arctan2(np.sin(a1) + np.sin(a2), np.cos(a1) + np.cos(a2))).astype(np.float32)


def patch_transform(centre, side: float, roll: float, n: int) -> np.ndarray:
    """The 2x3 affine map from an ``n x n`` patch's pixel coordinates to the image's: the
    square of ``side`` px centred on ``centre``, turned by ``roll`` degrees (clockwise as
    seen), so that a face rolled by ``roll`` is upright in the patch. Pixel centres map as
    ``cv2.resize`` maps them when ``roll`` is 0."""
    a = np.radians(roll)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) * (side / n)
    # patch pixel q (centre at q + 0.5 of a continuous square) -> image pixel p (centre at p + 0.5)
    return np.c_[rot, np.asarray(centre, np.float64) - 0.5 - rot @ np.array([n / 2 - 0.5, n / 2 - 0.5])]


def warp_patch(image: np.ndarray, centre, side: float, roll: float, n: int) -> np.ndarray:
    """The ``n x n`` patch of :func:`patch_transform` cut from ``image`` (edges replicated;
    area-averaged first when it shrinks more than 2x, as the upright crops are)."""
    m = patch_transform(centre, side, roll, n)
    scale = side / n
    if scale > 2:  # shrink the neighbourhood first: bilinear sampling alone would alias
        k = int(scale)
        # a region of k x k blocks, its grid on the square's corner, holding the turned square
        cells = int(np.ceil(side * 1.5 / k)) + 2
        x0 = int(np.floor(centre[0] - side / 2)) - k * ((cells * k - int(side)) // (2 * k))
        y0 = int(np.floor(centre[1] - side / 2)) - k * ((cells * k - int(side)) // (2 * k))
        size = cells * k
        h, w = image.shape[:2]
        region = image[max(y0, 0):min(y0 + size, h), max(x0, 0):min(x0 + size, w)]
        if region.size == 0:
            return np.zeros((n, n) + image.shape[2:], image.dtype)
        if region.shape[:2] != (size, size):  # past the image edge: replicate it, as the crops do
            region = cv2.copyMakeBorder(np.ascontiguousarray(region), max(-y0, 0), max(y0 + size - h, 0),
                                        max(-x0, 0), max(x0 + size - w, 0), cv2.BORDER_REPLICATE)
        small = cv2.resize(np.ascontiguousarray(region), (cells, cells), interpolation=cv2.INTER_AREA)
        # image p -> small s: s = (p - origin + 0.5) / k - 0.5
        to_small = np.array([[1 / k, 0, (0.5 - x0) / k - 0.5], [0, 1 / k, (0.5 - y0) / k - 0.5]])
        m = to_small[:, :2] @ m
        m[:, 2] += to_small[:, 2]
        image = small
    return cv2.warpAffine(np.ascontiguousarray(image), m, (n, n), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


# Upright faces (measured on 150 images of each set of ../shared/data, BlazeFace short
# range): its keypoints give the roll within ~20 degrees up to +-90 degrees, but a face
# rolled 135-180 degrees is found (score 0.5-0.85) with keypoints placed as if upright. So
# a face is taken as found only when it is rolled less than ROLL_MIN and scores at least
# SURE_SCORE (no upside-down face of 760 scored above 0.846; 85-94 % of the posed sets'
# upright faces score above it, 10-25 % of CK+, FER+ and wild ones): nothing more is done
# for it. Any other face is judged by the detector itself: it is cut upright by its roll,
# and turned 180 degrees, in ORIENT_CONTEXT times its box (BlazeFace's own input size),
# and the orientation that scores higher by at least ORIENT_MARGIN wins (upright 177 of
# 177, upside-down 141 of 142 on a sample of the sets; BlazeFace._judge: one invoke); a
# face neither cut scores as a face, or both within the margin, is dropped (no face
# rather than an upside-down one). A face found rolled is placed again from a full-size
# upright cut (one more invoke). Over 80 images of each set turned 180 degrees (480):
# upside-down landmark sets 387 -> 4 (380 turned upright); the same 480 upright: faces
# found 475 -> 471; of 100 images of each set, all of the posed sets' and CK+'s have the
# same landmarks as without the check, 94 wild and 79 FER+ (the others: faces rolled
# more than ROLL_MIN, now cut upright, and the few dropped).
ROLL_MIN = 15.0
SURE_SCORE = 0.87
ORIENT_CONTEXT = 1.6
ORIENT_MARGIN = 0.05
ORIENT_MIN_SCORE = 0.3
HAAR_MAX_ROLL = 45.0  # degrees: a cascade box on a face rolled more is dropped (upright 15-45: kept, as before)
_JUDGE = 64  # px, each cut the orientation judgement sees (two side by side in one input)


class BlazeFace:
    """MediaPipe BlazeFace on LiteRT: ``range="short"`` (128 px input, faces that fill a
    good part of the image: portraits, webcams, face crops) or ``"full"`` (192 px,
    smaller faces: group photos). ``min_score``: detection threshold on the sigmoid
    score; ``iou``: non-maximum suppression overlap. ``tiles`` > 1 also searches an
    overlapping ``tiles x tiles`` grid (each tile 1.5x a cell) for faces too small for one
    pass over the whole image (group photos, 4K frames), at ``1 + tiles**2`` invokes.
    Tile detections must score at least ``tile_min_score`` (default 0.7): each tile is
    another chance for a false detection (measured on 210 synthetic non-face images,
    full range, 2x2 tiles: 17 images with a false face at 0.5, 5 at 0.6, none at 0.7,
    while 15 of 16 faces in a 4x4 group are still found).

    ``upright`` (default on): faces rolled in the image plane (any angle, upside down
    included) are returned with the roll their crop must undo (``Detections.rolls``), or
    dropped when their orientation is unclear; see ``ROLL_MIN`` and ``SURE_SCORE`` for
    what it costs (nothing for upright faces that score well)."""

    def __init__(self, range: str = "short", min_score: float = 0.5, iou: float = 0.3, threads: int = 1,
                 tiles: int = 1, tile_min_score: float = 0.7, upright: bool = True):
        if range not in _MODELS:
            raise ValueError(f"range must be one of {', '.join(_MODELS)}, got {range!r}")
        if not 0 < min_score < 1:
            raise ValueError(f"min_score must be in (0, 1), got {min_score!r}")
        from .runtime import interpreter_class

        if not isinstance(tiles, (int, np.integer)) or not 1 <= tiles <= 8:
            raise ValueError(f"tiles must be an integer from 1 to 8, got {tiles!r}")
        self.range, self.min_score, self.iou, self.tiles = range, float(min_score), float(iou), int(tiles)
        self.tile_min_score = max(float(tile_min_score), self.min_score)
        self.upright = bool(upright)
        self._args = (range, min_score, iou, threads, tiles, tile_min_score, self.upright)
        self.name = "blazeface" if range == "short" else "blazeface-full"
        self._model = _MODELS[range]
        path = _blazeface_dir() / self._model.file
        if not path.is_file():
            raise ModelFileError(f"BlazeFace model {path} is missing from the installation")
        self._it = interpreter_class()(model_path=str(path), num_threads=threads)
        self._it.allocate_tensors()
        self._in = self._it.get_input_details()[0]["index"]
        outs = sorted(self._it.get_output_details(), key=lambda d: d["shape"][-1])
        self._scores_i, self._reg_i = outs[0]["index"], outs[1]["index"]
        self._anchors = _anchors(range)
        self._buf = np.empty((1, self._model.size, self._model.size, 3), np.float32)
        self._placed = None  # (oy, ox, h, w) of the image in the buffer
        self._judge_by = None  # full range: a short-range twin judges orientation (_judge)

    def __reduce__(self):  # picklable by its settings: worker processes rebuild it
        return BlazeFace, self._args

    @property
    def tag(self) -> str:
        # "a32": input from the float area resize (rgb_small_into), not OpenCV's uint8 one
        # (the orientation check changes nothing for upright faces that score well: "_noup" only
        # when off; "_js": full range judged by the short range, which keeps unsure upright faces)
        judge = "_js" if self.upright and self.range == "full" else ""
        return f"{self.name}_{self.min_score}_{self.iou}_a32" + (
            f"_t{self.tiles}_{self.tile_min_score}" if self.tiles > 1 else "") + ("" if self.upright else "_noup") + judge

    def __call__(self, image: np.ndarray, order: str = "bgr") -> Detections:
        found = self._search(image, order)
        return self._orient(image, order, found) if self.upright else found

    def _orient(self, image: np.ndarray, order: str, det: Detections) -> Detections:
        """Rolls for ``det`` (see ``ROLL_MIN``): faces that are not surely upright are cut
        upright by their keypoints' roll and turned 180 degrees, and the detector judges
        which orientation is a face; those found rolled get the keypoints and box of that
        judgement (mapped back to the image), the unclear ones are dropped."""
        rolls = keypoint_rolls(det.keypoints) if len(det) else np.zeros(0, np.float32)
        check = (np.abs(rolls) > ROLL_MIN) | (det.scores < SURE_SCORE)
        rolls = np.where(check, rolls, 0).astype(np.float32)
        if not check.any():
            return replace(det, rolls=rolls)
        boxes, kps, keep = det.boxes.copy(), det.keypoints.copy(), np.ones(len(det), bool)
        image = as_uint8(image, order)
        for k in np.flatnonzero(check):
            centre = det.boxes[k, :2] + det.boxes[k, 2:] / 2
            side = ORIENT_CONTEXT * float(det.boxes[k, 2:].max())
            roll = float(rolls[k])
            found = self._judge(image, order, centre, side, roll)
            s0, s1 = (0.0 if f is None else f[0] for f in found)
            if max(s0, s1) == 0 or abs(s0 - s1) < ORIENT_MARGIN:
                keep[k] = False  # no face either way, or no telling which way up
                continue
            if s0 > s1 and abs(roll) <= ROLL_MIN:
                rolls[k] = 0.0  # upright after all: the detection as found, cropped as before
                continue
            win = int(s1 > s0)
            _, box, kp = found[win]
            at, n = roll + 180 * win, _JUDGE
            # a rolled face: its keypoints again, from a full-size upright cut (the 64 px
            # judgement places them to ~10 degrees)
            at += float(keypoint_rolls(kp[None])[0])
            full = self._detect(warp_patch(image, centre, side, at, self._model.size), order, ORIENT_MIN_SCORE)
            if len(full):
                j = int(np.argmax(full.scores))
                box, kp, n = full.boxes[j], full.keypoints[j], self._model.size
            else:
                at -= float(keypoint_rolls(kp[None])[0])
            rot = patch_transform(centre, side, at, n)[:, :2]  # continuous coordinates: centre to centre
            kps[k] = (kp - n / 2) @ rot.T + centre
            c = (box[:2] + box[2:] / 2 - n / 2) @ rot.T + centre
            w = box[2] * side / n
            boxes[k] = [c[0] - w / 2, c[1] - w / 2, w, w]
            rolls[k] = keypoint_rolls(kps[k][None])[0]
            if abs((rolls[k] - (roll + 180 * win) + 180) % 360 - 180) > 45:
                keep[k] = False  # the upright cut's keypoints disagree with the judgement (tiny faces)
        return Detections(boxes, det.scores, kps, rolls).take(keep)

    def _judge(self, image, order, centre, side, roll) -> list:
        """The face as cut upright by ``roll`` and turned 180 degrees, judged in one
        invoke: the two ``_JUDGE`` px cuts side by side in the input (measured on 319
        faces of the shared sets, as upright and as turned: the same calls as two
        full-size invokes, 176 of 177 and 141 of 142, now 177 and 141). For each cut the
        best face in it, ``(score, box, keypoints)`` in the cut's pixels, or ``None``.

        The full-range model judges with a short-range twin: it scores faces turned
        upside down almost as high as upright ones (a 1080p frame-filling face: 0.84
        upright, 0.86 turned), so unsure upright faces were dropped (400 faces of the
        shared sets on 1080p frames: 375 found, 355 kept; judged by the short range, 372,
        and of 122 turned ones none kept as upright; docs/experiments.md)."""
        if self.range == "full":
            if self._judge_by is None:
                self._judge_by = BlazeFace("short", self.min_score, self.iou, threads=1, upright=False)
            return self._judge_by._judge(image, order, centre, side, roll)
        n = self._model.size
        canvas = np.zeros((n, n) + image.shape[2:], np.uint8)
        y0 = (n - _JUDGE) // 2
        for i, r in enumerate((roll, roll + 180)):
            canvas[y0:y0 + _JUDGE, i * _JUDGE:(i + 1) * _JUDGE] = warp_patch(image, centre, side, r, _JUDGE)
        d = self._detect(canvas, order, ORIENT_MIN_SCORE)
        out = []
        for i in range(2):
            x0 = i * _JUDGE
            cx = d.boxes[:, 0] + d.boxes[:, 2] / 2
            inside = np.flatnonzero((cx >= x0) & (cx < x0 + _JUDGE))
            if len(inside) == 0:
                out.append(None)
                continue
            j = inside[np.argmax(d.scores[inside])]
            off = np.array([x0, y0], np.float32)
            out.append((float(d.scores[j]), np.r_[d.boxes[j, :2] - off, d.boxes[j, 2:]], d.keypoints[j] - off))
        return out

    def _search(self, image: np.ndarray, order: str) -> Detections:
        found = self._detect(image, order, self.min_score)
        if self.tiles == 1:
            return found
        h, w = image.shape[:2]
        parts = [found]
        for ty in range(self.tiles):
            for tx in range(self.tiles):
                x0, x1 = _tile_span(tx, self.tiles, w)
                y0, y1 = _tile_span(ty, self.tiles, h)
                d = self._detect(image[y0:y1, x0:x1], order, self.tile_min_score)
                off = np.array([x0, y0], np.float32)
                parts.append(Detections(d.boxes + np.concatenate([off, [0, 0]]), d.scores, d.keypoints + off))
        boxes = np.concatenate([d.boxes for d in parts])
        scores = np.concatenate([d.scores for d in parts])
        kps = np.concatenate([d.keypoints for d in parts])
        # one face seen in the whole image and in tiles: keep the best-scored box
        keep = nms(boxes, scores, self.iou)
        return Detections(boxes[keep], scores[keep], kps[keep])

    def _letterbox(self, image: np.ndarray, order: str) -> tuple[int, int, float]:
        """Write ``image`` into the model's input buffer, resized to fit, centred, with a
        black border; returns its offset ``(ox, oy)`` and scale ``s`` there."""
        n = self._model.size
        image = as_uint8(image, order)  # validated once, here
        h, w, _ = small_shape(*image.shape[:2], n)
        oy, ox = (n - h) // 2, (n - w) // 2
        if (oy, ox, h, w) != self._placed:  # letterbox border: -1 (black) around the image
            self._buf.fill(-1.0)
            self._placed = (oy, ox, h, w)
        return ox, oy, rgb_small_into(image, self._buf[0, oy:oy + h, ox:ox + w], order, -1.0, 1.0)

    def _detect(self, image: np.ndarray, order: str, min_score: float) -> Detections:
        n = self._model.size
        ox, oy, s = self._letterbox(image, order)
        self._it.set_tensor(self._in, self._buf)
        self._it.invoke()
        raw = self._it.get_tensor(self._scores_i)[0, :, 0]
        logit_min = np.log(min_score / (1 - min_score))  # sigmoid(raw) >= min_score
        if not (raw >= logit_min).any():
            return Detections.empty(keypoints=True)
        boxes, scores, kps = _decode(raw, self._it.get_tensor(self._reg_i)[0], self._anchors, logit_min,
                                     n, float(ox), float(oy), float(s), self.iou)
        return Detections(boxes, scores, kps)


@njit(nogil=True, cache=True)
def _decode(raw, reg, anchors, logit_min, n, ox, oy, s, iou):
    """BlazeFace outputs -> (boxes x, y, w, h; scores; 6 keypoints) in original pixels:
    anchors above the score threshold, decoded, greedy non-maximum suppression (a box
    is kept unless a better-scored kept box overlaps it by ``iou`` or more), then the
    letterbox offset (ox, oy) and the resize (scale s) undone. One compiled pass: the
    same steps in NumPy cost ~0.3 ms of small-array overhead per image."""
    k = 0
    for i in range(raw.shape[0]):
        k += raw[i] >= logit_min
    hits = np.empty(k, np.int64)
    k = 0
    for i in range(raw.shape[0]):
        if raw[i] >= logit_min:
            hits[k] = i
            k += 1
    scores = np.empty(k)
    boxes = np.empty((k, 4))
    for t in range(k):
        i = hits[t]
        scores[t] = 1.0 / (1.0 + np.exp(-min(max(np.float64(raw[i]), -100.0), 100.0)))
        cx = reg[i, 0] / n + anchors[i, 0]
        cy = reg[i, 1] / n + anchors[i, 1]
        boxes[t, 0] = cx - reg[i, 2] / n / 2
        boxes[t, 1] = cy - reg[i, 3] / n / 2
        boxes[t, 2] = reg[i, 2] / n
        boxes[t, 3] = reg[i, 3] / n
    order = np.arange(k)  # best score first, ties in anchor order (a stable insertion sort:
    for t in range(1, k):  # a handful of hits, and it compiles far faster than argsort)
        u = order[t]
        q = t - 1
        while q >= 0 and scores[order[q]] < scores[u]:
            order[q + 1] = order[q]
            q -= 1
        order[q + 1] = u
    keep = _greedy_nms(boxes, order, iou)
    m = keep.shape[0]
    out_boxes = np.empty((m, 4), np.float32)
    out_scores = np.empty(m, np.float32)
    out_kps = np.empty((m, 6, 2), np.float32)
    for q in range(m):
        t = keep[q]
        i = hits[t]
        out_boxes[q, 0] = (boxes[t, 0] * n - ox) / s
        out_boxes[q, 1] = (boxes[t, 1] * n - oy) / s
        out_boxes[q, 2] = boxes[t, 2] * n / s
        out_boxes[q, 3] = boxes[t, 3] * n / s
        out_scores[q] = scores[t]
        for p in range(6):
            out_kps[q, p, 0] = ((reg[i, 4 + 2 * p] / n + anchors[i, 0]) * n - ox) / s
            out_kps[q, p, 1] = ((reg[i, 5 + 2 * p] / n + anchors[i, 1]) * n - oy) / s
    return out_boxes, out_scores, out_kps


def _tile_span(i: int, n: int, length: int) -> tuple[int, int]:
    """Tile ``i`` of ``n`` along one side: cells of ``length / n``, widened to 1.5 cells so
    that a face on a cell border lies whole in some tile."""
    cell = length / n
    lo = max(0, int(round((i - 0.25) * cell)))
    return lo, min(length, int(round((i + 1.25) * cell)))


DETECTORS = ("blazeface", "blazeface-full", "blazeface-group", "haar")


def make_detector(name: str, detect_size: int = FAST_PASS.size, fine_pass: bool = True):
    """A detector by name (``DETECTORS``); ``detect_size`` and ``fine_pass`` apply to Haar.
    ``blazeface-group`` is the full-range model plus a 2x2 tile pass (group photos)."""
    if name == "haar":
        return HaarDetector(detect_size, fine_pass)
    if name == "blazeface":
        return BlazeFace("short")
    if name == "blazeface-full":
        return BlazeFace("full")
    if name == "blazeface-group":
        return BlazeFace("full", tiles=2)
    raise ValueError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}")
