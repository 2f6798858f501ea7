"""Experiment: is an int8 BlazeFace faster than the shipped float one? (Not on AVX2.)

    python tools/experiments/blazeface_int8.py [--out short_int8.tflite] [--n 1500]

Rebuilds the short-range BlazeFace in Keras from its ``.tflite`` (the flatbuffer read
with TensorFlow's schema module: 10 op types, fp16 weights), checks the rebuilt
network against LiteRT on a random input, quantizes it to full int8 (float I/O) on 400
letterboxed faces from the shared data plus the bundled samples and 60 non-face
scenes, then times both models' invoke alternately on one thread. Needs the ``train``
extra (TensorFlow). Measured on an AMD EPYC (AVX2, no VNNI): rebuilt outputs within 5e-5;
invoke 2.11 ms float vs 2.62 ms int8 (medians of 1,500): the float model stays. On an
Intel Xeon with AVX-512 VNNI, shared cores, --n 50: int8 1.10 ms vs float 1.25 ms.
The Keras reference runs before any LiteRT interpreter exists: with TensorFlow 2.21,
Keras predict after a LiteRT invoke in the same process crashed (segmentation fault).
Findings: docs/experiments.md, "Is an int8 BlazeFace faster?"
"""
from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np

from fastes.detect import BlazeFace, _blazeface_dir
from fastes.io import read_image

DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 4: np.int64}


def rebuild(path: Path):
    """A Keras model computing what the BlazeFace ``.tflite`` at ``path`` computes."""
    import keras
    from keras import layers
    from tensorflow.lite.python import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    m = schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
    g = m.subgraphs[0]

    def const(i):
        t = g.tensors[i]
        return np.frombuffer(bytes(m.buffers[t.buffer].data), DTYPES[t.type]).reshape(t.shape)

    def pad(o):
        return "same" if o.padding == 0 else "valid"

    inp = keras.Input(shape=tuple(g.tensors[g.inputs[0]].shape[1:]), batch_size=1)
    t, consts = {g.inputs[0]: inp}, {}
    for op in g.operators:
        code = m.operatorCodes[op.opcodeIndex]
        name = names[max(code.builtinCode, code.deprecatedBuiltinCode)]
        o, ins, out = op.builtinOptions, list(op.inputs), op.outputs[0]
        if name == "DEQUANTIZE":  # fp16 weights
            consts[out] = const(ins[0]).astype(np.float32)
            continue
        if o is not None and getattr(o, "fusedActivationFunction", 0) not in (0,):
            raise NotImplementedError(f"{name} with a fused activation")
        if name == "CONV_2D":
            w, b = consts[ins[1]], consts[ins[2]]
            layer = layers.Conv2D(w.shape[0], w.shape[1:3], strides=(o.strideH, o.strideW), padding=pad(o))
            y = layer(t[ins[0]])
            layer.set_weights([w.transpose(1, 2, 3, 0), b])
        elif name == "DEPTHWISE_CONV_2D":
            w, b = consts[ins[1]], consts[ins[2]]
            layer = layers.DepthwiseConv2D(w.shape[1:3], strides=(o.strideH, o.strideW), padding=pad(o))
            y = layer(t[ins[0]])
            layer.set_weights([w[0][:, :, :, None], b])
        elif name == "RELU":
            y = layers.ReLU()(t[ins[0]])
        elif name == "ADD":
            y = layers.Add()([t[ins[0]], t[ins[1]]])
        elif name == "PAD":  # zero channels appended for a wider residual
            extra = int(const(ins[1])[3, 1])
            y = layers.Lambda(lambda x, e=extra: keras.ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, e]]))(t[ins[0]])
        elif name == "MAX_POOL_2D":
            y = layers.MaxPooling2D((o.filterHeight, o.filterWidth), (o.strideH, o.strideW), padding=pad(o))(t[ins[0]])
        elif name == "RESHAPE":
            y = layers.Reshape(tuple(int(v) for v in g.tensors[out].shape[1:]))(t[ins[0]])
        elif name == "CONCATENATION":
            y = layers.Concatenate(axis=o.axis)([t[i] for i in ins])
        else:
            raise NotImplementedError(name)
        t[out] = y
    return keras.Model(inp, [t[i] for i in g.outputs])


def calibration_inputs(n: int = 400) -> list[np.ndarray]:
    from fastes.samples import sample_images
    from fastes.data import data_root
    from fastes.testing import frame_with_face, nonface_images

    det = BlazeFace()

    def letterbox(img: np.ndarray) -> np.ndarray:  # the input BlazeFace itself makes, copied
        det._letterbox(img, "bgr")
        return det._buf.copy()

    root = data_root() / "faces"
    rows = list(csv.DictReader(open(root / "manifest.csv", newline="")))
    pick = np.random.default_rng(0).choice(len(rows), n, replace=False)
    out = [letterbox(read_image(root / rows[i]["path"])) for i in pick]
    out += [letterbox(frame_with_face(read_image(p))) for p in sample_images()]
    return out + [letterbox(x) for x in list(nonface_images())[:60]]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="short_int8.tflite")
    ap.add_argument("--n", type=int, default=1500, help="timed invokes per model")
    args = ap.parse_args(argv)
    import tensorflow as tf

    from fastes.runtime import interpreter_class

    src = _blazeface_dir() / "face_detection_short_range.tflite"
    model = rebuild(src)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 128, 128, 3)).astype(np.float32)
    ref = [np.asarray(k) for k in model(x, training=False)]  # before any LiteRT interpreter exists
    it = interpreter_class()(model_path=str(src), num_threads=1)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    outs = {tuple(d["shape"]): it.get_tensor(d["index"]) for d in it.get_output_details()}
    diff = max(float(np.abs(k - outs[tuple(k.shape)]).max()) for k in ref)
    print(f"rebuilt network vs LiteRT: max abs difference {diff:.2e}")

    samples = calibration_inputs()
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([s] for s in samples)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    Path(args.out).write_bytes(conv.convert())

    its = {}
    for name, p in (("float", src), ("int8", Path(args.out))):
        its[name] = interpreter_class()(model_path=str(p), num_threads=1)
        its[name].allocate_tensors()
        its[name].set_tensor(its[name].get_input_details()[0]["index"], samples[0])
    times = {k: [] for k in its}
    for _ in range(args.n):  # alternated: both see the same moments of a noisy host
        for k, i in its.items():
            t0 = time.perf_counter()
            i.invoke()
            times[k].append(time.perf_counter() - t0)
    for k, v in times.items():
        print(f"{k:6s} invoke: median {np.median(v) * 1e3:.3f} ms, min {np.min(v) * 1e3:.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
