"""``fastes bench``: fastes beside the paper's pipeline, stage by stage, in one run.

The "before" column is :mod:`fastes.baseline` (the paper's method written the
straightforward way; shipped, so an installed ``fastes bench`` prints it; its Keras
inference needs the ``train`` extra). Each stage
is timed on the same inputs for both, medians over repeats after a warm-up; the paper's
own Table I figures are printed beside them. Workers scaling runs the whole per-image
path in 1..N worker threads over the bundled images (pool started and warmed first).
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

__all__ = ["run_bench", "markdown", "PAPER_S"]

# The paper's Table I (seconds per sketch) and its ~100 ms per prediction.
PAPER_S = {"landmarks": 1.95, "remap": 0.86, "draw": 0.30, "inference": 0.10,
           "landmarks_to_sketch": 1.16, "image_to_sketch": 3.1, "image_to_label": 3.2}


def load_baseline():
    """The paper-style baseline (:mod:`fastes.baseline`)."""
    from . import baseline

    return baseline


def _median_time(fn, budget: float, min_runs: int = 5, max_runs: int = 2000) -> tuple[float, float]:
    """(median, interquartile range) seconds per call, after one warm-up call."""
    fn()
    times = []
    end = time.perf_counter() + budget
    while len(times) < min_runs or (time.perf_counter() < end and len(times) < max_runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return statistics.median(times), q[2] - q[0]


def _machine() -> dict:
    import dlib
    import numba

    try:
        from importlib.metadata import version
        litert = version("ai-edge-litert")
    except Exception:
        litert = "n/a"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "numpy": np.__version__, "numba": numba.__version__,
            "opencv": cv2.__version__, "dlib": dlib.__version__, "ai_edge_litert": litert}


def run_bench(full: bool = False, workers: tuple[int, ...] = (1, 2), progress=print,
              budget: float | None = None, n_images: int | None = None, model: str = "default") -> dict:
    """Time every stage for fastes (with ``model``: a sketch, landmark or two-stream
    model) and the baseline; return the JSON-ready results.
    ``budget`` (seconds per stage and side) and ``n_images`` (for scaling) override the
    quick/full defaults (0.25 s / 60 images, 1 s / 240 images)."""
    from . import sketch
    from .samples import sample_images
    from .detect import _cascade
    from .landmarks import predictor_path
    from .io import read_image, to_grey
    from .pipeline import Pipeline, model_path
    from .sketch import remap
    from .testing import frame_with_face

    cv2.setNumThreads(1)
    import numba
    numba.set_num_threads(1)
    budget = budget if budget is not None else (1.0 if full else 0.25)
    base = load_baseline()
    paths = sample_images()
    frame = frame_with_face(read_image(paths[0]))  # 640x480, one face
    grey = to_grey(frame)
    pipe = Pipeline(model)  # the default detector and the model, loaded once for every stage
    finder, clf = pipe.detector, pipe.classifier
    size = clf.input_size or 48  # the sketch size of the model input stage (a landmark model draws none)
    lm = finder(frame).landmarks  # (1, 68, 2)
    lms = np.repeat(lm, 1000, 0) + np.random.default_rng(0).uniform(-2, 2, (1000, 68, 2)).astype(np.float32)
    sketch(lm)  # compile outside the timings
    stages: dict[str, dict] = {}

    def stage(name, fastes_fn, base_fn=None, per: int = 1):
        progress(f"  {name} ...")
        f, f_iqr = _median_time(fastes_fn, budget)
        row = {"fastes_s": f / per, "fastes_iqr_s": f_iqr / per, "paper_s": PAPER_S.get(name)}
        if base_fn is not None:
            b, b_iqr = _median_time(base_fn, budget)
            row.update(baseline_s=b, baseline_iqr_s=b_iqr, speedup=b / (f / per))
        else:
            row.update(baseline_s=None, speedup=None)
        stages[name] = row

    jpg = str(paths[0])
    stage("decode", lambda: read_image(jpg), (lambda: cv2.imread(jpg)) if base else None)
    import dlib  # the baseline's landmarks: dlib itself, as the paper ran it

    cascade, predictor = _cascade(), dlib.shape_predictor(str(predictor_path()))
    stage("detect", lambda: finder.detect(frame), (lambda: base.detect_full(grey, cascade)) if base else None)
    box = tuple(int(v) for v in finder.detect(frame)[0])
    hbox = base.detect_full(grey, cascade)[0] if base else None
    stage("landmarks", lambda: finder.landmarks(finder.crops(grey, np.array([box]))),
          (lambda: base.landmarks(grey, hbox, predictor)) if base else None)
    pts = [tuple(p) for p in lm[0].tolist()]
    stage("remap", lambda: remap(lm), (lambda: base.remap_loop(pts)) if base else None)
    rpts = base.remap_loop(pts) if base else None
    stage("draw", lambda: sketch(lms), (lambda: base.png_roundtrip(base.draw_lines(rpts))) if base else None, per=1000)
    sk250 = base.png_roundtrip(base.draw_lines(rpts)) if base else None
    stage("model_input", lambda: sketch(lm, size=size), (lambda: base.model_input(sk250, size)) if base else None)
    keras_model = _keras_baseline(size) if base else None
    x = base.model_input(sk250, size) if base else None
    found = finder(frame)  # the model's inputs as the pipeline makes them (+ the aligned crop, two-stream)
    stage("inference", lambda: pipe._classify(found, {}, frame, "bgr"),
          (lambda: keras_model.predict(x, verbose=0)) if keras_model is not None else None)
    stage("landmarks_to_sketch", lambda: sketch(lms), (lambda: base.png_roundtrip(base.draw_lines(base.remap_loop(pts))))
          if base else None, per=1000)
    stage("image_to_sketch", lambda: sketch(finder(frame).landmarks),
          (lambda: base.image_to_sketch(grey, cascade, predictor)) if base else None)
    def base_e2e():
        for s in base.image_to_sketch(grey, cascade, predictor):
            keras_model.predict(base.model_input(s, size), verbose=0)

    stage("image_to_label", lambda: pipe.run(frame), base_e2e if keras_model is not None else None)
    e2e = stages["image_to_label"]

    progress("  workers scaling ...")
    n_images = n_images or (240 if full else 60)
    items = [paths[i % len(paths)] for i in range(n_images)]
    scaling: dict[str, float] = {}
    pools = {w: Pipeline(model, workers=w) for w in workers}
    try:
        for p in pools.values():
            list(p.run_batch(items[: 2 * p.workers]))  # start and warm the pool
        # Two alternating passes, the better of each kept: on a shared machine a
        # neighbour's burst during one pass would otherwise decide the ratio.
        for _ in range(2):
            for w, p in pools.items():
                t0 = time.perf_counter()
                n = sum(len(f) for f in p.run_batch(items))
                scaling[str(w)] = max(scaling.get(str(w), 0.0), n / (time.perf_counter() - t0))
    finally:
        for p in pools.values():
            p.close()
    return {
        "stages": stages,
        "end_to_end_speedup": e2e["speedup"],
        "end_to_end_speedup_vs_paper": PAPER_S["image_to_label"] / e2e["fastes_s"],
        "landmarks_to_sketch_speedup_vs_paper": PAPER_S["landmarks_to_sketch"] / stages["landmarks_to_sketch"]["fastes_s"],
        "scaling": scaling,
        # throughput with every worker busy, decode included, against the paper's latency
        "throughput_speedup_vs_paper": PAPER_S["image_to_label"] * max(scaling.values()),
        "scaling_images": n_images,
        "input": "640x480 frame, one face (bundled London sample); scaling: bundled 600x600 images",
        "baseline": "fastes.baseline" if base else None,
        "keras_baseline": keras_model is not None,
        "model": model_path(model).name if model != "ensemble" else "ensemble",
        "detector": finder.detector.name,
        "machine": _machine(),
    }


def _keras_baseline(size: int):
    """The default network's architecture in Keras (random weights: speed only), or None
    without the train extra."""
    try:
        from .nets import build
        return build("vgg11", size)
    except ImportError:
        return None


def _fmt(s) -> str:
    if s is None:
        return "n/a"
    if s >= 0.1:
        return f"{s:.2f} s"
    if s >= 1e-4:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} µs"


LABELS = {
    "decode": "decode the JPEG", "detect": "detect faces (640x480)", "landmarks": "crop + 68 landmarks",
    "remap": "remap (eqs. 1-2, shifts)", "draw": "draw the sketch (baseline: + PNG write/read)",
    "model_input": "model input", "inference": "inference, one sketch",
    "landmarks_to_sketch": "landmarks → sketch", "image_to_sketch": "image → sketch, one face",
    "image_to_label": "image → 4-class label, one face",
}


def markdown(res: dict) -> str:
    lines = ["| stage | paper (Table I) | baseline here | fastes here | speedup vs baseline | vs paper |",
             "|---|---|---|---|---|---|"]
    for name, r in res["stages"].items():
        vs_paper = f"{r['paper_s'] / r['fastes_s']:,.0f}x" if r["paper_s"] else ""
        sp = f"{r['speedup']:,.1f}x" if r["speedup"] else "n/a"
        lines.append(f"| {LABELS.get(name, name)} | {_fmt(r['paper_s'])} | {_fmt(r['baseline_s'])} | "
                     f"{_fmt(r['fastes_s'])} | {sp} | {vs_paper} |")
    sc = res["scaling"]
    one = sc.get("1")
    lines += ["", "| workers | faces/s (image → label, decode included) | vs 1 worker | per face vs paper's 3.2 s |",
              "|---|---|---|---|"]
    for w, fps in sc.items():
        rel = f"{fps / one:.2f}x" if one else ""
        lines.append(f"| {w} | {fps:.1f} | {rel} | {PAPER_S['image_to_label'] * fps:,.0f}x |")
    m = res["machine"]
    lines += ["", f"{m['cpu']}, {m['cores']} cores; Python {m['python']}, numpy {m['numpy']}, numba {m['numba']}, "
              f"OpenCV {m['opencv']}, dlib {m['dlib']}, LiteRT {m['ai_edge_litert']}; model {res['model']}, "
              f"detector {res['detector']}; one thread per stage."]
    if not res["keras_baseline"]:
        lines.append("Keras baseline not measured (install the train extra for it).")
    return "\n".join(lines)


def bar_chart(res: dict, path) -> None:
    """A log-scale bar chart (baseline vs fastes per stage) drawn with OpenCV, as PNG."""
    from .io import write_png_atomic

    rows = [(LABELS.get(k, k), r["baseline_s"], r["fastes_s"]) for k, r in res["stages"].items()]
    w, row_h, left = 1060, 44, 390
    img = np.full((row_h * len(rows) + 70, w, 3), 255, np.uint8)
    lo, hi = -7.0, 1.0  # 100 ns .. 10 s
    scale = lambda s: left + int((np.log10(max(s, 1e-7)) - lo) / (hi - lo) * (w - left - 20))
    for e in range(int(lo), int(hi) + 1):
        x = scale(10.0 ** e)
        cv2.line(img, (x, 30), (x, img.shape[0] - 30), (225, 225, 225), 1)
        cv2.putText(img, f"1e{e}s", (x - 18, img.shape[0] - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (90, 90, 90), 1)
    for i, (label, b, f) in enumerate(rows):
        y = 30 + i * row_h
        cv2.putText(img, label.replace("→", "->")[:46], (8, y + 24), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        if b:
            cv2.rectangle(img, (left, y + 4), (scale(b), y + 18), (60, 60, 200), -1)
        cv2.rectangle(img, (left, y + 22), (scale(f), y + 36), (60, 160, 60), -1)
    cv2.putText(img, "red: paper-style baseline here   green: fastes   (seconds, log scale)", (left, 20),
                cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    write_png_atomic(path, img)


def write_json(res: dict, path) -> None:
    from .io import write_text_atomic

    write_text_atomic(path, json.dumps(res, indent=1))
