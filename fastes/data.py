"""Labelled face data: manifests, a landmark cache, subject-disjoint folds.

The front end (Haar + dlib) runs once per image; its result is cached outside the
repository (``$FASTES_CACHE`` or ``~/.cache/fastes``) keyed by the image's content hash
and the front-end settings, so training never re-runs dlib. Images where no face is
found stay in the data with ``found = False``: they are counted and reported, never
dropped silently.
"""
from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import CLASSES

__all__ = [
    "ManifestError", "Sample", "data_root", "read_manifest", "LandmarkCache", "subject_folds",
]

REQUIRED_COLUMNS = ("path", "class4")
GROUP_COLUMNS = ("dataset", "gender", "age", "ethnicity")


class ManifestError(ValueError):
    """A manifest that cannot be used (missing file or columns, unknown labels)."""


@dataclass(frozen=True)
class Sample:
    path: Path  # absolute
    label: int  # index into fastes.CLASSES
    subject: str
    groups: dict  # dataset, gender, age, ethnicity (missing -> "")


def data_root() -> Path:
    """``$FASTES_DATA``, else ``../shared/data`` beside the project (or the working dir)."""
    env = os.environ.get("FASTES_DATA")
    if env:
        return Path(env)
    for base in (Path(__file__).resolve().parents[1], Path.cwd()):
        cand = base.parent / "shared" / "data"
        if cand.is_dir():
            return cand
    return Path.cwd().parent / "shared" / "data"


