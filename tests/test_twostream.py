"""Two-stream models (sketch + aligned face crop): build, convert to int8, load as a
classifier, run through Pipeline, `fastes run`, `fastes convert` and `fastes evaluate`."""
from __future__ import annotations

import json

import numpy as np
import pytest

import fastes
from fastes.cli import main, sample_images
from fastes.io import read_image, to_grey

keras = pytest.importorskip("keras", reason="the train extra (Keras) builds the model")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, finder):
    """A tiny two-stream model fitted a few steps on the bundled samples, its .keras file
    and calibration inputs."""
    from fastes.sketch import render
    from fastes.align import face_input
    from fastes.twostream import build

    d = tmp_path_factory.mktemp("twostream")
    lms, faces, labels = [], [], []
    for p in sample_images():
        grey = to_grey(read_image(p))
        found = finder(grey)
        lms.append(found.landmarks[0])
        faces.append(face_input(grey, found.image_landmarks()[:1], 32)[0])
        labels.append(0 if "happiness" in p.name else 3)
    lms, faces, labels = np.array(lms), np.array(faces), np.array(labels)
    keras.utils.set_random_seed(0)
    m = build(size=32, face_size=32, width=0.125)
    m.compile("adam", "sparse_categorical_crossentropy")
    x = {"sketch": render(lms, 32), "face": faces}
    m.fit(x, labels, epochs=3, verbose=0)
    path = d / "tiny.keras"
    m.save(path)
    # calibration: the faces and mirrored copies (a few dozen inputs)
    cal = {"sketch": np.concatenate([x["sketch"], x["sketch"][:, :, ::-1]] * 4),
           "face": np.concatenate([x["face"], x["face"][:, :, ::-1]] * 4)}
    return path, cal, m


def test_shipped_two_stream_file_in_pipeline_and_ensemble(sample_paths):
    from fastes.pipeline import shipped_models

    if "two_stream_int8" not in shipped_models():
        pytest.skip("no shipped two-stream model")
    faces = fastes.Pipeline("two_stream_int8").run(sample_paths[0])
    assert len(faces) == 1 and abs(faces[0].probs.sum() - 1) < 1e-5
    both = fastes.Pipeline("ensemble").run(sample_paths[0])
    assert len(both) == 1 and abs(both[0].probs.sum() - 1) < 1e-5


def test_model_file_says_what_it_needs(tiny):
    from fastes.runtime import load_classifier
    from fastes.runtime import KerasTwoStream

    clf = load_classifier(tiny[0])
    assert isinstance(clf, KerasTwoStream) and clf.needs_face and (clf.input_size, clf.face_size) == (32, 32)
    with pytest.raises(fastes.runtime.ModelError, match="face crops"):
        clf(np.zeros((1, 68, 2)))


