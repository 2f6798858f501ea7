"""Two-stream classifiers: the emotion sketch and the face crop aligned by its own
landmarks (:mod:`fastes.align`), fused late.

The sketch stays the core of the method (the geometry of brows, eyes and mouth); the crop
adds what landmarks cannot see (wrinkles, teeth, furrows). A two-stream model file says
what it needs by its two inputs' names and shapes: ``sketch`` ``(N, S, S, 1)`` in {0, 1}
and ``face`` ``(N, F, F, 1)`` grey levels in [0, 1]; output ``(N, 4)`` probabilities.
:func:`fastes.runtime.load_classifier` recognizes such ``.tflite`` and ``.keras`` files
(:class:`fastes.runtime.TFLiteTwoStream`); :class:`fastes.Pipeline`, ``fastes evaluate``
and ``fastes convert`` then give them the aligned crops. This module builds and trains
them (the ``train`` extra).
"""
from __future__ import annotations

import numpy as np

import time

from .runtime import FACE, SKETCH

__all__ = ["SKETCH", "FACE", "build", "average", "crop_cache", "hide_parts", "TwoStreamLearner"]

EMOTIONS_LAYER = "emotions"  # a fine model's 7-emotion softmax (build(fine=True))


def build(size: int = 48, face_size: int = 48, width: float = 0.25, dropout: float = 0.1, n_classes: int = 4,
          fine: bool = False, face_norm: bool = False, face_width: float = 1.0):
    """A two-stream Keras model: the paper's VGG11 sketch branch (``width`` scales its
    channels, as ``fastes train --width``) and a small VGG-style branch on the aligned
    crop, each pooled to a vector, concatenated, one softmax (late fusion). ``fine``: the
    softmax is over the 7 emotions (layer ``emotions``, what training fits) and a fixed
    layer sums them into the 4 classes (fastes.data.EMOTION_CLASS), so the file still
    outputs ``(N, 4)`` probabilities. ``face_norm``: each crop standardized to zero mean
    and unit variance first (inside the model, layer ``face_norm``), so that the face
    branch does not see a set's lighting and contrast. ``face_width`` scales the face
    branch's channels (16, 32, 64, 128 at 1.0); its cost grows about as its square."""
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
    if face_norm:
        x = layers.LayerNormalization(axis=(1, 2, 3), center=False, scale=False, name="face_norm")(x)
    for ch in (max(1, round(c * face_width)) for c in (16, 32, 64, 128)):
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
    if not fine:
        out = layers.Dense(n_classes, activation="softmax", name="probs")(z)
        return keras.Model([sk_in, face_in], out, name="two_stream")
    from .data import EMOTION_CLASS, EMOTIONS
    from .nets import sum_into_classes

    emo = layers.Dense(len(EMOTIONS), activation="softmax", name=EMOTIONS_LAYER)(z)
    return keras.Model([sk_in, face_in], sum_into_classes(emo, EMOTION_CLASS, n_classes), name="two_stream")


def average(models: list, name: str = "two_stream"):
    """One two-stream model whose probabilities are the mean of ``models``' (an ensemble
    in one file: one call, one conversion, and ``--model ensemble`` keeps meaning the mean
    of the shipped files)."""
    import keras
    from keras import layers

    from .runtime import input_key, keras_input_shapes

    if len(models) < 2:
        raise ValueError("an average needs two models or more")
    shapes = [keras_input_shapes(m) for m in models]
    if any(s != shapes[0] for s in shapes):
        raise ValueError(f"the members take different inputs: {shapes}")
    inputs = {k: keras.Input(shapes[0][k][1:], name=k) for k in (SKETCH, FACE)}
    probs = []
    for i, m in enumerate(models):
        view = keras.Model(m.inputs, m.output, name=f"member_{i}")  # layer names must be unique
        probs.append(view([inputs[input_key(t.name)] for t in m.inputs]))
    out = layers.Average(name="probs")(probs)
    return keras.Model([inputs[SKETCH], inputs[FACE]], out, name=name)


