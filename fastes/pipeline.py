"""Image in, each face's expression out: detect -> landmarks -> sketch -> TFLite model.

    >>> import fastes
    >>> faces = fastes.Pipeline().run("photo.jpg")
    >>> faces[0].label, faces[0].probs          # probs ordered as fastes.CLASSES

Arrays are BGR (OpenCV's order) unless ``order="rgb"``; grey, RGBA, 16-bit and PIL images
are accepted too. Sketches are drawn at the model's own input size for classification;
``Face.sketch`` (250x250, the paper's drawing) is drawn only when asked for.
"""
from __future__ import annotations

import copy
import os
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from . import CLASSES
from .detect import box_iou
from .face import DEFAULT_DETECTOR, FaceFinder
from .io import read_image
from .sketch import drawable, sketch as draw_sketch

__all__ = ["Face", "Pipeline", "Tracker", "shipped_models", "model_path", "load_model", "DEFAULT_MODEL"]

DEFAULT_MODEL = "two_stream_int8"  # the most accurate on unseen people within 2 ms (docs/accuracy.md)


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


def load_model(name: str | os.PathLike, threads: int | None = None):
    """A classifier by name: ``"default"``, a shipped model, ``"ensemble"`` (the mean of
    every shipped model) or a ``.tflite``/``.keras`` path."""
    from .runtime import Ensemble, ModelError, load_classifier

    if str(name) == "ensemble":
        members = [load_classifier(p, threads) for p in shipped_models().values()]
        if not members:
            raise ModelError("no shipped models found for the ensemble")
        return members[0] if len(members) == 1 else Ensemble(members)
    return load_classifier(model_path(str(name)), threads)


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
    ``tta`` N > 0 averages each face's probabilities over N augmented copies of its
    landmarks, and for a two-stream model of its crop (:class:`fastes.runtime.Augmented`;
    8 copies: +2.5 points of subject-disjoint accuracy for ``vgg11_fast_int8``, +1.0 on FER+
    valid for ``two_stream_int8``, at ~8x the classifier's time; docs/accuracy.md).

    ``workers`` > 1 makes :meth:`run_batch` spread images over that many threads. Every
    heavy step releases the GIL (decoding and resizing in OpenCV, TFLite's invoke, the
    Numba landmark and sketch kernels), so threads use the cores; they also share one
    copy of the landmark model (65 MB) in memory and cache, which processes did not
    (measured over 240 images: 2 threads 1.75-2.23x one, 2 processes 1.14-1.5x). Each
    worker thread has its own detector and classifier (TFLite interpreters are not
    shared between threads: the detector is copied with ``copy.deepcopy``), made on its
    first image. Results keep the input order. The pool stops with :meth:`close` or at
    exit; ``run`` on one image always runs in the calling thread.
    """

    def __init__(self, model: str | os.PathLike = "default", detector: str | FaceFinder = DEFAULT_DETECTOR,
                 threads: int = 1, order: str = "bgr", workers: int = 1, tta: int = 0):
        from .runtime import Augmented

        if order not in ("bgr", "rgb"):
            raise ValueError(f"order must be 'bgr' or 'rgb', got {order!r}")
        if not isinstance(workers, (int, np.integer)) or workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        if not isinstance(tta, (int, np.integer)) or tta < 0:
            raise ValueError(f"tta must be an integer >= 0, got {tta!r}")
        self.workers, self.tta = int(workers), int(tta)
        self._model_name = str(model)
        self._pool = None
        self.classifier = load_model(model, threads)
        if self.tta:
            self.classifier = Augmented(self.classifier, self.tta)
        self.detector = detector if isinstance(detector, FaceFinder) else FaceFinder(detector)
        self.order = order

    def _array(self, image) -> tuple[np.ndarray, str]:
        if isinstance(image, (str, bytes, os.PathLike)):
            return read_image(image), "bgr"
        if _is_pil(image):
            return pil_array(image), "rgb"
        return np.asarray(image), self.order

    def run(self, image) -> list[Face]:
        """Faces in ``image`` (path, numpy array or PIL image), left to right."""
        t0 = time.perf_counter()
        arr, order = self._array(image)
        t1 = time.perf_counter()
        found = self.detector(arr, order=order)
        return self._classify(found, {"read": t1 - t0, "front_end": time.perf_counter() - t1}, arr, order)

    def _classify(self, found, timings: dict, image: np.ndarray, order: str) -> list[Face]:
        if len(found) == 0:
            return []
        # landmarks that cannot be drawn (NaN, zero face width) are no face: a blank
        # sketch would get a label (or crash a model)
        ok = drawable(found.landmarks)
        if not ok.any():
            return []
        t0 = time.perf_counter()
        boxes, image_lm, crop_lm = found.boxes[ok], found.image_landmarks()[ok], found.landmarks[ok]
        if getattr(self.classifier, "needs_face", False):  # a two-stream model: + the aligned crops
            from .io import to_grey
            from .align import face_input

            faces = face_input(to_grey(image, order), image_lm, self.classifier.face_size)
            probs = self.classifier.predict_faces(crop_lm, faces)
        else:
            probs = self.classifier(crop_lm)
        timings = {**timings, "sketch_and_model": time.perf_counter() - t0}
        return [Face(tuple(int(v) for v in b), lm, p, clm, timings)
                for b, lm, p, clm in zip(boxes, image_lm, probs, crop_lm)]

    def run_video(self, frames: Iterable, detect_every: int = 1) -> Iterator[list[Face]]:
        """Faces per video frame, in this process. With ``detect_every`` N > 1 the
        detector runs on every Nth frame only; between detections each face is tracked
        from its previous landmarks (:meth:`fastes.FaceFinder.track`), and detection
        runs at once whenever tracking is lost. New faces appear at the next detection."""
        if not isinstance(detect_every, (int, np.integer)) or detect_every < 1:
            raise ValueError(f"detect_every must be an integer >= 1, got {detect_every!r}")
        prev, since = None, 0
        for frame in frames:
            t0 = time.perf_counter()
            arr, order = self._array(frame)
            t1 = time.perf_counter()
            found = None
            if prev is not None and since < detect_every - 1:
                found = self.detector.track(arr, prev, order)
                since += 1
            if found is None:
                found, since = self.detector(arr, order=order, thumbs=detect_every > 1), 0
            prev = found
            yield self._classify(found, {"read": t1 - t0, "front_end": time.perf_counter() - t1}, arr, order)

    def run_batch(self, images: Iterable, errors: str = "raise") -> Iterator[list[Face] | Exception]:
        """``run`` over an iterable, lazily: one result list per input, in order.

        With ``workers`` > 1 the images are spread over worker processes, a bounded
        number ahead of the consumer (memory stays flat for any number of inputs).
        ``errors="return"`` yields the exception an input raised (:class:`fastes.ImageError`
        for an unreadable image, or any other) in its place instead of raising it: one bad
        input never ends the batch.
        """
        if errors not in ("raise", "return"):
            raise ValueError(f"errors must be 'raise' or 'return', got {errors!r}")
        results = self._pooled(images) if self.workers > 1 else (self._safe_run(x) for x in images)
        for r in results:
            if isinstance(r, Exception) and errors == "raise":
                raise r
            yield r

    def _safe_run(self, image) -> list[Face] | Exception:
        try:
            return self.run(image)
        except Exception as e:  # whatever one input raises is that input's result
            return e

    def _pooled(self, images: Iterable) -> Iterator[list[Face] | Exception]:
        from collections import deque

        pool = self._start_pool()
        ahead = deque()
        for image in images:
            ahead.append(pool.submit(self._worker_run, image))
            if len(ahead) >= 4 * self.workers:  # bounded lookahead: lazy over long inputs
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()

    def _start_pool(self):
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._local = threading.local()
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="fastes-worker")
        return self._pool

    def _worker_run(self, image) -> list[Face] | Exception:
        pipe = getattr(self._local, "pipe", None)
        if pipe is None:  # this thread's own interpreters; the landmark model is shared
            pipe = self._local.pipe = Pipeline(self._model_name, copy.deepcopy(self.detector), threads=1,
                                               order=self.order, tta=self.tta)
        return pipe._safe_run(image)

    def close(self) -> None:
        """Stop the worker threads (if any were started)."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _is_pil(image) -> bool:
    """A PIL image (duck-typed: PIL is not a dependency)."""
    return hasattr(image, "mode") and hasattr(image, "convert")


_PIL_GREY = ("1", "L", "LA", "La")  # alpha is dropped, as read_image drops it from a file
_PIL_16 = ("I;16", "I;16L", "I;16B", "I;16N")


def pil_array(image) -> np.ndarray:
    """A PIL image as the array :func:`fastes.read_image` gives for the same pixels in a
    file: EXIF orientation applied; grey modes (``1``, ``L``, ``LA``) as 2-D ``uint8``;
    16-bit (``I;16*``, and ``I``, clipped to 0..65535, the mode older Pillows open
    16-bit PNGs in) as 2-D ``uint16``; ``F`` as 2-D ``uint8`` with PIL's own 0..255 scale
    (rounded, clipped; NaN is an :class:`ImageError`); every other mode (``P``,
    ``RGBA``, ``CMYK``, ``YCbCr``, ...) as ``uint8`` RGB, alpha dropped."""
    orientation = 1
    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:  # no or unreadable EXIF: nothing to apply
        pass
    if orientation not in (None, 1):
        from PIL import ImageOps  # a PIL image: PIL is installed

        image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode in _PIL_16:
        return np.asarray(image).astype(np.uint16, copy=False)
    if mode in ("I", "I;32", "I;32L", "I;32B"):
        return np.clip(np.asarray(image), 0, 65535).astype(np.uint16)
    if mode == "F":
        a = np.asarray(image, dtype=np.float32)
        if not np.isfinite(a).all():
            from .io import ImageError

            raise ImageError("PIL image of mode F contains NaN or inf")
        return np.clip(np.floor(a + 0.5), 0, 255).astype(np.uint8)
    if mode in _PIL_GREY:
        return np.asarray(image if mode == "L" else image.convert("L"))
    return np.asarray(image if mode == "RGB" else image.convert("RGB"))


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
                iou = float(box_iou(f.box, box))
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
