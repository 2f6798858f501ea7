"""Image in, each face's expression out: detect -> landmarks -> sketch -> TFLite model.

    >>> import fastes
    >>> faces = fastes.Pipeline().run("photo.jpg")
    >>> faces[0].label, faces[0].probs          # probs ordered as fastes.CLASSES

Arrays are BGR (OpenCV's order) unless ``order="rgb"``; grey, RGBA, 16-bit and PIL images
are accepted too. Sketches are drawn at the model's own input size for classification;
``Face.sketch`` (250x250, the paper's drawing) is drawn only when asked for.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from . import CLASSES
from .face import DEFAULT_DETECTOR, FaceFinder
from .io import read_image
from .sketch import sketch as draw_sketch

__all__ = ["Face", "Pipeline", "Tracker", "shipped_models", "model_path", "DEFAULT_MODEL"]

DEFAULT_MODEL = "vgg11_int8"


def _models_dir() -> Path:
    try:  # installed: models/ ships as the package fastes.models
        d = Path(str(resources.files("fastes.models")))
        if any(d.glob("*.tflite")):
            return d
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parents[1] / "models"  # a source checkout


def shipped_models() -> dict[str, Path]:
    """Name -> path of every shipped ``.tflite`` model."""
    return {p.stem: p for p in sorted(_models_dir().glob("*.tflite"))}


def model_path(name: str) -> Path:
    """A shipped model by name (``default``, ``vgg11_int8``, ...) or a file path."""
    if name == "default":
        name = DEFAULT_MODEL
    models = shipped_models()
    if name in models:
        return models[name]
    p = Path(name)
    if p.suffix in (".tflite", ".keras"):
        return p
    from .runtime import ModelError

    raise ModelError(f"model {name!r} not found; shipped: {', '.join(models) or 'none'}; "
                     "or give a .tflite/.keras path")


@dataclass
class Face:
    """One face: where it is, its 68 landmarks and its expression."""

    box: tuple[int, int, int, int]  # x, y, w, h in the original image
    landmarks: np.ndarray           # (68, 2) original image coordinates
    probs: np.ndarray               # (4,) ordered as fastes.CLASSES
    crop_landmarks: np.ndarray = field(repr=False)  # (68, 2) in the 250x250 crop
    timings: dict = field(default_factory=dict, repr=False)  # seconds per stage, per image

    @property
    def label(self) -> str:
        return CLASSES[int(np.argmax(self.probs))]

    @property
    def confidence(self) -> float:
        return float(np.max(self.probs))

    @cached_property
    def sketch(self) -> np.ndarray:
        """The paper's 250x250 emotion sketch (uint8, 0/255), drawn on first access."""
        return draw_sketch(self.crop_landmarks)


class Pipeline:
    """Detect faces, place landmarks, draw sketches and classify them.

    ``model``: ``"default"``, a shipped model's name, ``"ensemble"`` (the mean of all
    shipped models) or a ``.tflite``/``.keras`` path. ``detector``: a detector name
    (``"blazeface"``, the default; ``"blazeface-full"``, ``"blazeface-group"``, ``"haar"``)
    or a configured :class:`fastes.FaceFinder`. ``threads``: TFLite
    threads. ``order``: channel order of colour arrays (``"bgr"`` or ``"rgb"``).
    """

    def __init__(self, model: str | os.PathLike = "default", detector: str | FaceFinder = DEFAULT_DETECTOR,
                 threads: int = 1, order: str = "bgr"):
        from .runtime import Ensemble, load_classifier

        if order not in ("bgr", "rgb"):
            raise ValueError(f"order must be 'bgr' or 'rgb', got {order!r}")
        if str(model) == "ensemble":
            members = [load_classifier(p, threads) for p in shipped_models().values()]
            if not members:
                from .runtime import ModelError
                raise ModelError("no shipped models found for the ensemble")
            self.classifier = members[0] if len(members) == 1 else Ensemble(members)
        else:
            self.classifier = load_classifier(model_path(str(model)), threads)
        self.detector = detector if isinstance(detector, FaceFinder) else FaceFinder(detector)
        self.order = order

    def _array(self, image) -> tuple[np.ndarray, str]:
        if isinstance(image, (str, os.PathLike)):
            return read_image(image), "bgr"
        if hasattr(image, "mode") and hasattr(image, "convert"):  # a PIL image
            return np.asarray(image.convert("L" if image.mode in ("L", "I;16", "1") else "RGB")), "rgb"
        return np.asarray(image), self.order

    def run(self, image) -> list[Face]:
        """Faces in ``image`` (path, numpy array or PIL image), left to right."""
        t0 = time.perf_counter()
        arr, order = self._array(image)
        t1 = time.perf_counter()
        found = self.detector(arr, order=order)
        t2 = time.perf_counter()
        if len(found) == 0:
            return []
        probs = self.classifier(found.landmarks)
        t3 = time.perf_counter()
        timings = {"read": t1 - t0, "front_end": t2 - t1, "sketch_and_model": t3 - t2}
        return [Face(tuple(int(v) for v in b), lm, p, clm, timings)
                for b, lm, p, clm in zip(found.boxes, found.image_landmarks(), probs, found.landmarks)]

    def run_batch(self, images: Iterable) -> Iterator[list[Face]]:
        """``run`` over an iterable, lazily: one result list per input, in order."""
        for image in images:
            yield self.run(image)


def _iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    return inter / float(aw * ah + bw * bh - inter) if inter else 0.0


class Tracker:
    """Face tracks across video frames, with optional smoothing of probabilities.

    A face continues the previous frame's track whose box overlaps it most (IoU >=
    ``min_iou``, each track used once); otherwise it starts a new track. With ``alpha``
    > 0 each track's probabilities are smoothed exponentially,
    ``p = alpha * p_previous + (1 - alpha) * p_now``, which steadies labels that flicker
    between frames at the cost of ~1 / (1 - alpha) frames of lag. A track not seen in a
    frame ends.
    """

    def __init__(self, alpha: float = 0.0, min_iou: float = 0.3):
        self.alpha, self.min_iou = alpha, min_iou
        self._prev: list[tuple[int, tuple, np.ndarray]] = []
        self._next = 0

    def update(self, faces: list[Face]) -> list[int]:
        """Track ids for ``faces`` (their ``probs`` are smoothed in place)."""
        ids, now, used = [], [], set()
        for f in faces:
            best, best_iou = None, self.min_iou
            for j, (tid, box, probs) in enumerate(self._prev):
                iou = _iou(f.box, box)
                if j not in used and iou >= best_iou:
                    best, best_iou = j, iou
            if best is None:
                tid = self._next
                self._next += 1
            else:
                used.add(best)
                tid, _, prev = self._prev[best]
                if self.alpha > 0:
                    f.probs = self.alpha * prev + (1 - self.alpha) * f.probs
            ids.append(tid)
            now.append((tid, f.box, f.probs))
        self._prev = now
        return ids
