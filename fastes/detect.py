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
    """

    boxes: np.ndarray
    scores: np.ndarray
    keypoints: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls, keypoints: bool = False) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                   np.zeros((0, 6, 2), np.float32) if keypoints else None)


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
    """

    name = "haar"

    def __init__(self, detect_size: int = FAST_PASS.size, fine_pass: bool = True):
        if not isinstance(detect_size, (int, np.integer)) or detect_size < 32:
            raise ValueError(f"detect_size must be an integer >= 32, got {detect_size!r}")
        self._args = (int(detect_size), bool(fine_pass))
        self.passes = [replace(FAST_PASS, size=int(detect_size))]
        if fine_pass:
            self.passes.append(replace(FINE_PASS, size=max(int(detect_size), FINE_PASS.size)))
        self._cascade = _cascade()  # this detector's own: see _cascade

    def __reduce__(self):  # picklable and deep-copied by its settings: a copy loads its own cascade
        return HaarDetector, self._args

    @property
    def tag(self) -> str:
        """Settings that change results (for caches keyed by front-end settings)."""
        return "-".join(f"{p.size}_{p.pad}_{p.scale_factor}_{p.min_neighbors}" for p in self.passes)

    def __call__(self, image: np.ndarray, order: str = "bgr") -> Detections:
        grey = image if image.ndim == 2 and image.dtype == np.uint8 else to_grey(image, order)
        for p in self.passes:
            boxes = self._detect_pass(grey, p)
            if len(boxes):
                return Detections(boxes, np.ones(len(boxes), np.float32))
        return Detections.empty()

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
    while 15 of 16 faces in a 4x4 group are still found)."""

    def __init__(self, range: str = "short", min_score: float = 0.5, iou: float = 0.3, threads: int = 1,
                 tiles: int = 1, tile_min_score: float = 0.7):
        if range not in _MODELS:
            raise ValueError(f"range must be one of {', '.join(_MODELS)}, got {range!r}")
        if not 0 < min_score < 1:
            raise ValueError(f"min_score must be in (0, 1), got {min_score!r}")
        from .runtime import interpreter_class

        if not isinstance(tiles, (int, np.integer)) or not 1 <= tiles <= 8:
            raise ValueError(f"tiles must be an integer from 1 to 8, got {tiles!r}")
        self.range, self.min_score, self.iou, self.tiles = range, float(min_score), float(iou), int(tiles)
        self.tile_min_score = max(float(tile_min_score), self.min_score)
        self._args = (range, min_score, iou, threads, tiles, tile_min_score)
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

    def __reduce__(self):  # picklable by its settings: worker processes rebuild it
        return BlazeFace, self._args

    @property
    def tag(self) -> str:
        # "a32": input from the float area resize (rgb_small_into), not OpenCV's uint8 one
        return f"{self.name}_{self.min_score}_{self.iou}_a32" + (
            f"_t{self.tiles}_{self.tile_min_score}" if self.tiles > 1 else "")

    def __call__(self, image: np.ndarray, order: str = "bgr") -> Detections:
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
