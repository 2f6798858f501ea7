"""The product: Pipeline API, `fastes run` on images/folders/videos, `fastes demo`."""
import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import fastes
from fastes.cli import main, sample_images
from fastes.pipeline import shipped_models
from fastes.runtime import ModelError

pytestmark = pytest.mark.skipif(not shipped_models(), reason="no shipped model in models/")


@pytest.fixture(scope="module")
def pipe():
    return fastes.Pipeline()


def test_run_on_a_path_array_rgb_and_pil(pipe):
    path = sample_images()[0]
    faces = pipe.run(path)
    assert len(faces) == 1
    f = faces[0]
    assert f.label in fastes.CLASSES and f.probs.shape == (4,)
    assert abs(f.probs.sum() - 1) < 0.05 and f.confidence == pytest.approx(f.probs.max())
    img = cv2.imread(str(path))
    x, y, w, h = f.box
    assert 0 <= x < x + w <= img.shape[1] and 0 <= y < y + h <= img.shape[0]
    assert f.landmarks.shape == (68, 2) and (f.landmarks[:, 0] > x - w).all()
    assert f.sketch.shape == (250, 250) and set(np.unique(f.sketch)) == {0, 255}
    rgb = fastes.Pipeline(order="rgb").run(img[..., ::-1])
    assert rgb[0].box == f.box
    np.testing.assert_allclose(rgb[0].probs, f.probs, atol=1e-6)
    from PIL import Image

    assert pipe.run(Image.open(path))[0].box == f.box


def test_no_face_and_lazy_batches(pipe):
    assert pipe.run(np.full((200, 200, 3), 127, np.uint8)) == []
    gen = pipe.run_batch(iter(sample_images()[:2]))
    assert hasattr(gen, "__next__")
    assert [len(r) for r in gen] == [1, 1]


