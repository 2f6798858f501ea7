"""Classify sketches with a model file: ``.tflite`` (LiteRT, no TensorFlow needed) or
``.keras`` (needs the ``train`` extra).

The TFLite interpreter comes from ``ai_edge_litert`` (numpy 2 compatible), else
``tflite_runtime``, else ``tensorflow.lite``. Quantized inputs and outputs are scaled
here, so callers always pass ``{0, 1}`` float sketches and get probabilities in the
order of ``fastes.CLASSES``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import CLASSES

__all__ = ["ModelError", "Classifier", "TFLiteModel", "TFLiteClassifier", "KerasClassifier", "load_classifier",
           "Ensemble", "interpreter_class", "LANDMARK_SHAPES", "is_landmark_input", "landmark_features",
           "LandmarkClassifier", "TFLiteLandmarkClassifier", "KerasLandmarkClassifier",
           "SKETCH", "FACE", "is_two_stream", "TFLiteTwoStream", "KerasTwoStream"]


class ModelError(ValueError):
    """A model file that cannot be used: missing, corrupt, or of the wrong shape."""


def interpreter_class():
    """The first TFLite ``Interpreter`` available: ai_edge_litert, tflite_runtime, tf.lite."""
    try:
        from ai_edge_litert.interpreter import Interpreter
        return Interpreter
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter
        return Interpreter
    except ImportError:
        pass
    try:
        import tensorflow as tf
        return tf.lite.Interpreter
    except ImportError:
        raise ModelError("no TFLite runtime found: pip install ai-edge-litert") from None


def quantize_input(x: np.ndarray, detail: dict) -> np.ndarray:
    """Float inputs to the tensor's type: ``q = round(x / scale + zero_point)``, clipped."""
    if detail["dtype"] == np.float32:
        return np.asarray(x, np.float32)
    scale, zp = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale + zp), info.min, info.max).astype(detail["dtype"])


def dequantize_output(y: np.ndarray, detail: dict) -> np.ndarray:
    """A tensor's values as floats: ``scale * (q - zero_point)``."""
    if detail["dtype"] == np.float32:
        return np.asarray(y, np.float32)
    scale, zp = detail["quantization"]
    return scale * (y.astype(np.float32) - zp)


def _sketch_io(path, shape: tuple, oshape: tuple) -> int:
    """Check a sketch classifier's input ``(N, S, S, 1)`` and output ``(N, 4)``; return S."""
    if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 1 or oshape[-1] != len(CLASSES):
        raise ModelError(f"{path}: expected input (N, S, S, 1) and output (N, {len(CLASSES)}), "
                         f"got {shape} and {oshape}")
    return int(shape[1])


# A classifier's rows must be probabilities: finite, >= 0 (up to float rounding) and
# summing to 1 within this (an int8 softmax's outputs sit on a 1/256 grid: its rows sum
# to 1 +- 0.008, rescaled in TFLiteClassifier.predict). Anything else -- NaN from a broken
# conversion, logits from a model without its softmax -- is refused, never renormalized.
PROB_SUM_TOL = 0.02
# On real inputs, though, a sound int8 model's rows can sum further from 1: the shipped
# CapsNet's rows on the 3,401 FER+ valid faces sum to 0.82..1.17 (1st-99th percentile
# 0.994..1.007). A model is judged with PROB_SUM_TOL when it is loaded (on two probe
# sketches); after that a batch is refused only for rows this far from 1, and rescaled.
PROB_SUM_TOL_BATCH = 0.5


def check_probabilities(p: np.ndarray, label: str, tol: float = PROB_SUM_TOL_BATCH) -> np.ndarray:
    """``p`` (``(N, 4)`` floats) if every row is a probability vector (finite, >= 0, summing
    to 1 within ``tol``), else :class:`ModelError` naming the model ``label`` and what is wrong."""
    if p.size == 0:
        return p
    if not np.isfinite(p).all():
        raise ModelError(f"{label}: the model's outputs contain NaN or inf; it is broken (not used)")
    if p.min() < -1e-3:
        raise ModelError(f"{label}: the model's outputs are negative (min {p.min():.3g}): "
                         "not probabilities (does it end in a softmax?)")
    total = p.sum(1)
    if np.abs(total - 1).max() > tol:
        raise ModelError(f"{label}: the model's outputs are not probabilities (rows sum to "
                         f"{total.min():.3g}..{total.max():.3g}, not 1: does it end in a softmax?)")
    return p


