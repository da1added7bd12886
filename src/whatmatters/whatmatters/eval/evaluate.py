"""Evaluating a model on a set of environments, in parallel worker processes.

Each worker builds (or loads from the cache) the compiled solver once and runs
its share of the episodes. The parent compiles first, so workers only load.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from whatmatters.dynamics.base import DynamicsModel
from whatmatters.executor import Executor, Job, LocalExecutor, Outcome, Task
from whatmatters.dynamics.nominal import nominal_model
from whatmatters.dynamics.registry import absolute_model_spec, resolve_model
from whatmatters.eval.episode import EpisodeResult, run_episode
from whatmatters.mpc.config import MpcConfig
from whatmatters.mpc.controller import MpcController
from whatmatters.mpc.solver import AcadosMpcSolver
from whatmatters.sim.environments import Environment, make_environment
from whatmatters.sim.simulator import PandaSim, SimConfig
from whatmatters.trajectory.fourier import FourierConfig, FourierTrajectory, sample_fourier_trajectory

__all__ = ["EvaluationResult", "Evaluator", "evaluate"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluationResult:
    """Tracking costs over a set of environments.

    Attributes:
        model: The model spec evaluated.
        per_env: Environment seed -> episode summary.
        wall_s: Wall time of the whole evaluation, s.
    """

    model: str
    per_env: dict[int, dict[str, float | int]]
    wall_s: float

    def summary(self) -> dict[str, object]:
        """``j_track_mean``, ``j_track_std``, ``j_track_per_env``, ``bound_share_per_env`` (share of steps with a
        torque at its bound), ``fallbacks``, ``wall_s``."""
        j = np.array([r["j_track"] for r in self.per_env.values()])
        return {
            "model": self.model,
            "envs": len(j),
            "j_track_mean": float(j.mean()),
            "j_track_std": float(j.std()),
            "j_track_per_env": {str(k): float(v["j_track"]) for k, v in self.per_env.items()},
            "bound_share_per_env": {str(k): float(v["bound_share"]) for k, v in self.per_env.items()},
            "fallbacks": int(sum(int(v["fallbacks"]) for v in self.per_env.values())),
            "solve_ms_median": float(np.median([v["solve_ms_median"] for v in self.per_env.values()])),
            "wall_s": self.wall_s,
        }


class Evaluator:
    """Runs episodes of one model spec; holds the compiled solver between episodes.

    Args:
        model_spec: ``nominal`` or ``exact`` (see :func:`resolve_model`).
        mpc: MPC settings.
        sim: Simulator settings.
        reference: Reference generator settings.
    """

    def __init__(self, model_spec: str, mpc: MpcConfig, sim: SimConfig, reference: FourierConfig) -> None:
        self.model_spec, self.mpc, self.sim_cfg, self.ref_cfg = model_spec, mpc, sim, reference
        self.sim = PandaSim(sim)
        self.nominal = nominal_model(self.sim.params)
        self._controllers: dict[int | None, MpcController] = {}

    def controller(self, env_seed: int | None) -> MpcController:
        """The controller for an environment (shared unless the model depends on it)."""
        key = env_seed if self.model_spec == "exact" else None
        if key not in self._controllers:
            env = make_environment(env_seed) if env_seed is not None else None
            model = resolve_model(self.model_spec, env, self.sim_cfg)
            solver = AcadosMpcSolver(model, self.mpc, self.sim.torque_limits)
            self._controllers[key] = MpcController(solver, self.nominal)
        return self._controllers[key]

    def use_model(self, model: DynamicsModel, label: str | None = None) -> None:
        """Runs the next episodes with ``model`` (same formulation: swapped into the compiled solver, no rebuild).

        Raises:
            MpcBuildError: If the model needs another compiled solver than the current one.
        """
        if self.model_spec == "exact":
            raise ValueError("use_model does not apply to the per-environment exact models")
        current = self._controllers.get(None)
        if current is None:
            solver = AcadosMpcSolver(model, self.mpc, self.sim.torque_limits)
        else:
            solver = current.solver
            solver.swap_model(model)
        self._controllers[None] = MpcController(solver, self.nominal)
        self.model_spec = label or self.model_spec

    def episode(self, env_seed: int, seconds: float) -> EpisodeResult:
        """One episode on an environment with its own seeded reference."""
        env = make_environment(env_seed)
        reference = sample_fourier_trajectory(env.reference_seed, self.ref_cfg, self.sim.params)
        return self.run(env_seed, env, reference, seconds)

    def run(self, env_seed: int, env: Environment, reference: FourierTrajectory, seconds: float, *args: Any) -> EpisodeResult:
        """:func:`run_episode` with this evaluator's controller and simulator (extra args passed on)."""
        return run_episode(self.controller(env_seed), self.sim, env, reference, seconds, *args)


_WORKER: Evaluator | None = None
_WORKER_ARGS: tuple[Any, ...] | None = None


def _init_worker(model_spec: str, mpc: MpcConfig, sim: SimConfig, reference: FourierConfig) -> None:
    """The evaluation job's setup: this process's evaluator (kept when it already has one for these settings)."""
    global _WORKER, _WORKER_ARGS
    args = (model_spec, mpc, sim, reference)
    if _WORKER is None or _WORKER_ARGS != args:
        _WORKER, _WORKER_ARGS = Evaluator(model_spec, mpc, sim, reference), args
        if model_spec != "exact":
            _WORKER.controller(None)  # compiles, or loads this node's cached solver


def _run(env_seed: int, seconds: float) -> dict[str, float | int]:
    assert _WORKER is not None
    return _WORKER.episode(env_seed, seconds).summary()


def evaluate(
    model_spec: str,
    seeds: list[int],
    seconds: float = 10.0,
    workers: int | None = None,
    mpc: MpcConfig | None = None,
    sim: SimConfig | None = None,
    reference: FourierConfig | None = None,
    executor: Executor | None = None,
) -> EvaluationResult:
    """Runs one episode per environment seed and collects the tracking costs.

    Args:
        model_spec: The model (see :func:`resolve_model`).
        seeds: Environment seeds.
        seconds: Episode length, s.
        workers: Worker processes of the default local executor (default:
            number of CPUs, at most len(seeds)); 1 runs in this process.
        mpc: MPC settings (``config/mpc.yaml`` if None).
        sim: Simulator settings (``config/sim.yaml`` if None).
        reference: Reference settings (``config/reference.yaml`` if None).
        executor: Where the episodes run (default: ``LocalExecutor(workers)``).

    Raises:
        TaskError: Naming each environment whose episode failed (after the others finished).
    """
    mpc = mpc or MpcConfig.from_yaml()
    sim = sim or SimConfig.from_yaml()
    reference = reference or FourierConfig.from_yaml()
    start = time.perf_counter()
    setup = (absolute_model_spec(model_spec), mpc, sim, reference)  # a checkpoint path that workers elsewhere find too
    _init_worker(*setup)  # compile once here; workers on this machine load the cached library
    job = Job(f"evaluate {model_spec}", _run, _init_worker, setup)
    tasks = [Task(f"env {seed}", (seed, seconds)) for seed in seeds]
    done = 0

    def progress(outcome: Outcome) -> None:
        nonlocal done
        done += 1
        if outcome.ok:
            log.info("evaluate %s: %d/%d envs (%s: J_track %.4g)", model_spec, done, len(seeds), outcome.task.name, outcome.result["j_track"])

    summaries = (executor or LocalExecutor(workers)).run(job, tasks, on_outcome=progress)
    return EvaluationResult(model_spec, dict(zip(seeds, summaries)), time.perf_counter() - start)
