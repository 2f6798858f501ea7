"""Training, conversion and evaluation end to end on a tiny model (seconds, runs in CI)."""
import csv
import json

import numpy as np
import pytest

from fastes import sketch
from fastes.sketch import MIRROR, augment, render

pytest.importorskip("keras")


def _iou(a, b):
    a, b = a > 0, b > 0
    return (a & b).sum() / max(1, (a | b).sum())


def test_mirror_permutation_is_an_involution_that_swaps_sides():
    assert sorted(MIRROR) == list(range(68))
    assert (MIRROR[MIRROR] == np.arange(68)).all()
    assert MIRROR[0] == 16 and MIRROR[36] == 45 and MIRROR[48] == 54 and MIRROR[30] == 30


def test_mirrored_landmarks_draw_the_mirrored_sketch(sample_landmarks):
    lm = sample_landmarks[:3]
    m = augment(lm, np.random.default_rng(0), rotate=0, jitter=0, mirror=True)
    m = np.where(np.abs(m - lm).sum((1, 2), keepdims=True) > 0, m, augment(lm, np.random.default_rng(1), 0, 0))
    for a, b in zip(lm, m):
        if np.allclose(a, b):
            continue
        # remapped x' becomes 250 - x', the canvas flip maps column c to 249 - c: one px apart
        flipped = np.roll(sketch(a)[:, ::-1], 1, axis=1)
        assert _iou(sketch(b), flipped) > 0.9


def test_augment_identity_and_seeded(sample_landmarks):
    lm = sample_landmarks
    same = augment(lm, np.random.default_rng(0), rotate=0, jitter=0, mirror=False)
    np.testing.assert_allclose(same, lm, atol=1e-4)
    a = augment(lm, np.random.default_rng(5))
    b = augment(lm, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, lm)


def test_training_inputs_follow_the_configured_augmentation(sample_landmarks):
    from fastes.train import FaceSet, TrainConfig, inputs_fn

    n = len(sample_landmarks)
    data = FaceSet([f"{i}.png" for i in range(n)], sample_landmarks, np.ones(n, bool), np.zeros(n, np.int64),
                   np.arange(n).astype(str), {})
    plain = render(sample_landmarks, 48)
    off = inputs_fn(data, TrainConfig(size=48, rotate=0, jitter=0, mirror=False))
    np.testing.assert_array_equal(off(3), plain)  # nothing to vary: every epoch the same
    mirror_only = inputs_fn(data, TrainConfig(size=48, rotate=0, jitter=0, mirror=True))
    drawn = [mirror_only(ep) for ep in range(6)]
    flipped = render(augment(sample_landmarks, np.random.default_rng(0), rotate=0, jitter=0, mirror=False)
                     [:, MIRROR] * [-1, 1] + [249, 0], 48)
    for x in drawn:  # each sketch is the plain one or its mirror image, nothing else
        for i in range(n):
            assert np.array_equal(x[i], plain[i]) or np.array_equal(x[i], flipped[i])
    assert any(not np.array_equal(x, plain) for x in drawn)


def test_render_blank_rows_for_missed_and_degenerate_faces(sample_landmarks):
    lm = np.array(sample_landmarks[:3])
    lm[2, 16] = lm[2, 0]  # x16 == x0: degenerate
    x = render(lm, 32, found=np.array([True, False, True]))
    assert x.shape == (3, 32, 32, 1) and x.dtype == np.float32
    assert set(np.unique(x)) <= {0.0, 1.0}
    assert x[0].sum() > 0 and x[1].sum() == 0 and x[2].sum() == 0


