"""The car experiment's sweep: every weighting at every rollout length and seed, evaluated in closed loop.

A run fine-tunes the base model's residual (:func:`~whatmatters.train.finetune.finetune`,
the arm's trainer) on the base model's laps with one weighting of eq. (1)
(:func:`~whatmatters.train.weighting.weights`, the arm's six), then drives its
final checkpoint's MPC for ``eval_seconds`` in each evaluation environment.
Per environment: the tracking cost ``j_track``, the lap time and the time
beyond the track border (:mod:`whatmatters.car.episode`).

Results (``runs/<weighting>_p<p>_s<seed>/result.json``, written atomically)
are kept: a run that finished is not repeated, a killed one resumes at its
last finished epoch. The runs go through the executor seam (local processes
or Ray). :func:`summary` normalises each run to ``stand`` of the same p and
seed and gives mean and standard deviation over the seeds.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from whatmatters.car.data import CarRecord, car_windows, load_episodes
from whatmatters.car.experiment import CarExperimentConfig, CarSystem, prepare
from whatmatters.car.model import CarModel
from whatmatters.executor import Executor, Job, LocalExecutor, Task
from whatmatters.io import atomic_write_text
from whatmatters.train.finetune import finetune
from whatmatters.train.weighting import RolloutWindows, weights

__all__ = ["evaluate_model", "finished_runs", "run_car_sweep", "run_one", "summary"]

log = logging.getLogger(__name__)

METRICS = ("j_track", "lap_time", "off_track")

_STATE: dict[str, Any] = {}


def evaluate_model(system: CarSystem, model: CarModel, seeds: list[int], seconds: float) -> list[dict[str, float]]:
    """Closed-loop metrics of ``model``'s MPC per environment (:data:`METRICS` plus ``env`` and ``fallbacks``)."""
    out = []
    for seed in seeds:
        ep = system.episode(model, seed, seconds)
        ctrl = system.controller(model)
        out.append({"env": seed, "j_track": ep.j_track, "lap_time": ep.lap_time, "off_track": ep.off_track, "fallbacks": ctrl.stats.fallbacks})
    return out


def init_worker(cfg: CarExperimentConfig, base: str, data: str) -> None:
    """The sweep's per-process setup: the system, the data, the windows per p (built on first use)."""
    torch.set_num_threads(1)
    _STATE.clear()
    _STATE.update(cfg=cfg, system=CarSystem(cfg), base=base, records=load_episodes(data), windows={})


def _windows(p: int) -> RolloutWindows:
    cache: dict[int, RolloutWindows] = _STATE["windows"]
    if p not in cache:
        records: list[CarRecord] = _STATE["records"]
        cache[p] = car_windows(records, _STATE["system"].load(_STATE["base"]), p)
    return cache[p]


def run_id(weighting: str, p: int, seed: int) -> str:
    """The run's folder name."""
    return f"{weighting}_p{p}_s{seed}"


def run_one(weighting: str, p: int, seed: int, out: str) -> dict[str, Any]:
    """One run (module docstring); its result, also written to its folder."""
    cfg: CarExperimentConfig = _STATE["cfg"]
    system: CarSystem = _STATE["system"]
    folder = Path(out) / "runs" / run_id(weighting, p, seed)
    done = folder / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    start = time.perf_counter()
    win = _windows(p)
    q = np.diag(system.mpc.state_weight)
    s = weights(weighting, win, cfg.objective, q, cfg.finetune_config().ours_scaling, system.nominal.objective_groups)
    history = finetune(_STATE["base"], win, s, folder, cfg.finetune_config(), seed, system.mpc.dt, load=system.load, dtype=torch.float64)
    model = system.load(folder / "model.pt")
    per_env = evaluate_model(system, model, cfg.seeds_of("eval"), cfg.eval_seconds)
    result = {
        "weighting": weighting, "p": p, "seed": seed, "per_env": per_env, "train_loss": [h["train_loss"] for h in history],
        "seconds": time.perf_counter() - start,
    }  # fmt: skip
    atomic_write_text(json.dumps(result, indent=1), done)
    return result