# --------------------------------------------------------------------------- training
def crop_cache(paths, boxes: np.ndarray, landmarks: np.ndarray, size: int, tag: str, progress: bool = True,
               cache_dir=None) -> np.ndarray:
    """uint8 ``(N, size, size)`` aligned crops of one face per image (``boxes`` and crop
    ``landmarks`` from the landmark cache), kept in ``$FASTES_CACHE`` (or
    ``~/.cache/fastes``) under the front end's ``tag``: images are read once. Keyed by
    image, box and landmarks, so that landmarks placed anew (another kernel, another
    machine's detector numerics) never meet a crop cut from the old ones."""
    import hashlib
    import os
    from pathlib import Path

    from tqdm import tqdm

    from .evaluate import face_inputs

    d = Path(cache_dir or os.environ.get("FASTES_CACHE") or Path.home() / ".cache" / "fastes")
    d.mkdir(parents=True, exist_ok=True)
    file = d / f"crops-{hashlib.sha1(f'v2|{tag}|{size}'.encode()).hexdigest()[:10]}.npz"
    keys = [f"{p}|{','.join(map(str, np.asarray(b).tolist()))}|"
            f"{hashlib.sha1(np.ascontiguousarray(lm, np.float32).tobytes()).hexdigest()[:16]}"
            for p, b, lm in zip(paths, boxes, landmarks)]
    have: dict[str, np.ndarray] = {}
    if file.exists():
        z = np.load(file, allow_pickle=False)
        have = dict(zip(z["keys"].tolist(), z["crops"]))
    todo = [i for i, k in enumerate(keys) if k not in have]
    for i in tqdm(todo, desc="aligned crops", unit="img", disable=None if progress and todo else True):
        have[keys[i]] = np.round(face_inputs([paths[i]], boxes[i:i + 1], landmarks[i:i + 1], size)[0, ..., 0]
                                 * 255).astype(np.uint8)
    if todo:
        from .io import atomic_write

        ks = sorted(have)
        atomic_write(file, lambda t: np.savez(t, keys=np.array(ks), crops=np.stack([have[k] for k in ks])))
    return np.stack([have[k] for k in keys]) if keys else np.zeros((0, size, size), np.uint8)


# The crop's geometric augmentation at warp = 1: rotation (degrees, uniform +-), scale
# (uniform 1 +- this), shift (fraction of the frame, uniform +- in x and y). Landmarks place
# the crop only to a pixel or two and other datasets frame faces differently.
FACE_WARP = {"rotate": 8.0, "scale": 0.08, "shift": 0.05}


# Where the crop is cut in two for hide_parts: between the eyes' (0.36) and the mouth's
# (0.78) heights in the aligned frame (fastes.align.CANON).
PART_SPLIT = 0.57