def _probe_inputs(size: int) -> np.ndarray:
    """Two sketches to try a model on when it is loaded: a schematic frontal face with the
    mouth closed and open (not a blank sketch: the int8 CapsNet divides by zero on one)."""
    from .sketch import render

    t = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    lm = np.zeros((2, 68, 2), np.float32)
    for k, (mouth_h, brow) in enumerate(((12, 0), (30, -8))):
        f = lm[k]
        f[0:17] = np.c_[np.linspace(30, 220, 17), 120 + 80 * np.sin(np.linspace(0, np.pi, 17))]
        f[17:27] = np.c_[np.r_[np.linspace(50, 110, 5), np.linspace(140, 200, 5)], [88 + brow] * 10]
        f[27:36] = np.c_[[125] * 4 + list(np.linspace(105, 145, 5)), list(np.linspace(95, 150, 4)) + [165] * 5]
        eye = np.c_[[0, 8, 18, 26, 18, 8], [0, -5, -5, 0, 4, 4]]
        f[36:42], f[42:48] = eye + [65, 110], eye + [160, 110]
        f[48:60] = np.c_[125 - 35 * np.cos(t), 195 + mouth_h * np.sin(t)]
        f[60:68] = np.c_[125 - 25 * np.cos(t[:8]), 195 + mouth_h / 2 * np.sin(t[:8])]
    return render(lm, size)


class Classifier:
    """A sketch classifier: ``input_size`` and ``predict(x (N, S, S, 1)) -> (N, 4)``."""

    input_size: int
    name: str

    def predict(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def predict_landmarks(self, landmarks: np.ndarray) -> np.ndarray:
        """Probabilities for ``(N, 68, 2)`` crop-space landmarks (sketches drawn here at
        the model's input size)."""
        from .sketch import render

        return self.predict(render(landmarks, self.input_size))

    __call__ = predict_landmarks


def input_key(name: str) -> str:
    """A TFLite input tensor's name as the Keras model named it
    (``serving_default_face:0`` -> ``face``)."""
    name = name.split(":")[0]
    return name[len("serving_default_"):] if name.startswith("serving_default_") else name


def keras_input_shapes(model) -> dict:
    """A Keras model's input shapes by input name (``{"sketch": (None, 48, 48, 1), ...}``)."""
    return {input_key(t.name): tuple(t.shape) for t in model.inputs}


class TFLiteModel:
    """A TFLite model (a file or bytes) with one output and one or more inputs: batches of
    any length (the input tensors are resized), quantized inputs and output scaled here.
    Shared by the classifiers and by :func:`fastes.convert.convert`'s verification. A
    several-input model takes a dict of arrays keyed by its inputs' names (``keys``)."""

    def __init__(self, path=None, threads: int | None = None, content: bytes | None = None,
                 inputs: int | None = 1):
        self.label = str(path) if path is not None else "model"
        if path is not None and not Path(path).is_file():
            raise ModelError(f"{path}: no such model file")
        Interpreter = interpreter_class()
        try:
            kw = {"model_path": str(path)} if path is not None else {"model_content": content}
            self.interp = Interpreter(**kw, num_threads=threads or 1)
            self.interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"{self.label}: not a valid TFLite model ({e})") from None
        ins, outs = self.interp.get_input_details(), self.interp.get_output_details()
        if (inputs is not None and len(ins) != inputs) or len(outs) != 1:
            want = "one input" if inputs == 1 else f"{inputs or 'any number of'} inputs"
            raise ModelError(f"{self.label}: expected {want} and one output, got {len(ins)} and {len(outs)}")
        self._ins, self._out = ins, outs[0]
        self._in = ins[0]
        self.keys = [input_key(d["name"]) for d in ins]
        self._batch = int(self._in["shape"][0])

    def _resize(self, n: int) -> None:
        if n != self._batch:
            for d in self._ins:
                self.interp.resize_tensor_input(d["index"], [n, *d["shape"][1:]])
            self.interp.allocate_tensors()
            self._ins = self.interp.get_input_details()
            self._in = self._ins[0]
            self._out = self.interp.get_output_details()[0]
            self._batch = n

    def predict(self, x, batch: int = 64) -> np.ndarray:
        xs = x if isinstance(x, dict) else {self.keys[0]: x}
        if set(xs) != set(self.keys):
            raise ModelError(f"{self.label}: inputs {sorted(xs)} given, the model takes {sorted(self.keys)}")
        xs = {k: np.asarray(v, np.float32) for k, v in xs.items()}
        n = len(next(iter(xs.values())))
        outs = []
        for i in range(0, n, batch):
            m = min(batch, n - i)
            self._resize(m)
            for d, k in zip(self._ins, self.keys):
                self.interp.set_tensor(d["index"], quantize_input(xs[k][i:i + m], d))
            self.interp.invoke()
            outs.append(dequantize_output(self.interp.get_tensor(self._out["index"]), self._out))
        return np.concatenate(outs) if outs else np.zeros((0, *self._out["shape"][1:]), np.float32)


