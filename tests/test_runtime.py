import sys

import numpy as np
import pytest

from fastes.runtime import ModelError, interpreter_class, load_classifier


def test_missing_corrupt_and_unknown_model_files(tmp_path):
    with pytest.raises(ModelError, match="no such model file"):
        load_classifier(tmp_path / "none.tflite")
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"this is not a flatbuffer" * 10)
    with pytest.raises(ModelError, match="bad.tflite"):
        load_classifier(bad)
    (tmp_path / "m.onnx").write_bytes(b"x")
    with pytest.raises(ModelError, match="unknown model type"):
        load_classifier(tmp_path / "m.onnx")


def _tiny_tflite(tmp_path, out_units=4, channels=1):
    tf = pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    inp = keras.Input((16, 16, channels))
    x = keras.layers.Flatten()(inp)
    m = keras.Model(inp, keras.layers.Dense(out_units, activation="softmax")(x))
    m.export(str(tmp_path / "sm"), format="tf_saved_model", verbose=False)
    p = tmp_path / f"m{out_units}_{channels}.tflite"
    p.write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "sm")).convert())
    return p


def test_wrong_shaped_model_is_named(tmp_path):
    p = _tiny_tflite(tmp_path, out_units=3)
    with pytest.raises(ModelError, match=r"m3_1\.tflite: expected input \(N, S, S, 1\) and output \(N, 4\)"):
        load_classifier(p)


def test_batches_resize_the_input(tmp_path):
    clf = load_classifier(_tiny_tflite(tmp_path))
    assert clf.input_size == 16
    for n in (1, 7, 130):
        p = clf.predict(np.random.default_rng(0).random((n, 16, 16, 1), np.float32))
        assert p.shape == (n, 4) and np.allclose(p.sum(1), 1, atol=1e-5)


@pytest.mark.parametrize("name", ["vgg11_fast_int8", "vgg11_int8", "capsnet_int8", "resnet50_int8"])
def test_shipped_models_give_probabilities(name, sample_landmarks):
    """Rows sum to 1 although int8 softmax outputs are rounded to 1/256 each."""
    from fastes.pipeline import shipped_models

    p = load_classifier(shipped_models()[name])(sample_landmarks)
    assert p.shape == (len(sample_landmarks), 4) and (p >= 0).all()
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-5)


def test_keras_model_in_memory_matches_its_saved_file(tmp_path, sample_landmarks):
    keras = pytest.importorskip("keras")
    from fastes.runtime import KerasClassifier

    inp = keras.Input((16, 16, 1))
    x = keras.layers.Flatten()(inp)
    m = keras.Model(inp, keras.layers.Dense(4, activation="softmax")(x))
    m.save(tmp_path / "m.keras")
    mem, disk = KerasClassifier.from_model(m, "fold0"), load_classifier(tmp_path / "m.keras")
    assert mem.name == "fold0" and mem.input_size == disk.input_size == 16
    lm = np.stack([sample_landmarks, sample_landmarks + 3])
    assert np.allclose(mem.predict_landmarks(lm), disk.predict_landmarks(lm), atol=1e-6)
    bad = keras.Model(inp, keras.layers.Dense(3)(x))
    with pytest.raises(ModelError, match=r"fold1: expected input"):
        KerasClassifier.from_model(bad, "fold1")


def test_falls_back_to_tensorflow_lite(monkeypatch):
    pytest.importorskip("tensorflow")
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", None)
    import tensorflow as tf

    assert interpreter_class() is tf.lite.Interpreter


def test_no_runtime_at_all_is_a_clear_error(monkeypatch):
    for mod in ("ai_edge_litert", "ai_edge_litert.interpreter", "tflite_runtime",
                "tflite_runtime.interpreter", "tensorflow"):
        monkeypatch.setitem(sys.modules, mod, None)
    with pytest.raises(ModelError, match="pip install ai-edge-litert"):
        interpreter_class()


class _RowOneHot:
    """A fake classifier: row i of each batch gets class i % 4 (shows the batch layout)."""

    name, input_size = "fake", 48

    def __init__(self):
        self.batches = []

    def predict_landmarks(self, lm):
        self.batches.append(len(lm))
        return np.eye(4, dtype=np.float32)[np.arange(len(lm)) % 4]


def test_test_time_augmentation_averages_copies_per_face():
    from fastes.runtime import Augmented

    base = _RowOneHot()
    tta = Augmented(base, copies=2)
    lm = np.tile(np.linspace(60, 190, 68, dtype=np.float32)[:, None], (2, 1, 2))
    p = tta(lm)
    assert base.batches == [4]  # 2 copies of 2 faces in one batch, copy-major
    np.testing.assert_allclose(p, [[0.5, 0, 0.5, 0], [0, 0.5, 0, 0.5]])
    assert tta(np.zeros((0, 68, 2), np.float32)).shape == (0, 4)
    with pytest.raises(ValueError, match="copies"):
        Augmented(base, copies=0)


def test_test_time_augmentation_is_seeded_and_changes_inputs(sample_landmarks):
    """Same landmarks, same probabilities; and the copies differ from the plain sketch."""
    from fastes.pipeline import Pipeline
    from fastes.runtime import Augmented

    clf = Pipeline("vgg11_fast_int8").classifier  # a sketch model: tta on landmarks alone
    tta = Augmented(clf, copies=8)
    a, b = tta(sample_landmarks), tta(sample_landmarks)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a.sum(1), 1, atol=1e-5)
    assert not np.allclose(a, clf(sample_landmarks), atol=1e-4)