def test_supersampled_network_input_keeps_sub_pixel_positions(sample_landmarks):
    pytest.importorskip("keras")
    import keras

    from fastes.nets import build
    from fastes.runtime import KerasClassifier

    lm = np.repeat(np.array(sample_landmarks[:1]), 8, axis=0)
    lm[:, 48:60, 1] += np.arange(8)[:, None] * 0.5  # the mouth lowered in steps of ~0.1 px at 48 px
    rows = np.arange(48, dtype=np.float32)[:, None]

    def mouth_row(x):  # ink-weighted mean row of the mouth (the lower third of the sketch)
        m = x[:, 32:, :, 0]
        return (m * rows[32:]).sum(axis=(1, 2)) / m.sum(axis=(1, 2))

    model = build("vgg11", 48, width=0.25, supersample=4)
    assert model.input_shape == (None, 192, 192, 1)  # the runtime draws at this size, as for any model
    pooled = keras.Model(model.input, model.get_layer("supersample").output)
    grey = np.asarray(pooled.predict(render(lm, 192), verbose=0))
    assert grey.shape == (8, 48, 48, 1) and grey.min() >= 0 and grey.max() <= 1 and len(np.unique(grey)) > 2
    assert (np.diff(mouth_row(grey)) > 0).all()  # every step shows
    assert (np.diff(mouth_row(render(lm, 48))) == 0).any()  # the binary 48-px drawing misses some
    clf = KerasClassifier.from_model(model, "ss4")
    assert clf.input_size == 192 and clf(lm).shape == (8, 4)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, faces_dir, manifest):
    """A VGG11 at 32 px trained for 2 epochs on 24 London faces, through the CLI."""
    from fastes.cli import main

    d = tmp_path_factory.mktemp("tiny")
    rows = [r for r in manifest if r["dataset"] == "london"]
    rows = [r for r in rows if r["class4"] == "positive"][:12] + [r for r in rows if r["class4"] == "neutral"][:12]
    with open(d / "m.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({**r, "path": str(faces_dir / r["path"])})
    mp = pytest.MonkeyPatch()
    mp.setenv("FASTES_CACHE", str(d / "cache"))
    rc = main(["train", "--net", "vgg11", "--size", "32", "--epochs", "2", "--manifest", str(d / "m.csv"),
               "--datasets", "london", "--out", str(d / "run"), "--no-progress"])
    assert rc == 0
    yield d
    mp.undo()


def test_train_writes_model_history_config(tiny_run):
    run = tiny_run / "run"
    assert {p.name for p in run.iterdir()} == {"model.keras", "history.json", "config.json", "report.md"}
    hist = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2]
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["input_size"] == 32 and cfg["n_train"] == 24 and len(cfg["data_digest"]) == 16
    from fastes.cli import TRAIN_DETECTOR

    assert cfg["detector"] == TRAIN_DETECTOR


def test_train_refuses_to_overwrite(tiny_run, capsys):
    from fastes.cli import main

    rc = main(["train", "--net", "vgg11", "--out", str(tiny_run / "run"), "--manifest", str(tiny_run / "m.csv")])
    assert rc == 2 and "exists" in capsys.readouterr().err


