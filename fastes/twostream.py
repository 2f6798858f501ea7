"""Two-stream classifiers: the emotion sketch and the face crop aligned by its own
landmarks (:mod:`fastes.align`), fused late.

The sketch stays the core of the method (the geometry of brows, eyes and mouth); the crop
adds what landmarks cannot see (wrinkles, teeth, furrows). A two-stream model file says
what it needs by its two inputs' names and shapes: ``sketch`` ``(N, S, S, 1)`` in {0, 1}
and ``face`` ``(N, F, F, 1)`` grey levels in [0, 1]; output ``(N, 4)`` probabilities.
:func:`fastes.runtime.load_classifier` recognizes such ``.tflite`` and ``.keras`` files;
:class:`fastes.Pipeline`, ``fastes evaluate`` and ``fastes convert`` then give them the
aligned crops.
"""
from __future__ import annotations

import numpy as np

from .runtime import Classifier, ModelError, TFLiteModel, check_probabilities

__all__ = ["SKETCH", "FACE", "is_two_stream", "face_input", "TFLiteTwoStream", "KerasTwoStream", "build"]

SKETCH, FACE = "sketch", "face"  # the two inputs' names


def is_two_stream(shapes: dict) -> bool:
    """True for inputs named ``sketch`` and ``face``, each ``(N, S, S, 1)``."""
    return set(shapes) == {SKETCH, FACE} and all(
        len(s) == 4 and s[1] == s[2] and s[3] == 1 for s in shapes.values())


def face_input(grey: np.ndarray, image_landmarks: np.ndarray, size: int) -> np.ndarray:
    """The ``face`` input for faces of one grey image: aligned crops as float32 [0, 1]."""
    from .align import aligned_crops

    return (aligned_crops(grey, image_landmarks, size)[..., None] / np.float32(255)).astype(np.float32)


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
        p = self.model.predict(inputs)
        p = p / np.maximum(p.sum(1, keepdims=True), 1e-6) if len(p) else p  # int8 rounding
        return check_probabilities(p, self.name)


class KerasTwoStream(_TwoStream):
    """A Keras two-stream model (object or ``.keras`` file; needs the ``train`` extra)."""

    def __init__(self, model, name: str = "keras"):
        self.model, self.name = model, name
        shapes = {t.name.split(":")[0]: tuple(t.shape) for t in model.inputs}
        if not is_two_stream(shapes):
            raise ModelError(f"{name}: expected inputs 'sketch' and 'face' (N, S, S, 1), got {shapes}")
        self.input_size, self.face_size = int(shapes[SKETCH][1]), int(shapes[FACE][1])

    def _predict(self, inputs: dict) -> np.ndarray:
        p = np.asarray(self.model.predict(inputs, batch_size=256, verbose=0), np.float32)
        return check_probabilities(p, self.name)


def build(size: int = 48, face_size: int = 48, width: float = 0.25, dropout: float = 0.1, n_classes: int = 4):
    """A two-stream Keras model: the paper's VGG11 sketch branch (``width`` scales its
    channels, as ``fastes train --width``) and a small VGG-style branch on the aligned
    crop, each pooled to a vector, concatenated, one softmax (late fusion)."""
    import keras
    from keras import layers

    from .nets import build as build_net

    sketch_net = build_net("vgg11", size, n_classes=n_classes, width=width, dropout=dropout)
    sk_in = keras.Input((size, size, 1), name=SKETCH)
    # the sketch branch is VGG11 up to its classifier: the last layer before the softmax head
    feat = keras.Model(sketch_net.inputs, sketch_net.layers[-2].output)
    a = feat(sk_in)
    face_in = keras.Input((face_size, face_size, 1), name=FACE)
    x = face_in
    for ch in (16, 32, 64, 128):
        x = layers.Conv2D(ch, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.Conv2D(ch, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.MaxPooling2D()(x)
    b = layers.GlobalAveragePooling2D()(x)
    z = layers.Concatenate()([layers.Flatten()(a), b])
    z = layers.Dropout(dropout)(z)
    out = layers.Dense(n_classes, activation="softmax", name="probs")(z)
    return keras.Model([sk_in, face_in], out, name="two_stream")
