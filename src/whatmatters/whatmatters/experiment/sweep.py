"""The sweep: data with sensitivities, every (weighting, p, seed) run, resumable.

Layout of the output folder::

    data/env_XXXX/            bags of the base model's episodes + sensitivity.npz
    base_eval.json            the base model on the evaluation environments
    exact_eval.json           the simulator's exact model on them (the achievable floor)
    exact_validation.json     the exact model on the validation environments (which are torque-bound)
    runs/<w>_p<p>_s<seed>/    checkpoints/epoch_K.pt, selected.pt, model.pt (last epoch),
                              state.pt (resume), result.json (done)
    report/                   fig2.json, fig2.png, results.md

One run's protocol (fine-tune, choose the checkpoint on validation, evaluate
it): :mod:`whatmatters.experiment.run`. What each result depends on:
:mod:`whatmatters.experiment.signatures`.

Every stage skips what is already there, so an interrupted sweep continues
where it stopped. Every stage runs through an executor (local worker
processes or Ray, :mod:`whatmatters.executor`); each worker trains a run and
evaluates it with its own compiled solver (the new weights are swapped in as
runtime parameters, no rebuild).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from whatmatters.data.collect import CollectConfig, collect
from whatmatters.data.dataset import load_transitions
from whatmatters.dynamics.learned import LearnedDynamics
from whatmatters.dynamics.registry import absolute_model_spec, base_checkpoint, resolve_model
from whatmatters.errors import ConfigError
from whatmatters.eval.evaluate import evaluate
from whatmatters.executor import Executor, Job, Outcome, Task, make_executor
from whatmatters.experiment.config import ExperimentConfig
from whatmatters.experiment.run import init_worker, run_one
from whatmatters.experiment.signatures import (
    DATA_SIGNATURE,
    base_eval_signature,
    data_signature,
    exact_eval_signature,
    exact_validation_signature,
    run_id,
    run_signature,
)
from whatmatters.io import atomic_write_text
from whatmatters.sensitivity.batch import compute_bag_dir
from whatmatters.sim.environments import environment_seeds
from whatmatters.sim.simulator import SimConfig
from whatmatters.train.weighting import make_windows, weight_statistics, weights
from whatmatters.trajectory.fourier import FourierConfig

__all__ = ["SweepResult", "finished_runs", "ours_statistics", "prepare_data", "run_sweep"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepResult:
    """Outcome of :func:`run_sweep`.

    Attributes:
        results: Every finished run's result (see ``result.json``).
        base_eval: The base model's evaluation summary.
        exact_eval: The simulator's exact model on the same environments (the
            achievable floor), or None for a sweep made before it was part of one.
        computed: Runs computed by this call (the others were already done).
        wall_s: Wall time of this call, s.
        exact_validation: The exact model on the validation environments that
            choose the checkpoints, or None for a sweep made before it was part of one.
    """

    results: list[dict[str, Any]]
    base_eval: dict[str, Any]
    exact_eval: dict[str, Any] | None
    computed: int
    wall_s: float
    exact_validation: dict[str, Any] | None = None


def _base_path(cfg: ExperimentConfig) -> str:
    model = resolve_model(cfg.base)
    if not isinstance(model, LearnedDynamics):
        raise ConfigError(f"experiment.base must be a learned checkpoint (base or a .pt path), got {cfg.base!r}")
    return str(base_checkpoint()) if cfg.base == "base" else cfg.base


def prepare_data(cfg: ExperimentConfig, data: Path, executor: Executor, progress: bool) -> Path:
    """Collects the base model's episodes and their sensitivities into ``data`` (skipping finished bags).

    Raises:
        ConfigError: If ``data`` holds data made with other settings (named), which
            would otherwise be mixed in silently.
    """
    signature = data_signature(cfg)
    path = data / DATA_SIGNATURE
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is damaged ({exc}); delete it only if the data in {data} was made with these settings") from exc
        if old != signature:
            keys = sorted(k for k in set(old) | set(signature) if old.get(k) != signature.get(k))
            raise ConfigError(
                f"{data} holds data made with other settings ({', '.join(keys)} differ: {path}); "
                "use another data folder (--data / --out) or delete this one"
            )
    else:
        if data.is_dir() and any(data.glob("env_*")):
            log.warning("%s has no %s (data from an older version): assumed to match %s", data, DATA_SIGNATURE, signature)
        data.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json.dumps(signature, indent=1), path)
    seeds = environment_seeds("train")[: cfg.data_envs]
    mpc = cfg.mpc_config()
    collect(cfg.base, seeds, data, replace(CollectConfig.from_yaml(), seconds=cfg.data_seconds), progress=progress, mpc=mpc, executor=executor)
    compute_bag_dir(data, cfg.base, progress=progress, skip_existing=True, mpc=mpc, executor=executor)
    return data


def ours_statistics(cfg: ExperimentConfig, data: Path) -> dict[str, dict[str, float]]:
    """:func:`~whatmatters.train.weighting.weight_statistics` of ``ours`` per rollout length on the sweep's data.

    Returns:
        ``{str(p): statistics}``; empty if ``data`` holds no sensitivities yet.
    """
    base = LearnedDynamics.load(_base_path(cfg))
    try:
        transitions = load_transitions(data, base.nominal, base.cfg.window, sensitivities=True, action_weights=cfg.finetune.ours_action)
    except (FileNotFoundError, ValueError) as exc:
        log.warning("no weight statistics: %s", exc)
        return {}
    if transitions.s_hat is None:
        return {}
    return {str(p): weight_statistics(weights("ours", make_windows(transitions, p), cfg.finetune.objective, ours_scaling=cfg.finetune.ours_scaling)) for p in cfg.rollouts}


def _exact_eval(cfg: ExperimentConfig, path: Path, signature: dict[str, Any], seeds: list[int], executor: Executor) -> dict[str, Any]:
    """The exact model on ``seeds``, from ``path`` or computed and written there."""
    if path.is_file():
        try:
            found = json.loads(path.read_text())
            if found.get("signature") == signature:
                return found
            log.warning("%s was made with other settings; the exact model is evaluated again", path)
        except json.JSONDecodeError:
            log.warning("%s is damaged; the exact model is evaluated again", path)
    found = {**evaluate("exact", seeds, cfg.eval_seconds, mpc=cfg.mpc_config(), executor=executor).summary(), "signature": signature}
    atomic_write_text(json.dumps(found, indent=1), path)
    return found


def _load_done(out: Path, cfg: ExperimentConfig) -> dict[tuple[str, int, int], dict[str, Any]]:
    done = {}
    for key in cfg.runs():
        signature = run_signature(cfg, key[0])
        path = out / "runs" / run_id(*key) / "result.json"
        if not path.is_file():
            continue
        try:
            result = json.loads(path.read_text())
        except json.JSONDecodeError:
            log.warning("%s is damaged; the run is recomputed", path)
            continue
        if result.get("signature") != signature:
            log.warning("%s was made with other settings; the run is recomputed", path)
            continue
        done[key] = result
    return done


def _base_eval_legacy(sig: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in sig.items() if k != "mpc"}


def finished_runs(cfg: ExperimentConfig, out: str | Path) -> SweepResult:
    """The runs already finished in ``out`` (nothing is computed), for a report of a partial sweep.

    Raises:
        FileNotFoundError: If the sweep has no base evaluation yet.
    """
    out = Path(out)
    path = out / "base_eval.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: the sweep in {out} has not started")
    done = _load_done(out, cfg)
    exact_path = out / "exact_eval.json"
    exact = json.loads(exact_path.read_text()) if exact_path.is_file() else None
    if exact is not None and exact.get("signature") != exact_eval_signature(cfg):
        exact = None
    val_path = out / "exact_validation.json"
    val = json.loads(val_path.read_text()) if val_path.is_file() else None
    if val is not None and val.get("signature") != exact_validation_signature(cfg):
        val = None
    return SweepResult([done[r] for r in cfg.runs() if r in done], json.loads(path.read_text()), exact, 0, 0.0, val)


def run_sweep(
    cfg: ExperimentConfig,
    out: str | Path,
    workers: int | None = None,
    progress: bool = True,
    data: str | Path | None = None,
    executor: Executor | None = None,
) -> SweepResult:
    """Runs (or continues) the whole sweep.

    Args:
        cfg: The experiment.
        out: Output folder (reused to resume; on a path every node sees, for a cluster).
        workers: Worker processes (default ``cfg.workers``, 0: one per CPU).
        progress: Progress bar with the estimated time left on stderr.
        data: Data folder (default ``<out>/data``); another sweep's data
            folder can be shared when the data settings are the same.
        executor: Where the data, evaluations and runs are computed (default:
            the one ``cfg.executor_config`` describes, closed at the end).

    Raises:
        TaskError: Naming each run that failed, after the others finished
            (finished runs are kept; running the sweep again continues).
    """
    if executor is None:
        with make_executor(cfg.executor_config(workers)) as own:
            return run_sweep(cfg, out, workers, progress, data, own)
    start = time.perf_counter()
    out = Path(out).resolve()  # absolute: workers in another folder (or on another node) see the same files
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(cfg.to_dict(), indent=1), out / "experiment.json")
    base = absolute_model_spec(_base_path(cfg))
    data = prepare_data(cfg, Path(data).resolve() if data else out / "data", executor, progress)
    base_eval_path = out / "base_eval.json"
    base_sig = base_eval_signature(cfg)
    base_eval = json.loads(base_eval_path.read_text()) if base_eval_path.is_file() else None
    # made before signatures: valid for the reference MPC settings
    if base_eval is not None and base_eval.get("signature", _base_eval_legacy(base_sig)) != base_sig:
        log.warning("%s was made with other settings; the base model is evaluated again", base_eval_path)
        base_eval = None
    if base_eval is None:
        seeds = cfg.eval_seeds()
        base_eval = {**evaluate(cfg.base, seeds, cfg.eval_seconds, mpc=cfg.mpc_config(), executor=executor).summary(), "signature": base_sig}
        atomic_write_text(json.dumps(base_eval, indent=1), base_eval_path)
    exact_eval = _exact_eval(cfg, out / "exact_eval.json", exact_eval_signature(cfg), cfg.eval_seeds(), executor)
    # the floor on the validation environments: which of them are torque-bound (experiment/bounds.py)
    exact_validation = _exact_eval(cfg, out / "exact_validation.json", exact_validation_signature(cfg), cfg.select_seeds(), executor)
    runs = cfg.runs()
    done = _load_done(out, cfg)
    todo = [r for r in runs if r not in done]
    log.info("sweep %s: %d runs, %d done, %d to do", out, len(runs), len(done), len(todo))
    # progress in closed-loop evaluations (each epoch's, then the selected checkpoint's), the unit the time estimate needs
    steps = cfg.finetune.epochs + 1
    bar = tqdm(total=len(runs) * steps, initial=len(done) * steps, desc="experiment", unit="evaluation", disable=not progress)
    finished = len(done)

    def on_epoch(msg: tuple[str, str, float]) -> None:
        bar.update()
        what = "selected checkpoint on the evaluation set" if msg[1] == "selected" else f"epoch {msg[1]} on validation"
        bar.set_postfix_str(f"runs {finished}/{len(runs)}, {msg[0]} {what}: J {msg[2]:.4g}")

    def on_run(outcome: Outcome) -> None:
        nonlocal finished
        if outcome.ok:
            done[todo[outcome.index]] = outcome.result
            finished += 1

    try:
        if todo:
            sim, reference = SimConfig.from_yaml(), FourierConfig.from_yaml()
            job = Job("sweep", run_one, init_worker, (cfg, str(data), base, sim, reference), shared_paths=(str(data), str(out)))
            tasks = [Task(run_id(*key), (*key, str(out))) for key in todo]
            executor.run(job, tasks, on_message=on_epoch, on_outcome=on_run)
    finally:
        bar.close()
    results = [done[r] for r in runs]
    return SweepResult(results, base_eval, exact_eval, len(todo), time.perf_counter() - start, exact_validation)
