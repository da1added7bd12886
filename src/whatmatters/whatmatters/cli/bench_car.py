"""The race car's figures of ``whatmatters bench``: its MPC step and S_hat per sample, nominal and learned."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch

from whatmatters.car.data import step_contexts
from whatmatters.car.experiment import CarExperimentConfig, CarSystem
from whatmatters.car.learned import CarLearnedModel
from whatmatters.car.model import CarModel
from whatmatters.sensitivity.batch import compute_samples
from whatmatters.sensitivity.compute import SensitivityComputer

__all__ = ["bench_car", "learned_car_model"]

#: The evaluation environment of the car's figures (the first of the eval set).
CAR_BENCH_ENV = 2000


def learned_car_model(system: CarSystem, seed: int = 0) -> CarLearnedModel:
    """A learned car model with a non-zero residual, for timing: every weight from ``seed``
    (the same model in every process; torch's global random state is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CarLearnedModel(system.nominal)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        last = model.residual.net[-1]
        last.weight.copy_(0.1 * torch.randn(last.weight.shape, generator=gen, dtype=last.weight.dtype))
    return model


def _one(system: CarSystem, model: CarModel, seconds: float, samples: int) -> dict[str, float]:
    """MPC step times over a closed-loop run and S_hat of its first ``samples`` steps on one thread."""
    start = time.perf_counter()
    ep = system.episode(model, CAR_BENCH_ENV, seconds)
    steps = len(ep.u)
    step_ms = 1e3 * (time.perf_counter() - start)  # plant included; the solver's own times below
    computer = SensitivityComputer(model, system.mpc, system.constraints, replace(system.sensitivity, parallel=False))
    z = step_contexts(model, ep.x, ep.u, ep.dt)
    compute_samples(computer, ep.x[:3], ep.x_ref[:3], None if z is None else z[:3])  # compiled and warm
    t0 = time.perf_counter()
    out = compute_samples(computer, ep.x[:samples], ep.x_ref[:samples], None if z is None else z[:samples])
    s_ms = 1e3 * (time.perf_counter() - t0) / samples
    return {
        "mpc_solve_ms_median": float(np.median(ep.solve_ms)),
        "loop_ms_per_step": step_ms / steps,
        "sensitivity_ms_per_sample": s_ms,
        "sensitivity_converged": float(out["ok"].mean()),
        "j_track": ep.j_track,
    }


def bench_car(seconds: float = 10.0, samples: int = 20) -> dict[str, float]:
    """The car's figures (keys ``car_*``), each measured in this call.

    ``car_mpc_solve_ms_median*`` is acados' solve time per 50 Hz step of a
    closed-loop run of ``seconds`` in environment :data:`CAR_BENCH_ENV`;
    ``car_sensitivity_ms_per_sample*`` is S_hat of its first ``samples``
    consecutive steps (each warm-started from the one before, the batch job's
    path, one thread); ``car_sensitivity_vs_mpc_solve*`` is their ratio.
    """
    system = CarSystem(CarExperimentConfig())
    out: dict[str, float] = {}
    for suffix, model in (("", system.nominal), ("_learned", learned_car_model(system))):
        fig = _one(system, model, seconds, samples)
        out.update({f"car_{k}{suffix}": v for k, v in fig.items()})
        out[f"car_sensitivity_vs_mpc_solve{suffix}"] = fig["sensitivity_ms_per_sample"] / fig["mpc_solve_ms_median"]
    return out
