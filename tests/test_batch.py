"""The batch runner's guarantees: every input has rows, one bad input never ends a run,
the output is durable (signals, full disks, a second writer, cut files) and resumable."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import fastes
from fastes.batch import BatchError, Table, expand_inputs, read_rows, run
from fastes.cli import main, sample_images


def _sources(rows):
    return [r["source"] for r in rows]


def test_any_exception_of_one_input_is_its_row(tmp_path, monkeypatch):
    import fastes.pipeline as fp

    real = fp.Pipeline.run
    bad = str(sample_images()[1])

    def flaky(self, image):
        if str(image) == bad:
            raise RuntimeError("decoder blew up")
        return real(self, image)

    monkeypatch.setattr(fp.Pipeline, "run", flaky)
    out = tmp_path / "r.csv"
    assert main(["run", *map(str, sample_images()[:3]), "--out", str(out), "--no-progress"]) == 1
    rows = read_rows(out)
    assert _sources(rows) == list(map(str, sample_images()[:3]))
    assert "RuntimeError: decoder blew up" in rows[1]["error"] and rows[0]["label"] and rows[2]["label"]


def test_walk_reports_broken_links_and_unreadable_folders(tmp_path, monkeypatch):
    d = tmp_path / "in"
    (d / "locked").mkdir(parents=True)
    (d / "ok.jpg").write_bytes(sample_images()[0].read_bytes())
    (d / "gone.jpg").symlink_to(tmp_path / "missing.jpg")
    real_scandir = os.scandir

    def scandir(path="."):  # root reads any folder: make one unreadable the way os.walk sees it
        if Path(path).name == "locked":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    items = {it.rel.as_posix(): it.error for it in expand_inputs([d])}
    assert items == {"gone.jpg": "broken symbolic link", "locked": "cannot read folder: Permission denied",
                     "ok.jpg": None}
    out = tmp_path / "r.jsonl"
    s = run([d], out, progress=False)
    rows = {Path(r["source"]).name: r for r in read_rows(out)}
    assert set(rows) == {"ok.jpg", "gone.jpg", "locked"} and rows["ok.jpg"]["label"] in fastes.CLASSES
    assert len(s.errors) == 2


def test_videos_that_cannot_be_read_get_rows(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(os.urandom(2000))
    empty = tmp_path / "empty.avi"
    w = cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 64))
    w.release()  # a container with no frame
    out = tmp_path / "r.csv"
    assert main(["run", str(junk), str(empty), "--out", str(out), "--no-progress"]) == 1
    rows = read_rows(out)
    assert _sources(rows) == [str(junk), str(empty)] and all(r["error"] for r in rows)
    assert all("frames" in r["error"] or "cannot open" in r["error"] for r in rows)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_non_utf8_file_names_are_kept_losslessly(tmp_path, suffix):
    name = os.fsdecode(b"caf\xe9.jpg")  # Latin-1 bytes: not UTF-8, a surrogate escape in Python
    path = tmp_path / name
    path.write_bytes(sample_images()[0].read_bytes())
    out = tmp_path / f"r{suffix}"
    assert main(["run", str(tmp_path), "--out", str(out), "--no-progress"]) == 0
    rows = read_rows(out)
    assert [r["source"] for r in rows] == [str(path)] and rows[0]["label"] in fastes.CLASSES
    assert main(["run", str(tmp_path), "--out", str(out), "--resume", "--no-progress"]) == 0
    assert len(read_rows(out)) == 1  # resume recognizes the name


def test_outputs_refused_before_any_work(tmp_path, capsys):
    img = str(sample_images()[0])
    (tmp_path / "dir.csv").mkdir()
    (tmp_path / "file").write_text("x")
    assert main(["run", img, "--out", str(tmp_path / "dir.csv")]) == 2
    assert main(["run", img, "--out", str(tmp_path / "file" / "r.csv")]) == 2
    err = capsys.readouterr().err
    assert "is a folder" in err and "not a folder" in err and "Traceback" not in err


def test_second_writer_is_refused(tmp_path, capsys):
    out = tmp_path / "r.csv"
    holder = Table(out)  # another job holds the output
    try:
        assert main(["run", str(sample_images()[0]), "--out", str(out), "--no-progress"]) == 2
        assert "being written by another fastes job" in capsys.readouterr().err
    finally:
        holder.abort()
    assert main(["run", str(sample_images()[0]), "--out", str(out), "--no-progress"]) == 0
    assert not list(tmp_path.glob(".*"))  # no lock or temp file left


def test_full_disk_leaves_the_output_as_it_was(tmp_path, monkeypatch, capsys):
    out = tmp_path / "r.csv"
    out.write_text("earlier results\n")
    real = Table.write_input
    calls = {"n": 0}

    def full(self, rows):
        calls["n"] += 1
        if calls["n"] == 2:  # the first write is the (empty) resume set
            self.f.flush = _raise_enospc  # the disk fills up as the rows are flushed
        return real(self, rows)

    monkeypatch.setattr(Table, "write_input", full)
    assert main(["run", *map(str, sample_images()[:3]), "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "left as it was" in err and "Traceback" not in err
    assert out.read_text() == "earlier results\n" and not list(tmp_path.glob(".*"))


def _raise_enospc(*a):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_resume_redoes_a_cut_last_input(tmp_path, suffix):
    paths = list(map(str, sample_images()[:3]))
    out = tmp_path / f"r{suffix}"
    assert main(["run", *paths, "--out", str(out), "--no-progress"]) == 0
    text = out.read_text()
    out.write_text(text[: len(text) - 25])  # the last row cut mid-way
    assert _sources(read_rows(out, tolerant=True)) == paths[:2]
    assert main(["run", *paths, "--out", str(out), "--resume", "--no-progress"]) == 0
    assert _sources(read_rows(out)) == paths


@pytest.mark.parametrize("content, why", [
    ("a,b,c\n1,2,3\n", "columns"),
    (b"\xff\xfe\x00\x00binary", "not a text table"),
])
def test_unresumable_files_are_named(tmp_path, capsys, content, why):
    out = tmp_path / "r.csv"
    out.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert main(["run", str(sample_images()[0]), "--out", str(out), "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "cannot be resumed" in err and why in err
    assert out.read_bytes() == (content if isinstance(content, bytes) else content.encode())


def test_garbled_jsonl_is_named(tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    out.write_text('{"source": "a", "error": ""}\nnot json\n{"source": "b", "error": ""}\n')
    assert main(["run", str(sample_images()[0]), "--out", str(out), "--resume", "--no-progress"]) == 2
    assert "r.jsonl:2: cannot be resumed" in capsys.readouterr().err


def _corpus(d: Path, n: int) -> list[Path]:
    d.mkdir()
    samples = sample_images()
    paths = []
    for i in range(n):
        img = cv2.imread(str(samples[i % len(samples)]))
        p = d / f"img{i:03d}.jpg"
        cv2.imwrite(str(p), cv2.resize(img, None, fx=0.5 + 0.01 * (i % 40), fy=0.5 + 0.01 * (i % 40)))
        paths.append(p)
    (d / "zz_bad.png").write_bytes(b"nope")  # sorted last: read by the resumed run
    return paths


def _rows_in(path: Path) -> int:
    try:
        return max(0, path.read_bytes().count(b"\n") - 1)
    except OSError:
        return 0


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGKILL, -9)])
def test_signal_half_way_then_resume_gives_one_row_per_input(tmp_path, sig, code):
    """SIGTERM keeps the finished rows in --out; after SIGKILL, --resume picks them up
    from the temp file the dead job left. Either way the resumed run ends with exactly
    one row per input. The corpus is long enough (~1 s of work at ~4 ms an image) that the
    signal lands well before the end even on a fast, quiet machine."""
    src = tmp_path / "in"
    paths = _corpus(src, 300)
    out = tmp_path / "r.csv"
    cmd = [sys.executable, "-m", "fastes", "run", str(src), "--out", str(out), "--no-progress"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    tmp = None
    while time.time() < deadline and p.poll() is None:
        tmps = list(tmp_path.glob(".r.csv.*.tmp"))
        if tmps and _rows_in(tmps[0]) >= 10:
            tmp = tmps[0]
            break
        time.sleep(0.01)
    assert tmp is not None, "the run ended before it could be interrupted"
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    assert p.returncode == code, err[-2000:]
    if sig == signal.SIGTERM:
        assert "Traceback" not in err
        kept = read_rows(out)
        assert 10 <= len(kept) < len(paths) + 1 and not list(tmp_path.glob(".r.csv.*"))
    else:
        assert tmp.exists() and not out.exists()
    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 1, r.stderr[-2000:]  # zz_bad.png is an error row
    rows = read_rows(out)
    assert sorted(_sources(rows)) == sorted(map(str, paths + [src / "zz_bad.png"]))  # exactly one row each
    assert not list(tmp_path.glob(".r.csv.*"))


def test_python_twin_returns_rows_without_an_output(tmp_path):
    s = fastes.batch.run([sample_images()[0], tmp_path / "missing.jpg"], progress=False)
    assert s.out is None and len(s.rows) == 2 and s.faces == 1 and s.errors == [str(tmp_path / "missing.jpg")]
    assert "no such file" in s.rows[1]["error"]
    with pytest.raises(BatchError, match="every"):
        run([sample_images()[0]], every=0)


def test_jsonl_rows_are_json(tmp_path):
    out = tmp_path / "r.jsonl"
    assert main(["run", str(sample_images()[0]), "--out", str(out), "--landmarks", "--no-progress"]) == 0
    row = json.loads(out.read_text().splitlines()[0])
    assert np.array(row["landmarks"]).shape == (68, 2) and row["label"] in fastes.CLASSES


def test_ctrl_c_while_starting_exits_quietly(tmp_path):
    """SIGINT while the command loads its modules and models: one line, exit 130."""
    import shutil

    exe = shutil.which("fastes") or str(Path(sys.executable).parent / "fastes")
    if not Path(exe).exists():
        pytest.skip("the fastes console command is not installed")
    for delay in (0.3, 0.8):
        p = subprocess.Popen([exe, "run", str(sample_images()[0]), "--out", str(tmp_path / "r.csv"), "--no-progress"],
                             stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=120)
        if p.returncode == 0 or "results in" in err:
            continue  # the work had finished already (a signal while the interpreter exits is not start-up)
        assert p.returncode == 130 and "Traceback" not in err, err[-2000:]
        assert err.strip().splitlines()[-1] == "fastes: interrupted"


def test_evaluate_takes_the_ensemble_as_run_does(tmp_path):
    m = tmp_path / "m.csv"
    m.write_text("path,class4,dataset\n" + "".join(f"{p},positive,london\n" for p in sample_images()[:2]))
    assert main(["evaluate", str(m), "--model", "ensemble", "--json", str(tmp_path / "e.json"), "--no-progress"]) == 0
    e = json.loads((tmp_path / "e.json").read_text())
    assert e["n"] == 2 and e["model"] == ["ensemble"]
    assert main(["evaluate", str(m), "--model", "default", "--threads", "0", "--no-progress"]) == 2


def test_hostile_corpus_one_row_per_input_then_sigterm_and_resume(tmp_path):
    """Good images mixed with every kind of bad input (fastes.testing.hostile_corpus):
    one row per input, exit 1, a valid table; then SIGTERM half way through a bigger
    copy and --resume: exactly one set of rows per input."""
    from fastes.testing import HOSTILE_KINDS, hostile_corpus

    src = tmp_path / "in"
    made = hostile_corpus(src, fifo=True)
    assert {"fifo", "huge_png", "broken_symlink", "face_non_utf8_name"} <= set(made.values())
    out = tmp_path / "r.jsonl"
    cmd = [sys.executable, "-m", "fastes", "run", str(src), "--out", str(out), "--no-progress"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    rows = read_rows(out)  # a valid table: every line parses
    by: dict[str, list[dict]] = {}
    for row in rows:
        by.setdefault(os.path.basename(row["source"]), []).append(row)
    walked = {n for n, k in made.items() if k != "folder_named_jpg"}  # a folder is walked, not read
    assert set(by) == walked  # one set of rows per input, whatever it is
    for name in walked:
        kind = made[name]
        expect = HOSTILE_KINDS[kind]
        got = by[name]
        if kind == "unreadable" and os.access(src / name, os.R_OK):
            expect = "face"  # root reads a chmod-000 file
        if expect == "error":
            assert len(got) == 1 and got[0]["error"] and got[0].get("face") is None, (name, got)
        elif expect == "face":
            assert any(g.get("label") in fastes.CLASSES for g in got), (name, got)

    # a bigger copy (the good faces many times over), interrupted half way, then resumed
    big = tmp_path / "big"
    big.mkdir()
    for name in made:
        p = src / name
        if made[name] in ("fifo", "broken_symlink", "folder_named_jpg") or not p.is_file():
            continue
        for k in range(8 if made[name] == "face" else 1):
            (big / f"{k}_{name}").write_bytes(p.read_bytes())
    n_inputs = len(list(big.iterdir()))
    out2 = tmp_path / "big.csv"
    cmd2 = [sys.executable, "-m", "fastes", "run", str(big), "--out", str(out2), "--no-progress"]
    p = subprocess.Popen(cmd2, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and p.poll() is None:
        tmps = list(tmp_path.glob(".big.csv.*.tmp"))
        if tmps and _rows_in(tmps[0]) >= n_inputs // 3:
            break
        time.sleep(0.02)
    assert p.poll() is None, "the run ended before it could be interrupted"
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143 and "Traceback" not in err, err[-2000:]
    assert 0 < len({r["source"] for r in read_rows(out2)}) < n_inputs
    r = subprocess.run(cmd2 + ["--resume"], capture_output=True, text=True, timeout=600)
    assert r.returncode in (0, 1) and "Traceback" not in r.stderr, r.stderr[-2000:]
    rows = read_rows(out2)
    assert sorted({r["source"] for r in rows}) == sorted(str(q) for q in big.iterdir())
    keys = [(r["source"], r["frame"], r["face"]) for r in rows]
    assert len(keys) == len(set(keys))
