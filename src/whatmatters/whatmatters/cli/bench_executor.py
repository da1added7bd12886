"""``whatmatters bench --executors``: what Ray costs against the local process pool, measured in one run.

Two jobs run once on each engine, with the same number of workers and warm
solver caches: an S_hat batch (the base model on bags of the base model's
own episodes) and the quick sweep (``whatmatters experiment --quick``: data,
evaluations and 18 runs). Each of the four measurements runs in a fresh
driver process (``python -m whatmatters.cli.bench_executor``), so that no
driver state (loaded solvers, thread settings) carries from one to the next.
Each figure is a wall-time ratio Ray / local from this run; the Ray time
includes starting its local instance, which is also given on its own. The
numbers of both engines are compared as well.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from whatmatters.data.collect import CollectConfig, collect
from whatmatters.errors import WhatmattersError
from whatmatters.executor import Executor, LocalExecutor
from whatmatters.experiment.config import load_experiment_config
from whatmatters.experiment.report import fig2_data
from whatmatters.experiment.sweep import finished_runs, run_sweep
from whatmatters.sensitivity.batch import compute_bag_dir, load_sidecar
from whatmatters.sim.environments import environment_seeds

__all__ = ["bench_executors"]

log = logging.getLogger(__name__)

#: The S_hat batch: base-model bags of these training environments, this long.
BATCH_ENVS, BATCH_SECONDS = 4, 10.0


def _measure(job: str, engine: str, folder: Path, workers: int) -> dict[str, float]:
    """One timed job on one engine, in this process: ``seconds`` of the job and ``start_s`` of the engine."""
    start = time.perf_counter()
    if engine == "ray":
        from whatmatters.executor.ray_engine import RayExecutor

        executor: Executor = RayExecutor(workers=workers)
    else:
        executor = LocalExecutor(workers)
    started = time.perf_counter()
    with executor:
        if job == "batch":
            compute_bag_dir(folder, "base", progress=False, executor=executor)
        else:
            run_sweep(load_experiment_config(quick=True), folder, progress=False, executor=executor)
    return {"seconds": time.perf_counter() - started, "start_s": started - start}


def _in_fresh_process(job: str, engine: str, folder: Path, workers: int) -> dict[str, float]:
    cmd = [sys.executable, "-m", "whatmatters.cli.bench_executor", job, engine, str(folder), str(workers)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise WhatmattersError(f"bench of {job} on {engine} failed (rc {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _same_sidecars(a: Path, b: Path) -> bool:
    for bag in sorted(a.glob("env_*")):
        x, y = load_sidecar(bag), load_sidecar(b / bag.name)
        if sorted(x) != sorted(y) or not all(np.array_equal(x[k], y[k], equal_nan=x[k].dtype.kind == "f") for k in x):
            return False
    return True


def _fig2_numbers(out: Path) -> dict[str, Any]:
    """fig2.json's mapping of a finished quick sweep, without the runs' wall times."""
    cfg = load_experiment_config(quick=True)
    fig = fig2_data(finished_runs(cfg, out).results, list(cfg.weightings), list(cfg.rollouts))
    return {**fig, "raw": [{k: v for k, v in run.items() if k != "wall_s"} for run in fig["raw"]]}


def bench_executors(workdir: Path, workers: int = 2) -> dict[str, Any]:
    """Times the S_hat batch and the quick sweep on the local pool and on a local Ray instance.

    Args:
        workdir: Scratch folder (emptied first).
        workers: Worker processes of the pool, CPUs of the Ray instance.

    Returns:
        Wall times (s), the ratios Ray / local, Ray's start-up time and
        whether the numbers are identical.

    Raises:
        WhatmattersError: If a measurement's process fails (its error is named).
    """
    if workdir.exists():
        shutil.rmtree(workdir)
    bags = workdir / "bags"
    collect("base", environment_seeds("train")[:BATCH_ENVS], bags, CollectConfig(seconds=BATCH_SECONDS), workers=workers, progress=False)
    warm = workdir / "warm"
    shutil.copytree(bags, warm)
    compute_bag_dir(warm, "base", workers=1, max_steps=1, progress=False)  # the sensitivity solvers are compiled before timing
    times: dict[tuple[str, str], dict[str, float]] = {}
    for job in ("batch", "sweep"):
        for engine in ("local", "ray"):
            folder = workdir / f"{job}_{engine}"
            if job == "batch":
                shutil.copytree(bags, folder)
            times[job, engine] = _in_fresh_process(job, engine, folder, workers)
    out: dict[str, Any] = {"executor_workers": workers, "executor_batch_samples": int(BATCH_ENVS * BATCH_SECONDS / 0.02)}
    for job, name in (("batch", "batch"), ("sweep", "quick_sweep")):
        local, ray = times[job, "local"]["seconds"], times[job, "ray"]
        out[f"executor_{name}_local_s"] = local
        out[f"executor_{name}_ray_s"] = ray["seconds"]
        out[f"executor_{name}_ray_start_s"] = ray["start_s"]
        out[f"executor_{name}_ray_vs_local"] = (ray["seconds"] + ray["start_s"]) / local
        out[f"executor_{name}_ray_vs_local_after_start"] = ray["seconds"] / local
    out["executor_batch_identical"] = _same_sidecars(workdir / "batch_local", workdir / "batch_ray")
    out["executor_quick_sweep_identical"] = _fig2_numbers(workdir / "sweep_local") == _fig2_numbers(workdir / "sweep_ray")
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m whatmatters.cli.bench_executor JOB ENGINE FOLDER WORKERS``: one measurement, printed as JSON."""
    job, engine, folder, workers = argv if argv is not None else sys.argv[1:]
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(_measure(job, engine, Path(folder), int(workers))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
