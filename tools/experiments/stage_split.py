"""Where the time of one image -> label goes, stage by stage, in pipeline order.

    python tools/experiments/stage_split.py [--detector blazeface] [--model default] [--n 500]

Runs the steps of ``Pipeline.run`` one after another on a 640x480 one-face frame (a
bundled sample on grey), on one core, timing each; the caches hold what a real run
leaves in them (a stage timed alone, as ``fastes bench`` does, can look faster: the
landmark model's 65 MB are then still cached). Prints medians and the sum.
Findings: docs/results.md, "Where the time goes".
"""
from __future__ import annotations

import argparse
import time

import cv2
import numba
import numpy as np

from fastes import read_image
from fastes.samples import sample_images
from fastes.detect import HaarDetector
from fastes.io import to_grey
from fastes.pipeline import Pipeline
from fastes.testing import frame_with_face


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detector", default="blazeface")
    ap.add_argument("--model", default="default")
    ap.add_argument("--n", type=int, default=500, help="frames to time (default 500)")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    numba.set_num_threads(1)
    frame = frame_with_face(read_image(sample_images()[0]))
    pipe = Pipeline(args.model, args.detector)
    finder, clf = pipe.detector, pipe.classifier
    haar = isinstance(finder.detector, HaarDetector)
    stages = ("grey (Haar only)", "detect", "crops", "landmarks", "sketch + model", "result objects")
    times = {s: [] for s in stages}
    total = []
    for i in range(args.n + 20):
        t = [time.perf_counter()]
        src = to_grey(frame) if haar else frame  # as FaceFinder: grey frames for Haar only
        t.append(time.perf_counter())
        boxes = finder.detect(src)
        t.append(time.perf_counter())
        crops = finder.crops(src, boxes)
        t.append(time.perf_counter())
        lms = finder.landmarks(crops)
        t.append(time.perf_counter())
        clf(lms)
        t.append(time.perf_counter())
        pipe.run(frame)  # the real thing, for the total and the result objects
        t.append(time.perf_counter())
        if i >= 20:  # warm-up left out
            for s, a, b in zip(stages[:-1], t, t[1:]):
                times[s].append(b - a)
            total.append(t[-1] - t[-2])
    med = {s: float(np.median(v)) for s, v in times.items() if v}
    med["result objects"] = max(0.0, float(np.median(total)) - sum(med.values()))
    print(f"640x480 frame, one face, detector {args.detector}, model {clf.name}, one core, "
          f"median of {args.n}:")
    for s in stages:
        print(f"  {s:16s} {med[s] * 1e3:7.3f} ms")
    print(f"  {'Pipeline.run':16s} {np.median(total) * 1e3:7.3f} ms (measured as a whole)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
