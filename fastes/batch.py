"""The batch runner: files, folders and videos in, one table of rows out.

Every input becomes rows: one per face, one per image or frame without a face, one per
input that could not be read (never dropped). Rows are written durably by
:class:`Table` (temp file renamed over the output, also on Ctrl-C or SIGTERM; a lock
against a second writer; ``resume`` continues a cut run) as CSV, JSON lines or
Parquet. :func:`run` is the whole job, on local worker threads (``engine="local"``)
or over a Ray cluster (``engine="ray"``, :mod:`fastes.ray_engine`); ``fastes run``
is a thin caller.

    >>> from fastes.batch import run
    >>> summary = run(["photos/"], out="results.parquet", workers=2)
    >>> summary.faces, summary.errors
"""
from __future__ import annotations

import contextlib
import functools
import os
import signal
import stat
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from . import CLASSES
from .table import FIELDS, BatchError, OutputError, Table, read_rows

__all__ = ["FIELDS", "VIDEO_SUFFIXES", "BatchError", "OutputError", "Terminated", "Item", "Options", "Summary", "Table", "Worker",
           "expand_inputs", "image_files", "run", "read_rows", "NO_FACE"]

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})
NO_FACE = "no face found"  # the error of an image or frame that was read but holds no face
ENGINES = ("local", "ray")


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived: unwound like Ctrl-C, so finished rows are kept."""


@dataclass(frozen=True)
class Item:
    """One input: a file (image or video) found or named, or a problem found while walking
    a folder (``error`` set: a broken link, an unreadable sub-folder)."""

    path: Path
    rel: Path  # relative to the folder it was found in (names sketches and annotations)
    error: str | None = None

    @property
    def source(self) -> str:
        return str(self.path)

    @property
    def is_video(self) -> bool:
        return self.error is None and self.path.suffix.lower() in VIDEO_SUFFIXES


def expand_inputs(inputs: Iterable[str | os.PathLike]) -> list[Item]:
    """Files named, and every file of the folders named (recursive, sorted; hidden files
    and folders skipped). Broken links and unreadable sub-folders become items with an
    ``error``; files named but missing are reported when read."""
    out: list[Item] = []
    for raw in inputs:
        p = Path(raw)
        if not p.is_dir():
            out.append(Item(p, Path(p.name)))
            continue
        found: list[Item] = []

        def unreadable(e: OSError, root=p) -> None:
            where = Path(e.filename) if e.filename else root
            found.append(Item(where, where.relative_to(root) if where != root else Path(where.name),
                              f"cannot read folder: {e.strerror or e}"))

        for folder, dirs, files in os.walk(p, onerror=unreadable, followlinks=False):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in files:
                if name.startswith("."):
                    continue
                f = Path(folder) / name
                err = None
                try:
                    if stat.S_ISLNK(os.lstat(f).st_mode) and not f.exists():
                        err = "broken symbolic link"
                    elif not f.is_file():  # never opened: a read of a FIFO would block
                        err = "not a regular file (a FIFO, socket or device)"
                except OSError as e:
                    err = f"cannot stat: {e.strerror or e}"
                found.append(Item(f, f.relative_to(p), err))
        out += sorted(found, key=lambda it: str(it.rel))
    return out


@dataclass
class Options:
    """What to compute for each input (the same for both engines)."""

    model: str = "default"
    detector: str = "blazeface"
    detect_size: int = 160
    crop: str | None = None       # FaceFinder's crop mode where it has one (None: its default)
    threads: int = 1              # TFLite threads per worker
    tta: int = 0
    every: int = 1                # videos: every Nth frame
    detect_every: int = 1         # videos: detect on every Nth kept frame, track in between
    smooth: float = 0.0           # videos: exponential smoothing of each track's probabilities
    landmarks: bool = False       # add the 68 points to each row
    save_sketches: str | None = None
    annotate: str | None = None

    def check(self) -> None:
        if self.every < 1:
            raise BatchError("--every must be >= 1")
        if self.detect_every < 1:
            raise BatchError("--detect-every must be >= 1")
        if not 0 <= self.smooth < 1:
            raise BatchError("--smooth must be in [0, 1)")
        if self.tta < 0:
            raise BatchError("--tta must be >= 0")
        if self.threads < 1:
            raise BatchError("--threads must be >= 1")
        if self.detect_size < 32:
            raise BatchError(f"--detect-size must be >= 32, got {self.detect_size}")

    def finder(self):
        from .face import FaceFinder

        kw = {"detect_size": self.detect_size}
        if self.crop is not None:
            kw["crop"] = self.crop
        return FaceFinder(self.detector, **kw)

    def pipeline(self, workers: int = 1):
        from .pipeline import Pipeline

        return Pipeline(self.model, self.finder(), threads=self.threads, workers=workers, tta=self.tta)


@dataclass
class Summary:
    """What a job did. ``rows`` holds this job's rows when no output file was asked for."""

    out: Path | None
    inputs: int = 0
    images: int = 0            # images and video frames read
    faces: int = 0
    no_face: int = 0
    errors: list[str] = field(default_factory=list)   # sources that could not be read
    kept: int = 0              # inputs already done in the output (resume)
    seconds: float = 0.0
    startup_seconds: float = 0.0   # engine start (Ray's cluster, actors, first task), apart from the work
    startup_inputs: int = 0        # inputs whose work is inside startup_seconds (the first task)
    rows: list[dict] | None = None

    def add(self, rows: list[dict]) -> None:
        """Count one input's rows."""
        self.inputs += 1
        for r in rows:
            if r.get("face") is not None:
                self.faces += 1
            elif r.get("error") == NO_FACE:
                self.no_face += 1
            elif r.get("error") and r.get("frame") is None:
                self.errors.append(r["source"])
        self.images += len({r.get("frame") for r in rows if r.get("face") is not None or r.get("error") == NO_FACE})

    def line(self) -> str:
        rate = self.faces / max(self.seconds, 1e-9)
        s = (f"{self.images} images/frames, {self.faces} faces, {self.no_face} without a face, "
             f"{len(self.errors)} errors; {self.seconds:.2f} s, {rate:.1f} faces/s")
        if self.out is not None:
            s += f"; results in {self.out}"
        if self.kept:
            s += f" ({self.kept} earlier inputs kept)"
        return s


