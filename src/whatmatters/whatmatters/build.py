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
=============================  ==============================================================

On a cold cache the learned model's parts take ~70, ~70, ~50 and ~15 s of one
core each (2-core x86_64 VM); built one after another inside one logger they
leave the other core idle.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from whatmatters.errors import ConfigError
from whatmatters.executor import Executor, Job, LocalExecutor, Task

__all__ = ["PARTS", "build_model", "build_part", "solvers_cached"]

PARTS = ("mpc", "sensitivity-solver", "sensitivity-derivatives", "sensitivity-riccati")


def _settings(model_spec: str) -> tuple[Any, Any, Any, np.ndarray]:
    """The model, the stack's MPC and S_hat settings and the torque limits (imported here: the CLI starts fast)."""
    from whatmatters.dynamics.registry import resolve_model
    from whatmatters.mpc.config import MpcConfig
    from whatmatters.robot.params import load_panda_params
    from whatmatters.sensitivity.config import SensitivityConfig

    return resolve_model(model_spec), MpcConfig.from_yaml(), SensitivityConfig.from_yaml(), load_panda_params().torque_limits


def build_part(model_spec: str, part: str) -> float:
    """Compiles (or finds in the cache) one part of a model; the seconds it took.

    Args:
        model_spec: ``nominal``, ``base`` or a checkpoint path
            (:func:`whatmatters.dynamics.registry.resolve_model`).
        part: One of :data:`PARTS`.

    Raises:
        ConfigError: For an unknown part.
    """
    from whatmatters.mpc.solver import AcadosMpcSolver
    from whatmatters.sensitivity.compute import operating_point_config, stage_derivatives
    from whatmatters.sensitivity.riccati import CompiledRiccati

    if part not in PARTS:
        raise ConfigError(f"unknown part {part!r}: expected one of {', '.join(PARTS)}")
    start = time.perf_counter()
    model, mpc, sens, limits = _settings(model_spec)
    if part == "mpc":
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


def solvers_cached(model_spec: str) -> bool:
    """Whether the model's MPC solver and S_hat solver are both in the cache (a few seconds to tell).

    The S_hat functions are compiled with the S_hat solver by every job that
    computes S_hat, so the two solvers stand for a built model.
    """
    from whatmatters.mpc.solver import AcadosMpcSolver
    from whatmatters.sensitivity.compute import operating_point_config

    model, mpc, sens, limits = _settings(model_spec)
    return all(AcadosMpcSolver.is_cached(model, cfg, limits) for cfg in (mpc, operating_point_config(mpc, sens)))


def build_model(model_spec: str, parts: Sequence[str] = PARTS, executor: Executor | None = None) -> dict[str, float]:
    """Compiles the parts of a model in parallel (one task each).

    Args:
        model_spec: See :func:`build_part`.
        parts: Which of :data:`PARTS`.
        executor: Where the tasks run (default: one local worker process per part).

    Returns:
        Seconds per part (a cached part takes about as long as loading it).

    Raises:
        ConfigError: For an unknown part or an empty list.
        whatmatters.executor.TaskError: Naming each part that failed to build.
    """
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise ConfigError(f"parts {list(parts)}: expected one or more of {', '.join(PARTS)}")
    job = Job("build", build_part)
    results = (executor or LocalExecutor(len(parts))).run(job, [Task(part, (model_spec, part)) for part in parts])
    return {part: float(seconds) for part, seconds in zip(parts, results)}
