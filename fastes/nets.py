"""The paper's three networks in Keras 3 (the ``train`` extra): VGG11, ResNet50, CapsNet.

Every network takes ``(S, S, 1)`` float sketches in [0, 1] (lines 1, background 0, as
``fastes.sketch(...) / 255``) and outputs probabilities over ``fastes.CLASSES``.
Custom layers use ``keras.ops`` only, so models train on any Keras backend (TensorFlow
on CPU here, JAX on a GPU) and convert to TFLite with builtin ops alone.

Pre-training swaps heads: :func:`build` makes a network with ``n_classes`` outputs, and
:func:`transfer` copies every weight but the head's from a pre-trained model.
"""
from __future__ import annotations

import keras
from keras import layers, ops

__all__ = ["NETS", "DEFAULT_SIZE", "build", "transfer", "Squash", "CapsuleRouting", "NormalizeLengths"]

# Input size per network, chosen by the size sweep in docs/experiments.md.
DEFAULT_SIZE = {"vgg11": 48, "resnet50": 48, "capsnet": 32}
NETS = tuple(DEFAULT_SIZE)


# Batch-norm moving averages must settle within a few hundred steps (small data): with
# Keras' default 0.99 they lagged so far behind that inference collapsed to one class
# (measured: 0.24 val accuracy in inference mode vs 0.63 in training mode).
BN_MOMENTUM = 0.9


def _sketch_input(size: int, supersample: int):
    """The model's input and the tensor the network starts from: with ``supersample`` k > 1
    the input is a k-times larger binary sketch, averaged over k x k blocks to ``size``
    (grey levels that keep where a line lies within a pixel; the runtime still just draws
    at the model's input size)."""
    inp = keras.Input((size * supersample, size * supersample, 1), name="sketch")
    if supersample == 1:
        return inp, inp
    return inp, layers.AveragePooling2D(supersample, name="supersample")(inp)


