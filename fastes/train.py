"""Training on emotion sketches drawn on the fly from cached landmarks (``train`` extra).

Sketches are cheap (microseconds each), so every epoch draws a fresh, augmented set at
the network's own input size: small rotation, point jitter (which also moves the
reference points, hence the normalization: a scale/shift augmentation for free) and a
mirror with the 68-point index permutation. Nothing here re-runs the face front end.
"""
from __future__ import annotations

import gzip
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from . import CLASSES
from .io import atomic_write as _atomic
# Re-exported: they used to live here.
from .sketch import MIRROR, augment, render  # noqa: F401

__all__ = [
    "POSED", "FaceSet", "load_faces", "augment", "render", "load_mnist", "mnist_inputs",
    "TrainConfig", "train", "cross_validate", "fold_model", "balance", "check_prior", "within_class_shift",
    "posed_weights", "recompute_batch_norm",
]

# Moved to fastes.data (the convert <-> train import cycle); re-exported here.
from .data import POSED, FaceSet, load_faces  # noqa: E402, F401


# --------------------------------------------------------------------------- inputs
def load_mnist(root=None) -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 MNIST test digits (``mnist/`` beside ``faces/`` in the shared data)."""
    from .data import data_root

    d = Path(root) if root else data_root() / "mnist"
    with gzip.open(d / "t10k-images-idx3-ubyte.gz", "rb") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(d / "t10k-labels-idx1-ubyte.gz", "rb") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    return x, y


def mnist_inputs(x: np.ndarray, size: int) -> np.ndarray:
    """Digits resized to ``size`` and binarized like sketches: ``(N, size, size, 1)``."""
    import cv2

    out = np.empty((len(x), size, size, 1), np.float32)
    for i, d in enumerate(x):
        out[i, ..., 0] = cv2.resize(d, (size, size), interpolation=cv2.INTER_LINEAR) > 127
    return out


# --------------------------------------------------------------------------- training
# Epochs of each net's shipped recipe (``fastes train``'s default): measured on the 2-core
# CPU, VGG11 618 s, CapsNet 577 s, ResNet50 1,633 s alone (docs/results.md).
DEFAULT_EPOCHS = {"vgg11": 60, "capsnet": 40, "resnet50": 20}


@dataclass
class TrainConfig:
    net: str = "vgg11"
    size: int | None = None        # None: nets.DEFAULT_SIZE[net]
    epochs: int = 60
    batch: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    augment: bool = True
    pretrain: str = "none"          # none | mnist | wild
    pretrain_epochs: int = 5
    routings: int = 5               # CapsNet fine-tuning (pre-training uses 3)
    dropout: float = 0.1            # before the classifier (VGG11, ResNet50)
    width: float = 0.5              # VGG11 channel scale (1.0: 64..512 channels)
    rotate: float = 8.0             # augmentation: degrees (uniform +-), point jitter (px,
    jitter: float = 1.5             # Gaussian, crop space), mirror with p = 0.5
    mirror: bool = True
    # Experiments only (tools/experiments/cross_validate.py ...:inner_mouth=1): also draw the inner lips.
    # Not the paper's sketch, and the runtime draws the paper's: never ship such a model.
    inner_mouth: bool = False
    # k > 1: the network takes a k-times larger binary sketch and averages it over k x k
    # blocks first (nets._sketch_input): grey levels that keep sub-pixel line positions.
    # The model file says it all (its input size), so the runtime needs nothing more.
    supersample: int = 1
    # Weight averaging (SWA; SWAD for unseen domains): the weights averaged over the last
    # `average` share of the training steps, every step, then batch-norm statistics
    # re-estimated for them (fit, recompute_batch_norm). 0: the last step's weights.
    average: float = 0.0

    def augmentation(self) -> dict:
        return {"rotate": self.rotate, "jitter": self.jitter, "mirror": self.mirror}

    def parts(self) -> tuple:
        from .sketch import INNER_MOUTH, PARTS
        return PARTS + (INNER_MOUTH,) if self.inner_mouth else PARTS

    def input_size(self) -> int:
        from .nets import DEFAULT_SIZE
        return self.size or DEFAULT_SIZE[self.net]

    def draw(self, landmarks: np.ndarray) -> np.ndarray:
        """The network's inputs for these landmarks: binary sketches at the model's input size."""
        return render(landmarks, self.input_size() * self.supersample, parts=self.parts())


def _compile(model, cfg: TrainConfig, steps: int, n_classes: int):
    """Compile for training; returns the model that trains (CapsNet: raw lengths)."""
    import keras

    from .nets import margin_loss

    sched = keras.optimizers.schedules.CosineDecay(cfg.lr, decay_steps=max(1, steps), alpha=0.02)
    opt = keras.optimizers.AdamW(sched, weight_decay=cfg.weight_decay)
    if model.name == "capsnet":
        trainer = keras.Model(model.input, model.get_layer("lengths").output, name="capsnet_train")
        trainer.compile(optimizer=opt, loss=margin_loss, metrics=["categorical_accuracy"])
    else:
        trainer = model
        trainer.compile(optimizer=opt, loss="categorical_crossentropy", metrics=["categorical_accuracy"])
    return trainer


def fit(model, inputs, labels: np.ndarray, cfg: TrainConfig, epochs: int, n_classes: int = 4,
        progress: bool = True, desc: str = "train", on_epoch=None, start_epoch: int = 0,
        trainer=None, weights: np.ndarray | None = None, before_average=None) -> tuple[object, list[dict]]:
    """Train ``model`` for ``epochs``; ``inputs(epoch)`` returns that epoch's ``(N, S, S, 1)``
    array (fresh augmentation each epoch). ``labels``: class indices ``(N,)`` or target
    distributions ``(N, n_classes)`` (soft labels); ``weights``: per-row loss weights.
    One progress bar step per epoch. ``on_epoch(epoch, trainer, history)`` runs after each
    (checkpoints); with ``cfg.average``, ``before_average()`` runs once the last step is done,
    before the averaged weights replace its weights (to keep the last step's model)."""
    import keras
    from tqdm import tqdm

    if not 0 <= cfg.average <= 1:
        raise ValueError(f"average must be between 0 and 1, got {cfg.average}")
    keras.utils.set_random_seed(cfg.seed)
    per_epoch = int(np.ceil(len(labels) / cfg.batch))
    steps = epochs * per_epoch
    trainer = trainer or _compile(model, cfg, steps, n_classes)
    labels = np.asarray(labels)
    onehot = labels.astype(np.float32) if labels.ndim == 2 else np.eye(n_classes, dtype=np.float32)[labels]
    history: list[dict] = []
    averager = _weight_average(trainer, round((1 - cfg.average) * steps), start_epoch * per_epoch) \
        if cfg.average else None
    if averager and averager.step > averager.first_step:
        raise ValueError("cannot resume inside the weight-averaging window (its running mean is not "
                         "checkpointed): train again from the start")
    bar = tqdm(range(start_epoch, epochs), desc=desc, unit="epoch", disable=None if progress else True)
    for ep in bar:
        t0 = time.perf_counter()
        x = inputs(ep)
        h = trainer.fit(x, onehot, sample_weight=weights, batch_size=cfg.batch, epochs=1, verbose=0,
                        shuffle=True, callbacks=[averager] if averager else None)
        rec = {"epoch": ep + 1, "loss": float(h.history["loss"][-1]),
               "accuracy": float(h.history["categorical_accuracy"][-1]), "seconds": time.perf_counter() - t0}
        history.append(rec)
        bar.set_postfix(loss=f"{rec['loss']:.3f}", acc=f"{rec['accuracy']:.3f}")
        if on_epoch:
            on_epoch(ep, trainer, history)
    if averager and averager.n:
        if before_average:
            before_average()
        averager.apply(x)
    return trainer, history


def _weight_average(model, first_step: int, start_step: int = 0):
    """A Keras callback that counts training steps from ``start_step`` and keeps the running
    mean of ``model``'s trainable weights after each step past ``first_step``;
    ``.apply(x)`` puts it into the model, batch-norm statistics re-estimated on ``x``."""
    import keras

    class WeightAverage(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.step, self.n, self.mean = int(start_step), 0, None
            self.first_step = int(first_step)

        def on_train_batch_end(self, batch, logs=None):
            self.step += 1
            if self.step <= self.first_step:
                return
            values = [v.numpy() for v in model.trainable_variables]
            if self.mean is None:
                self.mean = [np.array(v, np.float64) for v in values]
            else:
                for m, v in zip(self.mean, values):
                    m += (v - m) / (self.n + 1)
            self.n += 1

        def apply(self, x) -> None:
            for var, m in zip(model.trainable_variables, self.mean):
                var.assign(m.astype(np.float32))
            recompute_batch_norm(model, x)

    return WeightAverage()


def _batch_norms(model) -> list:
    import keras

    found, todo = [], list(model.layers)
    while todo:
        la = todo.pop()
        if isinstance(la, keras.layers.BatchNormalization):
            found.append(la)
        todo.extend(getattr(la, "layers", []))  # nested models (the two-stream sketch branch)
    return found


def recompute_batch_norm(model, x, rows: int = 8192, batch: int = 256, seed: int = 0) -> int:
    """Re-estimate every batch-norm layer's moving mean and variance as the plain mean of
    its batch statistics over up to ``rows`` rows of ``x`` (an array or a dict of arrays):
    averaged weights do not fit the statistics of any step that made them. Returns how
    many layers it set."""
    bns = _batch_norms(model)
    if not bns:
        return 0
    n = len(next(iter(x.values()))) if isinstance(x, dict) else len(x)
    idx = np.sort(np.random.default_rng(seed).permutation(n)[:rows])
    saved = [la.momentum for la in bns]
    for la in bns:
        la.moving_mean.assign(np.zeros(la.moving_mean.shape, la.moving_mean.dtype))
        la.moving_variance.assign(np.ones(la.moving_variance.shape, la.moving_variance.dtype))
    try:
        for k, start in enumerate(range(0, len(idx), batch)):
            part = idx[start:start + batch]
            for la in bns:  # moving = the mean of the k + 1 batches seen so far
                la.momentum = k / (k + 1)
            xb = {key: np.asarray(v[part]) for key, v in x.items()} if isinstance(x, dict) else np.asarray(x[part])
            model(xb, training=True)
    finally:
        for la, m in zip(bns, saved):
            la.momentum = m
    return len(bns)


def _pretrained(cfg: TrainConfig, progress: bool, wild: FaceSet | None = None, cache: Path | None = None):
    """A network pre-trained on MNIST digits (10 classes) or on wild-set sketches.
    ``cache``: a ``.weights.h5`` file that keeps the result (read if present, else written)."""
    import keras

    from .nets import build

    if cfg.pretrain not in ("mnist", "wild"):
        raise ValueError(f"unknown pre-training {cfg.pretrain!r} (none, mnist, wild)")
    size = cfg.input_size()
    keras.utils.set_random_seed(cfg.seed)  # the pre-trained net's initial weights too
    model = build(cfg.net, size, n_classes=10 if cfg.pretrain == "mnist" else 4, **_net_kw(cfg, routings=3))
    if cache is not None and cache.exists():
        model.load_weights(cache)
        return model
    if cfg.pretrain == "mnist":
        x, y = load_mnist()
        x = mnist_inputs(x[:9000], size * cfg.supersample)  # the last 1,000 digits stay out (validation)
        fit(model, lambda ep: x, y[:9000], cfg, cfg.pretrain_epochs, n_classes=10, progress=progress,
            desc="pretrain mnist")
    else:
        wild = wild or load_faces(datasets=("wild",), progress=progress)
        ok = wild.found
        lms, y = wild.landmarks[ok], wild.labels[ok]
        rng = np.random.default_rng(cfg.seed + 17)
        fit(model, lambda ep: cfg.draw(augment(lms, rng, **cfg.augmentation())), y, cfg,
            cfg.pretrain_epochs, progress=progress, desc="pretrain wild")
    if cache is not None:
        _atomic(cache, lambda t: _save_weights(model, t))
    return model


def _save_weights(model, path) -> None:
    """``model.save_weights`` without the optimizer: Keras 3 also writes a compiled model's
    AdamW moments, 2/3 of the file (ResNet50: 283 MB instead of 95), which nothing reads back."""
    import keras

    bare = keras.Model.from_config(model.get_config(), custom_objects=_custom_objects())  # uncompiled
    bare.set_weights(model.get_weights())
    bare.save_weights(path)


def new_model(cfg: TrainConfig, progress: bool = True, wild: FaceSet | None = None, pre=None):
    """A network ready for fine-tuning: fresh, or with pre-trained weights transferred
    (from ``pre`` when given, else pre-trained here as ``cfg.pretrain`` says)."""
    import keras

    from .nets import build, transfer

    # Seeded here, not only in fit(): the initial weights are drawn when the model is
    # built, and an unseeded build made `fastes train` differ from run to run.
    keras.utils.set_random_seed(cfg.seed)
    model = build(cfg.net, cfg.input_size(), **_net_kw(cfg))
    if pre is None and cfg.pretrain != "none":
        pre = _pretrained(cfg, progress, wild)
    if pre is not None:
        transfer(pre, model)
    return model


def inputs_fn(data: FaceSet, cfg: TrainConfig):
    """Per-epoch input arrays: augmented from a seed that depends on the epoch only, so a
    resumed run draws the same sketches as an uninterrupted one."""
    lms = data.landmarks[data.found]
    fixed = cfg.draw(lms)

    def f(ep: int) -> np.ndarray:
        if not cfg.augment:
            return fixed
        return cfg.draw(augment(lms, np.random.default_rng((cfg.seed, ep)), **cfg.augmentation()))
    return f


def predict(model, x: np.ndarray, batch: int = 256) -> np.ndarray:
    return np.asarray(model.predict(x, batch_size=batch, verbose=0))


def check_prior(prior) -> np.ndarray:
    """``prior`` as float64 class shares, or ValueError naming the classes with no share
    (their log is -inf: :func:`balance` cannot divide by them)."""
    prior = np.asarray(prior, np.float64)
    if prior.ndim != 1 or not (prior > 0).all():
        from . import CLASSES

        names = CLASSES if prior.ndim == 1 and len(prior) == len(CLASSES) else range(prior.size)
        missing = [str(c) for c, v in zip(names, prior.ravel()) if not v > 0]
        raise ValueError("balance needs a positive share of every class among the training rows"
                         + (f"; none of: {', '.join(missing)}" if missing else f", got {prior!r}"))
    return prior


def within_class_shift(fine_prior, of_class: np.ndarray) -> np.ndarray:
    """Per fine label, ``log(share within its class * labels in its class)``: 0 where the
    class's labels are equally common, negative for rare ones. Subtracted from the fine
    logits (``balance(..., within=W)``) it decides as if each label of a class were as
    likely as the others, so rare emotions (FER+'s fear beside surprise) are not
    outvoted by their class's common one."""
    fine_prior = np.asarray(fine_prior, np.float64)
    if fine_prior.shape != of_class.shape or not (fine_prior > 0).all():
        raise ValueError(f"within needs a positive share of each of the {len(of_class)} fine labels "
                         f"among the training rows, got {np.round(fine_prior, 4).tolist()}")
    in_class = np.bincount(of_class, weights=fine_prior)[of_class]
    n = np.bincount(of_class)[of_class]
    return np.log(fine_prior / in_class * n)


def balance(model, prior, tau: float = 1.0, within: float = 0.0, fine_prior=None):
    """Logit adjustment (Menon et al. 2021): subtract ``tau * log(prior)`` from the bias of
    ``model``'s final softmax layer, in place, so that its probabilities become
    ``p(c) / prior(c)**tau`` renormalized. ``prior``: the training rows' class shares.
    ``tau = 1`` decides as if every class were equally likely: the posed test sets hold
    far fewer neutral faces than FER+, the bulk of the training data
    (docs/accuracy.md, "Balanced decisions"). A model whose softmax is over finer labels
    summed into the classes by a last fixed 0/1 layer (``fastes.twostream.build(fine=True)``)
    is adjusted the same: each fine logit by its class's prior; ``within`` W > 0 also
    subtracts ``W * within_class_shift(fine_prior)`` (``fine_prior``: the training rows'
    fine-label shares). Returns ``model``."""
    prior = check_prior(prior)
    last, of_class = model.layers[-1], np.arange(len(prior))
    if _is_class_map(last) and last.units == len(prior) and len(model.layers) > 1:
        of_class = last.get_weights()[0].argmax(1)  # fine label -> class
        last = model.layers[-2]
    act = getattr(getattr(last, "activation", None), "__name__", "")
    if act != "softmax" or not getattr(last, "use_bias", False) or last.units != len(of_class):
        raise ValueError(f"balance needs a final softmax Dense layer with a bias over {len(prior)} classes, "
                         f"got {last.name!r}")
    shift = tau * np.log(prior / prior.sum())[of_class]
    if within:
        if len(of_class) == len(prior) and not _is_class_map(model.layers[-1]):
            raise ValueError("within needs a model whose fine labels are summed into the classes (fine=True)")
        shift = shift + within * within_class_shift(fine_prior, of_class)
    kernel, bias = last.get_weights()
    last.set_weights([kernel, (bias - shift).astype(bias.dtype)])
    return model


def _is_class_map(layer) -> bool:
    """A linear Dense layer without bias whose kernel sends each input to one class (0/1 rows)."""
    if getattr(getattr(layer, "activation", None), "__name__", "") != "linear" or getattr(layer, "use_bias", True):
        return False
    w = layer.get_weights()
    return len(w) == 1 and bool(np.isin(w[0], (0, 1)).all() and (w[0].sum(1) == 1).all())


def train(data: FaceSet, cfg: TrainConfig, out_dir=None, progress: bool = True, resume: bool = False,
          wild: FaceSet | None = None):
    """Train one network on every row of ``data`` with a face. With ``out_dir``: a
    checkpoint after each epoch (resumable), then ``model.keras``, ``history.json`` and
    ``config.json``, each written atomically. Returns ``(model, history)``."""
    import keras

    from .nets import NormalizeLengths

    y = data.labels[data.found]
    out = Path(out_dir) if out_dir else None
    ckpt = out / "checkpoint.keras" if out else None
    state_file = out / "checkpoint.json" if out else None
    start, history, trainer, model = 0, [], None, None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    if resume and ckpt and ckpt.exists() and state_file.exists():
        state = json.loads(state_file.read_text())
        if state["config"] != cfg.__dict__:
            raise ValueError(f"{out}: the checkpoint was made with other settings; "
                             "use the same options or another --out")
        trainer = keras.saving.load_model(ckpt, custom_objects=_custom_objects())
        start, history = state["epoch"], state["history"]
    if trainer is None:
        model = new_model(cfg, progress, wild)
    else:
        model = trainer if trainer.name != "capsnet_train" else \
            keras.Model(trainer.input, NormalizeLengths(name="probs")(trainer.output), name="capsnet")

    def on_epoch(ep, tr, hist):
        if out:
            _atomic(ckpt, lambda p: tr.save(p))
            _atomic(state_file, lambda p: Path(p).write_text(json.dumps(
                {"epoch": ep + 1, "history": history + hist, "config": cfg.__dict__})))

    trainer, hist = fit(model, inputs_fn(data, cfg), y, cfg, cfg.epochs, progress=progress,
                        desc=f"train {cfg.net}", on_epoch=on_epoch, start_epoch=start, trainer=trainer)
    history = history + hist
    if out:
        _atomic(out / "model.keras", lambda p: model.save(p))
        _atomic(out / "history.json", lambda p: Path(p).write_text(json.dumps(history, indent=1)))
        meta = {"config": cfg.__dict__, "input_size": cfg.input_size(), "classes": list(CLASSES),
                "n_train": int(len(y)), "data_digest": data.digest(),
                "train_seconds": float(sum(h["seconds"] for h in history))}
        _atomic(out / "config.json", lambda p: Path(p).write_text(json.dumps(meta, indent=1)))
        for f in (ckpt, state_file):
            f.unlink(missing_ok=True)
    return model, history


def cross_validate(data: FaceSet, cfg: TrainConfig, k: int = 5, progress: bool = True,
                   wild: FaceSet | None = None, folds: np.ndarray | None = None,
                   test_folds=None, quantize: str | None = None, convert_kw: dict | None = None,
                   workdir=None) -> dict:
    """k-fold subject-disjoint cross-validation (or the given ``folds``; only
    ``test_folds`` are held out in turn, default all). Returns per-row probabilities
    (NaN for rows without a face or never held out), the fold of each row and seconds
    per fold. With ``quantize`` (e.g. ``"int8"``) each fold's model is also converted
    (calibrated on its own training sketches) and run on its held-out fold:
    ``probs_tflite`` and per-fold ``agreement`` measure what quantization costs
    (``convert_kw``: more arguments of :func:`fastes.convert.convert`). ``workdir`` keeps
    each finished fold (weights and results) and the pre-trained weights, so that an
    interrupted run resumes there."""
    from .data import subject_folds

    folds = subject_folds(data.subjects, data.labels, k=k, seed=0) if folds is None else folds
    probs = np.full((len(data), len(CLASSES)), np.nan, np.float32)
    seconds, train_acc, agreement = [], [], []
    probs_q = np.full_like(probs, np.nan) if quantize else None
    wd = Path(workdir) if workdir else None
    if wd:
        wd.mkdir(parents=True, exist_ok=True)
    held_out = list(range(k) if test_folds is None else test_folds)
    todo = [f for f in held_out if not (wd and (wd / f"fold{f}.npz").exists())]
    pre = None
    if cfg.pretrain != "none" and todo:  # pre-train once (kept in the workdir); every fold starts from it
        pre = _pretrained(cfg, progress, wild, cache=wd / "pretrained.weights.h5" if wd else None)
    for f in held_out:
        tr = data.subset(folds != f)
        te = (folds == f) & data.found
        x_te = cfg.draw(data.landmarks[te])
        done = wd / f"fold{f}.npz" if wd else None
        if done and done.exists():  # trained before: its results, and its weights for int8
            z = np.load(done)
            probs[te], sec, acc = z["probs"], float(z["seconds"]), float(z["train_accuracy"])
            model = None
        else:
            t0 = time.perf_counter()
            model = new_model(cfg, pre=pre)
            _, hist = fit(model, inputs_fn(tr, cfg), tr.labels[tr.found], cfg, cfg.epochs, progress=progress,
                          desc=f"{cfg.net} fold {f + 1}/{k}")
            acc, sec = hist[-1]["accuracy"], time.perf_counter() - t0
            probs[te] = predict(model, x_te)
            if done:
                _save_weights(model, wd / f"fold{f}.weights.h5")
                # written last: its presence says the fold (weights included) is complete
                _atomic(done, lambda t: np.savez(t, probs=probs[te], seconds=sec, train_accuracy=acc))
        train_acc.append(acc)
        seconds.append(sec)
        if quantize:
            from .convert import N_CALIBRATION, convert, run_tflite

            if model is None:
                model = fold_model(cfg, wd, f)
            rng = np.random.default_rng(f)
            calib = rng.permutation(np.flatnonzero(tr.found))[:N_CALIBRATION]
            res = convert(model, quantize=quantize, calibration=cfg.draw(tr.landmarks[calib]),
                          verify=x_te, labels=data.labels[te], min_agreement=0.0, **(convert_kw or {}))
            probs_q[te] = run_tflite(res["bytes"], x_te)
            agreement.append(res["agreement"])
    out = {"probs": probs, "folds": folds, "seconds": seconds, "train_accuracy": train_acc}
    if quantize:
        out.update(probs_tflite=probs_q, agreement=agreement)
    return out


def fold_model(cfg: TrainConfig, workdir, fold: int):
    """Fold ``fold``'s network as ``cross_validate(..., workdir=workdir)`` kept it (the
    stored weights replace all of it, so no pre-training is redone)."""
    model = new_model(replace(cfg, pretrain="none"), progress=False)
    model.load_weights(Path(workdir) / f"fold{fold}.weights.h5")
    return model


def _net_kw(cfg: TrainConfig, routings: int | None = None) -> dict:
    if cfg.net == "capsnet":
        return {"routings": routings or cfg.routings, "supersample": cfg.supersample}
    if cfg.net == "vgg11":
        return {"dropout": cfg.dropout, "width": cfg.width, "supersample": cfg.supersample}
    return {"dropout": cfg.dropout, "supersample": cfg.supersample}


def _custom_objects() -> dict:
    from . import nets
    return {"margin_loss": nets.margin_loss}


# --------------------------------------------------------------------------- landmark network
@dataclass
class LandmarkConfig:
    """The landmark network's recipe (:func:`train_landmarks`); the defaults are the
    shipped model's (docs/accuracy.md)."""

    epochs: int = 30
    batch: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    hidden: tuple = (256, 256)
    dropout: float = 0.2
    rotate: float = 8.0            # augmentation in crop space, before the remap
    jitter: float = 1.0
    mirror: bool = True
    posed_weight: float = 1.0      # loss weight of the posed sets' rows (the rest: 1)
    fine_labels: bool = False      # learn the 7 emotions (fastes.data.fine_label), summed into the 4 classes


def posed_weights(datasets: np.ndarray, weight: float) -> np.ndarray:
    """float32 per-row loss weights: ``weight`` for rows of the posed sets (:data:`POSED`), 1 else."""
    return np.where(np.isin(datasets, POSED), weight, 1.0).astype(np.float32)


def check_fine(targets: np.ndarray) -> None:
    """Refuse 7-emotion training targets with an empty row (before training, not after)."""
    from .data import EMOTIONS

    if (missing := int((targets.sum(1) <= 0).sum())):
        raise ValueError(f"fine labels need each training row's emotion (votes or an emotion of "
                         f"{', '.join(EMOTIONS)} matching its class4); {missing} rows have none")


def landmark_inputs(landmarks: np.ndarray) -> np.ndarray:
    """The landmark network's input: ``fastes.remap``'d points, ``(N, 136)`` float32
    (NaN rows where a face's landmarks cannot be remapped)."""
    from .sketch import remap_reference

    lm = np.asarray(landmarks, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = remap_reference(lm).reshape(len(lm), -1)
    r[~np.isfinite(r).all(1)] = np.nan
    return r.astype(np.float32)


def train_landmarks(data: FaceSet, cfg: LandmarkConfig, progress: bool = True, out_dir=None):
    """Train the landmark network on every row of ``data`` with a face (soft targets,
    fresh augmentation each epoch from a seed per epoch). With ``out_dir``: a checkpoint
    after each epoch (a rerun with the same recipe and data resumes there), then
    ``model.keras`` and ``config.json`` (recipe, data digest, seconds). Returns
    ``(model, history)``."""
    import keras

    from .nets import landmark_net

    ok = data.found & np.isfinite(landmark_inputs(data.landmarks)).all(1)
    lms, y = data.landmarks[ok], (data.fine if cfg.fine_labels else data.targets)[ok]
    if cfg.fine_labels:
        check_fine(y)
    w = posed_weights(data.datasets[ok], cfg.posed_weight)
    x0 = landmark_inputs(lms)
    out = Path(out_dir) if out_dir else None
    ckpt, state_file = (out / "checkpoint.keras", out / "checkpoint.json") if out else (None, None)
    recipe = {"config": json.loads(json.dumps(cfg.__dict__, default=list)), "data_digest": data.digest()}
    history, start = [], 0
    if out:
        out.mkdir(parents=True, exist_ok=True)
    if ckpt and ckpt.exists() and state_file.exists() and \
            {k: v for k, v in json.loads(state_file.read_text()).items() if k in recipe} == recipe:
        state = json.loads(state_file.read_text())
        model = keras.saving.load_model(ckpt)
        start, history = state["epoch"], state["history"]
    else:
        keras.utils.set_random_seed(cfg.seed)
        model = landmark_net(x0.mean(0), x0.std(0), n_classes=y.shape[1], hidden=tuple(cfg.hidden),
                             dropout=cfg.dropout)
        steps = cfg.epochs * int(np.ceil(len(y) / cfg.batch))
        sched = keras.optimizers.schedules.CosineDecay(cfg.lr, decay_steps=max(1, steps), alpha=0.02)
        model.compile(optimizer=keras.optimizers.AdamW(sched, weight_decay=cfg.weight_decay),
                      loss="categorical_crossentropy", metrics=["categorical_accuracy"])
    from tqdm import tqdm

    for ep in tqdm(range(start, cfg.epochs), desc="train landmarks", unit="epoch",
                   disable=None if progress else True):
        keras.utils.set_random_seed(cfg.seed * 1000 + ep)  # the epoch's shuffle and dropout: same when resumed
        t0 = time.perf_counter()
        a = augment(lms, np.random.default_rng((cfg.seed, ep)), rotate=cfg.rotate, jitter=cfg.jitter,
                    mirror=cfg.mirror)
        x = landmark_inputs(a)
        good = np.isfinite(x).all(1)
        h = model.fit(x[good], y[good], sample_weight=w[good], batch_size=cfg.batch, epochs=1, verbose=0,
                      shuffle=True)
        history.append({"epoch": ep + 1, "loss": float(h.history["loss"][-1]),
                        "accuracy": float(h.history["categorical_accuracy"][-1]),
                        "seconds": time.perf_counter() - t0})
        if out:
            _atomic(ckpt, lambda p: model.save(p))
            _atomic(state_file, lambda p: Path(p).write_text(json.dumps({**recipe, "epoch": ep + 1,
                                                                         "history": history})))
    if cfg.fine_labels:  # the file outputs the 4 classes as every landmark model does
        from .data import EMOTION_CLASS
        from .nets import sum_into_classes

        model = keras.Model(model.inputs, sum_into_classes(model.output, EMOTION_CLASS), name="landmarks")
    if out:
        _atomic(out / "model.keras", lambda p: model.save(p))
        meta = {**recipe, "input": "landmarks (N, 136): fastes.remap output, flattened",
                "classes": list(CLASSES), "n_train": int(ok.sum()),
                "train_seconds": float(sum(h["seconds"] for h in history))}
        _atomic(out / "config.json", lambda p: Path(p).write_text(json.dumps(meta, indent=1)))
        for f in (ckpt, state_file):
            f.unlink(missing_ok=True)
    return model, history