def test_train_resumes_after_an_interruption(tiny_run, monkeypatch):
    import fastes.train as ft
    from fastes.cli import main

    real, calls = ft.render, {"n": 0}

    def render_then_interrupt(*a, **k):  # call 1: fixed inputs, 2: epoch 1, 3: epoch 2
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(ft, "render", render_then_interrupt)
    args = ["train", "--net", "capsnet", "--size", "24", "--epochs", "3", "--manifest", str(tiny_run / "m.csv"),
            "--datasets", "london", "--out", str(tiny_run / "res"), "--no-progress"]
    assert main(args) == 130
    state = json.loads((tiny_run / "res" / "checkpoint.json").read_text())
    assert state["epoch"] == 1 and not (tiny_run / "res" / "model.keras").exists()
    monkeypatch.setattr(ft, "render", real)
    assert main(args + ["--resume"]) == 0
    hist = json.loads((tiny_run / "res" / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    assert not (tiny_run / "res" / "checkpoint.json").exists()


@pytest.mark.parametrize("net,epochs", [("vgg11", 60), ("capsnet", 40), ("resnet50", 20)])
def test_train_defaults_to_each_nets_recipe(tiny_run, monkeypatch, net, epochs):
    import fastes.train as ft
    from fastes.cli import main

    seen = {}

    def record(data, cfg, out, **kw):  # stop before any training
        seen["cfg"] = cfg
        raise KeyboardInterrupt

    monkeypatch.setattr(ft, "train", record)
    args = ["train", "--net", net, "--manifest", str(tiny_run / "m.csv"), "--datasets", "london",
            "--out", str(tiny_run / f"default_{net}"), "--no-progress"]
    assert main(args) == 130 and seen["cfg"].epochs == epochs
    assert main(args + ["--epochs", "3"]) == 130 and seen["cfg"].epochs == 3


def test_training_is_reproducible_from_the_seed(tiny_run):
    """Two runs of the same command give the same weights (the initial weights too: they
    were once drawn unseeded, and each run differed)."""
    keras = pytest.importorskip("keras")
    from fastes.cli import main

    args = ["train", "--net", "vgg11", "--size", "32", "--epochs", "2", "--manifest", str(tiny_run / "m.csv"),
            "--datasets", "london", "--no-progress"]
    keras.utils.set_random_seed(123)  # whatever state the process is in before
    assert main(args + ["--out", str(tiny_run / "again")]) == 0
    a = keras.saving.load_model(tiny_run / "run" / "model.keras", compile=False).get_weights()
    b = keras.saving.load_model(tiny_run / "again" / "model.keras", compile=False).get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert main(args + ["--seed", "1", "--out", str(tiny_run / "seed1")]) == 0
    c = keras.saving.load_model(tiny_run / "seed1" / "model.keras", compile=False).get_weights()
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_evaluate_keras_json_and_report(tiny_run):
    from fastes.cli import main

    out = tiny_run / "eval.json"
    rc = main(["evaluate", str(tiny_run / "m.csv"), "--model", str(tiny_run / "run" / "model.keras"),
               "--json", str(out), "--report", str(tiny_run / "rep"), "--no-progress"])
    assert rc == 0
    m = json.loads(out.read_text())
    for key in ("n", "detected", "accuracy", "accuracy_detected", "macro_f1", "confusion", "per_group"):
        assert key in m
    assert m["n"] == 24 and np.array(m["confusion"]).sum() == m["detected"]
    assert m["per_group"]["dataset"]["london"]["n"] == 24
    assert {p.name for p in (tiny_run / "rep").iterdir()} == {"report.md", "confusion.png", "groups.png"}


def test_convert_int8_io_and_run_with_litert(tiny_run):
    from fastes.cli import main
    from fastes.runtime import load_classifier

    cal = render(np.repeat(_landmarks(tiny_run), 4, axis=0), 32)
    np.save(tiny_run / "cal.npy", cal)
    out = tiny_run / "m.tflite"
    rc = main(["convert", str(tiny_run / "run" / "model.keras"), "--out", str(out), "--quantize", "int8",
               "--int8-io", "--calibration", str(tiny_run / "cal.npy"), "--min-agreement", "0"])
    assert rc == 0 and out.stat().st_size > 0
    clf = load_classifier(out)
    assert clf.input_size == 32 and clf._in["dtype"] == np.int8
    p = clf.predict(cal[:5])
    assert p.shape == (5, 4) and np.allclose(p.sum(1), 1, atol=1e-5)
    # same numbers through the evaluate command as for the Keras model
    rc = main(["evaluate", str(tiny_run / "m.csv"), "--model", str(out), "--json", str(tiny_run / "t.json"),
               "--no-progress"])
    assert rc == 0 and json.loads((tiny_run / "t.json").read_text())["n"] == 24


def _activation_ranges(content):
    """(scale, zero point) of every int8 activation tensor (weights and biases excluded)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=content)
    out = {}
    for t in it.get_tensor_details():
        qp = t["quantization_parameters"]
        if t["dtype"] == np.int8 and len(qp["scales"]) == 1 and "weights" not in t["name"].lower():
            out[t["name"]] = (float(qp["scales"][0]), int(qp["zero_points"][0]))
    return out


def test_percentile_calibration_narrows_ranges_and_at_100_keeps_a_plain_nets_ranges(tiny_run):
    from fastes.convert import convert, run_tflite

    cal = render(np.repeat(_landmarks(tiny_run), 2, axis=0), 32)
    kw = dict(calibration=cal, verify=cal, min_agreement=0.0)
    m = tiny_run / "run" / "model.keras"
    plain = convert(m, quantize="int8", **kw)["bytes"]
    same = convert(m, quantize="int8", percentile=100.0, **kw)["bytes"]
    clipped = convert(m, quantize="int8", percentile=90.0, **kw)["bytes"]
    # at the 100th percentile the ranges are the exact min/max, which TFLite's calibrator
    # also records for a plain chain of layers (it is off only around residual sums), up
    # to float rounding between its kernels and these: the same scales within 1 %, and
    # outputs within a quantization step or two
    a, b, c = _activation_ranges(plain), _activation_ranges(clipped), _activation_ranges(same)
    common = sorted(set(a) & set(b) & set(c))
    assert len(common) >= 5
    assert all(abs(c[k][0] / a[k][0] - 1) < 0.01 for k in common)
    np.testing.assert_allclose(run_tflite(same, cal), run_tflite(plain, cal), atol=2.5 / 256)
    # never wider, and narrower somewhere (ReLU outputs have long upper tails)
    assert all(b[k][0] <= a[k][0] * (1 + 1e-6) for k in common)
    assert sum(b[k][0] < 0.95 * a[k][0] for k in common) >= 3


def test_percentile_calibration_with_int8_io_and_bad_values(tiny_run, capsys):
    from fastes.cli import main
    from fastes.convert import ConversionError, convert
    from fastes.runtime import load_classifier

    cal = render(_landmarks(tiny_run), 32)
    np.save(tiny_run / "cal_p.npy", np.concatenate([cal, cal]))
    out = tiny_run / "p.tflite"
    rc = main(["convert", str(tiny_run / "run" / "model.keras"), "--out", str(out), "--int8-io",
               "--percentile", "99.9", "--calibration", str(tiny_run / "cal_p.npy"), "--min-agreement", "0"])
    assert rc == 0
    clf = load_classifier(out)
    assert clf._in["dtype"] == np.int8 and clf.predict(cal[:3]).shape == (3, 4)
    for p, q in ((99.9, "dynamic"), (30.0, "int8"), (101.0, "int8")):
        with pytest.raises(ConversionError, match="percentile"):
            convert(tiny_run / "run" / "model.keras", quantize=q, percentile=p, calibration=cal, verify=cal)
    capsys.readouterr()
    assert main(["convert", str(tiny_run / "run" / "model.keras"), "--out", str(out), "--percentile", "40"]) == 2
    assert "--percentile needs --quantize int8" in capsys.readouterr().err  # a usage error, before any work


def test_supersampled_model_trains_converts_and_runs(tiny_run, capsys):
    """--supersample: the model file takes the larger sketch, and everything downstream
    (int8 conversion, the runtime, evaluate) just draws at its input size."""
    from fastes.cli import main
    from fastes.runtime import load_classifier

    args = ["train", "--net", "vgg11", "--size", "32", "--epochs", "1", "--manifest", str(tiny_run / "m.csv"),
            "--datasets", "london", "--no-progress", "--width", "0.25"]
    assert main(args + ["--supersample", "0", "--out", str(tiny_run / "ss0")]) == 2
    assert "--supersample" in capsys.readouterr().err
    assert main(args + ["--supersample", "2", "--out", str(tiny_run / "ss2")]) == 0
    assert "drawn at 64 px" in (tiny_run / "ss2" / "report.md").read_text()
    cal = render(np.repeat(_landmarks(tiny_run), 4, axis=0), 64)
    np.save(tiny_run / "cal64.npy", cal)
    out = tiny_run / "ss2.tflite"
    assert main(["convert", str(tiny_run / "ss2" / "model.keras"), "--out", str(out), "--quantize", "int8",
                 "--calibration", str(tiny_run / "cal64.npy"), "--min-agreement", "0"]) == 0
    clf = load_classifier(out)
    assert clf.input_size == 64 and clf(_landmarks(tiny_run)).shape == (24, 4)
    assert main(["evaluate", str(tiny_run / "m.csv"), "--model", str(out), "--json", str(tiny_run / "ss.json"),
                 "--no-progress"]) == 0
    assert json.loads((tiny_run / "ss.json").read_text())["n"] == 24


def test_cross_validation_resumes_from_its_workdir(tiny_run, monkeypatch):
    import h5py

    import fastes.train as ft
    from fastes.train import TrainConfig, cross_validate, fold_model, load_faces

    data = load_faces(tiny_run / "m.csv", datasets=None, progress=False)
    cfg = TrainConfig(net="vgg11", size=32, epochs=1, width=0.25)
    wd = tiny_run / "cvwork"
    first = cross_validate(data, cfg, k=2, progress=False, workdir=wd)
    assert sorted(p.name for p in wd.iterdir()) == ["fold0.npz", "fold0.weights.h5", "fold1.npz", "fold1.weights.h5"]
    with h5py.File(wd / "fold0.weights.h5") as h:
        assert "optimizer" not in h  # the weights only: Keras would add AdamW's moments (2x more)
    te = (first["folds"] == 0) & data.found  # the stored weights are the fold's network
    np.testing.assert_allclose(fold_model(cfg, wd, 0).predict(render(data.landmarks[te], 32), verbose=0),
                               first["probs"][te], atol=1e-6)

    def no_training(*a, **k):
        raise AssertionError("a finished fold was trained again")

    monkeypatch.setattr(ft, "fit", no_training)
    again = cross_validate(data, cfg, k=2, progress=False, workdir=wd, quantize="int8")
    np.testing.assert_array_equal(again["probs"], first["probs"])
    assert again["seconds"] == pytest.approx(first["seconds"])
    assert len(again["agreement"]) == 2 and np.isfinite(again["probs_tflite"][data.found]).all()


def test_experiment_inputs_draw_inner_lips_and_supersample_when_asked(tiny_run):
    from fastes.train import TrainConfig, inputs_fn, load_faces

    data = load_faces(tiny_run / "m.csv", datasets=None, progress=False)
    paper = inputs_fn(data, TrainConfig(size=48, augment=False))(0)
    inner = inputs_fn(data, TrainConfig(size=48, augment=False, inner_mouth=True))(0)
    np.testing.assert_array_equal(paper, render(data.landmarks[data.found], 48))  # default: the paper's sketch
    assert (inner >= paper).all() and (inner > paper).any(axis=(1, 2, 3)).all()  # more ink on every face
    big = inputs_fn(data, TrainConfig(size=48, augment=False, supersample=4))(0)
    np.testing.assert_array_equal(big, render(data.landmarks[data.found], 192))  # the model averages it down


def test_cross_validation_keeps_its_pretraining_in_the_workdir(tiny_run, monkeypatch):
    import fastes.train as ft
    from fastes.train import TrainConfig, cross_validate, load_faces

    data = load_faces(tiny_run / "m.csv", datasets=None, progress=False)
    cfg = TrainConfig(net="vgg11", size=32, epochs=1, width=0.25, pretrain="wild", pretrain_epochs=1)
    wd = tiny_run / "cvwork_pre"
    first = cross_validate(data, cfg, k=2, progress=False, wild=data, workdir=wd)
    assert (wd / "pretrained.weights.h5").exists() and not list(wd.glob(".*.tmp.*"))  # no temp file left
    (wd / "fold1.npz").unlink()  # as if killed during fold 1
    calls, real = [], ft.fit
    monkeypatch.setattr(ft, "fit", lambda *a, **k: calls.append(k["desc"]) or real(*a, **k))
    again = cross_validate(data, cfg, k=2, progress=False, wild=data, workdir=wd)
    assert calls == ["vgg11 fold 2/2"]  # neither the pre-training nor fold 0 redone
    np.testing.assert_array_equal(again["probs"], first["probs"])  # same pre-trained start, same seed
    calls.clear()
    cross_validate(data, cfg, k=2, progress=False, wild=data, workdir=wd)
    assert calls == []


def test_convert_refuses_on_disagreement(tiny_run, monkeypatch):
    import fastes.convert as fc

    cal = render(_landmarks(tiny_run), 32)
    real = fc.run_tflite  # the converted model's answers, each moved to the next class
    monkeypatch.setattr(fc, "run_tflite", lambda content, x: np.roll(real(content, x), 1, axis=1))
    with pytest.raises(fc.ConversionError, match="agreement"):
        fc.convert(tiny_run / "run" / "model.keras", tiny_run / "bad.tflite", "none", calibration=cal, verify=cal,
                   min_agreement=1.0)
    assert not (tiny_run / "bad.tflite").exists()


def _landmarks(d):
    from fastes.train import load_faces

    return load_faces(d / "m.csv", datasets=None, progress=False).landmarks


def test_landmark_network_trains_converts_runs_and_evaluates(tiny_run):
    """The landmark network end to end: soft-target training, int8 conversion by the CLI,
    the runtime telling it from a sketch model by its input shape, the evaluate command."""
    from fastes.cli import main
    from fastes.runtime import KerasLandmarkClassifier, TFLiteLandmarkClassifier, load_classifier
    from fastes.train import LandmarkConfig, landmark_inputs, load_faces, train_landmarks

    data = load_faces(tiny_run / "m.csv", datasets=None, progress=False)
    out = tiny_run / "lm"
    _, hist = train_landmarks(data, LandmarkConfig(epochs=2, hidden=(16, 16)), progress=False, out_dir=out)
    assert [h["epoch"] for h in hist] == [1, 2]
    meta = json.loads((out / "config.json").read_text())
    assert meta["n_train"] == 24 and meta["data_digest"] == data.digest()
    k = load_classifier(out / "model.keras")
    assert isinstance(k, KerasLandmarkClassifier) and k.input_size == 0 and k.input_shape == (136,)
    rng = np.random.default_rng(0)
    cal = landmark_inputs(np.concatenate([augment(data.landmarks, rng) for _ in range(8)]))
    np.save(tiny_run / "lm_cal.npy", cal)
    rc = main(["convert", str(out / "model.keras"), "--out", str(tiny_run / "lm.tflite"), "--quantize", "int8",
               "--calibration", str(tiny_run / "lm_cal.npy"), "--min-agreement", "0"])
    assert rc == 0
    clf = load_classifier(tiny_run / "lm.tflite")
    assert isinstance(clf, TFLiteLandmarkClassifier) and clf.input_shape == (136,)
    p, pk = clf(data.landmarks), k(data.landmarks)
    assert p.shape == (24, 4) and np.allclose(p.sum(1), 1, atol=1e-5)
    assert np.abs(p - pk).max() < 0.2  # int8 near the float model
    rc = main(["evaluate", str(tiny_run / "m.csv"), "--model", str(tiny_run / "lm.tflite"), "--json",
               str(tiny_run / "lm.json"), "--no-progress"])
    assert rc == 0 and json.loads((tiny_run / "lm.json").read_text())["n"] == 24


def test_landmark_network_learns_seven_emotions_summed_into_four(tiny_run):
    """--fine-labels for the landmark network: a 7-emotion head, a fixed sum into the 4
    classes in the file, the emotions kept for re-scoring; refused without an emotion per row."""
    from fastes.data import EMOTION_CLASS
    from fastes.protocol import LandmarkLearner
    from fastes.train import LandmarkConfig, load_faces, train_landmarks

    data = load_faces(tiny_run / "m.csv", datasets=None, progress=False)
    assert (data.fine.sum(1) > 0).all()
    cfg = LandmarkConfig(epochs=2, hidden=(16, 16), fine_labels=True)
    learner = LandmarkLearner(cfg, out_dir=tiny_run / "lm_fine")
    learner.fit(data)
    assert learner.model.get_layer("head").units == 7 and learner.model.output.shape[-1] == 4
    assert json.loads((tiny_run / "lm_fine" / "config.json").read_text())["config"]["fine_labels"] is True
    p, e = learner.predict(data.landmarks), learner.predict_fine(data.landmarks)
    assert p.shape == (24, 4) and e.shape == (24, 7)
    np.testing.assert_allclose(e @ np.eye(4)[EMOTION_CLASS], p, atol=1e-5)
    learner.tta = 4  # augmented class probabilities; the kept emotions stay the plain model's
    pt = learner.predict(data.landmarks)
    assert pt.shape == (24, 4) and np.allclose(pt.sum(1), 1, atol=1e-5) and not np.allclose(pt, p, atol=1e-6)
    np.testing.assert_allclose(learner.predict_fine(data.landmarks), e, atol=1e-6)
    assert LandmarkLearner(LandmarkConfig()).predict_fine(data.landmarks) is None
    data.fine[0] = 0  # a row whose emotion is unknown
    with pytest.raises(ValueError, match="emotion"):
        train_landmarks(data, cfg, progress=False)


def test_landmark_models_of_either_input_shape_and_bad_shapes():
    import keras

    from fastes.runtime import KerasLandmarkClassifier, ModelError, landmark_features

    lm = np.tile(np.linspace(40, 210, 136, dtype=np.float32).reshape(1, 68, 2), (3, 1, 1))
    inp = keras.Input((68, 2))
    m = keras.Model(inp, keras.layers.Dense(4, activation="softmax")(keras.layers.Flatten()(inp)))
    clf = KerasLandmarkClassifier.from_model(m)
    assert clf.input_shape == (68, 2) and clf(lm).shape == (3, 4)
    np.testing.assert_allclose(landmark_features(lm, (68, 2)).reshape(3, -1), landmark_features(lm))
    bad = keras.Input((10,))
    with pytest.raises(ModelError, match=r"expected input \(N, 136\) or \(N, 68, 2\)"):
        KerasLandmarkClassifier.from_model(keras.Model(bad, keras.layers.Dense(4)(bad)))


def test_landmark_training_resumes_after_an_interruption(tiny_run, monkeypatch, tmp_path):
    import fastes.train as T

    data = T.load_faces(tiny_run / "m.csv", datasets=None, progress=False)
    cfg = T.LandmarkConfig(epochs=3, hidden=(8,))
    full, _ = T.train_landmarks(data, cfg, progress=False, out_dir=tmp_path / "a")
    calls = {"n": 0}
    real = T.augment

    def failing(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(T, "augment", failing)
    with pytest.raises(KeyboardInterrupt):
        T.train_landmarks(data, cfg, progress=False, out_dir=tmp_path / "b")
    assert json.loads((tmp_path / "b" / "checkpoint.json").read_text())["epoch"] == 2
    monkeypatch.setattr(T, "augment", real)
    resumed, hist = T.train_landmarks(data, cfg, progress=False, out_dir=tmp_path / "b")
    assert [h["epoch"] for h in hist] == [1, 2, 3] and not (tmp_path / "b" / "checkpoint.keras").exists()
    for a, b in zip(full.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=5e-3)  # float noise only


def _bn_model(seed: int = 0):
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(seed)
    inp = keras.Input((5,))
    h = keras.layers.BatchNormalization(name="bn")(keras.layers.Dense(8)(inp))
    return keras.Model(inp, keras.layers.Dense(4, activation="softmax")(h))


def test_weight_average_is_the_mean_of_the_last_steps_weights():
    """The averaged weights are the plain mean of the weights after each step from
    ``first_step`` on (recorded here step by step), whatever the epoch boundaries."""
    keras = pytest.importorskip("keras")
    from fastes.train import TrainConfig, _compile, _weight_average

    model = _bn_model()
    x = np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32)
    y = np.eye(4, dtype=np.float32)[np.arange(40) % 4]
    _compile(model, TrainConfig(batch=10), steps=12, n_classes=4)
    avg, seen = _weight_average(model, first_step=5), []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append([v.numpy().copy() for v in model.trainable_variables])

    for _ in range(3):  # 12 steps; steps 6-12 averaged
        model.fit(x, y, batch_size=10, epochs=1, verbose=0, shuffle=False, callbacks=[avg, Record()])
    assert avg.n == 7 and len(seen) == 12
    want = [np.mean([s[i] for s in seen[5:]], axis=0) for i in range(len(seen[0]))]
    assert not np.allclose(want[0], seen[-1][0])  # the mean is not the last step's
    avg.apply(x)
    for v, w in zip(model.trainable_variables, want):
        np.testing.assert_allclose(v.numpy(), w, rtol=1e-5, atol=1e-6)


def test_batch_norm_statistics_recomputed_as_the_mean_over_batches():
    from fastes.train import recompute_batch_norm

    model = _bn_model()
    bn = model.get_layer("bn")
    x = np.random.default_rng(1).normal(3.0, 2.0, size=(300, 5)).astype(np.float32)
    z = model.layers[1](x).numpy()  # what the batch norm sees
    assert recompute_batch_norm(model, x, batch=100) == 1
    assert bn.momentum == pytest.approx(0.99)  # put back
    np.testing.assert_allclose(bn.moving_mean.numpy(), z.mean(0), rtol=1e-4, atol=1e-5)  # equal batches
    batch_var = np.mean([z[i:i + 100].var(0) for i in range(0, 300, 100)], axis=0)
    # the rows are drawn in sorted order, so the three batches are the three thirds
    np.testing.assert_allclose(bn.moving_variance.numpy(), batch_var, rtol=1e-3)
    keras = pytest.importorskip("keras")
    inp = keras.Input((5,))
    assert recompute_batch_norm(keras.Model(inp, keras.layers.Dense(2)(inp)), x) == 0  # none to set


def test_fit_with_averaging_ends_on_the_mean_and_refuses_to_resume_inside_it():
    from fastes.train import TrainConfig, fit

    x = np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32)
    y = np.arange(40) % 4
    cfg = TrainConfig(epochs=2, batch=10, average=0.5)
    a, b = _bn_model(), _bn_model()
    fit(a, lambda ep: x, y, cfg, 2, progress=False)
    from dataclasses import replace

    fit(b, lambda ep: x, y, replace(cfg, average=0.0), 2, progress=False)
    assert not np.allclose(a.get_layer("bn").moving_mean.numpy(), b.get_layer("bn").moving_mean.numpy())
    assert not all(np.allclose(u, v) for u, v in zip(a.get_weights(), b.get_weights()))
    with pytest.raises(ValueError, match="weight-averaging"):
        fit(_bn_model(), lambda ep: x, y, cfg, 2, progress=False, start_epoch=2)


def test_train_and_crossval_refuse_a_bad_average(tiny_run, capsys):
    from fastes.cli import main

    rc = main(["train", "--net", "vgg11", "--average", "1.5", "--manifest", str(tiny_run / "m.csv"),
               "--out", str(tiny_run / "bad_avg"), "--no-progress"])
    assert rc == 2 and "--average" in capsys.readouterr().err
    rc = main(["crossval", "lodo", "--model", "landmarks", "--average", "0.5"])
    assert rc == 2 and "--average goes with" in capsys.readouterr().err
