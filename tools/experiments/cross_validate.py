"""5-fold subject-disjoint cross-validation of the networks over the posed sets.

    python tools/experiments/cross_validate.py --export DIR          # landmarks + labels -> DIR/*.npz
    python tools/experiments/cross_validate.py RUN [RUN ...] --out results.jsonl [--faces DIR]

A RUN is ``net:size:pretrain:epochs[:noaug][:key=value...]``, e.g. ``vgg11:64:mnist:40`` or
``vgg11:48:none:60:dropout=0.1`` (keys: fields of ``fastes.train.TrainConfig``). Each run
appends one JSON line: its config, the metrics of ``fastes.evaluate.metrics`` (missed
faces wrong), seconds per fold and the Keras backend. Runs already in the output file
are skipped (resumable). ``--faces DIR`` reads an ``--export`` made elsewhere, so this
runs on a machine without the images (e.g. a GPU machine with the JAX backend).
Findings: docs/experiments.md (every question; records in models/experiments.jsonl).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def parse_run(spec: str):
    from fastes.train import TrainConfig

    parts = spec.split(":")
    net, size, pre, epochs = parts[:4]
    cfg = TrainConfig(net=net, size=int(size), pretrain=pre, epochs=int(epochs),
                      augment="noaug" not in parts[4:])
    for kv in parts[4:]:
        if "=" in kv:  # e.g. dropout=0.1, lr=3e-4
            k, v = kv.split("=", 1)
            kind = type(getattr(cfg, k))
            setattr(cfg, k, v.lower() in ("1", "true", "yes") if kind is bool else kind(v))
    return cfg


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="*")
    ap.add_argument("--out", default="results.jsonl")
    ap.add_argument("--faces", help="folder with posed.npz and wild.npz from --export")
    ap.add_argument("--export", help="write posed.npz and wild.npz into this folder and stop")
    ap.add_argument("--protocol", choices=["subject5", "paper"], default="subject5",
                    help="subject5: 5-fold subject-disjoint CV (default); paper: one split BY IMAGE in the "
                    "paper's 556/90/22 proportions (train on 556/668 of the images, test on the rest; the "
                    "same person can be on both sides, as in the paper)")
    ap.add_argument("--detector", default="haar",
                    help="front end of the landmarks (default haar); other than haar, run names get '@<detector>'")
    ap.add_argument("--int8", action="store_true",
                    help="also convert each fold's model to int8 TFLite and evaluate it on its held-out fold")
    ap.add_argument("--percentile", type=float,
                    help="with --int8: percentile calibration (e.g. 99.999; see fastes.convert)")
    ap.add_argument("--workdir", help="keep each finished fold (weights, results) and the pre-trained weights here: a killed run resumes")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)

    from fastes.train import FaceSet, cross_validate, load_faces
    from fastes.evaluate import MISSED, metrics

    if a.export:
        d = Path(a.export)
        d.mkdir(parents=True, exist_ok=True)
        load_faces(detector=a.detector).save(d / "posed.npz")
        load_faces(datasets=("wild",), detector=a.detector).save(d / "wild.npz")
        return 0
    if a.faces:
        posed = FaceSet.load(Path(a.faces) / "posed.npz")
        wild = FaceSet.load(Path(a.faces) / "wild.npz") if (Path(a.faces) / "wild.npz").exists() else None
    else:
        posed, wild = load_faces(progress=not a.no_progress, detector=a.detector), None
    out = Path(a.out)
    done = set()
    if out.exists():
        done = {json.loads(line)["run"] for line in out.read_text().splitlines() if line.strip()}
    import keras

    tag = "" if a.detector == "haar" else f"@{a.detector}"
    for spec in a.runs:
        if (spec + tag if a.protocol == "subject5" else f"{spec}@paper{tag}") in done:
            print(f"{spec}: done already", flush=True)
            continue
        cfg = parse_run(spec)
        if cfg.pretrain == "wild" and wild is None:
            from fastes.train import load_faces as lf
            wild = lf(datasets=("wild",), progress=not a.no_progress, detector=a.detector)
        t0 = time.perf_counter()
        if a.protocol == "paper":
            rng = np.random.default_rng(0)
            folds = np.ones(len(posed), np.int64)
            folds[rng.permutation(len(posed))[: round(len(posed) * (90 + 22) / 668)]] = 0
            cv = cross_validate(posed, cfg, k=2, progress=not a.no_progress, wild=wild, folds=folds,
                                test_folds=[0])
            rows = folds == 0
        else:
            wd = Path(a.workdir) / (spec.replace(":", "_") + tag) if a.workdir else None
            cv = cross_validate(posed, cfg, progress=not a.no_progress, wild=wild,
                                quantize="int8" if a.int8 else None, workdir=wd,
                                convert_kw={"percentile": a.percentile} if a.percentile else None)
            rows = np.ones(len(posed), bool)
        ok = ~np.isnan(cv["probs"][:, 0])
        pred = np.where(ok, np.nan_to_num(cv["probs"]).argmax(1), MISSED)
        sub = posed.subset(rows)
        m = metrics(sub.labels, pred[rows], sub.groups)
        spec = (spec if a.protocol == "subject5" else f"{spec}@paper") + tag
        rec = {"run": spec, "config": cfg.__dict__, "detector": a.detector, "backend": keras.backend.backend(),
               "seconds": time.perf_counter() - t0, "fold_seconds": cv["seconds"],
               "train_accuracy": cv["train_accuracy"],
               "data_digest": posed.digest(), **m,
               "probs": np.round(np.nan_to_num(cv["probs"], nan=-1), 4).tolist()}
        if "probs_tflite" in cv:
            okq = ~np.isnan(cv["probs_tflite"][:, 0])
            pq = np.where(okq, np.nan_to_num(cv["probs_tflite"]).argmax(1), MISSED)
            mq = metrics(sub.labels, pq[rows], sub.groups)
            rec.update(int8_accuracy=mq["accuracy"], int8_macro_f1=mq["macro_f1"], int8_percentile=a.percentile,
                       int8_agreement_per_fold=cv["agreement"],
                       int8_agreement=float((pq[rows & okq] == pred[rows & okq]).mean()))
            print(f"{spec}: int8 accuracy {mq['accuracy']:.3f} (agreement {rec['int8_agreement']:.3f})", flush=True)
        with open(out, "a") as f:
            f.write(json.dumps(rec) + "\n")
        print(f"{spec}: accuracy {m['accuracy']:.3f} macro_f1 {m['macro_f1']:.3f} "
              f"({rec['seconds']:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.fspath(Path(__file__).resolve().parents[2]))
    sys.exit(main())