class TFLiteClassifier(TFLiteModel, Classifier):
    """A ``.tflite`` sketch classifier: input ``(N, S, S, 1)``, output ``(N, 4)``."""

    def __init__(self, path, threads: int | None = None):
        path = Path(path)
        super().__init__(path, threads)
        self.path, self.name = path, path.stem
        self.input_size = _sketch_io(path, tuple(self._in["shape"]), tuple(self._out["shape"]))
        # refuses a model whose outputs are not probabilities (logits, a missing softmax)
        check_probabilities(TFLiteModel.predict(self, _probe_inputs(self.input_size)), self.label, PROB_SUM_TOL)

    def predict(self, x: np.ndarray, batch: int = 64) -> np.ndarray:
        """Class probabilities, each row summing to 1: an int8 model's outputs sit on a
        1/256 grid, whose rounding leaves a row's sum up to ~0.008 off (argmax unchanged).
        Outputs that are not probabilities raise :class:`ModelError` (see ``check_probabilities``)."""
        p = check_probabilities(TFLiteModel.predict(self, x, batch), self.label)
        return p / p.sum(1, keepdims=True)

    __call__ = Classifier.predict_landmarks


class KerasClassifier(Classifier):
    def __init__(self, path):
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"{path}: no such model file")
        try:
            import keras

            from . import nets  # noqa: F401  (registers the custom layers)
        except ImportError:
            raise ModelError(f"{path}: Keras models need the train extra (pip install 'fastes[train]'); "
                             "or pass a .tflite model") from None
        try:
            self.model = keras.saving.load_model(path, compile=False)
        except Exception as e:  # keras raises many types for bad files
            raise ModelError(f"{path}: not a loadable Keras model ({type(e).__name__}: {e})") from None
        self.path, self.name = path, path.stem
        self.input_size = _sketch_io(path, tuple(self.model.input_shape), tuple(self.model.output_shape))

    @classmethod
    def from_model(cls, model, name: str = "keras") -> "KerasClassifier":
        """Wrap a Keras model already in memory (e.g. a cross-validation fold's)."""
        self = cls.__new__(cls)
        self.model, self.path, self.name = model, None, name
        self.input_size = _sketch_io(name, tuple(model.input_shape), tuple(model.output_shape))
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        p = np.asarray(self.model.predict(np.asarray(x, np.float32), batch_size=256, verbose=0))
        return check_probabilities(p, str(self.path or self.name))


