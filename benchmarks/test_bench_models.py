"""Per network: Keras ``predict`` vs TFLite float32 / dynamic / int8, batch 1 and 32,
1 and 2 threads, size on disk: one run, same machine. Needs the train extra.

Latency does not depend on the weights' values, so each network is built fresh at its
shipped input size (same graph as the shipped files) and converted here; int8 is
calibrated on random sketches of real faces.
"""
from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow")

from fastes.nets import DEFAULT_SIZE, build  # noqa: E402
from fastes.runtime import interpreter_class  # noqa: E402

# name -> (network, build arguments): the shipped graphs
NETS = {"vgg11_fast": ("vgg11", {"width": 0.25}), "vgg11": ("vgg11", {}), "capsnet": ("capsnet", {}),
        "resnet50": ("resnet50", {})}
_cache: dict = {}
SIZES: dict[str, int] = {}


def _converted(net: str, mode: str, x_cal: np.ndarray) -> bytes:
    from fastes.convert import convert

    key = (net, mode)
    if key not in _cache:
        m = _model(net)
        r = convert(m, None, mode, calibration=x_cal[:64], verify=x_cal[:32], min_agreement=0.0)
        _cache[key] = r["bytes"]
        SIZES[f"{net}_{mode}"] = r["size"]
    return _cache[key]


def _model(net):
    if ("keras", net) not in _cache:
        keras.utils.set_random_seed(0)
        name, kw = NETS[net]
        _cache[("keras", net)] = build(name, **kw)
    return _cache[("keras", net)]


def _sketches(net, n, landmarks_1000):
    from fastes.sketch import render

    return render(landmarks_1000[:n], DEFAULT_SIZE[NETS[net][0]])


@pytest.mark.parametrize("net", NETS)
def test_keras_predict_batch1(benchmark, record, net, landmarks_1000):
    m, x = _model(net), _sketches(net, 1, landmarks_1000)
    m.predict(x, verbose=0)
    benchmark(m.predict, x, verbose=0)
    record(f"{net}_keras_predict_b1", benchmark)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("batch", [1, 32])
@pytest.mark.parametrize("mode", ["none", "dynamic", "int8"])
@pytest.mark.parametrize("net", NETS)
def test_tflite(benchmark, record, net, mode, batch, threads, landmarks_1000):
    content = _converted(net, mode, _sketches(net, 256, landmarks_1000))
    it = interpreter_class()(model_content=content, num_threads=threads)
    inp = it.get_input_details()[0]
    size = DEFAULT_SIZE[NETS[net][0]]
    it.resize_tensor_input(inp["index"], [batch, size, size, 1])
    it.allocate_tensors()
    it.set_tensor(inp["index"], _sketches(net, batch, landmarks_1000))
    it.invoke()
    benchmark(it.invoke)
    record(f"{net}_tflite_{mode}_b{batch}_t{threads}", benchmark)




def test_sizes_on_disk(landmarks_1000):
    """Not timed: prints the file size of each conversion (bytes) for the README table."""
    for net in NETS:
        for mode in ("none", "dynamic", "int8"):
            _converted(net, mode, _sketches(net, 256, landmarks_1000))
    print({k: f"{v / 1e6:.2f} MB" for k, v in SIZES.items()})
    assert SIZES["vgg11_int8"] < 0.3 * SIZES["vgg11_none"]
