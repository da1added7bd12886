"""Compiling a model's solvers and functions into the cache before a job needs them.

Everything compiled is cached by content (``~/.cache/whatmatters``, see
:mod:`whatmatters.codegen` and :class:`whatmatters.mpc.solver.AcadosMpcSolver`)
and guarded by a file lock, so a part compiled here is loaded, not rebuilt, by
the MPC, the logger or a batch job afterwards; a job that starts while a part
is being compiled waits for it. The parts of a model are independent, so they
are compiled in parallel, one worker process each:

=============================  ==============================================================
``mpc``                        the controller's acados solver (``config/mpc.yaml``) and, for
                               the learned model, its context tracker
``sensitivity-solver``         the operating-point / re-solve solver of S_hat (full SQP,
                               exact RK4 Jacobian)
``sensitivity-derivatives``    the stage Hessians of S_hat (``config/sensitivity.yaml``'s
                               ``derivatives``)
``sensitivity-riccati``        the compiled Riccati pass of du0/de
``sensitivity-fallback``       the exact-Hessian solver S_hat falls back to where its SQP stalls,
                               with ``fallback: exact_hessian`` (the race car); else nothing
=============================  ==============================================================

On a cold cache the arm's learned model's parts took 24, 20, 18 and 20 s,
built side by side on a 2-core x86_64 VM (51 s of CPU in 27 s of wall time,
``whatmatters build --model base --json``); built one after another inside
one logger they would leave the other core idle. ``system="car"`` builds the race car's
(``config/car/``): its fallback solver for the learned model took 300 s, which
a logger would otherwise spend at the first step whose SQP stalls.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from whatmatters.errors import ConfigError
from whatmatters.executor import Executor, Job, LocalExecutor, Task

__all__ = ["PARTS", "SYSTEMS", "build_model", "build_part", "solvers_cached"]

PARTS = ("mpc", "sensitivity-solver", "sensitivity-derivatives", "sensitivity-riccati", "sensitivity-fallback")
SYSTEMS = ("arm", "car")


def _settings(model_spec: str, system: str = "arm") -> tuple[Any, Any, Any, Any]:
    """The model, the stack's MPC and S_hat settings and the OCP's input bounds or constraints of a
    system (imported here: the CLI starts fast).

    Raises:
        ConfigError: For an unknown system.
    """
    from whatmatters.mpc.config import MpcConfig
    from whatmatters.sensitivity.config import SensitivityConfig

    if system == "car":
        from whatmatters.car.experiment import CarExperimentConfig, CarSystem

        car = CarSystem(CarExperimentConfig.from_yaml())
        return car.model(model_spec), car.mpc, car.sensitivity, car.constraints
    if system != "arm":
        raise ConfigError(f"unknown system {system!r}: expected one of {', '.join(SYSTEMS)}")
    from whatmatters.dynamics.registry import resolve_model
    from whatmatters.robot.params import load_panda_params

    return resolve_model(model_spec), MpcConfig.from_yaml(), SensitivityConfig.from_yaml(), load_panda_params().torque_limits


def build_part(model_spec: str, part: str, system: str = "arm") -> float:
    """Compiles (or finds in the cache) one part of a model; the seconds it took.

    Args:
        model_spec: ``nominal``, ``base`` or a checkpoint path
            (:func:`whatmatters.dynamics.registry.resolve_model`; the car's: ``CarSystem.model``).
        part: One of :data:`PARTS`.
        system: One of :data:`SYSTEMS`.

    Raises:
        ConfigError: For an unknown part or system.
    """
    from whatmatters.mpc.solver import AcadosMpcSolver
    from whatmatters.sensitivity.compute import exact_twin_config, operating_point_config, stage_derivatives
    from whatmatters.sensitivity.riccati import CompiledRiccati

    if part not in PARTS:
        raise ConfigError(f"unknown part {part!r}: expected one of {', '.join(PARTS)}")
    start = time.perf_counter()
    model, mpc, sens, limits = _settings(model_spec, system)
    if part == "sensitivity-fallback":
        if sens.fallback == "exact_hessian":
            AcadosMpcSolver(model, exact_twin_config(operating_point_config(mpc, sens)), limits)
    elif part == "mpc":
        AcadosMpcSolver(model, mpc, limits)
        if hasattr(model, "context_tracker"):
            model.context_tracker()  # compiles its nominal inverse dynamics
    elif part == "sensitivity-solver":
        AcadosMpcSolver(model, operating_point_config(mpc, sens), limits)
    elif part == "sensitivity-derivatives":
        stage_derivatives(model, mpc, sens)
    else:
        CompiledRiccati(model.nx, model.nu, mpc.horizon, flags=mpc.compile_flags)
    return time.perf_counter() - start


def solvers_cached(model_spec: str, system: str = "arm") -> bool:
    """Whether the model's MPC solver and S_hat solver (and, with ``fallback: exact_hessian``, the
    fallback solver) are all in the cache (a few seconds to tell).

    The S_hat functions are compiled with the S_hat solver by every job that
    computes S_hat, so the solvers stand for a built model.
    """
    from whatmatters.mpc.solver import AcadosMpcSolver
    from whatmatters.sensitivity.compute import exact_twin_config, operating_point_config

    model, mpc, sens, limits = _settings(model_spec, system)
    configs = [mpc, operating_point_config(mpc, sens)]
    if sens.fallback == "exact_hessian":
        configs.append(exact_twin_config(configs[1]))
    return all(AcadosMpcSolver.is_cached(model, cfg, limits) for cfg in configs)


def build_model(model_spec: str, parts: Sequence[str] = PARTS, executor: Executor | None = None, system: str = "arm") -> dict[str, float]:
    """Compiles the parts of a model in parallel (one task each).

    Args:
        model_spec: See :func:`build_part`.
        parts: Which of :data:`PARTS`.
        executor: Where the tasks run (default: one local worker process per part).
        system: One of :data:`SYSTEMS`.

    Returns:
        Seconds per part (a cached part takes about as long as loading it).

    Raises:
        ConfigError: For an unknown part, an empty list or an unknown system.
        whatmatters.executor.TaskError: Naming each part that failed to build.
    """
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise ConfigError(f"parts {list(parts)}: expected one or more of {', '.join(PARTS)}")
    if system not in SYSTEMS:
        raise ConfigError(f"unknown system {system!r}: expected one of {', '.join(SYSTEMS)}")
    job = Job("build", build_part)
    results = (executor or LocalExecutor(len(parts))).run(job, [Task(part, (model_spec, part, system)) for part in parts])
    return {part: float(seconds) for part, seconds in zip(parts, results)}