# --------------------------------------------------------------------------- VGG11
def vgg11(size: int, n_classes: int = 4, width: float = 0.5, dropout: float = 0.3,
          supersample: int = 1) -> keras.Model:
    """VGG11 (configuration A: 8 conv layers, 5 max-pools) with batch norm.

    ``width`` scales the channel counts (64..512 at 1.0): 0.5 keeps the architecture and
    a 2-core CPU epoch under ~10 s at 64 px. The classifier is 256-256 instead of
    4096-4096: with a 2x2 final map and 4 classes the large head only overfits.
    """
    cfg = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]
    inp, x = _sketch_input(size, supersample)
    for i, c in enumerate(cfg):
        if c == "M":
            x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
        else:
            x = layers.Conv2D(int(c * width), 3, padding="same", use_bias=False, name=f"conv{i}")(x)
            x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"bn{i}")(x)
            x = layers.ReLU(name=f"relu{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    for j in range(2):
        x = layers.Dense(256, activation="relu", name=f"fc{j}")(x)
        x = layers.Dropout(dropout, name=f"drop{j}")(x)
    out = layers.Dense(n_classes, activation="softmax", name="head")(x)
    return keras.Model(inp, out, name="vgg11")


# --------------------------------------------------------------------------- ResNet50
def resnet50(size: int, n_classes: int = 4, dropout: float = 0.3, supersample: int = 1) -> keras.Model:
    """``keras.applications.ResNet50`` (random init: no ImageNet weights offline), one
    input channel, global average pooling and a fresh ``head``."""
    # The input keeps keras.applications' own Input unless supersampled (shipped files unchanged).
    pooled = _sketch_input(size, supersample)[1] if supersample > 1 else None
    base = keras.applications.ResNet50(
        weights=None, include_top=False, input_shape=(size, size, 1), pooling="avg", input_tensor=pooled)
    for la in base.layers:
        if isinstance(la, layers.BatchNormalization):
            la.momentum = BN_MOMENTUM
    x = layers.Dropout(dropout, name="drop")(base.output)
    out = layers.Dense(n_classes, activation="softmax", name="head")(x)
    return keras.Model(base.input, out, name="resnet50")


# --------------------------------------------------------------------------- CapsNet
def _squash(s):
    """v = |s|^2 / (1 + |s|^2) * s / |s| over the last axis (Sabour et al. 2017)."""
    n2 = ops.sum(ops.square(s), axis=-1, keepdims=True)
    return s * (n2 / (1.0 + n2)) / ops.sqrt(n2 + 1e-7)


@keras.saving.register_keras_serializable(package="fastes")
class Squash(layers.Layer):
    """:func:`_squash` as a layer (primary capsules)."""

    def call(self, s):
        return _squash(s)


@keras.saving.register_keras_serializable(package="fastes")
class CapsuleRouting(layers.Layer):
    """Class capsules from primary capsules by routing-by-agreement.

    Input ``(B, N, d_in)``; output ``(B, n_classes, d_out)``. The prediction vectors are
    one broadcast batch matmul and the fixed number of ``routings`` is unrolled, so the
    graph holds only BATCH_MATMUL, SOFTMAX, MUL, SUM, SQRT, DIV: TFLite builtins.
    """

    def __init__(self, n_classes: int, d_out: int = 16, routings: int = 3, **kw):
        super().__init__(**kw)
        self.n_classes, self.d_out, self.routings = n_classes, d_out, routings

    def build(self, input_shape):
        self.n_in, self.d_in = int(input_shape[1]), int(input_shape[2])
        self.w = self.add_weight(
            name="w", shape=(self.n_in, self.d_in, self.n_classes * self.d_out),
            initializer=keras.initializers.RandomNormal(stddev=0.05))

    def call(self, u):
        # u_hat[b, i, j, :] = u[b, i, :] @ W[i, :, j*d_out:(j+1)*d_out]
        u_hat = ops.matmul(ops.expand_dims(u, 2), self.w)                  # (B, N, 1, C*D)
        u_hat = ops.reshape(u_hat, (-1, self.n_in, self.n_classes, self.d_out))
        # First iteration: all coupling coefficients equal (softmax of zero logits), written
        # out so that no constant softmax is left for XLA/TFLite to fold.
        v = _squash(ops.sum(u_hat, axis=1) / self.n_classes)                 # (B, C, D)
        logits = None
        for _ in range(1, self.routings):
            agreement = ops.sum(u_hat * ops.expand_dims(v, 1), axis=-1)        # (B, N, C)
            logits = agreement if logits is None else logits + agreement
            c = ops.softmax(logits, axis=2)
            v = _squash(ops.sum(ops.expand_dims(c, -1) * u_hat, axis=1))
        return v

    def get_config(self):
        return {**super().get_config(), "n_classes": self.n_classes, "d_out": self.d_out,
                "routings": self.routings}


@keras.saving.register_keras_serializable(package="fastes")
class CapsuleLength(layers.Layer):
    """Length of each class capsule: the class's presence, in [0, 1)."""

    def call(self, v):
        return ops.sqrt(ops.sum(ops.square(v), axis=-1) + 1e-7)


@keras.saving.register_keras_serializable(package="fastes")
class NormalizeLengths(layers.Layer):
    """Capsule lengths divided by their sum: probabilities, as the other nets output."""

    def call(self, lengths):
        return lengths / ops.sum(lengths, axis=-1, keepdims=True)


def capsnet(size: int, n_classes: int = 4, routings: int = 3, filters: int = 128,
            primary: int = 16, supersample: int = 1) -> keras.Model:
    """CapsNet: 9x9 conv, primary capsules (9x9 conv, stride 2, ``primary`` maps of 8-D
    capsules), class capsules (16-D) by dynamic routing. The model outputs normalized
    capsule lengths; the layer ``lengths`` holds the raw lengths that the margin loss
    trains on. No reconstruction decoder (it regularizes digits; sketches need none).
    """
    inp, x = _sketch_input(size, supersample)
    x = layers.Conv2D(filters, 9, activation="relu", name="conv1")(x)
    x = layers.Conv2D(primary * 8, 9, strides=2, name="primary_conv")(x)
    x = layers.Reshape((-1, 8), name="primary_caps")(x)
    x = Squash(name="primary_squash")(x)
    v = CapsuleRouting(n_classes, 16, routings, name="head")(x)
    lengths = CapsuleLength(name="lengths")(v)
    out = NormalizeLengths(name="probs")(lengths)
    return keras.Model(inp, out, name="capsnet")


def margin_loss(y_true, lengths, m_plus: float = 0.9, m_minus: float = 0.1, lam: float = 0.5):
    """Sabour et al.'s margin loss on capsule lengths; ``y_true`` one-hot."""
    pos = y_true * ops.square(ops.relu(m_plus - lengths))
    neg = lam * (1.0 - y_true) * ops.square(ops.relu(lengths - m_minus))
    return ops.mean(ops.sum(pos + neg, axis=-1))


# --------------------------------------------------------------------------- helpers
def build(net: str, size: int | None = None, n_classes: int = 4, **kw) -> keras.Model:
    """A fresh network by name (``vgg11``, ``resnet50``, ``capsnet``)."""
    if net not in DEFAULT_SIZE:
        raise ValueError(f"unknown network {net!r}; choose one of {', '.join(NETS)}")
    size = size or DEFAULT_SIZE[net]
    return {"vgg11": vgg11, "resnet50": resnet50, "capsnet": capsnet}[net](size, n_classes, **kw)


def transfer(src: keras.Model, dst: keras.Model) -> int:
    """Copy weights layer by layer (by name) from ``src`` into ``dst``, skipping the head
    and any layer whose shapes differ. Returns how many layers were copied."""
    n = 0
    names = {la.name for la in src.layers}
    for la in dst.layers:
        if la.name == "head" or la.name not in names or not la.weights:
            continue
        w = src.get_layer(la.name).get_weights()
        if [a.shape for a in w] == [b.shape for b in la.get_weights()]:
            la.set_weights(w)
            n += 1
    return n


# --------------------------------------------------------------------------- landmarks
LANDMARK_INPUT = 68 * 2  # fastes.remap's 68 points, (x, y) per point, sketch coordinates


def sum_into_classes(emotions, emotion_class, n_classes: int = 4, name: str = "probs"):
    """A fixed (untrained) layer on a 7-emotion softmax that sums it into the classes,
    ``emotion_class[e]`` being emotion e's class (fastes.data.EMOTION_CLASS): a fine
    model's file still outputs ``(N, 4)``."""
    import numpy as np

    to_classes = layers.Dense(n_classes, use_bias=False, trainable=False, name=name)
    out = to_classes(emotions)
    to_classes.set_weights([np.eye(n_classes, dtype=np.float32)[np.asarray(emotion_class)]])  # (7, 4) of 0/1
    return out


def landmark_net(mean, std, n_classes: int = 4, hidden: tuple = (256, 256), dropout: float = 0.2) -> keras.Model:
    """A tiny MLP on the 68 remapped points: input ``(N, 136)``, ``fastes.remap``'s output
    flattened (the model file says what it needs: its input shape). The per-feature
    standardization (``mean``, ``std`` of the training features) is part of the model,
    so the runtime feeds the remapped points as they are."""
    import numpy as np

    inp = keras.Input((LANDMARK_INPUT,), name="landmarks")
    # std floored at 1 px: the remap pins points 0, 16, 27 and 33 (std 0), and an int8
    # input's rounding (~1 px) divided by a tiny std would swamp everything else
    var = np.square(np.maximum(np.asarray(std, np.float32), 1.0))
    x = layers.Normalization(mean=np.asarray(mean, np.float32), variance=var, name="standardize")(inp)
    for j, h in enumerate(hidden):
        x = layers.Dense(h, name=f"fc{j}")(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"bn{j}")(x)
        x = layers.ReLU(name=f"relu{j}")(x)
        x = layers.Dropout(dropout, name=f"drop{j}")(x)
    out = layers.Dense(n_classes, activation="softmax", name="head")(x)
    return keras.Model(inp, out, name="landmarks")