def error_row(source: str, message: str, frame: int | None = None) -> dict:
    return {"source": source, "frame": frame, "timestamp": None, "face": None, "error": message}


def face_rows(source: str, frame: int | None, ts: float | None, faces, tracks=None,
              landmarks: bool = False) -> list[dict]:
    """The rows of one image or frame: one per face, or one saying there is none."""
    base = {"source": source, "frame": frame, "timestamp": ts}
    if not faces:
        return [{**base, "face": None, "error": NO_FACE}]
    tracks = tracks or [None] * len(faces)
    rows = []
    for k, f in enumerate(faces):
        x, y, w, h = f.box
        row = {**base, "face": k, "track": tracks[k], "x": x, "y": y, "w": w, "h": h, "label": f.label,
               "confidence": round(f.confidence, 4),
               **{f"p_{c}": round(float(p), 4) for c, p in zip(CLASSES, f.probs)}, "error": ""}
        if landmarks:
            row["landmarks"] = np.round(f.landmarks, 2).tolist()
        rows.append(row)
    return rows


def _frames(path, every: int, webcam: int | None = None, read: list | None = None):
    """(frame index, timestamp s, BGR frame), decoded lazily: memory stays flat. ``read``
    (a one-element list) counts the frames decoded, for error rows."""
    import cv2

    cap = cv2.VideoCapture(webcam if webcam is not None else str(path))
    if not cap.isOpened():
        raise OSError(f"cannot open camera {webcam}" if webcam is not None else
                      "cannot open this video (unsupported codec or not a video)")
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    i = 0
    try:
        while True:
            if not cap.grab():
                break
            if read is not None:
                read[0] = i + 1
            if i % every == 0:
                ok, frame = cap.retrieve()
                if ok:
                    yield i, (i / fps if fps > 0 else None), frame
            i += 1
    finally:
        cap.release()


