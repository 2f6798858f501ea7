"""``engine="ray"``: the batch runner's inputs spread over the actors of a Ray cluster.

Inputs are cut into tasks (a run of up to ``TASK_IMAGES`` consecutive images, or one
video) in input order; each task is one row of a Ray Data dataset made from the task
list (no read task: on a 2-CPU machine a read task and two 1-CPU actors would wait for
each other). ``workers`` actors of :class:`_Actor` each build one
:class:`fastes.batch.Worker` (given by the caller; detector, landmark model and classifier loaded once) and
turn a task's files into rows with fastes' own reader: every unreadable file is an error
row, not a failed task. Results come back in input order and are written by the same
:class:`fastes.batch.Table` as the local engine, so the rows are the same. An actor that
dies has its task retried on a restarted actor; a task's rows are written only when it
is finished, so no input is written twice.

Files are read where the actor runs: on a cluster of several machines, inputs (and
``--save-sketches``/``--annotate`` folders) must be at the same path on every node (a
shared file system), and fastes must be installed on every node.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from .table import BatchError

__all__ = ["run_ray", "TASK_IMAGES", "init_ray"]

# images per task: ~0.6 s of work per task, against ~25-35 ms of driver CPU that Ray Data
# spends per task (measured here: 2.1 s of driver CPU per 1,000 images at 16 per task,
# 0.8 s at 64) on a machine whose cores the actors need
TASK_IMAGES = 64


def _tasks(items: list, per_task: int) -> list[list]:
    """Consecutive images in tasks of ``per_task``; each video alone."""
    tasks: list[list] = []
    run: list = []
    for it in items:
        if it.is_video:
            if run:
                tasks.append(run)
                run = []
            tasks.append([it])
            continue
        run.append(it)
        if len(run) >= per_task:
            tasks.append(run)
            run = []
    if run:
        tasks.append(run)
    return tasks


def _encode(task: list) -> str:
    # JSON keeps file names that are not UTF-8 (surrogate escapes) losslessly
    return json.dumps([[str(it.path), str(it.rel), it.error] for it in task])


def _decode(task: str, item_type) -> list:
    return [item_type(Path(p), Path(r), e) for p, r, e in json.loads(task)]


class _Actor:
    """One Ray worker: one :class:`fastes.batch.Worker` (made by ``MAKE``), reused for
    every task it is given."""

    MAKE: Callable = None  # a picklable factory of the worker
    ITEM: type = None      # the input type (fastes.batch.Item)

    def __init__(self):
        import cv2
        import numba

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        cv2.setNumThreads(1)  # one CPU per actor: no pool of threads inside it
        numba.set_num_threads(1)
        self.worker = type(self).MAKE()

    def __call__(self, batch: dict) -> dict:
        out = [json.dumps([self.worker.process(it) for it in _decode(str(t), type(self).ITEM)]) for t in batch["task"]]
        return {"rows": np.array(out, dtype=object)}


def init_ray(address: str | None = None, num_cpus: int | None = None) -> float:
    """Connect to the cluster at ``address``, or start a local one with this machine's
    cores (``num_cpus``); an existing connection is reused. Returns the seconds it took."""
    try:
        import ray
    except ImportError:
        raise BatchError("--engine ray needs Ray: pip install 'fastes[ray]'") from None
    t0 = time.perf_counter()
    if address and address != "auto":
        _reachable(address)
    if ray.is_initialized():
        return 0.0
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kw = dict(include_dashboard=False, log_to_driver=False, configure_logging=False, ignore_reinit_error=True)
    try:
        if address:
            ray.init(address=address, **kw)
        else:
            ray.init(num_cpus=num_cpus or os.cpu_count(), **kw)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as e:
        where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BatchError(f"cannot connect to {where}: {msg}") from None
    return time.perf_counter() - t0


def _reachable(address: str, timeout: float = 5.0) -> None:
    """Fail at once, in one line, when nothing listens at ``address`` (``ray.init`` would
    retry for minutes)."""
    import socket

    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise BatchError(f"--address {address!r}: expected HOST:PORT (e.g. 10.0.0.1:6379) or 'auto'")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise BatchError(f"cannot connect to the Ray cluster at {address}: {e.strerror or e}") from None


def run_ray(items: list, make_worker: Callable, workers: int, address: str | None,
            finish: Callable[[list[dict]], None], progress: bool = True, stats: dict | None = None) -> float:
    """Run ``items`` (:class:`fastes.batch.Item`) on ``workers`` Ray actors, each with the
    worker ``make_worker()`` returns (picklable; its ``process(item)`` gives an input's
    rows), calling ``finish`` with each input's rows in input order. Returns the start-up
    seconds (cluster, actors, first result); ``stats["startup_inputs"]`` is set to the
    number of inputs of that first result (their work is in the start-up time)."""
    stats = {} if stats is None else stats
    startup = init_ray(address)
    import ray
    import ray.data
    from tqdm import tqdm

    cpus = ray.cluster_resources().get("CPU", 0)
    if workers > cpus:
        raise BatchError(f"--workers {workers}: the Ray cluster has {cpus:g} CPUs (one per worker)")
    if not items:
        return startup
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # the rows come out in input order
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*minimum number of concurrent actors.*")
    # bigger tasks for big jobs: Ray Data's driver CPU is per task (docs/scale-out.md), and
    # 2,000+ tasks still spread evenly over a large cluster
    per_task = min(1000, max(TASK_IMAGES, len(items) // 2000))
    tasks = _tasks(items, per_task)
    ds = ray.data.from_items([{"task": _encode(t)} for t in tasks], override_num_blocks=len(tasks))
    # the factory travels inside the class (no constructor arguments in the object store);
    # Ray Data restarts a dead actor and retries its task (max_restarts / max_task_retries -1)
    actor = type("FastesWorker", (_Actor,), {"MAKE": make_worker, "ITEM": type(items[0])})
    ds = ds.map_batches(actor, batch_size=1, compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1)
    bar = tqdm(total=len(items), unit="input", disable=not progress or len(items) < 2 or None, file=sys.stderr)
    t0 = time.perf_counter()
    first = True
    try:
        for row in ds.iter_rows():
            results = json.loads(row["rows"])
            if first:  # actors built and the first task done: the rest is throughput
                startup += time.perf_counter() - t0
                first = False
                stats["startup_inputs"] = len(results)
            for rows in results:
                finish(rows)
                bar.update(1)
    finally:
        bar.close()
    return startup
