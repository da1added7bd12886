"""``whatmatters bench``: speed figures of this machine, each measured in this run."""

from __future__ import annotations

from dataclasses import replace

import argparse
import logging
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from whatmatters.cli.bench_executor import bench_executors
from whatmatters.cli.bench_sensitivity import BENCH_ENV, bench_sensitivity, bench_sensitivity_learned
from whatmatters.control.hold import run_hold
from whatmatters.data.bags import EpisodeRecord
from whatmatters.data.dataset import transitions_from_episodes
from whatmatters.dynamics.learned import LearnedDynamics
from whatmatters.dynamics.nominal import nominal_model
from whatmatters.dynamics.registry import base_checkpoint
from whatmatters.errors import ConfigError
from whatmatters.eval.episode import run_episode
from whatmatters.mpc.config import MpcConfig
from whatmatters.mpc.controller import MpcController
from whatmatters.mpc.solver import AcadosMpcSolver
from whatmatters.sim.environments import make_environment
from whatmatters.sim.simulator import PandaSim, SimConfig
from whatmatters.train.pretrain import PretrainConfig, pretrain
from whatmatters.trajectory.fourier import FourierConfig, sample_fourier_trajectory

log = logging.getLogger(__name__)




def add_parser(sub: Any) -> None:
    """Registers the sub-command."""
    p = sub.add_parser("bench", help="measure simulator and MPC speed on this machine")
    p.add_argument("--sim-seconds", type=float, default=20.0, help="simulated seconds for the simulator figure")
    p.add_argument("--mpc-seconds", type=float, default=10.0, help="closed-loop seconds for the MPC solve times")
    p.add_argument("--skip-build", action="store_true", help="do not time a fresh solver build (reuse the cache)")
    p.add_argument("--learned-build", action="store_true", help="also time a fresh build of the learned-model solver (~1-2 min)")
    p.add_argument("--executors", action="store_true", help="also time Ray against the local process pool: an S_hat batch and the quick sweep (~6 min, docs/scale.md)")
    p.add_argument("--executors-only", action="store_true", help="only the --executors figures")
    p.add_argument("--workers", type=int, default=2, help="with --executors: worker processes (and a local Ray instance's CPUs)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def bench_simulator(seconds: float) -> float:
    """Realtime factor of the simulator under the hold controller (best of 3)."""
    env = make_environment(BENCH_ENV)
    q_start = sample_fourier_trajectory(env.reference_seed, FourierConfig.from_yaml()).evaluate(0.0)[0]
    sim = PandaSim(SimConfig.from_yaml())
    model = nominal_model(sim.params)
    return max(run_hold(sim, env, q_start, seconds, model).realtime_factor for _ in range(3))


def bench_mpc(seconds: float, fresh_build: bool) -> dict[str, float]:
    """Build time (fresh, in a temporary cache) and per-step solve times in closed loop."""
    sim = PandaSim(SimConfig.from_yaml())
    model = nominal_model(sim.params)
    cfg = MpcConfig.from_yaml()
    out: dict[str, float] = {}
    if fresh_build:
        with tempfile.TemporaryDirectory(prefix="wm-bench-") as tmp:
            start = time.perf_counter()
            AcadosMpcSolver(model, cfg, sim.torque_limits, cache_dir=Path(tmp))
            out["mpc_build_s"] = time.perf_counter() - start
    solver = AcadosMpcSolver(model, cfg, sim.torque_limits)
    env = make_environment(BENCH_ENV)
    reference = sample_fourier_trajectory(env.reference_seed, FourierConfig.from_yaml(), sim.params)
    res = run_episode(MpcController(solver, model), sim, env, reference, seconds)
    out["mpc_solve_ms_median"] = float(np.median(res.solve_ms))
    out["mpc_solve_ms_p99"] = float(np.percentile(res.solve_ms, 99))
    out["mpc_step_ms_median"] = float(np.median(res.wall_ms))
    out["mpc_step_ms_p99"] = float(np.percentile(res.wall_ms, 99))
    return out


def bench_learned(seconds: float, fresh_build: bool = False) -> tuple[dict[str, float], float]:
    """Closed-loop solve times with the learned model, and pretraining throughput.

    Uses the packaged base checkpoint when it exists (otherwise a freshly
    initialised model of the same architecture: the same solver and cost).
    With ``fresh_build``, also the build time in a temporary cache (``mpc_build_s_learned``).
    """
    sim = PandaSim(SimConfig.from_yaml())
    nominal = nominal_model(sim.params)
    base = base_checkpoint()
    model = LearnedDynamics.load(base) if base.is_file() else LearnedDynamics()
    times: dict[str, float] = {}
    if fresh_build:
        with tempfile.TemporaryDirectory(prefix="wm-bench-") as tmp:
            start = time.perf_counter()
            AcadosMpcSolver(model, MpcConfig.from_yaml(), sim.torque_limits, cache_dir=Path(tmp))
            times["mpc_build_s_learned"] = time.perf_counter() - start
    cfg = MpcConfig.from_yaml()
    env = make_environment(BENCH_ENV)
    reference = sample_fourier_trajectory(env.reference_seed, FourierConfig.from_yaml(), sim.params)
    # the configured Jacobian, then the other one (keys with its name): both are choices users make
    other = "first_stage" if cfg.rk4_jacobian == "exact" else "exact"
    for suffix, jac in (("", cfg.rk4_jacobian), (f"_{other}", other)):
        solver = AcadosMpcSolver(model, replace(cfg, rk4_jacobian=jac), sim.torque_limits)
        res = run_episode(MpcController(solver, nominal), sim, env, reference, seconds)
        times |= {
            f"mpc_solve_ms_median_learned{suffix}": float(np.median(res.solve_ms)),
            f"mpc_solve_ms_p99_learned{suffix}": float(np.percentile(res.solve_ms, 99)),
            f"mpc_step_ms_median_learned{suffix}": float(np.median(res.wall_ms)),
        }
        times[f"j_track_bench_env_learned{suffix}"] = res.j_track  # eq. (7), one 10 s episode
    record = EpisodeRecord(Path("bench"), res.t, res.x, res.tau, res.x_ref)
    data = transitions_from_episodes([record] * 4, nominal, model.cfg.window)
    with tempfile.TemporaryDirectory(prefix="wm-bench-") as tmp:
        fit = pretrain(data, Path(tmp) / "m.pt", PretrainConfig(epochs=3, val_fraction=0.0), progress=False)
    return times, fit.samples_per_s


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Runs every benchmark and returns the figures."""
    out: dict[str, Any] = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"}
    if args.executors or args.executors_only:
        if args.workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {args.workers}")
        log.info("bench executors: S_hat batch and quick sweep, local pool vs Ray (%d workers)", args.workers)
        with tempfile.TemporaryDirectory(prefix="wm_bench_exec_") as tmp:
            found = bench_executors(Path(tmp), args.workers)
        out.update({k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in found.items()})
        if args.executors_only:
            return out
    log.info("bench 1/6: simulator realtime factor (%.0f s simulated, best of 3)", args.sim_seconds)
    out["sim_realtime_factor"] = round(bench_simulator(args.sim_seconds), 1)
    log.info("bench 2/6: MPC (nominal model, N = 12): %sclosed loop %.0f s", "" if args.skip_build else "fresh build, ", args.mpc_seconds)
    out.update({k: round(v, 3) for k, v in bench_mpc(args.mpc_seconds, not args.skip_build).items()})
    log.info("bench 3/6: MPC with the learned model (closed loop %.0f s) and pretraining throughput", args.mpc_seconds)
    times, rate = bench_learned(args.mpc_seconds, args.learned_build)
    out.update({k: round(v, 3) for k, v in times.items()})
    out["train_samples_per_s"] = round(rate, 1)
    log.info("bench 4/6: task sensitivities (nominal model, 20 samples) and mpc.pytorch")
    out.update({k: float(f"{v:.4g}") for k, v in bench_sensitivity().items()})
    log.info("bench 5/6: task sensitivities with the learned model (20 samples, one core; and the reference path)")
    out.update({k: float(f"{v:.4g}") for k, v in bench_sensitivity_learned().items()})
    out["sensitivity_learned_vs_mpc_step"] = float(f"{out['sensitivity_ms_per_sample_learned'] / out['mpc_step_ms_median_learned']:.4g}")
    log.info("bench 6/6: the race car: MPC solve times (closed loop %.0f s) and S_hat (20 samples), nominal and learned", args.mpc_seconds)
    from whatmatters.cli.bench_car import bench_car  # the car's modules: only for this command (not in every worker's import)

    out.update({k: float(f"{v:.4g}") for k, v in bench_car(args.mpc_seconds).items()})
    return out
