"""Cross-dataset protocols: how well a recipe does on people and sets it has never seen.

Three protocols, each a function over a :class:`fastes.train.FaceSet` of the whole
shared data and a recipe (``make() -> Learner``: a fresh model per split):

* :func:`lodo` — leave one posed dataset out: for each of jaffe, ckplus, fei, london,
  train on every other row of the shared data (the other posed sets, wild, FER+ train;
  never FER+ valid) and test on the held-out set.
* :func:`ferplus_valid` — train on everything but FER+ valid, test on FER+ valid's
  majority rows (top emotion > 5 of 10 votes), FER+'s usual protocol.
* :func:`posed_kfold` — the 5-fold subject-disjoint protocol over the posed sets (the
  shipped models' earlier numbers), for continuity.

A missed face (no face found by the front end) is a test row predicted wrong: every
number here is over all rows of the test set (:func:`fastes.evaluate.metrics`). Each
split's probabilities can be kept in a ``workdir``: an interrupted run resumes there.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from . import CLASSES
from .evaluate import MISSED, metrics
from .data import POSED, FaceSet

__all__ = ["Learner", "lodo_splits", "ferplus_split", "lodo", "ferplus_valid", "posed_kfold",
           "run_split", "FRONT_END", "load_all"]

# The front end the protocols run on: BlazeFace (the runtime's default) with crop mode
# auto (FER+'s 48-px faces where the detector finds none); docs/accuracy.md measures it.
FRONT_END = {"detector": "blazeface", "crop": "auto"}


class Learner(Protocol):
    """A recipe's model for one split: ``fit`` on training rows, then probabilities for
    ``(N, 68, 2)`` crop-space landmarks of found faces."""

    name: str

    def fit(self, data: FaceSet) -> None: ...

    def predict(self, landmarks: np.ndarray) -> np.ndarray: ...


def load_all(progress: bool = True, **front_end) -> FaceSet:
    """Every row of the shared data with landmarks by ``FRONT_END`` (or ``front_end``)."""
    from .data import load_faces

    return load_faces(datasets=None, progress=progress, **{**FRONT_END, **front_end})


def lodo_splits(data: FaceSet, held_out=POSED) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, train_mask, test_mask)`` per held-out dataset: train on every row of
    another dataset that is not FER+ valid, test on every row of the held-out one."""
    ds = data.datasets
    out = []
    for name in held_out:
        test = ds == name
        if not test.any():
            raise ValueError(f"no rows of dataset {name!r} to hold out")
        out.append((name, ~test & ~data.ferplus_valid, test))
    return out


