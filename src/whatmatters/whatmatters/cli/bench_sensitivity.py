"""The sensitivity figures of ``whatmatters bench``: nominal model (with mpc.pytorch) and learned model."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import torch

from whatmatters.dynamics.nominal import nominal_model
from whatmatters.dynamics.registry import resolve_model
from whatmatters.eval.episode import EpisodeResult, run_episode
from whatmatters.mpc.config import MpcConfig
from whatmatters.mpc.controller import MpcController
from whatmatters.mpc.solver import AcadosMpcSolver
from whatmatters.sensitivity.compute import SensitivityComputer, SensitivityConfig
from whatmatters.sensitivity.kkt import active_set, dynamics_multipliers, first_input_sensitivity
from whatmatters.sensitivity.mpc_pytorch import du0_de_mpc_pytorch
from whatmatters.sensitivity.point import warm_start
from whatmatters.sim.environments import make_environment
from whatmatters.sim.simulator import PandaSim, SimConfig
from whatmatters.trajectory.fourier import FourierConfig, FourierTrajectory, sample_fourier_trajectory

__all__ = ["BENCH_ENV", "bench_sensitivity", "bench_sensitivity_learned", "one_core"]

#: The benchmark's environment (an evaluation environment: payload, reference).
BENCH_ENV = 2000


@contextlib.contextmanager
def one_core() -> Iterator[int]:
    """Runs the block on one CPU (process affinity, one torch thread); yields the CPU, -1 where affinity is unsupported."""
    threads = torch.get_num_threads()
    before = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    cpu = -1
    try:
        if before:
            cpu = min(before)
            os.sched_setaffinity(0, {cpu})
        torch.set_num_threads(1)
        yield cpu
    finally:
        torch.set_num_threads(threads)
        if before:
            os.sched_setaffinity(0, before)


def bench_sensitivity(samples: int = 20) -> dict[str, float]:
    """S_hat per sample (both factors, nominal model, along a closed-loop run), and
    du0/de against mpc.pytorch on the same converged problems."""
    sim = PandaSim(SimConfig.from_yaml())
    model = nominal_model(sim.params)
    cfg = MpcConfig.from_yaml()
    computer = SensitivityComputer(model, cfg, sim.torque_limits, SensitivityConfig.from_yaml())
    env = make_environment(BENCH_ENV)
    reference = sample_fourier_trajectory(env.reference_seed, FourierConfig.from_yaml(), sim.params)
    res = run_episode(MpcController(AcadosMpcSolver(model, cfg, sim.torque_limits), model), sim, env, reference, 0.02 * samples)
    horizon = cfg.dt * np.arange(cfg.horizon + 1)
    prev = computer.compute(res.x[0], reference.state(horizon), x_init=res.predictions[0])  # warm-up (loads compiled code)
    start = time.perf_counter()
    points = []
    for t in range(1, samples + 1):  # as the logger and the batch job: from the previous operating point, shifted
        prev = computer.compute(res.x[t], reference.state(t * cfg.dt + horizon), None, *warm_start(prev))
        points.append(prev)
    out = {"sensitivity_ms_per_sample": 1e3 * (time.perf_counter() - start) / samples}
    # du0/de from the converged point: ours (exact derivatives + Riccati) vs mpc.pytorch (LQR layer, given A, B)
    ours_s = theirs_s = 0.0
    diff_gn = diff_exact = scale = 0.0
    n = cfg.horizon
    for t, s in enumerate(points, start=1):
        x_ref = reference.state(t * cfg.dt + horizon)
        t0 = time.perf_counter()
        f, a, b = computer.derivatives.jacobians(s.x[:n], s.u, np.zeros(0))
        lam = dynamics_multipliers(s.x, x_ref, a, computer.q_w, computer.qn_w)
        hess = computer.derivatives.hessians(s.x[:n], s.u, np.zeros(0), lam)
        active = active_set(s.u, computer.upper, lower=computer.lower)
        first_input_sensitivity(a, b, hess, computer.q_w, computer.r_w, computer.qn_w, active)
        ours_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        _, theirs = du0_de_mpc_pytorch(s.x, s.u, x_ref, f, a, b, cfg, computer.upper)
        theirs_s += time.perf_counter() - t0
        gn = first_input_sensitivity(a, b, np.zeros_like(hess), computer.q_w, computer.r_w, computer.qn_w, active).du0_de
        diff_gn = max(diff_gn, float(np.abs(theirs - gn).max()))
        diff_exact = max(diff_exact, float(np.abs(theirs - s.du0_de).max()))
        scale = max(scale, float(np.abs(s.du0_de).max()))
    out["sensitivity_speedup_vs_mpc_pytorch"] = theirs_s / ours_s
    out["du0_de_max_diff_vs_mpc_pytorch_gauss_newton"] = diff_gn
    out["du0_de_max_diff_vs_mpc_pytorch_exact_hessian"] = diff_exact
    out["du0_de_max_abs"] = scale
    return out


def _time_learned_path(computer: SensitivityComputer, res: EpisodeResult, reference: FourierTrajectory, samples: int) -> float:
    """Seconds for ``samples`` consecutive steps the batch job's way (operating points, then ``finish``)."""
    cfg = computer.mpc
    horizon = cfg.dt * np.arange(cfg.horizon + 1)
    params = computer.model.parameter_values()  # as the batch job and the logger: given with each step
    warm = computer.compute(res.x[0], reference.state(horizon), params, x_init=res.predictions[0])  # warm-up
    computer.step_seconds.clear()
    start = time.perf_counter()
    points, init = [], warm_start(warm)
    for t in range(1, samples + 1):  # each from the previous operating point, shifted
        points.append(computer.operating_point(res.x[t], reference.state(t * cfg.dt + horizon), params, *init))
        init = warm_start(points[-1])
    done = computer.finish(points)
    if any(d is None for d in done):
        raise RuntimeError("a benchmark sample's KKT system was singular")
    return time.perf_counter() - start