class Ensemble(Classifier):
    """The mean of several classifiers' probabilities (each at its own input size)."""

    def __init__(self, members: list[Classifier]):
        self.members = members
        self.name = "ensemble"
        self.input_size = max(m.input_size for m in members)
        sizes = {m.face_size for m in members if getattr(m, "needs_face", False)}
        if len(sizes) > 1:
            raise ModelError(f"ensemble members want face crops of different sizes ({sorted(sizes)})")
        if sizes:  # a two-stream member: Pipeline and evaluate pass the aligned crops
            self.needs_face, self.face_size = True, sizes.pop()

    def predict_landmarks(self, landmarks):
        if getattr(self, "needs_face", False):
            raise ModelError("ensemble: a two-stream member needs the face crops too (predict_faces)")
        return np.mean([m.predict_landmarks(landmarks) for m in self.members], axis=0)

    def predict_faces(self, landmarks, faces):
        return np.mean([m.predict_faces(landmarks, faces) if getattr(m, "needs_face", False)
                        else m.predict_landmarks(landmarks) for m in self.members], axis=0)

    __call__ = predict_landmarks


class Augmented(Classifier):
    """Test-time augmentation: the mean of ``base``'s probabilities over ``copies``
    randomly rotated (uniform ±8°), jittered (0.5 px) and mirrored (p = 0.5) copies of
    each face's landmarks, drawn as one batch (a two-stream base: with its face crop,
    :meth:`predict_faces`). Seeded per call: the same landmarks always
    get the same probabilities. Costs ``copies`` times the inference. Why: measured with
    the fold models of a 5-fold subject-disjoint run of the shipped recipe, 8 copies
    lift accuracy from 0.709 to 0.734 (docs/experiments.md, "Does test-time augmentation help?")."""

    def __init__(self, base: Classifier, copies: int = 8, seed: int = 0):
        if not isinstance(copies, (int, np.integer)) or copies < 1:
            raise ValueError(f"copies must be an integer >= 1, got {copies!r}")
        self.base, self.copies, self.seed = base, int(copies), seed
        self.name = f"{base.name}+tta{self.copies}"
        self.input_size = base.input_size
        if getattr(base, "needs_face", False):  # a two-stream base: Pipeline and evaluate pass crops
            self.needs_face, self.face_size = True, base.face_size

    def _copies(self, lm: np.ndarray) -> np.ndarray:
        from .sketch import augment

        rng = np.random.default_rng(self.seed)
        return np.concatenate([augment(lm, rng, rotate=8.0, jitter=0.5) for _ in range(self.copies)])

    def predict_landmarks(self, landmarks):
        lm = np.asarray(landmarks, np.float32)
        if len(lm) == 0:
            return self.base.predict_landmarks(lm)
        return self.base.predict_landmarks(self._copies(lm)).reshape(self.copies, len(lm), -1).mean(0)

    def predict_faces(self, landmarks, faces):
        """Two-stream base: the landmarks' copies as above for the sketch; the face crop
        mirrored in every other copy (training mirrored crop and sketch independently)."""
        lm = np.asarray(landmarks, np.float32)
        if len(lm) == 0:
            return self.base.predict_faces(lm, faces)
        crops = np.concatenate([faces[:, :, ::-1] if k % 2 else faces for k in range(self.copies)])
        return self.base.predict_faces(self._copies(lm), crops).reshape(self.copies, len(lm), -1).mean(0)

    __call__ = predict_landmarks


# --------------------------------------------------------------------------- landmark models
# A landmark model classifies the 68 points themselves, no sketch drawn: its input is
# fastes.remap's output (sketch coordinates, the paper's eqs. 1-2 and shifts), either
# flattened (N, 136) as x0, y0, x1, y1, ... or (N, 68, 2). The model file says which it
# is by its input shape; any standardization is inside the model.
LANDMARK_SHAPES = ((136,), (68, 2))


def is_landmark_input(shape) -> bool:
    """Whether a model input of ``shape`` (batch first) takes remapped landmarks."""
    return tuple(int(v) for v in shape[1:]) in LANDMARK_SHAPES