def test_convert_runtime_pipeline_and_evaluate(tiny, tmp_path):
    from fastes.convert import convert
    from fastes.evaluate import evaluate_manifest
    from fastes.runtime import load_classifier
    from fastes.runtime import TFLiteTwoStream

    path, cal, keras_model = tiny
    out = tmp_path / "tiny_int8.tflite"
    res = convert(path, out, "int8", calibration=cal, verify=cal, min_agreement=0.5)
    assert out.is_file() and res["n_verify"] == len(cal["sketch"]) and res["agreement"] >= 0.5
    clf = load_classifier(out)
    assert isinstance(clf, TFLiteTwoStream) and clf.face_size == 32
    ref = keras_model.predict(cal, verbose=0)
    got = clf._predict(cal)
    assert (ref.argmax(1) == got.argmax(1)).mean() >= 0.5 and np.allclose(got.sum(1), 1, atol=1e-5)

    pipe = fastes.Pipeline(str(out))
    faces = pipe.run(sample_images()[0])
    assert len(faces) == 1 and faces[0].label in fastes.CLASSES and abs(faces[0].probs.sum() - 1) < 1e-5
    # the pipeline's crops are the ones the model was calibrated on: same probabilities
    p_direct = clf._predict({"sketch": cal["sketch"][:1], "face": cal["face"][:1]})
    np.testing.assert_allclose(faces[0].probs, p_direct[0], atol=0.02)
    # test-time augmentation: seeded, sums to one, and (float model: int8 steps would hide
    # it) not the plain model's answer
    assert isinstance(fastes.Pipeline(str(out), tta=4).classifier, fastes.runtime.Augmented)
    tta = fastes.Pipeline(str(path), tta=4)
    t1, t2 = tta.run(sample_images()[0]), tta.run(sample_images()[0])
    assert len(t1) == 1 and abs(t1[0].probs.sum() - 1) < 1e-5
    np.testing.assert_array_equal(t1[0].probs, t2[0].probs)
    assert not np.allclose(t1[0].probs, fastes.Pipeline(str(path)).run(sample_images()[0])[0].probs, atol=1e-5)

    m = tmp_path / "m.csv"
    m.write_text("path,class4,dataset\n" + "".join(
        f"{p},{'positive' if 'happiness' in p.name else 'neutral'},london\n" for p in sample_images()))
    metrics, y_pred, probs = evaluate_manifest(m, clf, cache=False, progress=False)
    assert metrics["n"] == len(sample_images()) and metrics["detected"] == len(sample_images())
    assert np.isfinite(probs).all()
    assert main(["evaluate", str(m), "--model", str(out), "--no-cache", "--json", str(tmp_path / "e.json"),
                 "--no-progress"]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["n"] == len(sample_images())
    assert main(["run", *map(str, sample_images()[:2]), "--model", str(out), "--out", str(tmp_path / "r.csv"),
                 "--no-progress"]) == 0


def test_cli_convert_takes_named_calibration_arrays(tiny, tmp_path, capsys):
    path, cal, _ = tiny
    npz = tmp_path / "cal.npz"
    np.savez(npz, sketch=np.concatenate([cal["sketch"]] * 2), face=np.concatenate([cal["face"]] * 2))
    out = tmp_path / "c.tflite"
    assert main(["convert", str(path), "--out", str(out), "--calibration", str(npz), "--min-agreement", "0.5"]) == 0
    assert out.is_file() and "agreement" in capsys.readouterr().out
    bad = tmp_path / "bad.npz"
    np.savez(bad, sketch=cal["sketch"])  # the face input missing
    assert main(["convert", str(path), "--out", str(tmp_path / "d.tflite"), "--calibration", str(bad)]) == 1
    assert "keys" in capsys.readouterr().err and not (tmp_path / "d.tflite").exists()


def test_learner_trains_and_predicts_on_a_faceset(tmp_path, monkeypatch):
    """The protocol's two-stream recipe: crops cached by the front end's tag, looked up by
    landmarks; rows it was not made for are refused."""
    from fastes.train import TrainConfig, load_faces
    from fastes.twostream import TwoStreamLearner

    monkeypatch.setenv("FASTES_CACHE", str(tmp_path / "cache"))
    m = tmp_path / "m.csv"
    m.write_text("path,class4,dataset\n" + "".join(  # smiles from a posed set, the rest from the wild
        f"{p},{'positive,london' if 'happiness' in p.name else 'neutral,wild'}\n" for p in sample_images()))
    data = load_faces(m, datasets=None, progress=False, detector="blazeface", crop="auto")
    assert data.found.all()
    cfg = TrainConfig(net="vgg11", size=32, width=0.125, epochs=1, batch=4)
    with pytest.raises(ValueError, match="every class"):  # the samples hold positive and neutral faces only
        TwoStreamLearner(data, cfg, face_size=32, balance=1.0).fit(data.subset(np.arange(4)))
    learner = TwoStreamLearner(data, cfg, face_size=32, out_dir=tmp_path / "keep", tta=2)
    assert len(list((tmp_path / "cache").glob("crops-*.npz"))) == 1
    learner.fit(data.subset(np.arange(4)))
    meta = json.loads((tmp_path / "keep" / "config.json").read_text())
    assert meta["recipe"] == "two-stream" and meta["n_train"] == 4 and meta["data_digest"]
    assert meta["balance"] == 0.0 and abs(sum(meta["class_prior"]) - 1) < 1e-4
    assert fastes.runtime.load_classifier(tmp_path / "keep" / "model.keras").needs_face
    p = learner.predict(data.landmarks[4:])
    assert p.shape == (2, 4) and np.allclose(p.sum(1), 1, atol=1e-5)
    with pytest.raises(ValueError, match="not rows"):
        learner.predict(data.landmarks[:1] + 1)
    again = TwoStreamLearner(data, cfg, face_size=32)  # crops read back from the cache
    np.testing.assert_array_equal(again.crops, learner.crops)
    # posed rows weigh 3 in the loss, and in the class shares balancing divides by
    TwoStreamLearner(data, cfg, face_size=32, out_dir=tmp_path / "w", posed_weight=3.0,
                     face_warp=1.0, part_drop=0.5, face_width=0.5).fit(data.subset(np.arange(4)))
    meta = json.loads((tmp_path / "w" / "config.json").read_text())
    w = np.where(data.datasets[:4] == "london", 3.0, 1.0)
    want = (data.targets[:4] * w[:, None]).sum(0) / w.sum()
    assert len(set(data.datasets[:4])) == 2 and meta["posed_weight"] == 3.0 and meta["face_warp"] == 1.0
    assert meta["part_drop"] == 0.5 and meta["face_width"] == 0.5
    np.testing.assert_allclose(meta["class_prior"], want, atol=1e-5)
    # 7 emotions: refused without an emotion per row, learnt from the manifest's emotion column
    with pytest.raises(ValueError, match="emotion"):
        TwoStreamLearner(data, cfg, face_size=32, fine_labels=True).fit(data.subset(np.arange(4)))
    m.write_text("path,class4,dataset,emotion\n" + "".join(
        f"{p},{'positive,london,happiness' if 'happiness' in p.name else 'neutral,wild,neutral'}\n"
        for p in sample_images()))
    data = load_faces(m, datasets=None, progress=False, detector="blazeface", crop="auto")
    assert data.fine[:4].sum(1).tolist() == [1.0] * 4
    fine = TwoStreamLearner(data, cfg, face_size=32, out_dir=tmp_path / "f", fine_labels=True)
    fine.fit(data.subset(np.arange(4)))
    assert json.loads((tmp_path / "f" / "config.json").read_text())["fine_labels"] is True
    assert fine.model.layers[-2].units == 7 and fine.model.output.shape[-1] == 4
    p = fine.predict(data.landmarks[4:])
    assert p.shape == (2, 4) and np.allclose(p.sum(1), 1, atol=1e-5)
    from fastes.data import EMOTION_CLASS

    e = fine.predict_fine(data.landmarks[4:])  # what the protocol keeps to re-score
    assert e.shape == (2, 7)
    np.testing.assert_allclose(e @ np.eye(4)[EMOTION_CLASS], p, atol=1e-5)
    fine.tta = 4  # with test-time augmentation the kept emotions stay the plain model's
    assert not np.allclose(fine.predict(data.landmarks[4:]), p, atol=1e-6)
    np.testing.assert_allclose(fine.predict_fine(data.landmarks[4:]), e, atol=1e-6)
    assert learner.predict_fine(data.landmarks[4:]) is None  # a 4-class model has none
    with pytest.raises(ValueError, match="balance_within needs"):
        TwoStreamLearner(data, cfg, face_size=32, fine_labels=True, balance_within=1.0)


def test_face_warp_moves_and_turns_the_training_crops():
    """warp = 0: the crops keep their geometry (mirror and grey levels only); warp = 1: a
    random similarity per crop, a centre dot moved by at most the shift range, a bar turned
    by at most the rotation range."""
    from fastes.twostream import FACE_WARP, _face_aug

    size = 48
    crops = np.zeros((300, size, size), np.uint8)
    crops[:, 23:25, 23:25] = 255  # a dot on the centre: mirroring keeps it there

    def centres(x):
        v = x[..., 0] - x[..., 0].min((1, 2), keepdims=True)
        yy, xx = np.mgrid[0:size, 0:size]
        return np.stack([(v * xx).sum((1, 2)), (v * yy).sum((1, 2))], 1) / v.sum((1, 2))[:, None]

    still = centres(_face_aug(crops, np.random.default_rng(0), warp=0.0))
    np.testing.assert_allclose(still, 23.5, atol=1e-3)
    moved = np.abs(centres(_face_aug(crops, np.random.default_rng(0), warp=1.0)) - 23.5)
    limit = FACE_WARP["shift"] * size
    assert moved.max() <= limit + 0.2 and moved.max() > 0.6 * limit
    bar = np.zeros((300, size, size), np.uint8)
    bar[:, 23:25, 8:40] = 255  # a horizontal bar through the centre
    y = _face_aug(bar, np.random.default_rng(1), warp=1.0)[..., 0]
    y = y - y.min((1, 2), keepdims=True)
    yy, xx = np.mgrid[0:size, 0:size] - 23.5
    c = [np.cov(np.stack([xx.ravel(), yy.ravel()]), aweights=v.ravel() + 1e-9) for v in y]
    angles = np.degrees([0.5 * np.arctan2(2 * m[0, 1], m[0, 0] - m[1, 1]) for m in c])
    assert np.abs(angles).max() <= FACE_WARP["rotate"] + 1.5 and np.abs(angles).max() > 4


def test_hide_parts_hides_one_region_from_both_streams(sample_landmarks):
    """which = 1: the sketch is the mouth's alone and the crop's upper part one grey;
    which = 2: brows and eyes alone, the lower part one grey; 0: untouched."""
    from fastes.sketch import PARTS, render
    from fastes.twostream import PART_SPLIT, hide_parts

    rng = np.random.default_rng(0)
    lms = np.asarray(sample_landmarks[:3], np.float64)
    sk = render(lms, 48)
    faces = rng.random((3, 32, 32, 1)).astype(np.float32)
    before_sk, before_faces = sk.copy(), faces.copy()
    hide_parts(lms, sk, faces, np.array([0, 1, 2]), PARTS)
    np.testing.assert_array_equal(sk[0], before_sk[0])
    np.testing.assert_array_equal(faces[0], before_faces[0])
    np.testing.assert_array_equal(sk[1], render(lms[1:2], 48, parts=PARTS[4:])[0])
    np.testing.assert_array_equal(sk[2], render(lms[2:3], 48, parts=PARTS[:4])[0])
    split = round(PART_SPLIT * 32)
    assert np.ptp(faces[1, :split]) == 0 and np.array_equal(faces[1, split:], before_faces[1, split:])
    assert np.ptp(faces[2, split:]) == 0 and np.array_equal(faces[2, :split], before_faces[2, :split])
    assert 0 < sk[1].sum() < before_sk[1].sum() and 0 < sk[2].sum() < before_sk[2].sum()


class _Recorder:
    """A fake two-stream classifier: records its inputs, answers one-hot by copy."""

    needs_face, face_size, input_size, name = True, 8, 32, "rec"

    def predict_faces(self, landmarks, faces):
        self.seen = (np.array(landmarks), np.array(faces))
        return np.eye(4, dtype=np.float32)[np.arange(len(faces)) % 4]


def test_test_time_augmentation_of_a_two_stream_model():
    """Copies of the landmarks for the sketch; the crop as it is in even copies and mirrored
    in odd ones; one batch, copy-major; the mean over copies per face."""
    from fastes.runtime import Augmented

    base = _Recorder()
    tta = Augmented(base, copies=3)
    assert tta.needs_face and tta.face_size == 8
    lm = np.tile(np.linspace(60, 190, 68, dtype=np.float32)[:, None], (2, 1, 2))
    faces = np.random.default_rng(0).random((2, 8, 8, 1)).astype(np.float32)
    p = tta.predict_faces(lm, faces)
    seen_lm, seen_faces = base.seen
    assert seen_faces.shape == (6, 8, 8, 1) and seen_lm.shape == (6, 68, 2)
    np.testing.assert_array_equal(seen_faces[0:2], faces)
    np.testing.assert_array_equal(seen_faces[2:4], faces[:, :, ::-1])
    np.testing.assert_array_equal(seen_faces[4:6], faces)
    assert not np.allclose(seen_lm[:2], lm)  # the sketch's copies are augmented
    # rows 0..5 answer classes 0,1,2,3,0,1: face 0 got 0, 2, 0; face 1 got 1, 3, 1
    np.testing.assert_allclose(p, [[2 / 3, 0, 1 / 3, 0], [0, 2 / 3, 0, 1 / 3]], atol=1e-6)


@pytest.mark.parametrize("fine", [False, True], ids=["4-class", "7-emotion"])
def test_balance_divides_probabilities_by_the_prior(fine):
    """Logit adjustment in the final layer: p(c) / prior(c)**tau, renormalized; for a
    7-emotion model, in its emotion softmax before the fixed sum into the classes."""
    from fastes.train import balance
    from fastes.twostream import build

    keras.utils.set_random_seed(0)
    m = build(size=32, face_size=32, width=0.125, fine=fine)
    x = {"sketch": np.random.default_rng(1).integers(0, 2, (5, 32, 32, 1)).astype(np.float32),
         "face": np.random.default_rng(2).random((5, 32, 32, 1)).astype(np.float32)}
    p0 = m.predict(x, verbose=0)
    prior = np.array([0.1, 0.2, 0.3, 0.4])
    for tau in (1.0, 0.5):
        m2 = keras.models.clone_model(m)
        m2.set_weights(m.get_weights())
        p1 = balance(m2, prior, tau).predict(x, verbose=0)
        want = p0 / prior ** tau
        np.testing.assert_allclose(p1, want / want.sum(1, keepdims=True), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="classes"):
        balance(m, [0.5, 0.5])
    with pytest.raises(ValueError, match="positive"):
        balance(m, [0.5, 0.5, 0, 0])


def test_balance_within_lifts_rare_emotions_of_a_class():
    """balance(within=W): each emotion logit also shifted by W * log(its share within its
    class * the class's emotions), so that, given the same class prior, a class's emotions
    count as equally likely; refused for a 4-class model and without every emotion's share."""
    from fastes.data import EMOTION_CLASS, EMOTIONS
    from fastes.train import balance, within_class_shift
    from fastes.twostream import EMOTIONS_LAYER, build

    share = {"neutral": 0.30, "happiness": 0.30, "surprise": 0.15, "fear": 0.04,
             "sadness": 0.10, "anger": 0.10, "disgust": 0.01}
    fine_prior = np.array([share[e] for e in EMOTIONS])
    shift = within_class_shift(fine_prior, EMOTION_CLASS)
    assert np.isclose(shift[EMOTIONS.index("happiness")], 0) and np.isclose(shift[EMOTIONS.index("neutral")], 0)
    fear, surprise = EMOTIONS.index("fear"), EMOTIONS.index("surprise")
    assert np.isclose(shift[fear], np.log(0.04 / 0.19 * 2)) and shift[fear] < 0 < shift[surprise]
    keras.utils.set_random_seed(0)
    m = build(size=32, face_size=32, width=0.125, fine=True)
    x = {"sketch": np.random.default_rng(1).integers(0, 2, (5, 32, 32, 1)).astype(np.float32),
         "face": np.random.default_rng(2).random((5, 32, 32, 1)).astype(np.float32)}
    emo = keras.Model(m.inputs, m.get_layer(EMOTIONS_LAYER).output)
    e0 = emo.predict(x, verbose=0)
    prior = np.bincount(EMOTION_CLASS, weights=fine_prior)
    balance(m, prior, 1.0, within=0.5, fine_prior=fine_prior)
    want = e0 / prior[EMOTION_CLASS] / np.exp(0.5 * shift)
    want /= want.sum(1, keepdims=True)
    np.testing.assert_allclose(emo.predict(x, verbose=0), want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(m.predict(x, verbose=0), want @ np.eye(4)[EMOTION_CLASS], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="fine labels"):
        balance(m, prior, 1.0, within=1.0, fine_prior=fine_prior[:6])
    with pytest.raises(ValueError, match="summed into the classes"):
        balance(build(size=32, face_size=32, width=0.125), prior, 1.0, within=1.0, fine_prior=fine_prior)


def test_fine_model_sums_its_seven_emotions_into_the_classes(tmp_path):
    """build(fine=True): the output is the emotion softmax summed by EMOTION_CLASS (not a
    layer training changes); the saved file is a 4-class two-stream classifier."""
    from fastes.data import EMOTION_CLASS
    from fastes.runtime import load_classifier
    from fastes.twostream import EMOTIONS_LAYER, build

    keras.utils.set_random_seed(0)
    m = build(size=32, face_size=32, width=0.125, fine=True)
    x = {"sketch": np.random.default_rng(1).integers(0, 2, (6, 32, 32, 1)).astype(np.float32),
         "face": np.random.default_rng(2).random((6, 32, 32, 1)).astype(np.float32)}
    emo = keras.Model(m.inputs, m.get_layer(EMOTIONS_LAYER).output).predict(x, verbose=0)
    assert emo.shape == (6, 7) and not m.get_layer("probs").trainable
    np.testing.assert_allclose(m.predict(x, verbose=0), emo @ np.eye(4)[EMOTION_CLASS], atol=1e-6)
    m.save(tmp_path / "fine.keras")
    clf = load_classifier(tmp_path / "fine.keras")
    assert clf.needs_face
    lms = np.random.default_rng(3).uniform(60, 190, (6, 68, 2)).astype(np.float32)
    p = clf.predict_faces(lms, x["face"])
    assert p.shape == (6, 4) and np.allclose(p.sum(1), 1, atol=1e-5)


def test_face_norm_makes_the_model_blind_to_lighting():
    """build(face_norm=True): each crop standardized inside the model, so a crop and the
    same crop darker and flatter (an affine change of grey levels) get the same answer."""
    from fastes.twostream import build

    keras.utils.set_random_seed(0)
    m = build(size=32, face_size=32, width=0.125, face_norm=True)
    rng = np.random.default_rng(1)
    sk = rng.integers(0, 2, (4, 32, 32, 1)).astype(np.float32)
    face = rng.random((4, 32, 32, 1)).astype(np.float32)
    z = np.asarray(m.get_layer("face_norm")(face))
    np.testing.assert_allclose(z.mean((1, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(z.std((1, 2, 3)), 1, atol=0.02)
    plain = build(size=32, face_size=32, width=0.125)

    def change(model):  # how far the face branch's features move when the crops get darker and flatter
        pooled = [x for x in model.layers if isinstance(x, keras.layers.GlobalAveragePooling2D)][0]
        feat = keras.Model(model.inputs, pooled.output)
        a, b = (feat.predict({"sketch": sk, "face": f}, verbose=0) for f in (face, 0.1 + 0.5 * face))
        return np.abs(a - b).max() / np.abs(a).max()

    assert change(m) < 0.05 < change(plain)


def test_average_is_one_model_of_the_members_mean(tiny, tmp_path):
    """average(): one two-input model giving the mean of its members' probabilities, saved,
    loaded and converted to one int8 file like any two-stream model."""
    from fastes.convert import convert
    from fastes.runtime import load_classifier
    from fastes.twostream import average, build

    path, cal, m = tiny
    keras.utils.set_random_seed(1)
    other = build(size=32, face_size=32, width=0.125)
    both = average([m, other])
    want = (m.predict(cal, verbose=0) + other.predict(cal, verbose=0)) / 2
    np.testing.assert_allclose(both.predict(cal, verbose=0), want, atol=1e-6)
    assert not np.allclose(want, m.predict(cal, verbose=0), atol=1e-3)  # the second member counts
    both.save(tmp_path / "avg.keras")
    lms = np.random.default_rng(3).uniform(60, 190, (len(cal["face"]), 68, 2)).astype(np.float32)
    back = load_classifier(tmp_path / "avg.keras")
    assert back.needs_face and back.face_size == 32
    out = tmp_path / "avg.tflite"
    convert(tmp_path / "avg.keras", out, calibration=cal, verify=cal, min_agreement=0.5)
    q = load_classifier(out).predict_faces(lms, cal["face"])
    assert q.shape == (len(lms), 4) and np.allclose(q.sum(1), 1, atol=0.02)
    with pytest.raises(ValueError, match="two models"):
        average([m])
    with pytest.raises(ValueError, match="different inputs"):
        average([m, build(size=48, face_size=32, width=0.125)])


def _sample_faceset(tmp_path, monkeypatch):
    """The bundled sample images as a FaceSet: smiles from london, the rest neutral wild faces."""
    from fastes.train import load_faces

    monkeypatch.setenv("FASTES_CACHE", str(tmp_path / "cache"))
    m = tmp_path / "m.csv"
    m.write_text("path,class4,dataset,emotion\n" + "".join(
        f"{p},{'positive,london,happiness' if 'happiness' in p.name else 'neutral,wild,neutral'}\n"
        for p in sample_images()))
    return load_faces(m, datasets=None, progress=False, detector="blazeface", crop="auto")


def test_learner_members_are_seeded_and_averaged(tmp_path, monkeypatch):
    """Each member is built from its own seed (SEED, SEED + 1, ...): the same seed gives the
    same initial weights, run after run; members > 1 are averaged into one model whose
    7-emotion probabilities are the members' mean too."""
    import fastes.train
    from fastes.data import EMOTION_CLASS
    from fastes.train import TrainConfig
    from fastes.twostream import TwoStreamLearner

    data = _sample_faceset(tmp_path, monkeypatch)
    cfg = TrainConfig(net="vgg11", size=32, width=0.125, epochs=1, batch=4, seed=3)
    monkeypatch.setattr(fastes.train, "fit", lambda model, *a, **k: (model, []))  # initial weights only
    first, again = (TwoStreamLearner(data, cfg, face_size=32, fine_labels=True) for _ in range(2))
    first.fit(data.subset(np.arange(4)))
    keras.utils.set_random_seed(99)  # whatever ran before
    again.fit(data.subset(np.arange(4)))
    for a, b in zip(first.model.get_weights(), again.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    pair = TwoStreamLearner(data, cfg, face_size=32, fine_labels=True, members=2, out_dir=tmp_path / "p")
    pair.fit(data.subset(np.arange(4)))
    assert len(pair.members) == 2
    np.testing.assert_array_equal(pair.members[0].get_weights()[0], first.model.get_weights()[0])
    assert not np.array_equal(pair.members[1].get_weights()[0], first.model.get_weights()[0])
    lms = data.landmarks[4:]
    p = pair.predict(lms)
    np.testing.assert_allclose(p, (first.predict(lms) + TwoStreamLearner.predict(
        _with_model(pair, pair.members[1]), lms)) / 2, atol=1e-5)
    e = pair.predict_fine(lms)
    np.testing.assert_allclose(e @ np.eye(4)[EMOTION_CLASS], p, atol=1e-5)
    assert json.loads((tmp_path / "p" / "config.json").read_text())["members"] == 2
    assert fastes.runtime.load_classifier(tmp_path / "p" / "model.keras").needs_face
    with pytest.raises(ValueError, match="members"):
        TwoStreamLearner(data, cfg, face_size=32, members=0)


def test_averaged_learner_keeps_its_last_step_twin_for_the_plain_decision(tmp_path, monkeypatch):
    """With weight averaging the learner decides with the averaged weights and keeps a
    copy with the last step's weights: predict_fine scores the copy
    (the plain decision of the same run), predict the average."""
    from fastes.data import EMOTION_CLASS
    from fastes.train import TrainConfig
    from fastes.twostream import EMOTIONS_LAYER, TwoStreamLearner

    data = _sample_faceset(tmp_path, monkeypatch)
    cfg = TrainConfig(net="vgg11", size=32, width=0.125, epochs=2, batch=2, seed=0, average=0.5)
    learner = TwoStreamLearner(data, cfg, face_size=32, fine_labels=True)
    learner.fit(data.subset(np.arange(4)))
    assert len(learner.last_steps) == 1
    avg, last = learner.members[0], learner.last_steps[0]
    assert not all(np.allclose(a, b) for a, b in zip(avg.get_weights(), last.get_weights()))
    kernel = [m.get_layer(EMOTIONS_LAYER).get_weights()[0] for m in (avg, last)]
    assert not np.allclose(kernel[0], kernel[1])
    lms = data.landmarks[data.found][:4]
    e = learner.predict_fine(lms)
    x = {"sketch": cfg.draw(lms), "face": learner._faces(lms)}
    want = keras.Model(last.inputs, last.get_layer(EMOTIONS_LAYER).output).predict(x, verbose=0)
    np.testing.assert_allclose(e, want, atol=1e-5)
    np.testing.assert_allclose(learner.predict(lms), avg.predict(x, verbose=0), atol=1e-5)
    assert not np.allclose(e @ np.eye(4)[EMOTION_CLASS], learner.predict(lms), atol=1e-4)
    plain = TwoStreamLearner(data, cfg.__class__(**{**cfg.__dict__, "average": 0.0}), face_size=32, fine_labels=True)
    plain.fit(data.subset(np.arange(4)))
    assert plain.last_steps == []


def _with_model(learner, model):
    """A shallow copy of ``learner`` predicting with ``model``."""
    import copy

    twin = copy.copy(learner)
    twin.model, twin.members = model, [model]
    return twin


def test_crop_cache_cuts_again_when_the_landmarks_move(tmp_path, finder):
    """Cached crops are keyed by image, box and landmarks: the same box with landmarks placed
    anew gives the crop of the new landmarks, not the one cut before."""
    from fastes.evaluate import face_inputs
    from fastes.twostream import crop_cache

    paths = [str(p) for p in sample_images()[:2]]
    found = [finder(to_grey(read_image(p))) for p in paths]
    boxes = np.stack([f.boxes[0] for f in found])
    lms = np.stack([f.landmarks[0] for f in found]).astype(np.float32)
    first = crop_cache(paths, boxes, lms, 32, "t", progress=False, cache_dir=tmp_path)
    want = np.round(face_inputs(paths, boxes, lms, 32)[..., 0] * 255).astype(np.uint8)
    np.testing.assert_array_equal(first, want)
    moved = lms + np.float32([6, 0])  # a different placement of the same face, same box
    again = crop_cache(paths, boxes, moved, 32, "t", progress=False, cache_dir=tmp_path)
    np.testing.assert_array_equal(again, np.round(face_inputs(paths, boxes, moved, 32)[..., 0] * 255)
                                  .astype(np.uint8))
    assert np.abs(again.astype(int) - first.astype(int)).mean() > 1  # not the stale crop
    # and the first placement is still served from the cache file, with both kept
    np.testing.assert_array_equal(crop_cache(paths, boxes, lms, 32, "t", progress=False, cache_dir=tmp_path), first)
    assert len(np.load(next(tmp_path.glob("crops-*.npz")))["keys"]) == 4


def test_face_width_scales_only_the_face_branch():
    from fastes.twostream import build

    def convs(m):
        return [x.filters for x in m.layers if isinstance(x, keras.layers.Conv2D)]

    base, wide = (build(size=32, face_size=32, width=0.125, face_width=k) for k in (1.0, 1.5))
    assert convs(base) == [16, 16, 32, 32, 64, 64, 128, 128]  # the face branch's own layers
    assert convs(wide) == [24, 24, 48, 48, 96, 96, 192, 192]
    sketch = [x for x in base.layers if isinstance(x, keras.Model)][0]
    assert [w.shape for w in sketch.weights] == [w.shape for w in [x for x in wide.layers
                                                                   if isinstance(x, keras.Model)][0].weights]
    assert wide.count_params() > base.count_params()