# ----------------------------------------------------------------------------- no confident nonsense
@pytest.mark.parametrize("bad, why", [
    (lambda p: np.full_like(p, np.nan), "NaN or inf"),
    (None, None),  # one column inf
    (lambda p: p - 0.3, "negative"),
    (lambda p: np.zeros_like(p), "not probabilities"),
    (lambda p: p * 3, "not probabilities"),
])
def test_a_model_whose_outputs_are_not_probabilities_is_refused_at_load(monkeypatch, bad, why):
    """NaN, negative or unnormalized outputs (a broken conversion, logits) were turned
    into confident rows, or into a uniform 0.25; now the model is refused when loaded."""
    from fastes.pipeline import shipped_models
    from fastes.runtime import TFLiteModel

    real = TFLiteModel.predict

    def broken(self, x, batch=64):
        p = real(self, x, batch)
        if bad is None:
            p = p.copy()
            p[:, 0] = np.inf
            return p
        return bad(p)

    monkeypatch.setattr(TFLiteModel, "predict", broken)
    path = shipped_models()["vgg11_fast_int8"]
    with pytest.raises(ModelError, match=f"vgg11_fast_int8.tflite: .*{why or 'NaN or inf'}"):
        load_classifier(path)


def test_nan_outputs_after_loading_are_refused_per_batch(monkeypatch, sample_landmarks):
    from fastes.pipeline import shipped_models
    from fastes.runtime import TFLiteModel

    clf = load_classifier(shipped_models()["vgg11_fast_int8"])
    good = clf(sample_landmarks)
    np.testing.assert_allclose(good.sum(1), 1, atol=1e-6)  # int8 rounding still rescaled
    real = TFLiteModel.predict

    def nan_on_row_1(self, x, batch=64):
        p = real(self, x, batch)
        p[1:2] = np.nan
        return p

    monkeypatch.setattr(TFLiteModel, "predict", nan_on_row_1)
    with pytest.raises(ModelError, match="NaN"):
        clf(sample_landmarks)


def test_check_probabilities_tolerates_int8_rounding_only():
    from fastes.runtime import PROB_SUM_TOL, check_probabilities

    p = np.array([[0.5, 0.25, 0.25, 0.0], [0.2, 0.2, 0.2, 0.4 - 0.008], [0.1, 0.1, 0.1, 0.7 + PROB_SUM_TOL / 2]],
                 np.float32)
    assert check_probabilities(p, "m") is p
    assert check_probabilities(np.zeros((0, 4), np.float32), "m").shape == (0, 4)
    for row in ([0.5, 0.5, 0.5, 0.5], [0.1, 0.1, 0.1, 0.1], [1.2, -0.2, 0, 0]):
        with pytest.raises(ModelError, match="^m: "):
            check_probabilities(np.array([row], np.float32), "m")


def test_a_tflite_model_without_softmax_is_refused(tmp_path):
    """A real converted model that outputs logits (no softmax): refused when loaded."""
    tf = pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    inp = keras.Input((16, 16, 1))
    m = keras.Model(inp, keras.layers.Dense(4, bias_initializer="ones")(keras.layers.Flatten()(inp)))
    m.export(str(tmp_path / "sm"), format="tf_saved_model", verbose=False)
    p = tmp_path / "logits.tflite"
    p.write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "sm")).convert())
    with pytest.raises(ModelError, match="logits.tflite: .*(negative|not probabilities)"):
        load_classifier(p)


def test_shipped_landmark_model_is_told_by_its_input_shape(sample_landmarks):
    """A model whose input is (N, 136) classifies remapped points; no sketch is drawn."""
    import fastes
    from fastes.pipeline import shipped_models
    from fastes.runtime import TFLiteLandmarkClassifier

    if "landmarks_int8" not in shipped_models():
        pytest.skip("no shipped landmark model")
    clf = load_classifier(shipped_models()["landmarks_int8"])
    assert isinstance(clf, TFLiteLandmarkClassifier) and clf.input_shape == (136,) and clf.input_size == 0
    p = clf(sample_landmarks)
    assert p.shape == (len(sample_landmarks), 4) and np.allclose(p.sum(1), 1, atol=1e-5)
    flat = sample_landmarks[:1].copy()
    flat[0, 16, 0] = flat[0, 0, 0]  # face sides on one column: cannot be remapped
    with pytest.raises(fastes.DegenerateFaceError):
        clf(flat)


def test_sound_int8_rows_off_one_are_rescaled_not_refused(monkeypatch):
    """After a model passed its load check, a batch whose rows sum to 0.85 (the shipped
    CapsNet does this on real faces) is rescaled, not refused; NaN still is."""
    from fastes.pipeline import model_path, shipped_models
    from fastes.runtime import ModelError, TFLiteClassifier, TFLiteModel

    if "capsnet_int8" not in shipped_models():
        pytest.skip("no shipped CapsNet")
    clf = TFLiteClassifier(model_path("capsnet_int8"))
    monkeypatch.setattr(TFLiteModel, "predict", lambda self, x, batch=64: np.array([[0.5, 0.2, 0.1, 0.05]], np.float32))
    np.testing.assert_allclose(clf.predict(np.zeros((1, 32, 32, 1))), [[0.5 / 0.85, 0.2 / 0.85, 0.1 / 0.85, 0.05 / 0.85]],
                               rtol=1e-5)
    monkeypatch.setattr(TFLiteModel, "predict", lambda self, x, batch=64: np.array([[np.nan, 0, 0, 1]], np.float32))
    with pytest.raises(ModelError, match="NaN"):
        clf.predict(np.zeros((1, 32, 32, 1)))