class Worker:
    """Turns inputs into rows with one :class:`fastes.Pipeline`, writing sketches and
    annotations as asked: the unit of work of both engines (a Ray actor holds one)."""

    def __init__(self, opts: Options, pipeline=None, workers: int = 1):
        self.opts = opts
        self.pipe = pipeline if pipeline is not None else opts.pipeline(workers)
        self._videos_out: dict = {}

    def image_rows(self, item: Item, faces, image=None) -> list[dict]:
        """Rows (and side files) of one image whose faces are known (or an exception)."""
        if item.error:
            return [error_row(item.source, item.error)]
        if isinstance(faces, BaseException):
            return [error_row(item.source, _message(item.path, faces))]
        try:
            rows = face_rows(item.source, None, None, faces, landmarks=self.opts.landmarks)
            self._side_files(item, None, faces, image)
        except Exception as e:  # writing a sketch or annotation failed: the input's row says so
            return [error_row(item.source, _message(item.path, e))]
        return rows

    def process(self, item: Item) -> list[dict]:
        """All rows of one input, in this thread (the Ray engine's unit)."""
        if item.error:
            return [error_row(item.source, item.error)]
        if item.is_video:
            return [r for rows in self.video_rows(item) for r in rows]
        try:
            faces = self.pipe.run(item.path)
        except Exception as e:
            faces = e
        return self.image_rows(item, faces, self._image_for(item, faces))

    def _image_for(self, item: Item, faces):
        if not self.opts.annotate or isinstance(faces, BaseException):
            return None
        from .io import read_image

        return read_image(item.path)

    def video_rows(self, item: Item, webcam: int | None = None, on_frame=None) -> Iterator[list[dict]]:
        """Rows per kept frame of a video (or camera), then an error row if it could not
        be opened, held no frame, or failed part way (with the frames read)."""
        from .pipeline import Tracker

        tracker = Tracker(self.opts.smooth)
        read = [0]
        meta: deque = deque()
        keep = bool(self.opts.annotate) or on_frame is not None

        def frames():
            for i, ts, frame in _frames(item.path, self.opts.every, webcam, read):
                meta.append((i, ts, frame if keep else None))
                yield frame

        n = 0
        try:
            if self.opts.detect_every > 1:
                stream = self.pipe.run_video(frames(), self.opts.detect_every)
            else:
                stream = self.pipe.run_batch(frames())
            for faces in stream:
                i, ts, frame = meta.popleft()
                ts = None if ts is None else round(ts, 3)
                tracks = tracker.update(faces)
                rows = face_rows(item.source, i, ts, faces, tracks, self.opts.landmarks)
                vis = self._side_files(item, i, faces, frame)
                n += 1
                yield rows
                if on_frame is not None and on_frame(i, rows, frame if vis is None else vis) is False:
                    return
            if n == 0:
                yield [error_row(item.source, f"no frames could be read ({read[0]} frames decoded)")]
        except Exception as e:
            yield [error_row(item.source, f"{_message(item.path, e)} (after {read[0]} frames)")]
        finally:
            self._close_video(item)

    def _side_files(self, item: Item, frame: int | None, faces, image):
        """Sketch PNGs and annotated images or videos; returns the annotated image."""
        from .io import write_png_atomic

        stem = item.rel.with_suffix("") if frame is None else item.rel.with_suffix("") / f"frame{frame:07d}"
        if self.opts.save_sketches:
            d = Path(self.opts.save_sketches)
            for k, f in enumerate(faces):
                (d / stem).parent.mkdir(parents=True, exist_ok=True)
                write_png_atomic(d / f"{stem}_face{k}.png", f.sketch)
        if image is None:
            return None
        from .annotate import annotate

        vis = annotate(image, faces)
        if not self.opts.annotate:
            return vis
        ann = Path(self.opts.annotate)
        if frame is None:
            (ann / stem).parent.mkdir(parents=True, exist_ok=True)
            write_png_atomic(ann / f"{stem}.png", vis)
        else:  # a video: an annotated MJPG .avi (every OpenCV build writes it)
            if item.source not in self._videos_out:
                import cv2

                target = ann / item.rel.with_suffix(".avi")
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.stem}.{os.getpid()}.tmp.avi")
                h, w = vis.shape[:2]
                writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"MJPG"), 25.0 / self.opts.every, (w, h))
                self._videos_out[item.source] = (writer, tmp, target)
            self._videos_out[item.source][0].write(vis)
        return vis

    def _close_video(self, item: Item) -> None:
        if item.source in self._videos_out:
            writer, tmp, target = self._videos_out.pop(item.source)
            writer.release()
            os.replace(tmp, target)

    def close(self) -> None:
        self.pipe.close()


