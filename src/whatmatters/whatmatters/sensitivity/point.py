"""What the sensitivity computation returns, and the warm start of the next step."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from whatmatters.errors import WhatmattersError
from whatmatters.sensitivity.kkt import KktSensitivity

__all__ = ["ConvergedPoint", "OperatingPoint", "SensitivityError", "SensitivitySample", "shifted", "warm_start"]


def _shift(a: np.ndarray, stages: int) -> np.ndarray:
    """``a`` (M, ...) moved ``stages`` entries forward, the last one repeated (at most M - 1 moved)."""
    k = min(stages, a.shape[0] - 1)
    return np.concatenate([a[k:], np.repeat(a[-1:], k, axis=0)])


def shifted(x: np.ndarray, u: np.ndarray, stages: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A converged solution shifted by ``stages`` stages (last stage repeated): a later step's SQP start.

    Args:
        x: States, (N + 1, nx).
        u: Inputs, (N, nu).
        stages: Control steps between the solution's step and the one it starts (>= 1).

    Returns:
        ``(x_init (N + 1, nx), u_init (N, nu))``.
    """
    if stages < 1:
        raise ValueError(f"a warm start shifts by >= 1 stage, got {stages}")
    return _shift(x, stages), _shift(u, stages)


def warm_start(result: OperatingPoint | SensitivitySample, stages: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """A later control step's SQP start from this one's result, shifted by ``stages`` stages.

    Args:
        result: The earlier step's result.
        stages: Control steps from that step to the one started (>= 1; 1: the next one).

    Returns:
        ``(x_init (N + 1, nx), u_init (N, nu), w_init (N, nz, nz) or None)``: the
        solution shifted (:func:`shifted`), and its second-order terms where they
        were, stage k's at stage k (None where the result kept none).

    ``W_k = d^2 (lambda_{k+1}' F_k) / d(x, u)^2`` is weighted by the costate,
    which depends mostly on the stages to go: kept at its stage it is the
    closer start (the operating point's SQP took 4.20 instead of 4.44
    iterations on average over the sweep's ten training bags, 5.37 instead of
    6.62 on the one whose torques saturate; ``docs/experiments.md``, section
    14). The start shapes only the iterates, not the converged solution.
    """
    x_init, u_init = shifted(result.x, result.u, stages)
    if isinstance(result, OperatingPoint):
        w = None if result.kkt is None else result.kkt.stage_hessians
    else:
        w = result.stage_hessians
    return x_init, u_init, w


class SensitivityError(WhatmattersError, RuntimeError):
    """The operating point could not be converged (the sample is reported, not used)."""


@dataclass(frozen=True)
class ConvergedPoint:
    """The converged OCP solution of one control step (step 1).

    Attributes:
        x_ref: Reference, (N + 1, nx).
        params: Model parameters used, (n_params,).
        x: Converged predicted states, (N + 1, nx).
        u: Converged inputs, (N, nu).
        sqp_iter: SQP iterations.
        a: Dynamics Jacobians dF/dx at the solution, (N, nx, nx).
        b: Dynamics Jacobians dF/du at the solution, (N, nx, nu).
    """

    x_ref: np.ndarray
    params: np.ndarray
    x: np.ndarray
    u: np.ndarray
    sqp_iter: int
    a: np.ndarray
    b: np.ndarray


@dataclass(frozen=True)
class OperatingPoint(ConvergedPoint):
    """:class:`ConvergedPoint` with its u_0 cost gradients (steps 1 and 3).

    Attributes:
        grad_plus: dJ*/du_0 with u_0 fixed at u0* + eps, (nu,).
        grad_minus: The same at u0* - eps, (nu,).
        kkt: du0/de's Riccati pass, where it was computed before the
            re-solves (their tangential predictor); None: left to
            :meth:`~whatmatters.sensitivity.compute.SensitivityComputer.finish`.
    """

    grad_plus: np.ndarray
    grad_minus: np.ndarray
    kkt: KktSensitivity | None = None


@dataclass(frozen=True)
class SensitivitySample:
    """Sensitivities of one control step.

    Attributes:
        s_hat: Eq. (5), (N, nx).
        du0_de: Controller sensitivity, (nu, N, nx); row k-1 of axis 1 is e_k.
        dj_du0_eff: Effective action sensitivity, (nu,).
        dj_du0_plus: Cost gradient at u0* + eps, (nu,).
        dj_du0_minus: Cost gradient at u0* - eps, (nu,).
        x: Converged predicted states, (N + 1, nx).
        u: Converged inputs, (N, nu).
        active0: Active bounds of u_0, (nu,).
        sqp_iter: SQP iterations to the operating point.
        stage_hessians: The second-order terms ``W_k`` at the operating point, (N, nz, nz), where kept.
        du0_de_relaxed: du0/de with u_0's active bounds released, (nu, N, nx)
            (:class:`~whatmatters.sensitivity.kkt.KktSensitivity`), where computed.
    """

    s_hat: np.ndarray
    du0_de: np.ndarray
    dj_du0_eff: np.ndarray
    dj_du0_plus: np.ndarray
    dj_du0_minus: np.ndarray
    x: np.ndarray
    u: np.ndarray
    active0: np.ndarray
    sqp_iter: int
    stage_hessians: np.ndarray | None = None
    du0_de_relaxed: np.ndarray | None = None
