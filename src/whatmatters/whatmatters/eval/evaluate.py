"""Evaluating a model on a set of environments, in parallel worker processes.

Each worker builds (or loads from the cache) the compiled solver once and runs
its share of the episodes. The parent compiles first, so workers only load.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from whatmatters.dynamics.base import DynamicsModel
from whatmatters.dynamics.nominal import nominal_model
from whatmatters.dynamics.registry import resolve_model
from whatmatters.eval.episode import EpisodeResult, run_episode
from whatmatters.mpc.config import MpcConfig
from whatmatters.mpc.controller import MpcController
from whatmatters.mpc.solver import AcadosMpcSolver
from whatmatters.parallel import worker_pool
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


def _init_worker(model_spec: str, mpc: MpcConfig, sim: SimConfig, reference: FourierConfig) -> None:
    global _WORKER
    logging.basicConfig(level=logging.WARNING)
    _WORKER = Evaluator(model_spec, mpc, sim, reference)


def _run(env_seed: int, seconds: float) -> tuple[int, dict[str, float | int]]:
    assert _WORKER is not None
    return env_seed, _WORKER.episode(env_seed, seconds).summary()


def evaluate(
    model_spec: str,
    seeds: list[int],
    seconds: float = 10.0,
    workers: int | None = None,
    mpc: MpcConfig | None = None,
    sim: SimConfig | None = None,
    reference: FourierConfig | None = None,
) -> EvaluationResult:
    """Runs one episode per environment seed and collects the tracking costs.

    Args:
        model_spec: The model (see :func:`resolve_model`).
        seeds: Environment seeds.
        seconds: Episode length, s.
        workers: Worker processes (default: number of CPUs, at most len(seeds));
            1 runs in this process.
        mpc: MPC settings (``config/mpc.yaml`` if None).
        sim: Simulator settings (``config/sim.yaml`` if None).
        reference: Reference settings (``config/reference.yaml`` if None).
    """
    mpc = mpc or MpcConfig.from_yaml()
    sim = sim or SimConfig.from_yaml()
    reference = reference or FourierConfig.from_yaml()
    workers = max(1, min(workers or os.cpu_count() or 1, len(seeds)))
    start = time.perf_counter()
    per_env: dict[int, dict[str, float | int]] = {}
    local = Evaluator(model_spec, mpc, sim, reference)
    if model_spec != "exact":
        local.controller(None)  # compile once here; workers load the cached library
    if workers == 1:
        for i, seed in enumerate(seeds):
            per_env[seed] = local.episode(seed, seconds).summary()
            log.info("evaluate %s: %d/%d envs (seed %d: J_track %.4g)", model_spec, i + 1, len(seeds), seed, per_env[seed]["j_track"])
    else:
        with worker_pool(workers, _init_worker, (model_spec, mpc, sim, reference)) as pool:
            futures = [pool.submit(_run, seed, seconds) for seed in seeds]
            for i, fut in enumerate(futures):
                seed, summary = fut.result()
                per_env[seed] = summary
                log.info("evaluate %s: %d/%d envs (seed %d: J_track %.4g)", model_spec, i + 1, len(seeds), seed, summary["j_track"])
    return EvaluationResult(model_spec, per_env, time.perf_counter() - start)
