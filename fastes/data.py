"""Labelled face data: manifests, a landmark cache, subject-disjoint folds.

The front end (detector + dlib) runs once per image; its result is cached outside the
repository (``$FASTES_CACHE`` or ``~/.cache/fastes``) keyed by the image's content hash
and the front-end settings, so training never re-runs dlib; missing entries are computed
by worker processes (both cores: the whole shared set in minutes). Images where no face is
found stay in the data with ``found = False``: they are counted and reported, never
dropped silently.

FER+ rows carry 10 annotators' ``votes``: :func:`soft_label` turns them into a 4-class
distribution (soft training targets), :func:`is_majority` selects FER+'s "majority"
protocol rows (top emotion > 5 of 10 votes). :func:`fine_label` keeps the 7 emotions
apart (the votes, or the manifest's ``emotion``), for models that learn the emotions and
sum them into the 4 classes.
"""
from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import CLASSES

__all__ = [
    "ManifestError", "Sample", "data_root", "read_manifest", "LandmarkCache", "subject_folds",
    "VOTE_COLUMNS", "VOTE_CLASS", "parse_votes", "soft_label", "is_majority", "is_ferplus_valid",
    "POSED", "FaceSet", "load_faces", "EMOTIONS", "EMOTION_CLASS", "fine_label",
]

REQUIRED_COLUMNS = ("path", "class4")
GROUP_COLUMNS = ("dataset", "gender", "age", "ethnicity")

# FER+ ``votes``: how many of 10 annotators chose each of these, in this order.
VOTE_COLUMNS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
                "contempt", "unknown", "not-a-face")
# Each vote's class4 (the manifest's mapping); None: no class4, left out of the distribution.
VOTE_CLASS = ("neutral", "positive", "awe", "negative", "negative", "negative", "awe", None, None, None)
_VOTE_MATRIX = np.array([[c == k for k in CLASSES] for c in VOTE_CLASS], np.float32)  # (10, 4)
# The 7 emotions with a class4 (the first 7 vote columns) and the class each sums into.
EMOTIONS = VOTE_COLUMNS[:7]
EMOTION_CLASS = np.array([CLASSES.index(c) for c in VOTE_CLASS[:7]], np.int64)  # (7,) index into CLASSES


class ManifestError(ValueError):
    """A manifest that cannot be used (missing file or columns, unknown labels)."""


@dataclass(frozen=True)
class Sample:
    path: Path  # absolute
    label: int  # index into fastes.CLASSES
    subject: str
    groups: dict  # dataset, gender, age, ethnicity (missing -> "")
    votes: tuple | None = None  # FER+ rows: 10 annotator counts (VOTE_COLUMNS); else None
    relpath: str = ""  # as written in the manifest (e.g. ferplus/valid/...)
    emotion: str = ""  # the manifest's ``emotion`` column ("" when it has none)

    @property
    def target(self) -> np.ndarray:
        """The 4-class training target: the votes' distribution, else one-hot."""
        return soft_label(self.votes, self.label)

    @property
    def fine_target(self) -> np.ndarray:
        """The 7-emotion training target (:func:`fine_label`)."""
        return fine_label(self.votes, self.emotion, self.label)


def parse_votes(text: str) -> tuple | None:
    """A manifest ``votes`` cell (10 ``;``-separated counts) as ints; None when empty."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        v = tuple(int(x) for x in text.split(";"))
    except ValueError:
        v = ()
    if len(v) != len(VOTE_COLUMNS) or min(v) < 0:
        raise ValueError(f"votes {text!r}: expected {len(VOTE_COLUMNS)} non-negative counts")
    return v


def soft_label(votes, label: int) -> np.ndarray:
    """float32 (4,) distribution over CLASSES: the votes mapped to class4 (contempt,
    unknown and not-a-face dropped) and normalized; one-hot ``label`` without votes (or
    when none of them maps to a class)."""
    if votes is not None:
        d = np.asarray(votes, np.float32) @ _VOTE_MATRIX
        if d.sum() > 0:
            return (d / d.sum()).astype(np.float32)
    return np.eye(len(CLASSES), dtype=np.float32)[label]


def fine_label(votes, emotion: str = "", label: int | None = None) -> np.ndarray:
    """float32 (7,) distribution over EMOTIONS: the votes of the 7 emotions normalized,
    else one-hot ``emotion``; all zeros when neither gives one (no votes and an emotion
    outside EMOTIONS, or one whose class is not ``label``: a row no fine model can learn)."""
    if votes is not None:
        d = np.asarray(votes[:len(EMOTIONS)], np.float32)
        if d.sum() > 0:
            return (d / d.sum()).astype(np.float32)
    out = np.zeros(len(EMOTIONS), np.float32)
    e = (emotion or "").strip().lower()
    if e in EMOTIONS and (label is None or EMOTION_CLASS[EMOTIONS.index(e)] == label):
        out[EMOTIONS.index(e)] = 1
    return out


def is_majority(votes) -> bool:
    """FER+'s majority protocol: the top emotion has more than half of the votes (> 5 of 10)."""
    return votes is not None and 2 * max(votes) > sum(votes)