def read_manifest(path: str | os.PathLike) -> list[Sample]:
    """Read a manifest CSV: ``path`` (relative to the manifest's folder) and ``class4``
    required; ``subject`` (defaults to the path: one subject per image) and the group
    columns optional."""
    p = Path(path)
    if not p.is_file():
        raise ManifestError(f"{p}: no such manifest")
    with open(p, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ManifestError(f"{p}: missing column(s) {', '.join(missing)}")
        out = []
        for line, row in enumerate(reader, start=2):
            label = row["class4"].strip()
            if label not in CLASSES:
                raise ManifestError(f"{p}:{line}: class4 {label!r} is not one of {', '.join(CLASSES)}")
            out.append(Sample(
                path=(p.parent / row["path"]).resolve(),
                label=CLASSES.index(label),
                subject=(row.get("subject") or row["path"]).strip(),
                groups={c: (row.get(c) or "").strip() for c in GROUP_COLUMNS},
            ))
    return out


def _file_hash(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class LandmarkCache:
    """Front-end results per image, keyed by content hash + front-end settings.

    Each entry: ``found`` (a face was detected), ``n_faces``, ``box`` (x, y, w, h of the
    largest face) and ``landmarks`` (68x2, 250x250 crop coordinates). Saved as one
    ``.npz`` written atomically (temp file + rename), every ``save_every`` new entries, so
    an interrupted build resumes where it stopped.
    """

    def __init__(self, finder=None, cache_dir: str | os.PathLike | None = None, save_every: int = 200):
        from .face import FaceFinder

        # Haar by default: the shipped models were trained on the paper's front end
        self.finder = finder or FaceFinder("haar")
        d = Path(cache_dir or os.environ.get("FASTES_CACHE") or Path.home() / ".cache" / "fastes")
        d.mkdir(parents=True, exist_ok=True)
        self.tag = hashlib.sha1(f"v1|{self.finder.tag}".encode()).hexdigest()[:10]
        self.file = d / f"landmarks-{self.tag}.npz"
        self.save_every = save_every
        self._entries: dict[str, tuple] = {}
        if self.file.exists():
            z = np.load(self.file, allow_pickle=False)
            for key, found, n, box, lm in zip(z["keys"], z["found"], z["n_faces"], z["boxes"], z["landmarks"]):
                self._entries[str(key)] = (bool(found), int(n), box, lm)

    def __len__(self) -> int:
        return len(self._entries)

    def save(self) -> None:
        keys = sorted(self._entries)
        e = [self._entries[k] for k in keys]
        tmp = self.file.with_name(self.file.name + f".{os.getpid()}.tmp.npz")
        np.savez(
            tmp,
            keys=np.array(keys, dtype="U40"),
            found=np.array([x[0] for x in e], dtype=bool),
            n_faces=np.array([x[1] for x in e], dtype=np.int32),
            boxes=np.array([x[2] for x in e], dtype=np.int32).reshape(-1, 4),
            landmarks=np.array([x[3] for x in e], dtype=np.float32).reshape(-1, 68, 2),
        )
        os.replace(tmp, self.file)

    def _compute(self, path: Path) -> tuple:
        return largest_face(self.finder, path)

    def get(self, paths, progress: bool = True):
        """Return ``found`` (N,), ``n_faces`` (N,; -1 unreadable), ``boxes`` (N, 4) and
        ``landmarks`` (N, 68, 2) for the given image paths, computing what is missing."""
        from tqdm import tqdm

        paths = [Path(p) for p in paths]
        keys = [_file_hash(p) for p in paths]
        todo = list({k: p for p, k in zip(paths, keys) if k not in self._entries}.items())
        new = 0
        for k, p in tqdm(todo, desc="landmarks", unit="img", disable=True if not (progress and todo) else None):
            self._entries[k] = self._compute(p)
            new += 1
            if new % self.save_every == 0:
                self.save()
        if new:
            self.save()
        e = [self._entries[k] for k in keys]
        return (
            np.array([x[0] for x in e], dtype=bool),
            np.array([x[1] for x in e], dtype=np.int32),
            np.array([x[2] for x in e], dtype=np.int32).reshape(-1, 4),
            np.array([x[3] for x in e], dtype=np.float32).reshape(-1, 68, 2),
        )


def largest_face(finder, path) -> tuple:
    """``(found, n_faces, box, landmarks)`` of the largest face in the image at ``path``
    (``n_faces`` -1: unreadable). Labelled images hold one person: the largest face."""
    from .io import ImageError, read_image

    try:
        faces = finder(read_image(path))
    except ImageError:
        return (False, -1, np.zeros(4, np.int32), np.zeros((68, 2), np.float32))
    if len(faces) == 0:
        return (False, 0, np.zeros(4, np.int32), np.zeros((68, 2), np.float32))
    k = int(np.argmax(faces.boxes[:, 2] * faces.boxes[:, 3]))
    return (True, len(faces), faces.boxes[k], faces.landmarks[k])


def subject_folds(subjects, labels, k: int = 5, seed: int = 0) -> np.ndarray:
    """Fold index (0..k-1) per sample, grouped by subject and balanced by class.

    No subject is in two folds. Subjects are placed largest first (ties broken by a
    seeded shuffle), each into the fold where it best evens out the per-class counts.
    """
    subjects = np.asarray(subjects)
    labels = np.asarray(labels)
    if len(subjects) != len(labels):
        raise ValueError("subjects and labels must have the same length")
    uniq, inv = np.unique(subjects, return_inverse=True)
    if len(uniq) < k:
        raise ValueError(f"{len(uniq)} subjects cannot fill {k} folds")
    n_cls = int(labels.max()) + 1 if len(labels) else 1
    counts = np.zeros((len(uniq), n_cls))
    np.add.at(counts, (inv, labels), 1)
    target = counts.sum(0) / k
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq))
    order = order[np.argsort(-counts[order].sum(1), kind="stable")]
    fold_counts = np.zeros((k, n_cls))
    subject_fold = np.empty(len(uniq), dtype=np.int64)
    for s in order:
        # the fold where this subject's classes are most lacking (the greedy step that
        # most lowers the summed squared deviation from the per-class target)
        cost = (counts[s] * (fold_counts - target) / np.maximum(target, 1) ** 2).sum(1)
        cost += 1e-9 * fold_counts.sum(1)  # ties: the emptier fold
        f = int(np.argmin(cost))
        subject_fold[s] = f
        fold_counts[f] += counts[s]
    return subject_fold[inv]
