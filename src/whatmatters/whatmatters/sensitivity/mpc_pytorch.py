"""du0/de with mpc.pytorch (Amos et al. 2018), for comparison in ``whatmatters bench``.

mpc.pytorch differentiates the box-constrained LQR at its fixed point: at a
converged solution it is given the linearised dynamics
``x_{k+1} = A_k x_k + B_k u_k + fbar_k + e_{k+1}`` (exact at the solution)
and the controller's quadratic cost, and ``d u_0 / d e`` comes from its
backward pass. That is the Gauss-Newton sensitivity: it omits the
second-order dynamics terms ``lambda' d^2F`` that :mod:`whatmatters.sensitivity.kkt`
includes, so it agrees with our Riccati pass run with those terms set to zero.
``mpc`` (PyPI) is a bench dependency; it is imported lazily.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from whatmatters.errors import WhatmattersError
from whatmatters.mpc.config import MpcConfig

__all__ = ["du0_de_mpc_pytorch"]


def du0_de_mpc_pytorch(
    x: np.ndarray,
    u: np.ndarray,
    x_ref: np.ndarray,
    f: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    cfg: MpcConfig,
    limits: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """mpc.pytorch's u_0 and d u_0 / d e at a converged solution.

    Args:
        x: Converged states, (N + 1, nx).  u: Converged inputs, (N, nu).
        x_ref: Reference, (N + 1, nx).
        f, a, b: ``F(x_k, u_k)`` (N, nx), ``A_k`` (N, nx, nx), ``B_k`` (N, nx, nu).
        cfg: The controller's cost settings.  limits: Torque limits, (nu,).

    Returns:
        u_0 (nu,) and du0/de (nu, N, nx).

    Raises:
        WhatmattersError: If the ``mpc`` package is not installed.
    """
    try:
        from mpc import mpc as mpt
        from mpc.mpc import LinDx, QuadCost
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise WhatmattersError("mpc.pytorch is not installed (pip install mpc==0.0.6)") from exc
    n, nx, nu = b.shape[0], a.shape[1], b.shape[2]
    horizon, nt = n + 1, nx + nu
    cost_c = np.zeros((horizon, 1, nt, nt))
    cost_l = np.zeros((horizon, 1, nt))
    for k in range(horizon):
        if k < n:
            cost_c[k, 0, :nx, :nx] = cfg.stage_scale * cfg.state_weight
            cost_c[k, 0, nx:, nx:] = cfg.stage_scale * cfg.input_weight
        else:  # terminal state; the extra input has no effect and a negligible weight
            cost_c[k, 0, :nx, :nx] = cfg.terminal_scale * cfg.state_weight
            cost_c[k, 0, nx:, nx:] = 1e-9 * np.eye(nu)
        cost_l[k, 0, :nx] = -cost_c[k, 0, :nx, :nx] @ x_ref[k]
    fbar = f - np.einsum("kij,kj->ki", a, x[:n]) - np.einsum("kij,kj->ki", b, u)
    dyn = torch.tensor(np.concatenate([a, b], axis=2)[:, None])
    e = torch.zeros(n, 1, nx, dtype=torch.float64, requires_grad=True)
    ulim = torch.tensor(np.tile(limits, (horizon, 1, 1)))
    u_init = torch.tensor(np.vstack([u, np.zeros((1, nu))])[:, None])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mpc.pytorch uses deprecated torch.lu_solve
        ctrl = mpt.MPC(
            nx, nu, horizon, u_lower=-ulim, u_upper=ulim, lqr_iter=30, eps=1e-10, back_eps=1e-10,
            exit_unconverged=False, verbose=-1, u_init=u_init,
        )
        _, u_sol, _ = ctrl(torch.tensor(x[:1]), QuadCost(torch.tensor(cost_c), torch.tensor(cost_l)), LinDx(dyn, torch.tensor(fbar[:, None]) + e))
        u0 = u_sol[0, 0]
        jac = np.stack([torch.autograd.grad(u0[i], e, retain_graph=True)[0][:, 0].numpy() for i in range(nu)])
    return u0.detach().numpy(), jac
