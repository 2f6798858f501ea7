"""The Ray engine on a local 2-CPU cluster: the same rows as the local engine, bad inputs
kept, a killed worker loses nothing, resume, and one-line errors."""
from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from fastes.batch import BatchError, read_rows, run
from fastes.cli import main, sample_images

ray = pytest.importorskip("ray", reason="the ray extra (pip install 'fastes[ray]')")


@pytest.fixture(scope="session")
def cluster():
    """One local cluster for every test here (its start-up takes seconds)."""
    started = not ray.is_initialized()
    if started:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """~200 inputs: London samples rescaled, mirrored and re-lit, faceless images, bad
    files, a sub-folder and a short video."""
    d = tmp_path_factory.mktemp("corpus")
    (d / "sub").mkdir()
    rng = np.random.default_rng(0)
    samples = sample_images()
    for i in range(180):
        img = cv2.imread(str(samples[i % len(samples)]))
        s = rng.uniform(0.4, 1.0)
        img = cv2.resize(img, None, fx=s, fy=s)
        if i % 2:
            img = img[:, ::-1]
        img = np.clip(img * rng.uniform(0.7, 1.2) + rng.uniform(-20, 20), 0, 255).astype(np.uint8)
        cv2.imwrite(str(d / ("sub" if i % 5 == 0 else ".") / f"face{i:03d}.jpg"), img)
    for i in range(10):
        cv2.imwrite(str(d / f"blank{i}.png"), np.full((120, 160), 20 * i, np.uint8))
    (d / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (d / "truncated.jpg").write_bytes(samples[1].read_bytes()[:3000])
    (d / "notes.txt").write_text("not an image")
    (d / "not_a_video.mp4").write_bytes(b"\x00" * 100)
    frame = cv2.resize(cv2.imread(str(samples[0])), (320, 320))
    w = cv2.VideoWriter(str(d / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 320))
    for _ in range(6):
        w.write(frame)
    w.release()
    return d


@pytest.fixture(scope="session")
def local_rows(corpus, tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("local") / "local.csv"
    run([corpus], out, progress=False)
    return read_rows(out)


def _key(rows):
    """Rows as comparable text, whatever table they were read from (CSV has no None)."""
    def s(v):
        return "" if v is None else str(v)

    return sorted(tuple(s(r.get(k)) for k in ("source", "frame", "face", "label", "error", "x", "y", "w", "h"))
                  for r in rows)


def test_ray_rows_equal_local_rows(cluster, corpus, local_rows, tmp_path):
    distributed = run([corpus], tmp_path / "ray.csv", engine="ray", workers=2, progress=False)
    a, b = local_rows, read_rows(tmp_path / "ray.csv")
    assert a == b  # same rows, same order, same values
    n_inputs = len([p for p in corpus.rglob("*") if p.is_file()])
    assert len({r["source"] for r in b}) == n_inputs  # every input has rows
    assert distributed.faces == sum(r["face"] != "" for r in a) >= 150 and len(distributed.errors) == 4
    by = {Path(r["source"]).name: r for r in b if r.get("frame") in ("", None)}
    assert by["broken.jpg"]["error"] and by["notes.txt"]["error"] and by["not_a_video.mp4"]["error"]
    assert by["blank0.png"]["error"] == "no face found"
    assert [r["frame"] for r in b if r["source"].endswith("clip.avi")] == [str(i) for i in range(6)]


def test_cli_engine_ray_parquet(cluster, corpus, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    sub = corpus / "sub"
    assert main(["run", str(sub), "--engine", "ray", "--workers", "2", "--out", str(tmp_path / "r.parquet"),
                 "--no-progress"]) == 0
    assert main(["run", str(sub), "--out", str(tmp_path / "l.parquet"), "--no-progress"]) == 0
    a, b = pq.read_table(tmp_path / "r.parquet"), pq.read_table(tmp_path / "l.parquet")
    assert a.schema.names == b.schema.names and a.to_pylist() == b.to_pylist()


def _actor_pids() -> list[int]:
    """Processes of the engine's actors (Ray names them after the actor class)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if b"FastesWorker" in (d / "cmdline").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds actor processes in /proc")
def test_killed_worker_loses_nothing(cluster, corpus, local_rows, tmp_path):
    killed: list[int] = []

    def kill_one(rows):
        if not killed:  # the first finished input: the actors are busy with the next tasks
            pids = _actor_pids()
            assert pids, "no actor process found"
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    s = run([corpus], tmp_path / "r.jsonl", engine="ray", workers=2, progress=False, on_rows=kill_one)
    assert killed and killed[0] not in _actor_pids()
    rows = read_rows(tmp_path / "r.jsonl")
    keys = [(r["source"], r.get("frame"), r.get("face")) for r in rows]
    assert len(keys) == len(set(keys))  # no input written twice
    assert _key(rows) == _key(local_rows)  # the same rows as an undisturbed run
    assert s.inputs == len({r["source"] for r in rows}) == len([p for p in corpus.rglob("*") if p.is_file()])


def test_interrupted_ray_job_resumes_without_redoing(cluster, corpus, tmp_path, monkeypatch):
    out = tmp_path / "r.csv"
    seen: list[str] = []

    def stop_after_20(rows):
        seen.append(rows[0]["source"])
        if len(seen) == 20:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run([corpus], out, engine="ray", workers=2, progress=False, on_rows=stop_after_20)
    first = read_rows(out)
    assert {r["source"] for r in first} == set(seen)  # every finished input, nothing else
    redone: list[str] = []
    s = run([corpus], out, engine="ray", workers=2, resume=True, progress=False,
            on_rows=lambda rows: redone.append(rows[0]["source"]))
    assert s.kept == 20 and not set(redone) & set(seen)
    rows = read_rows(out)
    assert len({r["source"] for r in rows}) == len([p for p in corpus.rglob("*") if p.is_file()])
    keys = [(r["source"], r.get("frame"), r.get("face")) for r in rows]
    assert len(keys) == len(set(keys))


def test_unreachable_address_and_bad_options_are_one_line(tmp_path, capsys):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(BatchError, match="cannot connect to the Ray cluster"):
        run([sample_images()[0]], tmp_path / "r.csv", engine="ray", address=f"127.0.0.1:{port}")
    assert main(["run", str(sample_images()[0]), "--engine", "ray", "--address", "nohost",
                 "--out", str(tmp_path / "r.csv")]) == 2
    assert main(["run", str(sample_images()[0]), "--address", "127.0.0.1:1", "--out", str(tmp_path / "r.csv")]) == 2
    err = capsys.readouterr().err
    assert "HOST:PORT" in err and "--address needs --engine ray" in err and "Traceback" not in err
    assert not (tmp_path / "r.csv").exists()


def test_too_many_workers_for_the_cluster(cluster, tmp_path):
    with pytest.raises(BatchError, match="CPUs"):
        run([sample_images()[0]], tmp_path / "r.csv", engine="ray", workers=64)


def test_ray_not_installed_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert main(["run", str(sample_images()[0]), "--engine", "ray", "--out", str(tmp_path / "r.csv")]) == 2
    assert "pip install 'fastes[ray]'" in capsys.readouterr().err
