"""Derivative checks a user can run on their own model (finite differences).

A model that overrides :meth:`DynamicsModel.state_derivative_jacobian` with a
hand-structured form (as the learned model does) should check it against an
independent truth; :func:`check_state_jacobian` compares it with central
differences of the model's own ``state_derivative`` (and, optionally, with
CasADi's AD of it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import casadi as ca
import numpy as np

from whatmatters.dynamics.base import DynamicsModel

__all__ = ["JacobianCheck", "central_difference_jacobian", "check_state_jacobian"]


def central_difference_jacobian(fun: Callable[[np.ndarray], np.ndarray], x: np.ndarray, step: float = 1e-6) -> np.ndarray:
    """Central-difference Jacobian of ``fun`` at ``x``.

    Args:
        fun: Maps (n,) to (m,).
        x: Point, (n,).
        step: Relative step (scaled by ``max(1, |x_j|)`` per entry).

    Returns:
        (m, n); truncation error O(step^2), round-off O(eps / step).
    """
    x = np.asarray(x, dtype=float)
    cols = []
    for j in range(x.size):
        h = step * max(1.0, abs(x[j]))
        e = np.zeros_like(x)
        e[j] = h
        cols.append((np.asarray(fun(x + e), dtype=float).ravel() - np.asarray(fun(x - e), dtype=float).ravel()) / (2.0 * h))
    return np.stack(cols, axis=1)


@dataclass(frozen=True)
class JacobianCheck:
    """Errors of a model's ``state_derivative_jacobian`` at one point, relative to ``max |J|``.

    Attributes:
        f_error: Its ``xdot`` vs ``state_derivative``.
        fd_error: Its Jacobian vs central differences of ``state_derivative``.
        ad_error: Its Jacobian vs CasADi's AD of ``state_derivative``.
    """

    f_error: float
    fd_error: float
    ad_error: float


def check_state_jacobian(model: DynamicsModel, x: np.ndarray, u: np.ndarray, params: np.ndarray | None = None, step: float = 1e-6) -> JacobianCheck:
    """Compares ``model.state_derivative_jacobian`` with FD and AD at (x, u).

    Args:
        model: Any model with a CasADi form.
        x: State, (nx,).  u: Torque, Nm, (nu,).
        params: Runtime parameters, (n_params,) (the model's current ones if None).
        step: Relative finite-difference step.
    """
    xs, us, ps = ca.SX.sym("x", model.nx), ca.SX.sym("u", model.nu), ca.SX.sym("p", model.n_params)
    f_ref = model.state_derivative(xs, us, ps)
    f_new, j_new = model.state_derivative_jacobian(xs, us, ps)
    fun = ca.Function("check", [xs, us, ps], [f_ref, ca.jacobian(f_ref, ca.vertcat(xs, us)), f_new, j_new])
    p = model.parameter_values() if params is None else np.asarray(params, dtype=float)
    f0, j_ad, f1, j1 = (np.array(v) for v in fun(x, u, p))
    nx = model.nx
    j_fd = central_difference_jacobian(lambda xu: np.array(fun(xu[:nx], xu[nx:], p)[0]), np.concatenate([x, u]), step)
    scale = max(float(np.abs(j_ad).max()), 1e-300)
    return JacobianCheck(
        f_error=float(np.abs(f1 - f0).max() / max(float(np.abs(f0).max()), 1e-300)),
        fd_error=float(np.abs(j1 - j_fd).max() / scale),
        ad_error=float(np.abs(j1 - j_ad).max() / scale),
    )
