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