def hide_parts(landmarks: np.ndarray, sketches: np.ndarray, faces: np.ndarray, which: np.ndarray,
               parts: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Training inputs with one region of the face hidden from both streams: rows with
    ``which`` 1 lose brows and eyes (sketch drawn with the mouth alone, the crop above
    :data:`PART_SPLIT` filled with its mean grey), rows with 2 lose the mouth. A network
    that cannot always see the mouth has to learn the brows too (posed anger is lowered
    brows over pressed lips, where most web photos of anger shout). ``sketches`` ``(N, S,
    S, 1)`` and ``faces`` ``(N, F, F, 1)`` are changed in place and returned."""
    from .sketch import render

    split = round(PART_SPLIT * faces.shape[1])
    mouth = tuple(q for q in parts if q[0] >= 48)
    upper = tuple(q for q in parts if q[0] < 48)
    for code, keep, band in ((1, mouth, slice(0, split)), (2, upper, slice(split, None))):
        rows = np.flatnonzero(which == code)
        if len(rows):
            sketches[rows] = render(landmarks[rows], sketches.shape[1], parts=keep)
            faces[rows, band] = faces[rows].mean(axis=(1, 2, 3), keepdims=True)
    return sketches, faces


def _face_aug(crops: np.ndarray, rng, warp: float = 0.0) -> np.ndarray:
    """A training epoch's crops: with ``warp`` > 0 a random similarity about the centre
    (:data:`FACE_WARP` times ``warp``), mirrored with p = 0.5, contrast x0.8-1.2,
    brightness +-0.08."""
    import cv2

    x = crops.astype(np.float32) / 255
    if warp > 0 and len(x):
        n, size = len(x), x.shape[1]
        ang = rng.uniform(-1, 1, n) * FACE_WARP["rotate"] * warp
        sc = 1 + rng.uniform(-1, 1, n) * FACE_WARP["scale"] * warp
        sh = rng.uniform(-1, 1, (n, 2)) * FACE_WARP["shift"] * warp * size
        c = ((size - 1) / 2, (size - 1) / 2)
        for i in range(n):
            m = cv2.getRotationMatrix2D(c, float(ang[i]), float(sc[i]))
            m[:, 2] += sh[i]
            x[i] = cv2.warpAffine(x[i], m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    flip = rng.random(len(x)) < 0.5
    x[flip] = x[flip, :, ::-1]
    x = (x - 0.5) * rng.uniform(0.8, 1.2, (len(x), 1, 1)) + 0.5 + rng.uniform(-0.08, 0.08, (len(x), 1, 1))
    return np.clip(x, 0, 1)[..., None]


class TwoStreamLearner:
    """A :class:`fastes.protocol.Learner` for the two-stream model: ``whole`` is the
    :class:`fastes.train.FaceSet` the protocol splits (its rows' boxes and crops are looked
    up by landmarks, which the protocol hands over alone)."""

    def __init__(self, whole, cfg=None, face_size: int = 48, front_end: dict | None = None,
                 progress: bool = False, out_dir=None, balance: float = 0.0, tta: int = 0,
                 posed_weight: float = 1.0, face_warp: float = 0.0, fine_labels: bool = False,
                 balance_within: float = 0.0, members: int = 1, face_norm: bool = False,
                 part_drop: float = 0.0, face_width: float = 1.0):
        from .data import LandmarkCache
        from .face import FaceFinder
        from .protocol import FRONT_END
        from .train import TrainConfig

        self.cfg = cfg or TrainConfig(net="vgg11", size=48, width=0.25, epochs=8, batch=64)
        self.face_size, self.progress, self.name = face_size, progress, "two-stream"
        self.out_dir = out_dir  # keep the trained model here (model.keras, config.json)
        # balance: logit adjustment by the training rows' class shares (fastes.train.balance);
        # tta: the runtime's test-time augmentation (fastes.runtime.Augmented), that many copies
        self.balance, self.tta = float(balance), int(tta)
        # posed_weight: loss weight of the posed sets' training rows (~4 % of them); face_warp:
        # the crop's geometric augmentation, a multiple of FACE_WARP (0 = off)
        self.posed_weight, self.face_warp = float(posed_weight), float(face_warp)
        # fine_labels: learn the 7 emotions (fastes.data.fine_label), summed into the 4 classes
        self.fine_labels = bool(fine_labels)
        # balance_within: with fine labels, also decide as if each emotion of a class were as
        # likely as the others (fastes.train.balance(within=...))
        self.balance_within = float(balance_within)
        if self.balance_within and not (self.fine_labels and self.balance):
            raise ValueError("balance_within needs fine_labels and balance")
        # members: that many models, seeds cfg.seed, cfg.seed + 1, ..., averaged into one (average())
        self.n_members, self.face_norm = int(members), bool(face_norm)
        if self.n_members < 1:
            raise ValueError("members must be >= 1")
        # part_drop: the share of training rows (each epoch) with brows and eyes, or the mouth,
        # hidden from both streams (hide_parts; half each)
        self.part_drop = float(part_drop)
        if not 0 <= self.part_drop <= 1:
            raise ValueError("part_drop must be in [0, 1]")
        self.face_width = float(face_width)  # the face branch's channel scale (build)
        if self.face_width <= 0:
            raise ValueError("face_width must be > 0")
        finder = FaceFinder(**(front_end or FRONT_END))
        _, _, boxes, lms = LandmarkCache(finder).get(whole.paths, progress=progress)
        crops = np.zeros((len(whole), face_size, face_size), np.uint8)
        ok = whole.found
        crops[ok] = crop_cache([whole.paths[i] for i in np.flatnonzero(ok)], boxes[ok], lms[ok], face_size,
                               finder.tag, progress)
        self.crops = crops
        self.row = {whole.landmarks[i].tobytes(): i for i in np.flatnonzero(ok)}

    def _rows(self, landmarks: np.ndarray) -> np.ndarray:
        try:
            return np.array([self.row[np.asarray(lm, np.float32).tobytes()] for lm in landmarks], np.int64)
        except KeyError:
            raise ValueError("landmarks that are not rows of the FaceSet this learner was made for") from None

    def fit(self, data) -> None:
        from dataclasses import replace

        from .train import balance, check_fine, check_prior, posed_weights

        cfg = self.cfg
        lms = data.landmarks[data.found]
        w = posed_weights(data.datasets[data.found], self.posed_weight)
        classes = data.targets[data.found]
        # the class (and emotion) shares the loss sees: weighted by the rows' loss weights
        def shares(t: np.ndarray) -> np.ndarray:
            return (t * w[:, None]).sum(0) / w.sum()

        prior = shares(classes)
        if self.balance:  # refused before hours of training, not after
            check_prior(prior)
        targets = data.fine[data.found] if self.fine_labels else classes
        if self.fine_labels:
            check_fine(targets)
        crops = self.crops[self._rows(lms)]
        fine_prior = shares(targets) if self.fine_labels else None
        t0 = time.perf_counter()
        # with weight averaging, each member's last-step twin too (predict_fine scores it)
        self.members, self.last_steps, histories = [], [], []
        for i in range(self.n_members):
            model, history, last = self._fit_one(replace(cfg, seed=cfg.seed + i), lms, crops, targets, w)
            if self.balance:
                for m in [model] + ([last] if last is not None else []):
                    balance(m, prior, self.balance, within=self.balance_within, fine_prior=fine_prior)
            self.members.append(model)
            if last is not None:
                self.last_steps.append(last)
            histories.append(history)
        self.model = self.members[0] if self.n_members == 1 else average(self.members)
        if self.out_dir is not None:
            import json
            from dataclasses import asdict
            from pathlib import Path

            from .io import atomic_write, write_text_atomic

            out = Path(self.out_dir)
            out.mkdir(parents=True, exist_ok=True)
            atomic_write(out / "model.keras", self.model.save)
            meta = {"recipe": "two-stream", "config": asdict(cfg), "face_size": self.face_size,
                    "n_train": int(data.found.sum()), "data_digest": data.digest(),
                    "class_prior": prior.round(6).tolist(), "balance": self.balance,
                    "posed_weight": self.posed_weight, "face_warp": self.face_warp, "fine_labels": self.fine_labels,
                    "balance_within": self.balance_within,
                    "fine_prior": None if fine_prior is None else fine_prior.round(6).tolist(),
                    "members": self.n_members, "face_norm": self.face_norm, "face_width": self.face_width,
                    "part_drop": self.part_drop, "train_seconds": time.perf_counter() - t0,
                    "history": histories[0] if self.n_members == 1 else histories}
            write_text_atomic(out / "config.json", json.dumps(meta, indent=1))

    def _faces(self, landmarks: np.ndarray) -> np.ndarray:
        """The rows' crops as the model takes them: ``(N, F, F, 1)`` in [0, 1]."""
        return (self.crops[self._rows(landmarks)][..., None] / np.float32(255)).astype(np.float32)

    def _fit_one(self, cfg, lms: np.ndarray, crops: np.ndarray, targets: np.ndarray, w: np.ndarray):
        """One member: built and trained from ``cfg.seed`` (initial weights included).
        Returns ``(model, history, last)``: ``last`` is, with weight averaging
        (``cfg.average``), a copy of the model with its last step's weights, else ``None``."""
        import keras

        from .sketch import augment
        from .train import fit

        keras.utils.set_random_seed(cfg.seed)  # the initial weights are drawn at build
        model = build(cfg.input_size(), self.face_size, width=cfg.width, dropout=cfg.dropout, fine=self.fine_labels,
                      face_norm=self.face_norm, face_width=self.face_width)
        # fine: fit the 7-emotion softmax; the model's fixed last layer sums it into the classes
        trained = keras.Model(model.inputs, model.get_layer(EMOTIONS_LAYER).output) if self.fine_labels else model

        def inputs(ep: int) -> dict:
            rng = np.random.default_rng((cfg.seed, ep))
            sk = augment(lms, rng, **cfg.augmentation()) if cfg.augment else lms
            x = {SKETCH: cfg.draw(sk),
                 FACE: _face_aug(crops, rng, self.face_warp) if cfg.augment else crops[..., None] / 255}
            if self.part_drop:
                u = rng.random(len(lms))  # 1: brows and eyes hidden, 2: the mouth, each for part_drop / 2
                which = np.where(u < self.part_drop / 2, 1, np.where(u < self.part_drop, 2, 0))
                hide_parts(sk, x[SKETCH], x[FACE], which, cfg.parts())
            return x

        kept = []
        _, history = fit(trained, inputs, targets, cfg, cfg.epochs, n_classes=targets.shape[1],
                         progress=self.progress, desc="two-stream", weights=w if self.posed_weight != 1 else None,
                         before_average=lambda: kept.append(model.get_weights()))
        last = None
        if kept:
            last = keras.models.clone_model(model)
            last.set_weights(kept[0])
        return model, history, last

    def predict(self, landmarks: np.ndarray) -> np.ndarray:
        from .runtime import Augmented, KerasTwoStream

        faces = self._faces(landmarks)
        if self.tta:
            return Augmented(KerasTwoStream(self.model), self.tta).predict_faces(landmarks, faces)
        return np.asarray(self.model.predict({SKETCH: self.cfg.draw(landmarks), FACE: faces}, batch_size=256,
                                             verbose=0), np.float32)

    def predict_fine(self, landmarks: np.ndarray) -> np.ndarray | None:
        """A fine model's 7-emotion probabilities (its balanced ``emotions`` layer), kept
        by the protocol beside the class probabilities to re-score other decision rules;
        always without test-time augmentation and, with weight averaging, from the last
        step's weights, so a ``tta`` or ``average`` run also keeps the plain decision
        (``rescore.py --within 0``); ``None`` for a 4-class model."""
        if not self.fine_labels:
            return None
        import keras

        x = {SKETCH: self.cfg.draw(landmarks), FACE: self._faces(landmarks)}
        return np.mean([keras.Model(m.inputs, m.get_layer(EMOTIONS_LAYER).output).predict(x, batch_size=256, verbose=0)
                        for m in self.last_steps or self.members], axis=0).astype(np.float32)
