"""``fastes bench``: fastes against the paper's pipeline, stage by stage, in one run."""
from __future__ import annotations

import argparse
import sys
import time

from .common import EXIT_OK, UsageError


def add_parser(sub) -> None:
    bn = sub.add_parser(
        "bench",
        help="time fastes against the paper's pipeline, stage by stage (about a minute; --full a little more)",
        description="Time every stage (decode, detect, landmarks, remap, draw, model input, inference, and "
        "image -> sketch / label per face) for fastes and for a paper-style baseline (fastes.baseline: "
        "Haar on the full image, per-point Python remapping, cv2.line drawing, PNG round trip, Keras "
        "predict, which needs the train extra), beside the paper's Table I; then faces/s with 1..N "
        "worker threads. Prints a Markdown table; medians after a warm-up, one thread per stage.",
    )
    bn.add_argument("--json", metavar="FILE", help="write the results (stages, speedups, scaling, machine) as JSON")
    bn.add_argument("--chart", metavar="FILE.png", help="write a log-scale bar chart of baseline vs fastes")
    bn.add_argument("--full", action="store_true", help="longer timings and 240 images for scaling (several minutes)")
    bn.add_argument("--workers", type=int, default=2, metavar="N", help="scale up to N worker threads (default 2)")
    bn.add_argument("--model", "-m", default="default",
                    help="the model to time: a shipped name (sketch, landmark or two-stream), 'ensemble' or a path")
    bn.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..bench import bar_chart, markdown, run_bench, write_json

    if args.workers < 1:
        raise UsageError("--workers must be >= 1")
    if args.chart and not args.chart.lower().endswith(".png"):
        raise UsageError("--chart must end in .png")
    t0 = time.perf_counter()
    from ..runtime import ModelError

    try:
        res = run_bench(full=args.full, workers=tuple(range(1, args.workers + 1)),
                        progress=lambda m: print(m, file=sys.stderr), model=args.model)
    except ModelError as e:
        raise UsageError(str(e)) from None
    res["seconds"] = time.perf_counter() - t0
    if not res.get("keras_baseline"):
        print("note: the baseline's Keras inference needs the train extra (pip install 'fastes[train]'); "
              "its inference column is empty", file=sys.stderr)
    print(markdown(res))
    print(f"\nlandmarks -> sketch: {res['landmarks_to_sketch_speedup_vs_paper']:,.0f}x faster than the paper's "
          f"1.16 s; image -> label: {res['end_to_end_speedup_vs_paper']:,.0f}x faster than its ~3.2 s on one core, "
          f"{res['throughput_speedup_vs_paper']:,.0f}x per face with {max(res['scaling'], key=res['scaling'].get)} "
          f"worker(s); {res['seconds']:.0f} s in all")
    if args.json:
        write_json(res, args.json)
    if args.chart:
        bar_chart(res, args.chart)
    return EXIT_OK
