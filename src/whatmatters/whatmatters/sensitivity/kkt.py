"""du0/de by implicit differentiation of the OCP's KKT conditions (a Riccati pass).

The OCP with additive prediction errors ``e_1..e_N`` on the predicted states::

    min  sum_{k<N} 1/2 |x_k - r_k|_Q^2 + 1/2 |u_k|_R^2 + 1/2 |x_N - r_N|_QN^2   (Q, R: the scaled stage weights)
    s.t. x_{k+1} = F(x_k, u_k) + e_{k+1},   x_0 fixed,   u_lower <= u_k <= u_upper

(plus, for a system with soft constraints, their quadratic penalties: their
gradient enters the multipliers and their Hessian ``H_k``; see
:meth:`~whatmatters.mpc.constraints.OcpConstraints.penalty_terms`).

At a converged solution with strict complementarity, differentiating the KKT
conditions w.r.t. e gives the equality-constrained LQ problem in
``(dx, du)`` with the exact Lagrangian Hessian per stage::

    H_k = blkdiag(Q, R) + d^2 (lambda_{k+1}' F_k) / d(x, u)^2,   H_N = QN
    dx_{k+1} = A_k dx_k + B_k du_k + de_{k+1},   dx_0 = 0,   du_{k,i} = 0 for active bounds

Its Riccati recursion gives the feedback ``K_k``, closed-loop matrices
``Acl_k = A_k + B_k K_k`` and, for the first input::

    du_0 / de_{j+1} = -Quu_0^{-1} B_0' Acl_1' ... Acl_j' P_{j+1}     (j = 0..N-1)

restricted to the free components (active components of u_0 get zero rows).
The multipliers follow from stationarity in the states, independent of any
solver's sign convention: ``lambda_N = QN (x_N - r_N)``,
``lambda_k = Q (x_k - r_k) + A_k' lambda_{k+1}``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["KktSensitivity", "active_set", "dynamics_multipliers", "first_input_sensitivity", "released_du0_de"]


def dynamics_multipliers(
    x: np.ndarray, x_ref: np.ndarray, a: np.ndarray, q_w: np.ndarray, qn_w: np.ndarray, extra_grad: np.ndarray | None = None
) -> np.ndarray:
    """lambda_1..lambda_N from stationarity w.r.t. x_1..x_N.

    Args:
        x: States x_0..x_N, (N + 1, nx).
        x_ref: References r_0..r_N, (N + 1, nx).
        a: A_0..A_{N-1}, (N, nx, nx).
        q_w: Stage state weight Q, (nx, nx).
        qn_w: Terminal weight QN, (nx, nx).
        extra_grad: Further cost terms' gradients in x_0..x_N, (N + 1, nx)
            (soft-constraint penalties), or None.

    Returns:
        (N, nx): row k-1 is lambda_k.
    """
    n = a.shape[0]
    g = np.zeros_like(x) if extra_grad is None else extra_grad
    lam = np.empty((n, x.shape[1]))
    lam[n - 1] = qn_w @ (x[n] - x_ref[n]) + g[n]
    for k in range(n - 1, 0, -1):
        lam[k - 1] = q_w @ (x[k] - x_ref[k]) + g[k] + a[k].T @ lam[k]
    return lam


def active_set(u: np.ndarray, upper: np.ndarray, tol: float = 1e-6, lower: np.ndarray | None = None) -> np.ndarray:
    """Boolean (N, nu): inputs at a bound (within ``tol`` relative to the bound's magnitude).

    Args:
        u: Inputs, (N, nu).
        upper: Upper bounds, (nu,).
        tol: Relative tolerance.
        lower: Lower bounds, (nu,); ``-upper`` if None (symmetric bounds).
    """
    lower = -np.asarray(upper) if lower is None else np.asarray(lower)
    return (u >= upper - tol * np.abs(upper)) | (u <= lower + tol * np.abs(lower))


@dataclass(frozen=True)
class KktSensitivity:
    """Result of :func:`first_input_sensitivity`.

    Attributes:
        du0_de: d u_0 / d e_{k}, k = 1..N, shape (nu, N, nx).
        free0: Free (inactive) components of u_0, (nu,) bool.
        quu0: Reduced Hessian of u_0 (free block), for analysis.
        fixed_dx: With u_0 fixed to ``u_0* + delta_c`` (c = 0, 1), the first-order
            change of the states (tangential predictor), (2, N + 1, nx); None
            unless the deltas were given.
        fixed_du: The same for the inputs (``[c, 0]`` is delta_c), (2, N, nu).
        stage_hessians: The second-order terms ``W_k`` the pass used, (N, nz, nz), where kept.
        du0_de_relaxed: du0/de with the active bounds of u_0 released (those of
            the later stages held), (nu, N, nx): where a component of u_0 is at
            its bound, how the action the controller asks for would move (the
            bound's multiplier path); equal to ``du0_de`` where no bound of u_0
            is active. None where not computed.
    """

    du0_de: np.ndarray
    free0: np.ndarray
    quu0: np.ndarray
    fixed_dx: np.ndarray | None = None
    fixed_du: np.ndarray | None = None
    stage_hessians: np.ndarray | None = None
    du0_de_relaxed: np.ndarray | None = None


def first_input_sensitivity(
    a: np.ndarray,
    b: np.ndarray,
    hess: np.ndarray,
    q_w: np.ndarray,
    r_w: np.ndarray,
    qn_w: np.ndarray,
    active: np.ndarray,
    delta: np.ndarray | None = None,
) -> KktSensitivity:
    """The Riccati pass of the module docstring.

    With ``delta`` it also returns the tangential predictor of the solution
    with u_0 fixed to ``u_0* + delta_c`` (the other stages' active sets
    held): ``du_0 = delta_c``, ``dx_1 = B_0 delta_c``, ``du_k = K_k dx_k``,
    ``dx_{k+1} = A_k dx_k + B_k du_k``.

    Args:
        a: A_k, (N, nx, nx).
        b: B_k, (N, nx, nu).
        hess: Second-order dynamics terms W_k, (N, nx + nu, nx + nu).
        q_w, r_w, qn_w: Cost Hessians Q (nx, nx), R (nu, nu), QN (nx, nx).
        active: Active input bounds, (N, nu) bool.
        delta: Two u_0 offsets for the predictor, Nm, (2, nu); None: no predictor.

    Raises:
        np.linalg.LinAlgError: If a reduced Hessian is not positive definite
            (the point is not a strict local minimum).
    """
    n, nx, nu = b.shape[0], a.shape[1], b.shape[2]
    ab = np.concatenate([a, b], axis=2)  # [A_k B_k], (N, nx, nz)
    h_all = hess.copy()  # H_k without the cost-to-go, (N, nz, nz)
    h_all[:, :nx, :nx] += q_w
    h_all[:, nx:, nx:] += r_w
    p_mat = qn_w.copy()
    acl = np.empty((n, nx, nx))
    gains = np.zeros((n, nu, nx))
    p_next = np.empty((n + 1, nx, nx))  # P_k for k = 0..N
    p_next[n] = p_mat
    quu0 = np.zeros((0, 0))
    for k in range(n - 1, -1, -1):
        h = h_all[k] + ab[k].T @ (p_mat @ ab[k])  # [[Qxx, Qux'], [Qux, Quu]]
        free = ~active[k]
        if free.all():
            quu, qux, bf = h[nx:, nx:], h[nx:, :nx], b[k]
        else:
            idx = nx + np.flatnonzero(free)
            quu, qux, bf = h[np.ix_(idx, idx)], h[idx, :nx], b[k][:, free]
        p_new = h[:nx, :nx]
        acl[k] = a[k]
        if free.any():
            np.linalg.cholesky(quu)  # raises unless positive definite
            gain = -np.linalg.solve(quu, qux)  # K_k (free rows)
            p_new = p_new + qux.T @ gain
            acl[k] = a[k] + bf @ gain
            gains[k][free] = gain
        if k == 0:
            quu0 = quu
        p_mat = 0.5 * (p_new + p_new.T)
        p_next[k] = p_mat
    free0 = ~active[0]
    du0_de = np.zeros((nu, n, nx))
    if free0.any():
        t_all = np.empty((n, int(free0.sum()), nx))  # -Quu0^-1 B_0' Acl_1' ... Acl_j'
        t_all[0] = -np.linalg.solve(quu0, b[0][:, free0].T)
        for j in range(1, n):
            t_all[j] = t_all[j - 1] @ acl[j].T
        du0_de[free0] = (t_all @ p_next[1:]).transpose(1, 0, 2)
    if delta is None:
        return KktSensitivity(du0_de, free0, quu0)
    delta = np.asarray(delta, dtype=float).reshape(2, nu)
    dx, du = np.zeros((2, n + 1, nx)), np.zeros((2, n, nu))
    du[:, 0] = delta
    for k in range(n):
        if k > 0:
            du[:, k] = dx[:, k] @ gains[k].T
        dx[:, k + 1] = dx[:, k] @ a[k].T + du[:, k] @ b[k].T
    return KktSensitivity(du0_de, free0, quu0, dx, du)


def released_du0_de(
    riccati: Callable[..., KktSensitivity],
    a: np.ndarray,
    b: np.ndarray,
    hess: np.ndarray,
    q_w: np.ndarray,
    r_w: np.ndarray,
    qn_w: np.ndarray,
    active: np.ndarray,
) -> np.ndarray:
    """du0/de of the pass with u_0's active bounds released (the later stages' held), (nu, N, nx).

    Where a component of u_0 is at its bound its row of du0/de is zero; this
    gives the row of the action the controller would ask for, so eq. 5 can
    weigh a saturated joint by its bound multiplier (``|dJ/du0|_eff``) times
    how prediction errors push against the bound.

    Args:
        riccati: :func:`first_input_sensitivity` or a compiled pass with its signature.
        a, b, hess, q_w, r_w, qn_w, active: As for :func:`first_input_sensitivity`.

    Raises:
        np.linalg.LinAlgError: If the reduced Hessian of u_0 without the bounds is not positive definite.
    """
    released = np.array(active, dtype=bool, copy=True)
    released[0] = False
    return riccati(a, b, hess, q_w, r_w, qn_w, released).du0_de
