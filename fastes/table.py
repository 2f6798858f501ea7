"""The results table: rows written durably as CSV, JSON lines or Parquet, and read back.

A job's rows go to a temp file beside the output, renamed over it when the job ends
(also on Ctrl-C or SIGTERM), so the output is never half-written; a lock refuses a
second job on the same output; ``resume`` continues from what a cut job left.
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
from pathlib import Path

from . import CLASSES

__all__ = ["FIELDS", "BatchError", "OutputError", "Table", "read_rows", "check_output"]

FIELDS = ["source", "frame", "timestamp", "face", "track", "x", "y", "w", "h", "label", "confidence",
          *[f"p_{c}" for c in CLASSES], "error"]


class BatchError(ValueError):
    """A job that cannot start: bad options, an output that cannot be written or is locked."""


class OutputError(OSError):
    """The results table could not be written (a full disk, a lost mount): the job stops,
    and the output is left as it was."""


def _arrow_safe(s):
    """Parquet strings are UTF-8: a file name that is not (a surrogate escape) is written
    with its bytes backslash-escaped."""
    if isinstance(s, str):
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return s


class Table:
    """Rows written as they come to a temp file beside ``out``, renamed over it by
    :meth:`close` (also after Ctrl-C or SIGTERM), so ``out`` is never half-written.

    - An exclusive lock (``.NAME.lock``) refuses a second job on the same output.
    - ``resume``: keeps the rows of ``out`` (and of a temp file a killed job left), except a
      cut or malformed last input, whose rows are dropped so that it is done again.
    - File names that are not UTF-8 are kept losslessly (CSV: surrogate escapes, the file's
      bytes are the name's; JSON lines: ``\\udcXX`` escapes; Parquet: ``\\xXX`` text).
    - Parquet (needs pyarrow) is written from the temp file's JSON lines at the end, in row
      groups, with every column of the CSV.
    - A write error (full disk) raises ``OSError``; :meth:`abort` then leaves ``out`` as it was.
    """

    def __init__(self, out: str | os.PathLike, resume: bool = False, with_landmarks: bool = False):
        check_output(out)
        out = Path(out)
        suffix = out.suffix.lower()
        self.out, self.parquet = out, suffix == ".parquet"
        self.json = suffix == ".jsonl" or self.parquet
        if self.parquet:
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise BatchError("a .parquet output needs pyarrow: pip install pyarrow") from None
        self.fields = FIELDS + (["landmarks"] if with_landmarks else [])
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BatchError(f"cannot create the folder of {out}: {e.strerror or e}") from None
        self._lock = _lock(out)
        self.done: set[str] = set()
        old: list[dict] = []
        try:
            if resume:
                old = self._resumable()
                self.done = {r["source"] for r in old}
            self.tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
            try:
                self.f = open(self.tmp, "w", newline="", encoding="utf-8", errors="surrogateescape")
            except OSError as e:
                raise BatchError(f"cannot write {out}: {e.strerror or e}") from None
            if not self.json:
                self.w = csv.DictWriter(self.f, fieldnames=self.fields, extrasaction="ignore")
                self.w.writeheader()
            self.write_input(old)
            self.f.flush()
        except BaseException:
            self._unlock()
            raise

    def _resumable(self) -> list[dict]:
        """Rows of finished inputs in ``out`` and in temp files that dead jobs left."""
        rows: list[dict] = []
        if self.out.exists():
            rows = read_rows(self.out, tolerant=True)
        for stale in sorted(self.out.parent.glob(f".{self.out.name}.*.tmp")):
            pid = stale.name.rsplit(".", 2)[-2]
            if pid.isdigit() and not _alive(int(pid)):
                seen = {r["source"] for r in rows}
                rows += [r for r in read_rows(stale, tolerant=True, fmt="jsonl" if self.json else "csv", drop_last=True)
                         if r["source"] not in seen]
                os.unlink(stale)
        return rows

    def write_input(self, rows: list[dict]) -> None:
        """Write the rows of one finished input (together, so that resume never sees half)."""
        try:
            for row in rows:
                if self.json:
                    self.f.write(json.dumps(row) + "\n")
                else:
                    self.w.writerow({k: (json.dumps(v) if isinstance(v, list) else v) for k, v in row.items()})
            self.f.flush()
        except OSError as e:
            raise self._failed(e) from e

    def _failed(self, e: OSError) -> OutputError:
        return OutputError(e.errno, f"cannot write the results ({e.strerror or e}); {self.out} left as it was")

    def close(self) -> None:
        """Rename the finished table over ``out``."""
        try:
            self.f.close()
            if not self.parquet:
                os.replace(self.tmp, self.out)
            else:
                self._write_parquet()
                os.unlink(self.tmp)
        except OSError as e:
            self.abort()
            raise self._failed(e) from e
        except BaseException:
            self.abort()
            raise
        self._unlock()

    def abort(self) -> None:
        """Give up: ``out`` stays as it was; the temp file is removed."""
        with contextlib.suppress(OSError):
            self.f.close()
        with contextlib.suppress(OSError):
            os.unlink(self.tmp)
        self._unlock()

    def _write_parquet(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from .io import atomic_write

        with open(self.tmp, encoding="utf-8") as f:
            extra = sorted({k for line in f if line.strip() for k in json.loads(line)} - set(self.fields))
        cols = self.fields + extra

        def batches():
            batch = []
            with open(self.tmp, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        r = json.loads(line)
                        batch.append({c: _arrow_safe(r.get(c)) for c in cols})
                    if len(batch) >= 10_000:
                        yield batch
                        batch = []
            if batch:
                yield batch

        def write(tmp):
            writer = None
            for b in batches():
                t = pa.Table.from_pylist(b)
                if writer is None:
                    schema = t.schema
                    writer = pq.ParquetWriter(tmp, schema)
                writer.write_table(t.cast(schema) if t.schema != schema else t)
            if writer is None:
                pq.write_table(pa.Table.from_pylist([], schema=pa.schema([(c, pa.string()) for c in cols])), tmp)
            else:
                writer.close()

        atomic_write(self.out, write)

    def _unlock(self) -> None:
        lock, self._lock = getattr(self, "_lock", None), None
        if lock is not None:
            lock.close()


def _lock(out: Path):
    """An exclusive lock file beside ``out`` (``.NAME.lock``), held until the job ends and
    then removed; a crash frees it. A lock taken on a file that another job has just
    removed is taken again on the new one."""
    import fcntl

    path = out.with_name(f".{out.name}.lock")
    while True:
        try:
            f = open(path, "a")
        except OSError as e:
            raise BatchError(f"cannot write beside {out}: {e.strerror or e}") from None
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            raise BatchError(f"{out} is being written by another fastes job; wait for it or choose "
                             "another output") from None
        try:
            if os.stat(path).st_ino == os.fstat(f.fileno()).st_ino:
                return _Lock(f, path)
        except FileNotFoundError:
            pass
        f.close()


class _Lock:
    def __init__(self, f, path: Path):
        self.f, self.path = f, path

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # while still held: a waiting job then locks a new file
        self.f.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_rows(path: str | os.PathLike, tolerant: bool = False, fmt: str | None = None,
              drop_last: bool = False) -> list[dict]:
    """The rows of a results table (CSV, JSON lines or Parquet) as dicts.

    ``tolerant``: a cut or malformed last row drops every row of its input (that input is
    not done); a table that cannot be read at all raises :class:`BatchError` saying why.
    ``drop_last``: drop the last input's rows in any case (a killed job's temp file, whose
    last input may be partly written).
    """
    p = Path(path)
    fmt = fmt or p.suffix.lower().lstrip(".")
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            try:
                rows = pq.read_table(p).to_pylist()
            except Exception as e:
                raise BatchError(f"{p}: cannot be resumed: not a readable Parquet file ({e})") from None
            return _check_columns(p, rows)
        with open(p, newline="", encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError as e:
        raise BatchError(f"{p}: cannot be read: {e.strerror or e}") from None
    if "\x00" in text:
        raise BatchError(f"{p}: cannot be resumed: not a text table")
    cut = bool(text) and not text.endswith("\n")
    partial: str | None = None  # the (maybe cut) source of a malformed last row
    malformed = False
    rows: list[dict] = []
    if fmt == "jsonl":
        lines = text.splitlines()
        for n, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                if not isinstance(r, dict) or "source" not in r:
                    raise ValueError("not a row")
            except ValueError:
                if tolerant and n == len(lines) - 1:
                    malformed, partial = True, _json_source(line)
                    break
                raise BatchError(f"{p}:{n + 1}: cannot be resumed: not a fastes JSON row") from None
            rows.append(r)
    else:
        reader = csv.DictReader(text.splitlines(keepends=True))
        if reader.fieldnames is None or "source" not in reader.fieldnames or "error" not in reader.fieldnames:
            raise BatchError(f"{p}: cannot be resumed: its columns are not a fastes table "
                             f"(no 'source'/'error' columns)")
        for r in reader:
            if None in r or any(v is None for v in r.values()):  # too many or too few fields
                if tolerant and reader.line_num == len(text.splitlines()):
                    malformed, partial = True, r.get("source")
                    break
                raise BatchError(f"{p}:{reader.line_num}: cannot be resumed: malformed row")
            rows.append({k: _csv_value(v) for k, v in r.items()})
    if not rows:
        return rows
    # Rows of one input are contiguous and written together, so only the last input can be
    # partly written: drop it when the file is cut there (a cut row may belong to it).
    last = rows[-1]["source"]
    if drop_last or (tolerant and cut and not malformed) or (
            malformed and (partial is None or str(last).startswith(partial))):
        rows = [r for r in rows if r["source"] != last]
    return rows


def _json_source(line: str) -> str | None:
    """The source of a cut JSON row (its first key), as far as it goes; None if cut before."""
    import re

    m = re.match(r'\{"source": "((?:[^"\\]|\\.)*)', line)
    if not m:
        return None
    frag = m.group(1)
    for end in range(len(frag), max(-1, len(frag) - 7), -1):  # a cut escape: shorten it
        try:
            return json.loads(f'"{frag[:end]}"')
        except ValueError:
            continue
    return None


def _csv_value(v: str):
    return json.loads(v) if v.startswith("[") else v


def _check_columns(p: Path, rows: list[dict]) -> list[dict]:
    if rows and not {"source", "error"} <= set(rows[0]):
        raise BatchError(f"{p}: cannot be resumed: its columns are not a fastes table")
    return rows


def check_output(out: str | os.PathLike) -> None:
    """Refuse an output that cannot be written (:class:`Table` does, before any work)."""
    p = Path(out)
    if p.suffix.lower() not in (".csv", ".jsonl", ".parquet"):
        raise BatchError("--out must end in .csv, .jsonl or .parquet")
    if p.is_dir():
        raise BatchError(f"--out {p} is a folder; give a file name")
    parent = next((q for q in [p.parent, *p.parent.parents] if q.exists()), Path("."))
    if not parent.is_dir():
        raise BatchError(f"--out {p}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise BatchError(f"--out {p}: not writable")
