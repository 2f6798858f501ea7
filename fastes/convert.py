"""Keras -> TFLite conversion that checks itself (needs TensorFlow: the ``train`` extra).

Quantization modes: ``none`` (float32), ``fp16`` (float16 weights), ``dynamic`` (int8
weights, float activations) and ``int8`` (full-integer post-training quantization,
calibrated on real sketches; ``int8_io`` makes the input and output tensors int8 too).
Only TFLite builtin ops are allowed, so the lightweight LiteRT runtime runs every model
(CapsNet's routing included). ``percentile`` calibration re-measures each activation's
range on the calibration set and clips it to a percentile of the values. Two reasons:
TFLite's calibrator records the range of a residual branch's last convolution as that of
the sum it feeds (ResNet50: 16 of 76 ranges 1.4-3.4x too wide, e.g. 41.3 where the values
reach 12.1), and rare outliers stretch min/max (max / 99.99th percentile 1.3-2.1).
Every conversion runs the Keras and the TFLite model on a held-out set and fails,
writing nothing, when top-1 agreement is below a threshold.
"""
from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .runtime import is_landmark_input

__all__ = ["ConversionError", "QUANTIZE", "convert", "sketch_sets", "landmark_sets", "run_tflite"]

QUANTIZE = ("none", "fp16", "dynamic", "int8")
# Calibration: 256 sketches. Sketch pixels are 0 or 1, so the input range is fixed; the
# activations' ranges settle well before that (agreement measured at 64, 256 and 1,024
# calibration sketches is in docs/experiments.md). Drawn from posed and wild faces alike.
N_CALIBRATION = 256
# Percentile calibration is opt-in (``percentile=``): at 99.9995 it lifts ResNet50's int8
# agreement from 0.965 to 0.985 over the 5 subject-disjoint folds and from 0.972 to 0.983
# on unseen wild faces (the exact min/max, 100, helps on the wild faces only); the VGG11s
# and CapsNet, whose ranges were right, gain nothing measurable (docs/experiments.md).


class ConversionError(ValueError):
    """The model cannot be converted, or the converted model disagrees with it."""


def sketch_sets(size: int, n_calib: int = N_CALIBRATION, n_verify: int = 600, seed: int = 0):
    """Calibration and verification sketches at ``size`` px from the landmark cache.

    Calibration: ``n_calib`` faces from the posed and wild sets. Verification: ``n_verify``
    wild faces (never used in training here) with their labels, disjoint from calibration.
    Returns ``(x_calib, x_verify, y_verify)``.
    """
    from .sketch import render

    posed, wild, wi, pi = shuffled_faces(seed)
    ver = wi[:n_verify]
    x_cal = render(calibration_landmarks(posed, wild, wi, pi, n_calib, n_verify), size)
    return x_cal, render(wild.landmarks[ver], size), wild.labels[ver]


def landmark_sets(shape: tuple = (136,), n_calib: int = N_CALIBRATION, n_verify: int = 600, seed: int = 0):
    """:func:`sketch_sets` for a landmark model: the same faces' remapped points, shaped
    ``(N, *shape)`` (see :data:`fastes.runtime.LANDMARK_SHAPES`)."""
    from .runtime import landmark_features

    posed, wild, wi, pi = shuffled_faces(seed)
    ver = wi[:n_verify]
    x_cal = landmark_features(calibration_landmarks(posed, wild, wi, pi, n_calib, n_verify), tuple(shape))
    return x_cal, landmark_features(wild.landmarks[ver], tuple(shape)), wild.labels[ver]


def shuffled_faces(seed: int = 0):
    """The posed and wild sets of the landmark cache and a seeded shuffle of each one's
    found faces: ``(posed, wild, wild_order, posed_order)``. The first ``n_verify`` of
    ``wild_order`` verify; calibration follows (:func:`calibration_landmarks`)."""
    from .data import load_faces

    posed = load_faces(progress=False)
    wild = load_faces(datasets=("wild",), progress=False)
    rng = np.random.default_rng(seed)
    wi = rng.permutation(np.flatnonzero(wild.found))
    return posed, wild, wi, rng.permutation(np.flatnonzero(posed.found))


