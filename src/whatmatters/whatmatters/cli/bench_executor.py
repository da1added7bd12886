"""``whatmatters bench --executors``: what Ray costs against the local process pool, measured in one run.

Two jobs run once on each engine, with the same number of workers and warm
solver caches: an S_hat batch (the base model on bags of the base model's
own episodes) and the quick sweep (``whatmatters experiment --quick``: data,
evaluations and 18 runs). Each figure is a wall-time ratio Ray / local from
this run; the Ray time includes starting its local instance, which is also
given on its own. The numbers of both engines are compared as well.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from whatmatters.data.collect import CollectConfig, collect
from whatmatters.executor import Executor, LocalExecutor
from whatmatters.experiment.config import load_experiment_config
from whatmatters.experiment.report import fig2_data
from whatmatters.experiment.sweep import run_sweep
from whatmatters.sensitivity.batch import compute_bag_dir, load_sidecar
from whatmatters.sim.environments import environment_seeds

__all__ = ["bench_executors"]

log = logging.getLogger(__name__)

#: The S_hat batch: base-model bags of these training environments, this long.
BATCH_ENVS, BATCH_SECONDS = 4, 10.0


def _ray(workers: int) -> tuple[Executor, float]:
    from whatmatters.executor.ray_engine import RayExecutor

    start = time.perf_counter()
    ex = RayExecutor(workers=workers)
    return ex, time.perf_counter() - start


def _timed_batch(folder: Path, executor: Executor) -> float:
    start = time.perf_counter()
    compute_bag_dir(folder, "base", progress=False, executor=executor)
    return time.perf_counter() - start


def _same_sidecars(a: Path, b: Path) -> bool:
    for bag in sorted(a.glob("env_*")):
        x, y = load_sidecar(bag), load_sidecar(b / bag.name)
        if sorted(x) != sorted(y) or not all(np.array_equal(x[k], y[k], equal_nan=x[k].dtype.kind == "f") for k in x):
            return False
    return True


def _fig2_numbers(results: list[dict[str, Any]], weightings: list[str], rollouts: list[int]) -> dict[str, Any]:
    """fig2.json's mapping without the runs' wall times."""
    fig = fig2_data(results, weightings, rollouts)
    return {**fig, "raw": [{k: v for k, v in run.items() if k != "wall_s"} for run in fig["raw"]]}


def bench_executors(workdir: Path, workers: int = 2) -> dict[str, Any]:
    """Times the S_hat batch and the quick sweep on the local pool and on a local Ray instance.

    Args:
        workdir: Scratch folder (emptied first).
        workers: Worker processes of the pool, CPUs of the Ray instance.

    Returns:
        Wall times (s), the ratios Ray / local, Ray's start-up time and
        whether the numbers are identical.
    """
    if workdir.exists():
        shutil.rmtree(workdir)
    bags = workdir / "bags"
    collect("base", environment_seeds("train")[:BATCH_ENVS], bags, CollectConfig(seconds=BATCH_SECONDS), workers=workers, progress=False)
    warm = workdir / "warm"
    shutil.copytree(bags, warm)
    compute_bag_dir(warm, "base", workers=1, max_steps=1, progress=False)  # the sensitivity solvers are compiled before timing
    for name in ("local", "ray"):
        shutil.copytree(bags, workdir / f"batch_{name}")
    local = LocalExecutor(workers)
    batch_local = _timed_batch(workdir / "batch_local", local)
    cfg = load_experiment_config(quick=True)
    start = time.perf_counter()
    sweep_local = run_sweep(cfg, workdir / "sweep_local", progress=False, executor=local)
    sweep_local_s = time.perf_counter() - start
    ray, ray_start_s = _ray(workers)
    try:
        batch_ray = _timed_batch(workdir / "batch_ray", ray)
        start = time.perf_counter()
        sweep_ray = run_sweep(cfg, workdir / "sweep_ray", progress=False, executor=ray)
        sweep_ray_s = time.perf_counter() - start
    finally:
        ray.close()
    w, p = list(cfg.weightings), list(cfg.rollouts)
    return {
        "executor_workers": workers,
        "executor_batch_samples": int(BATCH_ENVS * BATCH_SECONDS / 0.02),
        "executor_batch_local_s": batch_local,
        "executor_batch_ray_s": batch_ray,
        "executor_batch_ray_vs_local": (batch_ray + ray_start_s) / batch_local,
        "executor_batch_ray_vs_local_after_start": batch_ray / batch_local,
        "executor_batch_identical": _same_sidecars(workdir / "batch_local", workdir / "batch_ray"),
        "executor_quick_sweep_local_s": sweep_local_s,
        "executor_quick_sweep_ray_s": sweep_ray_s,
        "executor_quick_sweep_ray_vs_local": (sweep_ray_s + ray_start_s) / sweep_local_s,
        "executor_quick_sweep_ray_vs_local_after_start": sweep_ray_s / sweep_local_s,
        "executor_quick_sweep_identical": _fig2_numbers(sweep_local.results, w, p) == _fig2_numbers(sweep_ray.results, w, p),
        "executor_ray_start_s": ray_start_s,
    }