def _mean(values: list[float]) -> float:
    """The mean of the finite values (a lap time is NaN where no lap was finished); NaN if none is."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def summary(results: list[dict[str, Any]], weightings: tuple[str, ...], lengths: tuple[int, ...]) -> dict[str, Any]:
    """Per weighting and p, mean and standard deviation over the seeds of (each run against ``stand``
    of the same p and seed, on the same environments):

    * ``j_track``, ``lap_time``: the ratio of the means over the environments;
    * ``j_paired_median``: the median over the environments of the per-environment ratio of ``j_track``
      (robust to one environment in which a controller fails and dominates the mean);
    * ``envs_won``: environments with a lower ``j_track`` than ``stand``'s;
    * ``off_track``: seconds beyond the border, mean over the environments (not a ratio);
    * ``failed_envs``: environments with any fallback step (a failed solve).
    """
    by = {(r["weighting"], r["p"], r["seed"]): r["per_env"] for r in results}
    table: dict[str, Any] = {}
    for w in weightings:
        for p in lengths:
            seeds = sorted(s for (ww, pp, s) in by if ww == w and pp == p and ("stand", p, s) in by)
            if not seeds:
                continue
            row: dict[str, Any] = {"seeds": seeds}
            per_seed: dict[str, list[float]] = {k: [] for k in ("j_track", "lap_time", "j_paired_median", "envs_won", "off_track", "failed_envs")}
            for seed in seeds:
                mine, ref = by[(w, p, seed)], {e["env"]: e for e in by[("stand", p, seed)]}
                pairs = [(e, ref[e["env"]]) for e in mine if e["env"] in ref]
                for m in ("j_track", "lap_time"):
                    per_seed[m].append(_mean([a[m] for a, _ in pairs]) / _mean([b[m] for _, b in pairs]))
                per_seed["j_paired_median"].append(float(np.median([a["j_track"] / b["j_track"] for a, b in pairs])))
                per_seed["envs_won"].append(float(sum(a["j_track"] < b["j_track"] for a, b in pairs)))
                per_seed["off_track"].append(_mean([a["off_track"] for a, _ in pairs]))
                per_seed["failed_envs"].append(float(sum(a.get("fallbacks", 0) > 0 for a, _ in pairs)))
            for m, vals in per_seed.items():
                row[m] = {"mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0}
            table[f"{w}/p{p}"] = row
    return table


def finished_runs(out: str | Path) -> list[dict[str, Any]]:
    """The results of every finished run of a sweep folder (``runs/*/result.json``)."""
    return [json.loads(path.read_text()) for path in sorted(Path(out).glob("runs/*/result.json"))]


def run_car_sweep(cfg: CarExperimentConfig, out: str | Path, executor: Executor | None = None) -> dict[str, Any]:
    """The whole car experiment (set-up, base and nominal evaluations, the runs, the summary); resumable.

    Returns:
        ``summary``, ``base`` and ``nominal`` (per-environment metrics), ``runs`` and ``seconds``.

    Raises:
        TaskError: Naming each run that failed, after the others finished.
    """
    start = time.perf_counter()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(cfg.to_dict(), indent=1), out / "experiment.json")
    system, base, data = prepare(cfg, out)
    refs: dict[str, Any] = {}
    for name, model in (("nominal", system.nominal), ("base", system.load(base))):
        path = out / f"{name}_eval.json"
        if not path.is_file():
            atomic_write_text(json.dumps(evaluate_model(system, model, cfg.seeds_of("eval"), cfg.eval_seconds), indent=1), path)
        refs[name] = json.loads(path.read_text())
    keys = [(w, p, s) for p in cfg.rollout_lengths for s in cfg.seeds for w in cfg.weightings]
    job = Job("car-sweep", run_one, init_worker, (cfg, str(base), str(data)), shared_paths=(str(out),))
    tasks = [Task(run_id(*k), (*k, str(out))) for k in keys]
    own = executor is None
    executor = executor or LocalExecutor(cfg.workers or None)
    try:
        results = executor.run(job, tasks)
    finally:
        if own:
            executor.close()
    report = {
        "summary": summary(results, cfg.weightings, cfg.rollout_lengths), "base": refs["base"], "nominal": refs["nominal"],
        "runs": len(results), "seconds": time.perf_counter() - start,
    }  # fmt: skip
    atomic_write_text(json.dumps(report, indent=1), out / "summary.json")
    return report