def ferplus_split(data: FaceSet, majority: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(train_mask, test_mask)``: train on all but FER+ valid, test on its majority rows
    (``majority=False``: all of its rows, labelled by plurality)."""
    test = data.ferplus_valid & (data.majority if majority else True)
    if not test.any():
        raise ValueError("no FER+ valid rows (ferplus/valid/ in the manifest)")
    return ~data.ferplus_valid, test


def run_split(data: FaceSet, train: np.ndarray, test: np.ndarray, make: Callable[[], Learner],
              store: Path | None = None) -> dict:
    """Fit a fresh learner on ``train`` rows (those with a face), predict ``test`` rows.
    Returns ``probs`` (NaN for missed faces), ``pred`` (-1 for them), ``seconds``; kept in
    ``store`` (an ``.npz``) and read back from it when present. A learner with a
    ``predict_fine`` that answers (a 7-emotion model) also has its emotion probabilities
    kept there, as ``fine``."""
    if (train & test).any():
        raise ValueError("a row is in both the training and the test set")
    n_test = int(test.sum())
    if store is not None and store.exists():
        z = np.load(store)
        if len(z["probs"]) == n_test:
            return {"probs": z["probs"], "pred": z["pred"], "seconds": float(z["seconds"]), "resumed": True}
    t0 = time.perf_counter()
    learner = make()
    learner.fit(data.subset(train))
    te = data.subset(test)
    probs = np.full((n_test, len(CLASSES)), np.nan, np.float32)
    fine = None
    if te.found.any():
        probs[te.found] = learner.predict(te.landmarks[te.found])
        got = getattr(learner, "predict_fine", lambda _: None)(te.landmarks[te.found])
        if got is not None:
            fine = np.full((n_test, got.shape[1]), np.nan, np.float32)
            fine[te.found] = got
    pred = np.where(te.found, np.nan_to_num(probs, nan=-1.0).argmax(1), MISSED)
    sec = time.perf_counter() - t0
    if store is not None:
        from .io import atomic_write

        store.parent.mkdir(parents=True, exist_ok=True)
        extra = {} if fine is None else {"fine": fine}
        atomic_write(store, lambda t: np.savez(t, probs=probs, pred=pred, seconds=sec, **extra))
    return {"probs": probs, "pred": pred, "seconds": sec, "resumed": False}


def _metrics(data: FaceSet, mask: np.ndarray, pred: np.ndarray) -> dict:
    return metrics(data.labels[mask], pred, {k: v[mask] for k, v in data.groups.items()})


def _store(workdir, name: str) -> Path | None:
    return Path(workdir) / f"{name}.npz" if workdir else None


def lodo(data: FaceSet, make: Callable[[], Learner], held_out=POSED, workdir=None,
         log: Callable[[str], None] | None = None) -> dict:
    """Leave-one-dataset-out over ``held_out``. Returns per set its :func:`metrics`
    (``sets``), the mean and minimum accuracy and macro F1 over the sets, and ``pooled``:
    metrics over all held-out rows together (per group: gender, age, ethnicity)."""
    sets, preds, masks = {}, [], []
    for name, train, test in lodo_splits(data, held_out):
        r = run_split(data, train, test, make, _store(workdir, f"lodo-{name}"))
        sets[name] = {**_metrics(data, test, r["pred"]), "seconds": r["seconds"], "n_train": int(train.sum())}
        preds.append(r["pred"])
        masks.append(np.flatnonzero(test))
        if log:
            log(f"lodo {name}: accuracy {sets[name]['accuracy']:.3f}, macro F1 {sets[name]['macro_f1']:.3f} "
                f"({sets[name]['n']} rows, {sets[name]['detected']} faces found, {r['seconds']:.0f} s)")
    idx = np.concatenate(masks)
    pooled = metrics(data.labels[idx], np.concatenate(preds), {k: v[idx] for k, v in data.groups.items()})
    acc = [m["accuracy"] for m in sets.values()]
    f1 = [m["macro_f1"] for m in sets.values()]
    return {"protocol": "lodo", "sets": sets, "mean_accuracy": float(np.mean(acc)), "min_accuracy": float(min(acc)),
            "mean_macro_f1": float(np.mean(f1)), "pooled": pooled}


def ferplus_valid(data: FaceSet, make: Callable[[], Learner], workdir=None,
                  log: Callable[[str], None] | None = None) -> dict:
    """FER+ valid: one model trained on all but FER+ valid; metrics on the majority rows
    (``majority``) and, from the same predictions, on all valid rows by plurality (``all``)."""
    train, test_all = ferplus_split(data, majority=False)
    r = run_split(data, train, test_all, make, _store(workdir, "ferplus-valid"))
    maj = data.majority[test_all]
    m_all = _metrics(data, test_all, r["pred"])
    m_maj = _metrics(data, test_all & data.majority, r["pred"][maj])
    if log:
        log(f"ferplus valid (majority): accuracy {m_maj['accuracy']:.3f}, macro F1 {m_maj['macro_f1']:.3f} "
            f"({m_maj['n']} rows, {m_maj['detected']} faces found); all valid rows {m_all['accuracy']:.3f}")
    return {"protocol": "ferplus_valid", "majority": m_maj, "all": m_all, "seconds": r["seconds"],
            "n_train": int(train.sum())}


def posed_kfold(data: FaceSet, make: Callable[[], Learner], k: int = 5, extra: bool = False, workdir=None,
                log: Callable[[str], None] | None = None) -> dict:
    """The 5-fold subject-disjoint protocol over the posed sets (folds by
    :func:`fastes.data.subject_folds`, seed 0). ``extra``: each fold also trains on the
    non-posed rows (wild, FER+ train)."""
    from .data import subject_folds

    posed = np.isin(data.datasets, POSED)
    folds = np.full(len(data), -1)
    folds[posed] = subject_folds(data.subjects[posed], data.labels[posed], k=k, seed=0)
    pred = np.full(len(data), MISSED)
    for f in range(k):
        test = folds == f
        train = (posed & ~test) | (extra & ~posed & ~data.ferplus_valid)
        r = run_split(data, train, test, make, _store(workdir, f"kfold{'-extra' if extra else ''}-{f}"))
        pred[test] = r["pred"]
        if log:
            log(f"fold {f + 1}/{k}: accuracy {(r['pred'] == data.labels[test]).mean():.3f} ({r['seconds']:.0f} s)")
    return {"protocol": "posed_kfold", "extra": extra, **_metrics(data, posed, pred[posed])}


def save_result(result: dict, path) -> None:
    """A protocol's result as JSON (atomic)."""
    from .io import atomic_write

    atomic_write(path, lambda t: Path(t).write_text(json.dumps(result, indent=1)))


# --------------------------------------------------------------------------- recipes
class LandmarkLearner:
    """The landmark network (:func:`fastes.train.train_landmarks`), Keras in memory."""

    def __init__(self, cfg=None, progress: bool = False, out_dir=None, tta: int = 0):
        from .train import LandmarkConfig

        self.cfg, self.progress, self.name = cfg or LandmarkConfig(), progress, "landmarks"
        self.out_dir = out_dir  # keep the trained model (model.keras, config.json) here
        self.tta = tta  # > 0: the runtime's test-time augmentation (fastes.runtime.Augmented), that many copies

    def fit(self, data: FaceSet) -> None:
        from .train import train_landmarks

        self.model, self.history = train_landmarks(data, self.cfg, progress=self.progress, out_dir=self.out_dir)

    def predict(self, landmarks: np.ndarray) -> np.ndarray:
        if self.tta:
            from .runtime import Augmented, KerasLandmarkClassifier

            augmented = Augmented(KerasLandmarkClassifier.from_model(self.model), self.tta)
            return self._on_remappable(landmarks, len(CLASSES), lambda _, rows: augmented(landmarks[rows]))
        return self._on_remappable(landmarks, len(CLASSES), lambda x, _: self.model.predict(x, batch_size=1024,
                                                                                            verbose=0))

    def predict_fine(self, landmarks: np.ndarray) -> np.ndarray | None:
        """A 7-emotion model's emotion probabilities (layer ``head``, before the sum into
        classes), always without test-time augmentation; ``None`` for a 4-class model."""
        if not self.cfg.fine_labels:
            return None
        import keras

        from .data import EMOTIONS

        head = keras.Model(self.model.inputs, self.model.get_layer("head").output)
        return self._on_remappable(landmarks, len(EMOTIONS), lambda x, _: head.predict(x, batch_size=1024, verbose=0))

    @staticmethod
    def _on_remappable(landmarks: np.ndarray, n_out: int, f) -> np.ndarray:
        """``f(inputs, rows)`` on the faces whose landmarks remap; uniform probabilities for the rest."""
        from .train import landmark_inputs

        x = landmark_inputs(landmarks)
        ok = np.isfinite(x).all(1)
        out = np.full((len(x), n_out), 1.0 / n_out, np.float32)  # cannot remap: uniform
        if ok.any():
            out[ok] = np.asarray(f(x[ok], ok))
        return out


class SketchLearner:
    """One of the paper's networks on emotion sketches (a :class:`fastes.train.TrainConfig`),
    trained on soft targets."""

    def __init__(self, cfg, progress: bool = False, ferplus_limit: int | None = None):
        self.cfg, self.progress, self.name = cfg, progress, cfg.net
        self.ferplus_limit = ferplus_limit  # train on at most this many FER+ rows (seeded draw): for time

    def fit(self, data: FaceSet) -> None:
        from .train import fit, inputs_fn, new_model

        fer = np.flatnonzero(data.datasets == "ferplus")
        if self.ferplus_limit is not None and len(fer) > self.ferplus_limit:
            drop = np.random.default_rng(self.cfg.seed).permutation(fer)[self.ferplus_limit:]
            data = data.subset(np.setdiff1d(np.arange(len(data)), drop))
        self.model = new_model(self.cfg, progress=self.progress)
        fit(self.model, inputs_fn(data, self.cfg), data.targets[data.found], self.cfg, self.cfg.epochs,
            progress=self.progress, desc=f"{self.cfg.net}")

    def predict(self, landmarks: np.ndarray) -> np.ndarray:
        from .train import predict

        return predict(self.model, self.cfg.draw(landmarks))


class LogRegLearner:
    """Softmax regression on the 68 remapped points (full-batch gradient descent, soft
    targets): the floor a network has to beat, in seconds."""

    def __init__(self, l2: float = 1e-4, steps: int = 1500, lr: float = 0.5):
        self.l2, self.steps, self.lr, self.name = l2, steps, lr, "logreg"

    def fit(self, data: FaceSet) -> None:
        from .train import landmark_inputs

        x = landmark_inputs(data.landmarks)
        ok = data.found & np.isfinite(x).all(1)
        x, y = x[ok].astype(np.float64), data.targets[ok].astype(np.float64)
        self.mu, self.sd = x.mean(0), x.std(0) + 1e-6
        x = (x - self.mu) / self.sd
        k = y.shape[1]
        self.w, self.b = np.zeros((x.shape[1], k)), np.zeros(k)
        for _ in range(self.steps):
            g = (self._softmax(x @ self.w + self.b) - y) / len(x)
            self.w -= self.lr * (x.T @ g + self.l2 * self.w)
            self.b -= self.lr * g.sum(0)

    @staticmethod
    def _softmax(z):
        z = z - z.max(1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(1, keepdims=True)

    def predict(self, landmarks: np.ndarray) -> np.ndarray:
        from .train import landmark_inputs

        x = np.nan_to_num((landmark_inputs(landmarks) - self.mu) / self.sd)
        return self._softmax(x @ self.w + self.b).astype(np.float32)