def test_workers_give_the_same_results_in_order(pipe, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    items = [*sample_images(), bad, *sample_images()[:2]]
    serial = list(pipe.run_batch(items, errors="return"))
    with fastes.Pipeline(workers=2) as par:
        pooled = list(par.run_batch(iter(items), errors="return"))
        assert isinstance(pooled[len(sample_images())], fastes.ImageError)
        with pytest.raises(fastes.ImageError, match="bad.jpg"):
            list(par.run_batch([bad]))
    assert len(pooled) == len(serial) == len(items)
    for a, b in zip(serial, pooled):
        if isinstance(a, Exception):
            assert str(a) == str(b)
            continue
        assert [f.box for f in a] == [f.box for f in b]
        np.testing.assert_allclose([f.probs for f in a], [f.probs for f in b], atol=1e-6)
    with pytest.raises(ValueError, match="workers"):
        fastes.Pipeline(workers=0)


def test_tta_pipeline_and_its_workers_agree():
    """tta=N classifies through fastes.runtime.Augmented, in worker threads too (same seeds:
    same probabilities); it changes the probabilities but not the boxes."""
    items = sample_images()[:3]
    plain = fastes.Pipeline()
    with fastes.Pipeline(tta=4) as tta, fastes.Pipeline(tta=4, workers=2) as par:
        assert tta.classifier.name.endswith("+tta4")
        a, b = [tta.run(p) for p in items], list(par.run_batch(items))
        for fa, fb, fp in zip(a, b, (plain.run(p) for p in items)):
            assert [f.box for f in fa] == [f.box for f in fb] == [f.box for f in fp]
            np.testing.assert_allclose([f.probs for f in fa], [f.probs for f in fb], atol=1e-6)
            assert not np.allclose([f.probs for f in fa], [f.probs for f in fp], atol=1e-4)
    with pytest.raises(ValueError, match="tta"):
        fastes.Pipeline(tta=-1)


def test_worker_threads_have_their_own_detectors_and_share_the_landmark_model():
    """Interpreters are not shared between threads: each worker deep-copies the
    configured detector (Haar here); the read-only landmark model is one object."""
    import threading

    finder = fastes.FaceFinder("haar")
    seen = {}
    with fastes.Pipeline(detector=finder, workers=2) as par:
        real = par._worker_run

        def spy(image):
            out = real(image)
            seen[threading.get_ident()] = par._local.pipe
            return out

        par._worker_run = spy
        items = sample_images() * 3
        got = list(par.run_batch(items))
    assert [len(f) for f in got] == [1] * len(items)
    pipes = list(seen.values())
    assert len(pipes) >= 1 and all(p.detector is not finder for p in pipes)
    assert all(p.detector.detector is not finder.detector for p in pipes)
    assert len({id(p.detector._predictor) for p in pipes} | {id(finder._predictor)}) == 1
    if len(pipes) == 2:
        assert pipes[0].detector is not pipes[1].detector


def test_model_not_found():
    with pytest.raises(ModelError, match="not found"):
        fastes.Pipeline(model="no_such_model")


def _table(path):
    if path.suffix == ".jsonl":
        return [json.loads(x) for x in path.read_text().splitlines()]
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("workers", [1, 2])
def test_cli_run_folder_rows_for_every_input_and_resume(tmp_path, workers):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    for p in sample_images()[:2]:
        (src / "sub" / p.name).write_bytes(p.read_bytes())
    (src / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (src / "truncated.jpg").write_bytes(sample_images()[1].read_bytes()[:5000])
    (src / "notes.txt").write_text("not an image")
    cv2.imwrite(str(src / "blank.png"), np.zeros((120, 160), np.uint8))
    out = tmp_path / "r.csv"
    rc = main(["run", str(src), "--out", str(out), "--annotate", str(tmp_path / "ann"),
               "--save-sketches", str(tmp_path / "sk"), "--no-progress", "--workers", str(workers)])
    assert rc == 1  # unreadable inputs
    rows = _table(out)
    by = {Path(r["source"]).name: r for r in rows}
    assert set(by) == {"blank.png", "broken.jpg", "truncated.jpg", "notes.txt", *[p.name for p in sample_images()[:2]]}
    assert len(rows) == 6  # one row per input (each sample has one face)
    assert by["blank.png"]["error"] == "no face found"
    assert by["broken.jpg"]["error"] and by["notes.txt"]["error"] and "truncated.jpg" in by
    good = [r for r in rows if r["label"]]
    assert all(r["label"] in fastes.CLASSES for r in good) and len(good) >= 2
    assert len(list((tmp_path / "sk" / "sub").glob("*_face0.png"))) == 2
    assert (tmp_path / "ann" / "sub").is_dir()
    # --resume keeps the earlier rows and processes nothing twice
    rc = main(["run", str(src), "--out", str(out), "--resume", "--no-progress"])
    assert len(_table(out)) == 6


def test_cli_run_interrupted_keeps_complete_rows_only(tmp_path, monkeypatch):
    import fastes.pipeline as fp

    calls = {"n": 0}
    real = fp.Pipeline.run

    def run_then_interrupt(self, image):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, image)

    monkeypatch.setattr(fp.Pipeline, "run", run_then_interrupt)
    out = tmp_path / "r.csv"
    assert main(["run", *map(str, sample_images()[:4]), "--out", str(out), "--no-progress"]) == 130
    rows = _table(out)
    assert [Path(r["source"]).name for r in rows] == [p.name for p in sample_images()[:2]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv"]  # no temp file left
    monkeypatch.undo()
    assert main(["run", *map(str, sample_images()[:4]), "--out", str(out), "--resume", "--no-progress"]) == 0
    assert len(_table(out)) == 4


def test_cli_run_video_every_n_frames_jsonl(tmp_path):
    img = cv2.imread(str(sample_images()[0]))
    img = cv2.resize(img, (320, 320))
    vid = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(vid), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 320))
    for _ in range(10):
        w.write(img)
    w.release()
    out = tmp_path / "v.jsonl"
    assert main(["run", str(vid), "--every", "3", "--out", str(out), "--landmarks", "--smooth", "0.6",
                 "--no-progress"]) == 0
    rows = _table(out)
    assert [r["frame"] for r in rows] == [0, 3, 6, 9]
    assert rows[1]["timestamp"] == pytest.approx(0.3)
    assert np.array(rows[0]["landmarks"]).shape == (68, 2)
    assert {r["track"] for r in rows} == {0}  # one face followed through the clip
    assert main(["run", str(vid), "--every", "5", "--out", str(tmp_path / "v2.csv"), "--annotate",
                 str(tmp_path / "ann"), "--no-progress"]) == 0
    cap = cv2.VideoCapture(str(tmp_path / "ann" / "clip.avi"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 2  # frames 0 and 5, annotated
    cap.release()


def test_cli_run_usage_errors(tmp_path, capsys):
    assert main(["run", "--out", str(tmp_path / "r.txt"), str(sample_images()[0])]) == 2
    assert main(["run", str(tmp_path / "missing_folder_only"), "--out", str(tmp_path / "m.csv")]) in (1, 2)
    assert main(["run", str(sample_images()[0]), "--model", "nope", "--out", str(tmp_path / "r.csv")]) == 2
    assert "not found" in capsys.readouterr().err


def test_demo(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "CC BY 4.0" in out and "london_001_happiness.jpg" in out
    assert len(_table(tmp_path / "d" / "results.csv")) == 6
    assert len(list((tmp_path / "d" / "annotated").glob("*.png"))) == 6


def test_tracker_keeps_ids_and_smooths():
    from fastes.pipeline import Face, Tracker

    def face(x, p):
        return Face((x, 10, 50, 50), np.zeros((68, 2)), np.array(p, float), np.zeros((68, 2)))

    t = Tracker(alpha=0.5)
    assert t.update([face(0, [1, 0, 0, 0]), face(200, [0, 1, 0, 0])]) == [0, 1]
    f = face(5, [0, 0, 1, 0])
    assert t.update([face(205, [0, 1, 0, 0]), f]) == [1, 0]   # matched by overlap, not order
    np.testing.assert_allclose(f.probs, [0.5, 0, 0.5, 0])
    assert f.label in ("positive", "awe")
    assert t.update([face(400, [0, 0, 0, 1])]) == [2]          # no overlap: a new track


def test_folders_are_scanned_by_content(tmp_path):
    from fastes.cli import collect_inputs

    img = sample_images()[0]
    (tmp_path / "photo_without_suffix").write_bytes(img.read_bytes())
    (tmp_path / "notes.txt").write_text("not an image")
    names = [rel.name for _, rel in collect_inputs([str(tmp_path)])]
    assert names == ["photo_without_suffix"]


def _moving_clip(n=20, vanish=()):
    face = cv2.resize(cv2.imread(str(sample_images()[0])), (300, 300))
    frames = []
    for t in range(n):
        f = np.full((480, 640, 3), 110, np.uint8)
        if t not in vanish:
            x, y = int(170 + 150 * np.sin(t / 10)), int(90 + 60 * np.cos(t / 7))
            f[y:y + 300, x:x + 300] = face
        frames.append(f)
    return frames


class _CountingDetector:
    def __init__(self, det):
        self.det, self.calls = det, 0

    def __getattr__(self, name):
        return getattr(self.det, name)

    def __call__(self, *a, **k):
        self.calls += 1
        return self.det(*a, **k)


def test_video_tracking_between_detections(pipe):
    frames = _moving_clip()
    counted = _CountingDetector(pipe.detector.detector)
    finder = fastes.FaceFinder(counted)
    p = fastes.Pipeline(detector=finder)
    every = [f[0].landmarks for f in p.run_video(frames, detect_every=1)]
    assert counted.calls == len(frames)
    counted.calls = 0
    tracked = list(p.run_video(frames, detect_every=5))
    assert counted.calls <= len(frames) // 5 + 2  # detection on every 5th frame (+ re-detections)
    for a, b in zip(tracked, every):
        assert len(a) == 1
        iod = np.linalg.norm(b[36:42].mean(0) - b[42:48].mean(0))
        assert np.linalg.norm(a[0].landmarks - b, axis=1).mean() < 0.06 * iod
    # a face that leaves is not tracked as a ghost: the frames without it have no face
    gone = list(p.run_video(_moving_clip(12, vanish=range(4, 8)), detect_every=10))
    assert [len(f) for f in gone] == [1] * 4 + [0] * 4 + [1] * 4
    with pytest.raises(ValueError, match="detect_every"):
        list(p.run_video(frames, detect_every=0))


def test_cli_run_video_detect_every(tmp_path):
    path = tmp_path / "clip.avi"
    frames = _moving_clip(12)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (640, 480))
    for f in frames:
        w.write(f)
    w.release()
    out = tmp_path / "r.csv"
    assert main(["run", str(path), "--out", str(out), "--detect-every", "4", "--no-progress"]) == 0
    rows = _table(out)
    assert len(rows) == 12 and all(r["label"] in fastes.CLASSES for r in rows)
    assert main(["run", str(path), "--out", str(out), "--detect-every", "0"]) == 2


def test_webcam_live_window_and_headless_rows(tmp_path, monkeypatch, capsys):
    """--webcam: rows only on headless OpenCV; with a GUI, an annotated window that q closes."""
    import fastes.batch as batch
    import fastes.cli.run as cli

    assert not cli._gui_available() or cv2.getBuildInformation().find("GUI") >= 0
    frames = _moving_clip(6)
    monkeypatch.setattr(batch, "_frames", lambda path, every, webcam=None, read=None:
                        ((i, i / 25, f) for i, f in enumerate(frames)))
    out = tmp_path / "cam.csv"
    monkeypatch.setattr(cli, "_gui_available", lambda: False)
    assert main(["run", "--webcam", "0", "--out", str(out), "--no-progress"]) == 0
    assert len(_table(out)) == 6
    printed = [x for x in capsys.readouterr().out.splitlines() if x.startswith("frame ")]
    assert len(printed) == 6 and printed[0].startswith("frame 0 face 0")
    shown, keys = [], iter([-1, -1, ord("q")])
    monkeypatch.setattr(cli, "_gui_available", lambda: True)
    monkeypatch.setattr(cv2, "imshow", lambda name, img: shown.append(img.shape))
    monkeypatch.setattr(cv2, "waitKey", lambda ms: next(keys))
    out2 = tmp_path / "cam2.csv"
    assert main(["run", "--webcam", "0", "--out", str(out2), "--no-progress"]) == 0
    assert shown == [(480, 640, 3)] * 3 and len(_table(out2)) == 3  # q after the third frame


def test_cli_run_parquet_rows_and_resume(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow (dev extra) for parquet output")
    out = tmp_path / "r.parquet"
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    assert main(["run", str(sample_images()[0]), str(bad), "--out", str(out), "--landmarks", "--no-progress"]) == 1
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 2 and rows[0]["label"] in fastes.CLASSES and len(rows[0]["landmarks"]) == 68
    assert rows[1]["error"] and rows[1]["label"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.png", "r.parquet"]  # no temp left
    assert main(["run", str(sample_images()[0]), str(sample_images()[1]), "--out", str(out), "--resume",
                 "--no-progress"]) == 0
    assert len(pq.read_table(out).to_pylist()) == 3


def test_python_m_fastes_with_workers(tmp_path):
    """`python -m fastes run --workers 2` runs once and writes every row."""
    import subprocess
    import sys

    out = tmp_path / "r.csv"
    r = subprocess.run([sys.executable, "-m", "fastes", "run", *map(str, sample_images()[:3]), "--workers", "2",
                        "--out", str(out), "--no-progress"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(_table(out)) == 3


def test_degenerate_landmarks_are_no_face_for_every_model(sample_landmarks):
    """A face whose landmarks cannot be drawn is left out, not labelled from a blank
    sketch (which crashes some int8 models)."""
    from fastes.face import Faces
    from fastes.pipeline import shipped_models

    good = sample_landmarks[0].astype(np.float32)
    flat = good.copy()
    flat[:, 0] = 100.0  # zero face width
    nan = good.copy()
    nan[5] = np.nan

    class Stub:
        def __call__(self, image, order="bgr", thumbs=False):
            lms = np.stack([flat, good, nan])
            return Faces(np.array([[0, 0, 100, 100], [100, 0, 100, 100], [200, 0, 100, 100]], np.int32), lms)

    for name in ["default", *[n for n in shipped_models() if n.startswith("capsnet")]]:
        pipe = fastes.Pipeline(name)
        pipe.detector = Stub()
        faces = pipe.run(np.zeros((100, 300, 3), np.uint8))
        assert [f.box for f in faces] == [(100, 0, 100, 100)]
        np.testing.assert_allclose(faces[0].crop_landmarks, good)
