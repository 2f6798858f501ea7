"""`fastes bench`: the paper-style baseline is faithful, the report has every key."""
from __future__ import annotations

import json

import numpy as np
import pytest

import fastes
from fastes.bench import load_baseline, markdown, run_bench
from fastes.cli import main
from fastes.pipeline import shipped_models


@pytest.fixture(scope="module")
def base():
    b = load_baseline()
    assert b is not None, "benchmarks/paper_baseline.py must be found from a source checkout"
    return b


def test_baseline_remap_and_drawing_match_fastes(base, sample_landmarks):
    """The baseline is the same method: its loop remaps as fastes.remap does and its
    segment-by-segment drawing covers the same pixels as fastes.sketch (up to rounding)."""
    for lm in sample_landmarks:
        pts = [tuple(p) for p in lm.tolist()]
        np.testing.assert_allclose(np.array(base.remap_loop(pts)), fastes.remap(lm), atol=1e-3)
        a = base.png_roundtrip(base.draw_lines(base.remap_loop(pts))) > 0
        b = fastes.sketch(lm) > 0
        assert (a & b).sum() / (a | b).sum() > 0.9


@pytest.mark.skipif(not shipped_models(), reason="no shipped model")
def test_bench_report_keys_and_cli(tmp_path, monkeypatch, capsys):
    res = run_bench(workers=(1,), budget=0.0, n_images=4, progress=lambda m: None)
    assert set(res) >= {"stages", "end_to_end_speedup", "scaling", "machine"}
    for name in ("decode", "detect", "landmarks", "remap", "draw", "model_input", "inference",
                 "landmarks_to_sketch", "image_to_sketch", "image_to_label"):
        row = res["stages"][name]
        assert row["fastes_s"] > 0 and row["baseline_s"] is None or row["baseline_s"] > 0
    assert res["stages"]["remap"]["speedup"] > 0 and res["scaling"]["1"] > 0
    assert "| stage | paper" in markdown(res)
    import fastes.bench as fb

    monkeypatch.setattr(fb, "run_bench", lambda **kw: res)
    out, chart = tmp_path / "b.json", tmp_path / "b.png"
    assert main(["bench", "--json", str(out), "--chart", str(chart)]) == 0
    got = json.loads(out.read_text())
    assert got["stages"]["draw"]["fastes_s"] == res["stages"]["draw"]["fastes_s"]
    assert chart.stat().st_size > 1000 and "| workers | faces/s" in capsys.readouterr().out
    assert main(["bench", "--chart", str(tmp_path / "x.jpg")]) == 2


@pytest.mark.parametrize("model", ["landmarks_int8", "two_stream_int8"])
def test_bench_times_landmark_and_two_stream_models(model):
    if model not in shipped_models():
        pytest.skip(f"no shipped {model}")
    res = run_bench(workers=(1,), budget=0.0, n_images=2, progress=lambda m: None, model=model)
    assert res["model"] == f"{model}.tflite" and res["stages"]["inference"]["fastes_s"] > 0
    assert res["scaling"]["1"] > 0