def landmark_features(landmarks: np.ndarray, shape: tuple = (136,)) -> np.ndarray:
    """A landmark model's input for ``(N, 68, 2)`` crop-space landmarks: float32 ``(N, *shape)``.
    Degenerate landmarks raise :class:`fastes.DegenerateFaceError`, as drawing them would."""
    from .sketch import remap

    lm = np.asarray(landmarks, np.float32).reshape(-1, 68, 2)
    r = remap(lm) if len(lm) else np.zeros((0, 68, 2))
    return r.reshape(len(lm), *shape).astype(np.float32)


class LandmarkClassifier(Classifier):
    """A classifier on remapped landmarks: ``predict(x (N, *input_shape)) -> (N, 4)``;
    ``input_size`` 0 (it draws no sketch)."""

    input_size = 0
    input_shape: tuple = (136,)

    def predict_landmarks(self, landmarks: np.ndarray) -> np.ndarray:
        return self.predict(landmark_features(landmarks, self.input_shape))

    __call__ = predict_landmarks


def _landmark_io(label, shape: tuple, oshape: tuple) -> tuple:
    if not is_landmark_input(shape) or oshape[-1] != len(CLASSES):
        raise ModelError(f"{label}: expected input (N, 136) or (N, 68, 2) and output (N, {len(CLASSES)}), "
                         f"got {shape} and {oshape}")
    return tuple(int(v) for v in shape[1:])


class TFLiteLandmarkClassifier(TFLiteModel, LandmarkClassifier):
    """A ``.tflite`` landmark classifier (see ``LANDMARK_SHAPES``)."""

    def __init__(self, path, threads: int | None = None):
        path = Path(path)
        super().__init__(path, threads)
        self.path, self.name = path, path.stem
        self.input_shape = _landmark_io(path, tuple(self._in["shape"]), tuple(self._out["shape"]))

    def predict(self, x: np.ndarray, batch: int = 256) -> np.ndarray:
        p = check_probabilities(TFLiteModel.predict(self, x, batch), self.label)
        return p / p.sum(1, keepdims=True)


class KerasLandmarkClassifier(LandmarkClassifier):
    """A Keras landmark classifier, from a file or (``from_model``) in memory."""

    def __init__(self, model, name: str = "keras"):
        self.model, self.path, self.name = model, None, name
        self.input_shape = _landmark_io(name, tuple(model.input_shape), tuple(model.output_shape))

    from_model = classmethod(lambda cls, model, name="keras": cls(model, name))

    def predict(self, x: np.ndarray) -> np.ndarray:
        p = np.asarray(self.model.predict(np.asarray(x, np.float32), batch_size=1024, verbose=0))
        return check_probabilities(p, self.name)


# --------------------------------------------------------------------------- two-stream
# A two-stream model takes the emotion sketch and the face crop aligned by its own
# landmarks (fastes.align), fused late: inputs named ``sketch`` (N, S, S, 1) in {0, 1} and
# ``face`` (N, F, F, 1) grey levels in [0, 1]. The file says what it needs by those names;
# Pipeline and evaluate then pass the crops (predict_faces). Built and trained by
# fastes.twostream.
SKETCH, FACE = "sketch", "face"  # the two inputs' names


def is_two_stream(shapes: dict) -> bool:
    """True for inputs named ``sketch`` and ``face``, each ``(N, S, S, 1)``."""
    return set(shapes) == {SKETCH, FACE} and all(
        len(s) == 4 and s[1] == s[2] and s[3] == 1 for s in shapes.values())