def is_ferplus_valid(sample: "Sample") -> bool:
    """A row of FER+'s validation split (``ferplus/valid/``): kept out of all training."""
    rel = sample.relpath or str(sample.path)
    return sample.groups.get("dataset") == "ferplus" and "ferplus/valid/" in rel.replace(os.sep, "/")


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
    try:
        return _read_manifest(p)
    except UnicodeDecodeError as e:
        raise ManifestError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _read_manifest(p: Path) -> list[Sample]:
    with open(p, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        try:
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ManifestError(f"{p}: missing column(s) {', '.join(missing)}")
            out = []
            for row in reader:
                line = reader.line_num
                label = (row["class4"] or "").strip()  # (None: a short row)
                if label not in CLASSES:
                    raise ManifestError(f"{p}:{line}: class4 {label!r} is not one of {', '.join(CLASSES)}")
                rel = (row["path"] or "").strip()
                if not rel or "\0" in rel:
                    raise ManifestError(f"{p}:{line}: path {rel!r} is not a file path")
                try:
                    votes = parse_votes(row.get("votes") or "")
                except ValueError as e:
                    raise ManifestError(f"{p}:{line}: {e}") from None
                out.append(Sample(
                    path=(p.parent / row["path"]).resolve(),
                    label=CLASSES.index(label),
                    subject=(row.get("subject") or row["path"]).strip(),
                    groups={c: (row.get(c) or "").strip() for c in GROUP_COLUMNS},
                    votes=votes,
                    relpath=rel,
                    emotion=(row.get("emotion") or "").strip(),
                ))
        except csv.Error as e:  # e.g. a field over csv's size limit, a stray quote in strict mode
            raise ManifestError(f"{p}:{reader.line_num}: not a CSV row ({e})") from None
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
    an interrupted build resumes where it stopped. ``workers`` processes compute missing
    entries (default: every core, up to 2) when at least ``min_parallel`` are missing;
    fewer run in this process (a pool's start-up costs more than they do).
    """

    min_parallel = 64

    def __init__(self, finder=None, cache_dir: str | os.PathLike | None = None, save_every: int = 1000,
                 workers: int | None = None):
        from .face import FaceFinder

        # Haar by default: the shipped models were trained on the paper's front end
        self.finder = finder or FaceFinder("haar")
        d = Path(cache_dir or os.environ.get("FASTES_CACHE") or Path.home() / ".cache" / "fastes")
        d.mkdir(parents=True, exist_ok=True)
        self.tag = hashlib.sha1(f"v1|{self.finder.tag}".encode()).hexdigest()[:10]
        self.file = d / f"landmarks-{self.tag}.npz"
        self.save_every = save_every
        self.workers = workers or min(2, os.cpu_count() or 1)
        self._entries: dict[str, tuple] = {}
        self._loaded = None
        self._merge()

    def _merge(self) -> None:
        """Add the file's entries not held here: another process building the same
        cache may have saved since (each save merges first, so neither loses the other's)."""
        try:
            stamp = self.file.stat().st_mtime_ns
        except FileNotFoundError:
            return
        if stamp == self._loaded:
            return
        z = np.load(self.file, allow_pickle=False)
        for key, found, n, box, lm in zip(z["keys"], z["found"], z["n_faces"], z["boxes"], z["landmarks"]):
            self._entries.setdefault(str(key), (bool(found), int(n), box, lm))
        self._loaded = stamp

    def __len__(self) -> int:
        return len(self._entries)

    def save(self) -> None:
        self._merge()
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
        self._loaded = self.file.stat().st_mtime_ns

    def _compute(self, path: Path) -> tuple:
        return largest_face(self.finder, path)

    def _computed(self, todo: list):
        """``(key, entry)`` for each ``(key, path)`` of ``todo``, in this process or in
        ``workers`` processes (each rebuilds the finder once: it pickles as its settings)."""
        if self.workers < 2 or len(todo) < self.min_parallel:
            for k, p in todo:
                yield k, self._compute(p)
            return
        import multiprocessing as mp
        import sys
        from concurrent.futures import ProcessPoolExecutor

        # fork (no main-module guard needed, no re-import), unless TensorFlow is loaded:
        # its threads do not survive a fork, so then spawn (the caller's script then
        # needs the usual ``if __name__ == "__main__":``)
        ctx = mp.get_context("spawn" if "tensorflow" in sys.modules else "fork")
        step = 32 * self.workers * 4  # results come back (and get saved) part by part
        with ProcessPoolExecutor(self.workers, mp_context=ctx,
                                 initializer=_worker_init, initargs=(self.finder,)) as pool:
            for i in range(0, len(todo), step):
                part = todo[i:i + step]
                yield from zip([k for k, _ in part], pool.map(_worker_compute, [p for _, p in part], chunksize=32))

    def get(self, paths, progress: bool = True):
        """Return ``found`` (N,), ``n_faces`` (N,; -1 unreadable), ``boxes`` (N, 4) and
        ``landmarks`` (N, 68, 2) for the given image paths, computing what is missing."""
        from tqdm import tqdm

        paths = [Path(p) for p in paths]
        keys = [_file_hash(p) for p in paths]
        todo = list({k: p for p, k in zip(paths, keys) if k not in self._entries}.items())
        new = 0
        bar = tqdm(total=len(todo), desc="landmarks", unit="img", disable=True if not (progress and todo) else None)
        for k, entry in self._computed(todo):
            self._entries[k] = entry
            new += 1
            bar.update()
            if new % self.save_every == 0:
                self.save()
        bar.close()
        if new:
            self.save()
        e = [self._entries[k] for k in keys]
        return (
            np.array([x[0] for x in e], dtype=bool),
            np.array([x[1] for x in e], dtype=np.int32),
            np.array([x[2] for x in e], dtype=np.int32).reshape(-1, 4),
            np.array([x[3] for x in e], dtype=np.float32).reshape(-1, 68, 2),
        )


_WORKER_FINDER = None


def _worker_init(finder) -> None:
    global _WORKER_FINDER
    _WORKER_FINDER = finder


def _worker_compute(path) -> tuple:
    return largest_face(_WORKER_FINDER, path)


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


# --------------------------------------------------------------------------- face sets
# The posed sets the paper's method targets (and the shipped sketch models learnt from).
POSED = ("jaffe", "ckplus", "fei", "london")

@dataclass
class FaceSet:
    """Cached front-end results and labels for the rows of a manifest."""

    paths: list
    landmarks: np.ndarray  # (N, 68, 2) float32, 250x250 crop coordinates
    found: np.ndarray      # (N,) bool: a face was detected
    labels: np.ndarray     # (N,) int, index into CLASSES
    subjects: np.ndarray   # (N,) str
    groups: dict = field(default_factory=dict)  # column -> (N,) str
    # (N, 4) float32 training targets: FER+ rows their votes' distribution
    # (fastes.data.soft_label), other rows one-hot; None: one-hot labels throughout
    targets: np.ndarray | None = None
    # (N,) bool: FER+'s validation split (never trained on) and its majority rows
    ferplus_valid: np.ndarray | None = None
    majority: np.ndarray | None = None
    # (N, 7) float32 targets over EMOTIONS (fastes.data.fine_label); a row of zeros: none
    fine: np.ndarray | None = None

    def __post_init__(self):
        n = len(self.labels)
        if self.targets is None:
            self.targets = np.eye(len(CLASSES), dtype=np.float32)[self.labels]
        for name in ("ferplus_valid", "majority"):
            if getattr(self, name) is None:
                setattr(self, name, np.zeros(n, bool))
        if self.fine is None:
            self.fine = np.zeros((n, len(EMOTIONS)), np.float32)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def datasets(self) -> np.ndarray:
        """(N,) str: each row's dataset ("" when the manifest has no such column)."""
        return self.groups.get("dataset", np.full(len(self), "", dtype=object))

    def subset(self, mask) -> "FaceSet":
        idx = np.flatnonzero(mask) if np.asarray(mask).dtype == bool else np.asarray(mask)
        return FaceSet([self.paths[i] for i in idx], self.landmarks[idx], self.found[idx],
                       self.labels[idx], self.subjects[idx], {k: v[idx] for k, v in self.groups.items()},
                       self.targets[idx], self.ferplus_valid[idx], self.majority[idx], self.fine[idx])

    def save(self, path) -> None:
        """Write to one ``.npz`` (landmarks and labels only, no images: shareable where
        the images are not, e.g. to a training machine)."""
        from .io import atomic_write

        atomic_write(path, lambda t: np.savez_compressed(
            t, paths=np.array([str(p) for p in self.paths]), landmarks=self.landmarks, found=self.found,
            labels=self.labels, subjects=self.subjects, targets=self.targets, ferplus_valid=self.ferplus_valid,
            majority=self.majority, fine=self.fine, **{f"group_{k}": v for k, v in self.groups.items()}))

    @classmethod
    def load(cls, path) -> "FaceSet":
        z = np.load(path, allow_pickle=False)
        groups = {k[6:]: z[k] for k in z.files if k.startswith("group_")}
        extra = {k: z[k] for k in ("targets", "ferplus_valid", "majority", "fine") if k in z.files}
        return cls(z["paths"].tolist(), z["landmarks"], z["found"], z["labels"], z["subjects"], groups, **extra)

    def digest(self) -> str:
        """A hash of everything training sees (landmarks, labels, subjects; soft targets
        where some row has them: one-hot-only sets keep their earlier digests). The
        7-emotion targets (``fine``) come from the same votes and manifest rows and are not
        hashed: the digests of sets recorded before them stay valid."""
        h = hashlib.sha1()
        for a in (self.landmarks, self.found, self.labels):
            h.update(np.ascontiguousarray(a).tobytes())
        h.update("\n".join(self.subjects.tolist()).encode())
        if not np.array_equal(self.targets, np.eye(len(CLASSES), dtype=np.float32)[self.labels]):
            h.update(np.ascontiguousarray(self.targets, np.float32).tobytes())
        return h.hexdigest()[:16]


def load_faces(manifest=None, datasets=POSED, progress: bool = True, cache=None,
               detector: str = "haar", crop: str = "never") -> FaceSet:
    """Rows of ``manifest`` (default: the shared data's) whose ``dataset`` is in
    ``datasets`` (``None``: all), with landmarks from the cache (computed when missing)
    by the front end with ``detector`` and ``crop`` mode (the defaults: the front end the
    shipped models were trained on), soft targets from FER+ votes."""
    from .face import FaceFinder

    samples = read_manifest(manifest or data_root() / "faces" / "manifest.csv")
    if datasets is not None:
        samples = [s for s in samples if s.groups["dataset"] in datasets]
    cache = cache or LandmarkCache(FaceFinder(detector, crop=crop))
    found, _, _, lms = cache.get([s.path for s in samples], progress=progress)
    groups = {c: np.array([s.groups[c] for s in samples]) for c in samples[0].groups} if samples else {}
    return FaceSet([s.path for s in samples], lms, found, np.array([s.label for s in samples], dtype=np.int64),
                   np.array([s.subject for s in samples]), groups,
                   np.array([s.target for s in samples], np.float32).reshape(-1, len(CLASSES)),
                   np.array([is_ferplus_valid(s) for s in samples], bool),
                   np.array([is_majority(s.votes) for s in samples], bool),
                   np.array([s.fine_target for s in samples], np.float32).reshape(-1, len(EMOTIONS)))
