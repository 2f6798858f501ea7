"""``fastes evaluate``: measuring a model on a labelled manifest."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from .common import EXIT_OK, UsageError, detector_args, finder, tta, tta_arg


def add_parser(sub) -> None:
    ev = sub.add_parser(
        "evaluate",
        help="measure a model on a labelled manifest (detect -> landmarks -> sketch -> model)",
        description="Run the full pipeline on every row of MANIFEST (columns: path relative to the "
        "manifest's folder, class4; optional subject, dataset, gender, age, ethnicity) and report "
        "accuracy (a missed face counts as wrong), accuracy on detected faces, macro "
        "precision/recall/F1, the confusion matrix and accuracy per group.",
    )
    ev.add_argument("manifest", metavar="MANIFEST.csv")
    ev.add_argument("--model", "-m", action="append", required=True, metavar="PATH",
                    help=".keras or .tflite model, a shipped model's name (default, vgg11_int8, "
                    "capsnet_int8, resnet50_int8, ...) or 'ensemble' (the mean of all shipped models); repeat with "
                    "--ensemble to average several")
    ev.add_argument("--ensemble", action="store_true", help="average the probabilities of all --model files")
    ev.add_argument("--json", metavar="FILE", help="write the metrics as JSON")
    ev.add_argument("--report", metavar="DIR", help="write report.md with confusion and per-group charts")
    ev.add_argument("--no-cache", action="store_true", help="run the front end afresh (no landmark cache)")
    ev.add_argument("--threads", type=int, default=None, help="TFLite threads (default 1)")
    tta_arg(ev)
    detector_args(ev)
    ev.add_argument("--no-progress", action="store_true")
    ev.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import json

    from ..data import ManifestError
    from ..evaluate import evaluate_manifest, summary_lines, write_report
    from ..io import write_text_atomic
    from ..pipeline import load_model
    from ..runtime import Augmented, Ensemble, ModelError

    if len(args.model) > 1 and not args.ensemble:
        raise UsageError("several --model files need --ensemble")
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be >= 1")
    copies = tta(args)
    try:
        members = [load_model(m, args.threads) for m in args.model]
    except ModelError as e:
        raise UsageError(str(e)) from None
    clf = members[0] if len(members) == 1 else Ensemble(members)
    if copies:
        clf = Augmented(clf, copies)
    t0 = time.perf_counter()
    try:
        m, _, _ = evaluate_manifest(args.manifest, clf, cache=not args.no_cache, progress=not args.no_progress,
                                    finder=finder(args))
    except ManifestError as e:
        raise UsageError(str(e)) from None
    m["model"] = [str(p) for p in args.model]
    m["detector"] = args.detector
    m["tta"] = copies
    m["seconds"] = time.perf_counter() - t0
    print("\n".join(summary_lines(m)))
    if args.json:
        write_text_atomic(args.json, json.dumps(m, indent=1))
    if args.report:
        write_report(m, args.report, title=f"fastes evaluate: {', '.join(Path(p).name for p in args.model)}")
    return EXIT_OK