def calibration_landmarks(posed, wild, wi, pi, n_calib: int, n_verify: int) -> np.ndarray:
    """``n_calib`` calibration faces: half wild (those after the verification faces),
    half posed."""
    return np.concatenate([wild.landmarks[wi[n_verify:n_verify + n_calib // 2]],
                           posed.landmarks[pi[:n_calib - n_calib // 2]]])


def run_tflite(content: bytes, x, batch: int = 64) -> np.ndarray:
    """Run a TFLite model (bytes) on float inputs ``x`` (a dict by input name for a model
    with several inputs); quantized I/O scaled here."""
    from .runtime import TFLiteModel

    return TFLiteModel(content=content, threads=2, inputs=None).predict(x, batch)


def _convert_two_stream(m, out, quantize: str, int8_io: bool, calibration, verify, labels,
                        min_agreement: float, percentile) -> dict:
    """:func:`convert` for a two-stream model (inputs ``sketch`` and ``face``):
    ``calibration`` and ``verify`` are dicts of arrays by input name (default: real faces
    of the shared data, :func:`two_stream_sets`)."""
    from .runtime import is_two_stream, keras_input_shapes

    shapes = keras_input_shapes(m)
    if not is_two_stream(shapes):
        raise ConversionError(f"a two-input model must take 'sketch' and 'face' (N, S, S, 1), got {shapes}")
    if percentile is not None:
        raise ConversionError("--percentile is for one-input models")
    if calibration is None or verify is None:
        xc, xv, yv = two_stream_sets(shapes["sketch"][1], shapes["face"][1])
        calibration = xc if calibration is None else calibration
        if verify is None:
            verify, labels = xv, yv
    for name, arrays in (("calibration", calibration), ("verification", verify)):
        if not isinstance(arrays, dict) or set(arrays) != set(shapes):
            raise ConversionError(f"{name} inputs must be a dict with keys {sorted(shapes)}")
        for k, v in arrays.items():
            if tuple(np.shape(v)[1:]) != shapes[k][1:]:
                raise ConversionError(f"{name} input {k!r} has shape {np.shape(v)[1:]}, the model wants {shapes[k][1:]}")
    cal = {k: np.asarray(v, np.float32) for k, v in calibration.items()}
    verify = {k: np.asarray(v, np.float32) for k, v in verify.items()}
    with saved_model_converter(m) as conv:
        quantization_setup(conv, quantize, cal, int8_io)
        try:
            content = conv.convert()
        except Exception as e:
            msg = str(e).strip().splitlines()
            raise ConversionError("TFLite conversion failed (only builtin ops are allowed): "
                                  + (msg[-1] if msg else type(e).__name__)) from None
    return _verify_and_write(m, content, verify, labels, min_agreement, out, quantize, int8_io)


def two_stream_sets(size: int, face_size: int, n_calib: int = N_CALIBRATION, n_verify: int = 600, seed: int = 0):
    """:func:`sketch_sets` for a two-stream model: the same kind of faces' sketches and
    aligned crops, as dicts by input name. Reads the images again (the landmark cache
    keeps no pixels)."""
    from .data import LandmarkCache, data_root, read_manifest
    from .evaluate import face_inputs
    from .face import FaceFinder
    from .sketch import render

    samples = [s for s in read_manifest(data_root() / "faces" / "manifest.csv")
               if s.groups.get("dataset") in ("wild", "jaffe", "ckplus", "fei", "london")]
    found, _, boxes, lms = LandmarkCache(finder=FaceFinder("haar")).get([s.path for s in samples], progress=False)
    rng = np.random.default_rng(seed)
    wild = rng.permutation([i for i in np.flatnonzero(found) if samples[i].groups["dataset"] == "wild"])
    posed = rng.permutation([i for i in np.flatnonzero(found) if samples[i].groups["dataset"] != "wild"])
    ver = wild[:n_verify]
    cal = np.concatenate([wild[n_verify:n_verify + n_calib // 2], posed[:n_calib - n_calib // 2]])

    def inputs(idx):
        return {"sketch": render(lms[idx], size),
                "face": face_inputs([samples[i].path for i in idx], boxes[idx], lms[idx], face_size)}

    return inputs(cal), inputs(ver), np.array([samples[i].label for i in ver])


def _load(model):
    import keras

    from . import nets  # noqa: F401  (custom layers)

    if isinstance(model, keras.Model):
        return model
    p = Path(model)
    if not p.is_file():
        raise ConversionError(f"{p}: no such model file")
    try:
        return keras.saving.load_model(p, compile=False)
    except Exception as e:
        raise ConversionError(f"{p}: not a loadable Keras model ({type(e).__name__}: {e})") from None


def percentile_problem(quantize: str, percentile: float | None) -> str | None:
    """Why ``percentile`` calibration cannot go with ``quantize`` (None when it can);
    checked by :func:`convert` and, before any work, by ``fastes convert``."""
    if percentile is not None and (quantize != "int8" or not 50 < percentile <= 100):
        return "--percentile needs --quantize int8 and a value in (50, 100], e.g. 99.999"
    return None


def convert(model, out=None, quantize: str = "int8", int8_io: bool = False,
            calibration: np.ndarray | None = None, verify: np.ndarray | None = None,
            labels: np.ndarray | None = None, min_agreement: float = 0.98,
            percentile: float | None = None) -> dict:
    """Convert a Keras model (object or ``.keras`` path) with one input to TFLite.

    ``calibration`` (int8) and ``verify``: float input arrays; by default, sketches from
    the landmark cache at the model's input size (models with ``(S, S, 1)`` input), or
    the same faces' remapped points (landmark models, input ``(136,)`` or ``(68, 2)``). With
    ``labels`` for ``verify``, both accuracies are reported. ``percentile`` (int8 only,
    e.g. 99.999): activation ranges from that percentile of the calibration values (and
    100 - it for the low end) instead of their min/max. Raises
    :class:`ConversionError` (nothing written) when agreement < ``min_agreement``.
    Returns a dict: ``bytes``, ``agreement``, ``keras_accuracy``, ``tflite_accuracy``,
    ``size``, ``n_verify``; writes ``out`` atomically when given.
    """
    if quantize not in QUANTIZE:
        raise ConversionError(f"unknown quantization {quantize!r}; choose one of {', '.join(QUANTIZE)}")
    if int8_io and quantize != "int8":
        raise ConversionError("int8 input/output needs --quantize int8")
    if problem := percentile_problem(quantize, percentile):
        raise ConversionError(problem)
    m = _load(model)
    if len(m.inputs) == 2 and len(m.outputs) == 1:
        return _convert_two_stream(m, out, quantize, int8_io, calibration, verify, labels, min_agreement,
                                   percentile)
    if len(m.inputs) != 1 or len(m.outputs) != 1:
        raise ConversionError(f"expected a model with one input (or a two-stream model's two) and one "
                              f"output, got {len(m.inputs)} and {len(m.outputs)}")
    shape = tuple(m.inputs[0].shape)
    if any(d is None for d in shape[1:]):
        raise ConversionError(f"the input shape {shape} has unknown dimensions besides the batch; "
                              "give the model a fixed input size")
    if (calibration is None or verify is None) and is_landmark_input(shape):
        xc, xv, yv = landmark_sets(shape[1:])
        calibration = xc if calibration is None else calibration
        if verify is None:
            verify, labels = xv, yv
    if calibration is None or verify is None:
        if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 1:
            raise ConversionError(f"input {shape} is not a (N, S, S, 1) sketch: pass calibration and "
                                  "verification arrays of your own (e.g. --calibration FILE.npy)")
        xc, xv, yv = sketch_sets(int(shape[1]))
        calibration = xc if calibration is None else calibration
        if verify is None:
            verify, labels = xv, yv
    verify = np.asarray(verify, np.float32)
    if verify.shape[1:] != shape[1:]:
        raise ConversionError(f"verification inputs have shape {verify.shape[1:]}, the model wants {shape[1:]}")

    with saved_model_converter(m) as conv:
        calibration = quantization_setup(conv, quantize, calibration, int8_io)
        try:
            if percentile is not None:  # int8 only (checked above)
                content = _percentile_quantize(conv, calibration, percentile, int8_io)
            else:
                content = conv.convert()
        except ConversionError:
            raise
        except Exception as e:
            msg = str(e).strip().splitlines()
            raise ConversionError("TFLite conversion failed (only builtin ops are allowed): "
                                  + (msg[-1] if msg else type(e).__name__)) from None

    return _verify_and_write(m, content, verify, labels, min_agreement, out, quantize, int8_io)


def _verify_and_write(m, content: bytes, verify, labels, min_agreement: float, out, quantize: str,
                      int8_io: bool) -> dict:
    """Compare the TFLite model with the Keras one on ``verify`` (an array, or a dict of
    arrays by input name); write ``out`` when they agree well enough."""
    ref = np.asarray(m.predict(verify, batch_size=128, verbose=0))
    got = run_tflite(content, verify)
    n_verify = len(next(iter(verify.values()))) if isinstance(verify, dict) else len(verify)
    agreement = float((ref.argmax(1) == got.argmax(1)).mean())
    res = {"quantize": quantize, "int8_io": int8_io, "size": len(content), "n_verify": n_verify,
           "agreement": agreement, "max_abs_diff": float(np.abs(ref - got).max())}
    if labels is not None:
        res["keras_accuracy"] = float((ref.argmax(1) == labels).mean())
        res["tflite_accuracy"] = float((got.argmax(1) == labels).mean())
    if agreement < min_agreement:
        raise ConversionError(f"top-1 agreement {agreement:.3f} with the Keras model is below "
                              f"{min_agreement:.3f}: nothing written")
    if out:
        from .io import atomic_write

        atomic_write(out, lambda t: Path(t).write_bytes(content))
    res["bytes"] = content
    return res


@contextmanager
def saved_model_converter(model):
    """A TFLite converter over ``model`` exported as a SavedModel (in a temporary folder
    that lives as long as the context), builtin ops only (no Flex ops)."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        try:
            model.export(tmp, format="tf_saved_model", verbose=False)
        except Exception as e:
            raise ConversionError(f"the model cannot be exported for conversion ({type(e).__name__}: {e})") from None
        conv = tf.lite.TFLiteConverter.from_saved_model(tmp)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        yield conv


def quantization_setup(conv, quantize: str, calibration, int8_io: bool = False):
    """Set ``conv`` up for ``quantize`` (none, fp16, dynamic, int8); returns the
    calibration inputs as used (int8)."""
    import tensorflow as tf

    if quantize == "fp16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif quantize == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantize == "int8":
        return int8_setup(conv, calibration, int8_io)
    return calibration


def int8_setup(conv, calibration, int8_io: bool = False):
    """Full-integer post-training quantization, calibrated on ``calibration`` (an array,
    or a dict of arrays by input name) one input at a time; returns the calibration
    inputs as the float32 arrays it uses."""
    import tensorflow as tf

    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if isinstance(calibration, dict):
        cal = {k: np.asarray(v, np.float32) for k, v in calibration.items()}
        n = len(next(iter(cal.values())))
        conv.representative_dataset = lambda: ({k: v[i:i + 1] for k, v in cal.items()} for i in range(n))
    else:
        cal = np.asarray(calibration, np.float32)
        conv.representative_dataset = lambda: ([cal[i:i + 1]] for i in range(len(cal)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if int8_io:
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return cal


def _percentile_quantize(conv, calibration: np.ndarray, percentile: float, int8_io: bool) -> bytes:
    """int8 with activation ranges from ``percentile`` of the calibration values."""
    calibrated, tails = _calibrate(conv, calibration, percentile)
    return _quantize_at(calibrated, tails, percentile, int8_io)


def _calibrate(conv, calibration: np.ndarray, lowest: float) -> tuple[bytes, dict]:
    """TFLite's calibration (the float model gets a min/max per tensor), then a rerun of
    the calibrated float model on the same inputs with every tensor kept: per tensor, its
    values beyond the ``lowest`` percentile that will be asked for, at both ends (exact
    percentiles from little memory). Returns the calibrated model and
    ``{tensor: (lows ascending, highs descending, number of values)}``."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    from tensorflow.lite.tools import flatbuffer_utils as fbu

    conv._experimental_calibrate_only = True  # private TF API: checked with TF 2.21
    calibrated = conv.convert()
    tensors = fbu.convert_bytearray_to_object(calibrated).subgraphs[0].tensors
    idx = [i for i, t in enumerate(tensors) if t.quantization is not None
           and t.quantization.min is not None and len(t.quantization.min) == 1]
    # The default XNNPACK delegate would hide intermediate tensors: builtin kernels only.
    it = Interpreter(model_content=bytes(calibrated), experimental_preserve_all_tensors=True,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    inp = it.get_input_details()[0]["index"]
    it.allocate_tensors()
    n = len(calibration)
    hi = {i: np.empty(0, np.float32) for i in idx}
    lo = {i: np.empty(0, np.float32) for i in idx}
    size = {}
    for j in range(n):
        it.set_tensor(inp, calibration[j:j + 1])
        it.invoke()
        for i in idx:
            v = it.get_tensor(i).ravel()
            size[i] = v.size
            k = min(v.size, int(np.ceil((100 - lowest) / 100 * v.size * n)) + 1)  # beyond it, plus one
            if k:
                hi[i] = np.partition(np.concatenate([hi[i], v]), -k)[-k:]
                lo[i] = np.partition(np.concatenate([lo[i], v]), k - 1)[:k]
    return calibrated, {i: (np.sort(lo[i]), np.sort(hi[i])[::-1], size.get(i, 0) * n) for i in idx}


def _quantize_at(calibrated: bytes, tails: dict, percentile: float, int8_io: bool) -> bytes:
    """Narrow each recorded range to ``percentile`` (from :func:`_calibrate`'s tails) and
    quantize. A range never widens, and 0 stays inside it (the int8 zero point needs it)."""
    import tensorflow as tf
    from tensorflow.lite.python.convert import mlir_quantize
    from tensorflow.lite.tools import flatbuffer_utils as fbu

    model = fbu.convert_bytearray_to_object(calibrated)
    tensors = model.subgraphs[0].tensors
    for i, (lows, highs, n) in tails.items():
        k = min(len(highs), int(np.ceil((100 - percentile) / 100 * n)) + 1)
        if not k:
            continue
        q = tensors[i].quantization
        if q.max[0] > 0:
            q.max = [float(np.clip(highs[k - 1], 0.0, q.max[0]))]
        if q.min[0] < 0:
            q.min = [float(np.clip(lows[k - 1], q.min[0], 0.0))]
    io_type = tf.int8 if int8_io else tf.float32
    return mlir_quantize(bytes(fbu.convert_object_to_bytearray(model)), False,
                         input_data_type=io_type, output_data_type=io_type)