def bench_sensitivity_learned(samples: int = 20) -> dict[str, float]:
    """S_hat per sample with the base learned model on one core, with its breakdown, and the
    same samples by the reference path (torch autograd Hessians, re-solves from the operating point).

    Both along a closed-loop run, each sample's SQP started from the previous
    operating point shifted (the batch job's and the logger's order), serial
    (``parallel: false``), pinned to one CPU.
    """
    sim = PandaSim(SimConfig.from_yaml())
    model = resolve_model("base")
    cfg = MpcConfig.from_yaml()
    env = make_environment(BENCH_ENV)
    reference = sample_fourier_trajectory(env.reference_seed, FourierConfig.from_yaml(), sim.params)
    res = run_episode(MpcController(AcadosMpcSolver(model, cfg, sim.torque_limits), model.nominal), sim, env, reference, 0.02 * samples)
    fast_cfg = replace(SensitivityConfig.from_yaml(), parallel=False)
    fast = SensitivityComputer(model, cfg, sim.torque_limits, fast_cfg)
    ref = SensitivityComputer(model, cfg, sim.torque_limits, replace(fast_cfg, derivatives="torch", resolve_start="point", resolve_hessian="gauss_newton"))
    with one_core():
        seconds = _time_learned_path(fast, res, reference, samples)
        ref_seconds = _time_learned_path(ref, res, reference, samples)
    steps = fast.step_seconds
    out = {
        "sensitivity_ms_per_sample_learned": 1e3 * seconds / samples,
        "sensitivity_ms_per_sample_learned_reference_path": 1e3 * ref_seconds / samples,
        "sensitivity_learned_speedup_vs_reference_path": ref_seconds / seconds,
    }
    for key in ("operating_point", "hessians", "riccati", "resolve"):
        out[f"sensitivity_ms_per_sample_learned_{key}"] = 1e3 * steps[key] / samples
    out["sensitivity_learned_sqp_iter_operating_point"] = steps["operating_point_iter"] / samples
    out["sensitivity_learned_sqp_iter_resolve"] = steps["resolve_iter"] / (2 * samples)
    out["sensitivity_ms_per_sample_learned_reference_path_hessians"] = 1e3 * ref.step_seconds["hessians"] / samples
    return out