def _message(path: Path, e: BaseException) -> str:
    """One line for an input that failed: the error's own message when it names the
    input (fastes' ImageError does), else the path and the error's type."""
    from .io import ImageError

    msg = str(e).replace("\n", " ").strip()
    if isinstance(e, ImageError) and msg:
        return msg
    return f"{path}: {type(e).__name__}: {msg}" if msg else f"{path}: {type(e).__name__}"


# ---------------------------------------------------------------------------------------------
# the job


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM and SIGHUP unwind the job like Ctrl-C (in the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated(signal.Signals(signum).name)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run(inputs: Iterable[str | os.PathLike] | None = None, out: str | os.PathLike | None = None, *,
        engine: str = "local", workers: int = 1, address: str | None = None, resume: bool = False,
        options: Options | None = None, webcam: int | None = None, progress: bool = True,
        on_rows: Callable[[list[dict]], None] | None = None, on_frame=None, **option_kw) -> Summary:
    """Run the whole job: every input to rows, written to ``out`` (or returned in
    ``Summary.rows`` when ``out`` is None).

    ``engine``: ``"local"`` (``workers`` threads in this process) or ``"ray"`` (``workers``
    actors on a Ray cluster: a local one with this machine's cores, or the one at
    ``address``). ``options`` (or its fields as keywords: ``model``, ``detector``, ``tta``,
    ``every``, ``landmarks``, ...) say what to compute. ``resume`` keeps the rows already
    in ``out`` and skips their inputs. ``on_rows`` is called with each finished input's
    rows (live printing, progress). ``webcam`` N reads camera N instead of ``inputs``;
    ``on_frame(index, rows, annotated)`` returning False stops it. Interruption (Ctrl-C,
    SIGTERM, SIGHUP) keeps every finished input's rows in ``out`` and re-raises.
    """
    opts = options if options is not None else Options(**option_kw)
    if options is not None and option_kw:
        raise TypeError("give options= or option keywords, not both")
    opts.check()
    if engine not in ENGINES:
        raise BatchError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if not isinstance(workers, (int, np.integer)) or workers < 1:
        raise BatchError("--workers must be >= 1")
    if engine == "ray" and webcam is not None:
        raise BatchError("--webcam runs on the local engine only")
    if address is not None and engine != "ray":
        raise BatchError("--address needs --engine ray")
    summary = Summary(out=Path(out) if out is not None else None, rows=[] if out is None else None)
    t0 = time.perf_counter()
    table = Table(out, resume, opts.landmarks) if out is not None else None  # refuses a bad output first
    try:
        items = [Item(Path(f"webcam{webcam}"), Path(f"webcam{webcam}"))] if webcam is not None else \
            expand_inputs(inputs or [])
        if out is not None:  # an output inside an input folder is not an input
            own = Path(out).resolve()
            items = [it for it in items if it.error or it.path.name != own.name or it.path.resolve() != own]
        if not items:
            raise BatchError("no image or video files found in the given inputs")
        t0 = time.perf_counter()  # the work, from here
        summary.kept = len(table.done) if table else 0
        todo = [it for it in items if table is None or it.source not in table.done]

        def finish(rows: list[dict]) -> None:
            if table is not None:
                table.write_input(rows)
            else:
                summary.rows.extend(rows)
            summary.add(rows)
            if on_rows is not None:
                on_rows(rows)

        with _terminate_as_interrupt():
            if engine == "ray":
                from .ray_engine import run_ray

                stats: dict = {}
                summary.startup_seconds = run_ray(todo, functools.partial(Worker, opts), workers, address, finish,
                                                  progress, stats)
                summary.startup_inputs = stats.get("startup_inputs", 0)
            else:
                _run_local(todo, opts, workers, finish, progress, webcam, on_frame)
    except (KeyboardInterrupt, Terminated):
        if table is not None:
            table.close()  # the rows of every finished input are kept
        raise
    except BaseException:
        if table is not None:
            table.abort()
        raise
    else:
        if table is not None:
            table.close()
    finally:
        summary.seconds = time.perf_counter() - t0 - summary.startup_seconds
    return summary


def _run_local(todo: list[Item], opts: Options, workers: int, finish, progress: bool, webcam, on_frame) -> None:
    """Images through the pipeline's worker threads (in order), videos one at a time."""
    from tqdm import tqdm

    worker = Worker(opts, workers=workers)
    bar = tqdm(total=len(todo), unit="input", disable=not progress or len(todo) < 2 or None, file=sys.stderr)
    t0, faces_done = time.perf_counter(), [0]

    def done(rows):
        finish(rows)
        faces_done[0] += sum(r.get("face") is not None for r in rows)
        bar.set_postfix(faces_per_s=f"{faces_done[0] / max(1e-9, time.perf_counter() - t0):.1f}")
        bar.update(1)

    def run_images(group: list[Item]) -> None:
        meta: deque = deque()

        def paths():
            for it in group:
                meta.append(it)
                yield it.path

        for faces in worker.pipe.run_batch(paths(), errors="return"):
            it = meta.popleft()
            try:
                image = worker._image_for(it, faces)
            except Exception as e:
                faces, image = e, None
            done(worker.image_rows(it, faces, image))

    try:
        group: list[Item] = []  # consecutive images go to the worker threads together
        for it in todo + [None]:
            if it is not None and not it.is_video and webcam is None:
                if it.error:
                    run_images(group)
                    group = []
                    done(worker.image_rows(it, None))
                else:
                    group.append(it)
                continue
            run_images(group)
            group = []
            if it is None:
                break
            if webcam is not None:  # live: each frame's rows as they come
                for rows in worker.video_rows(it, webcam, on_frame):
                    finish(rows)
                bar.update(1)
            else:
                done([r for rows in worker.video_rows(it) for r in rows])
    finally:
        worker.close()
        bar.close()


def image_files(inputs: Iterable[str | os.PathLike]) -> list[tuple[Path, Path]]:
    """Files and folders (recursive) as ``(image file, name relative to its root)``.

    Folders contribute image files, recognized by suffix or by content; files named
    explicitly are always tried, whatever their suffix, so a mislabelled file is reported,
    not skipped (``fastes sketch``'s inputs).
    """
    from .io import looks_like_image

    out: list[tuple[Path, Path]] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() not in VIDEO_SUFFIXES
                           and looks_like_image(f))
            out.extend((f, f.relative_to(p)) for f in files)
        else:
            out.append((p, Path(p.name)))  # missing files are reported when read
    return out