class _TwoStream(Classifier):
    """Shared by the TFLite and Keras two-stream classifiers."""

    needs_face = True  # Pipeline and evaluate pass aligned crops (predict_faces)
    face_size: int

    def predict_faces(self, landmarks: np.ndarray, faces: np.ndarray) -> np.ndarray:
        """Probabilities for crop-space landmarks ``(N, 68, 2)`` and their aligned crops
        ``(N, F, F, 1)`` (:func:`face_input`)."""
        from .sketch import render

        if len(landmarks) != len(faces):
            raise ValueError(f"{len(landmarks)} landmark sets but {len(faces)} face crops")
        return self._predict({SKETCH: render(landmarks, self.input_size), FACE: faces})

    def predict_landmarks(self, landmarks):
        raise ModelError(f"{self.name}: a two-stream model needs the face crops too (predict_faces)")

    __call__ = predict_landmarks

    def predict(self, x):
        raise ModelError(f"{self.name}: a two-stream model takes a sketch and a face crop (predict_faces)")


class TFLiteTwoStream(_TwoStream):
    """A ``.tflite`` two-stream classifier."""

    def __init__(self, path, threads: int | None = None):
        self.model = TFLiteModel(path, threads, inputs=2)
        self.name = self.model.label
        shapes = {k: tuple(int(v) for v in d["shape"]) for k, d in zip(self.model.keys, self.model._ins)}
        if not is_two_stream(shapes) or int(self.model._out["shape"][-1]) != 4:
            raise ModelError(f"{path}: expected inputs 'sketch' and 'face' (N, S, S, 1) and output (N, 4), "
                             f"got {shapes}")
        self.input_size, self.face_size = shapes[SKETCH][1], shapes[FACE][1]

    def _predict(self, inputs: dict) -> np.ndarray:
        p = check_probabilities(self.model.predict(inputs), self.name)
        return p / p.sum(1, keepdims=True) if len(p) else p  # int8 rounding


class KerasTwoStream(_TwoStream):
    """A Keras two-stream model (object or ``.keras`` file; needs the ``train`` extra)."""

    def __init__(self, model, name: str = "keras"):
        self.model, self.name = model, name
        shapes = keras_input_shapes(model)
        if not is_two_stream(shapes):
            raise ModelError(f"{name}: expected inputs 'sketch' and 'face' (N, S, S, 1), got {shapes}")
        self.input_size, self.face_size = int(shapes[SKETCH][1]), int(shapes[FACE][1])

    def _predict(self, inputs: dict) -> np.ndarray:
        p = np.asarray(self.model.predict(inputs, batch_size=256, verbose=0), np.float32)
        return check_probabilities(p, self.name)


def load_classifier(path: str | os.PathLike, threads: int | None = None) -> Classifier:
    """A classifier from a ``.tflite`` or ``.keras`` file: a sketch model (input
    ``(N, S, S, 1)``), a landmark model (input ``(N, 136)`` or ``(N, 68, 2)``) or a
    two-stream model (inputs ``sketch`` and ``face``, :mod:`fastes.twostream`)."""
    p = Path(path)
    if p.suffix == ".tflite":
        probe = TFLiteModel(p, 1, inputs=None)
        if len(probe.keys) == 2:  # a sketch and a face crop (fastes.twostream)
            return TFLiteTwoStream(p, threads)
        if len(probe.keys) != 1:
            raise ModelError(f"{p}: expected one input (a sketch or landmarks) or two (a sketch and a face "
                             f"crop), got {len(probe.keys)}")
        if is_landmark_input(probe._in["shape"]):
            return TFLiteLandmarkClassifier(p, threads)
        return TFLiteClassifier(p, threads)
    if p.suffix in (".keras", ".h5"):
        try:
            return KerasClassifier(p)
        except ModelError as e:
            if "expected input (N, S, S, 1)" not in str(e) and "one input" not in str(e):
                raise
            sketch_error = e
        import keras  # loadable (KerasClassifier got that far), just not a sketch model

        from . import nets  # noqa: F401  (custom layers)

        model = keras.saving.load_model(p, compile=False)
        if len(model.inputs) == 2:
            return KerasTwoStream(model, p.stem)
        if not is_landmark_input(model.input_shape):
            raise sketch_error
        return KerasLandmarkClassifier(model, p.stem)
    raise ModelError(f"{p}: unknown model type (expected .tflite or .keras)")
