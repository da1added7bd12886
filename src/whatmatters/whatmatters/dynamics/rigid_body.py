"""Rigid-body dynamics of a serial revolute chain, written once for torch and CasADi.

* :func:`rnea`: recursive Newton-Euler inverse dynamics, O(n).
* :func:`mass_matrix_rows`: composite-rigid-body algorithm, M(q) without armature.
* :class:`RigidBodyDynamics`: the equation of motion
  ``(M(q) + diag(armature)) qdd + c(q, qd) + g(q) + damping * qd = tau``.

Conventions: quantities are expressed in the moving link frames; the
Coriolis/centrifugal vector c(q, qd) is the velocity product term (MuJoCo's
``qfrc_bias`` is ``c + g``); forward dynamics solves with a factorization of M,
never a symbolic inverse.
"""

from __future__ import annotations

from typing import Any

import casadi as ca
import numpy as np

from whatmatters.dynamics.backend import Backend, CasadiBackend, backend_for
from whatmatters.dynamics.base import JointSpaceModel
from whatmatters.dynamics.chain import ChainParams

__all__ = ["RigidBodyDynamics", "inverse_dynamics_jacobian", "mass_matrix_rows", "rnea", "weighted_inverse_dynamics_hessian"]

_EZ = np.array([0.0, 0.0, 1.0])


def _rotations(be: Backend, chain: ChainParams, q: Any) -> list[Any]:
    out = []
    for i in range(chain.n):
        qi = be.column(q, i)
        out.append(be.mm(be.const(chain.joint_rot[i]), be.rot_z(be.cos(qi), be.sin(qi))))
    return out


def rnea(
    be: Backend,
    chain: ChainParams,
    q: Any,
    qd: Any | None,
    qdd: Any | None,
    gravity: bool = True,
    rots: list[Any] | None = None,
) -> list[Any]:
    """Inverse dynamics ``M(q) qdd + c(q, qd) + g(q)`` (no armature, no damping).

    Args:
        be: The array backend.
        chain: Chain parameters.
        q: Joint positions, rad, (B, n) or n x 1.
        qd: Joint velocities, rad/s, same shape, or None for zero.
        qdd: Joint accelerations, rad/s^2, same shape, or None for zero.
        gravity: Whether to include gravity.
        rots: Precomputed joint rotations (from :func:`_rotations`), optional.

    Returns:
        The n joint torques, Nm, as backend scalars.
    """
    n = chain.n
    rots = rots if rots is not None else _rotations(be, chain, q)
    zero = be.const(np.zeros(3))
    w, wd = zero, zero
    a = be.const(-chain.gravity if gravity else np.zeros(3))
    inertia = chain.inertia
    forces, torques = [], []
    for i in range(n):
        r, p = rots[i], be.const(chain.joint_pos[i])
        a_par = a + be.cross(wd, p) + be.cross(w, be.cross(w, p))
        w_par = be.mtv(r, w)
        wd = be.mtv(r, wd)
        w = w_par
        if qd is not None:
            z_qd = be.z_vec(be.column(qd, i))
            wd = wd + be.cross(w_par, z_qd)
            w = w_par + z_qd
        if qdd is not None:
            wd = wd + be.z_vec(be.column(qdd, i))
        a = be.mtv(r, a_par)
        c = be.const(chain.com[i])
        a_c = a + be.cross(wd, c) + be.cross(w, be.cross(w, c))
        inert = be.const(inertia[i])
        forces.append(chain.mass[i] * a_c)
        torques.append(be.mv(inert, wd) + be.cross(w, be.mv(inert, w)))
    tau: list[Any] = [None] * n
    f_child = n_child = None
    for i in reversed(range(n)):
        c = be.const(chain.com[i])
        f_i = forces[i]
        n_i = torques[i] + be.cross(c, forces[i])
        if f_child is not None:
            r_c, p_c = rots[i + 1], be.const(chain.joint_pos[i + 1])
            f_in = be.mv(r_c, f_child)
            f_i = f_i + f_in
            n_i = n_i + be.mv(r_c, n_child) + be.cross(p_c, f_in)
        tau[i] = be.comp(n_i, 2)
        f_child, n_child = f_i, n_i
    return tau


def mass_matrix_rows(be: Backend, chain: ChainParams, q: Any, rots: list[Any] | None = None) -> list[list[Any]]:
    """Joint-space inertia matrix M(q) by the composite-rigid-body algorithm.

    Args:
        be: The array backend.
        chain: Chain parameters.
        q: Joint positions, rad, (B, n) or n x 1.
        rots: Precomputed joint rotations, optional.

    Returns:
        M as n rows of n backend scalars (symmetric; armature not included).
    """
    n = chain.n
    rots = rots if rots is not None else _rotations(be, chain, q)
    h_links, ibar_links = chain.first_moments(), chain.origin_inertias()
    rows: list[list[Any]] = [[None] * n for _ in range(n)]
    ez = be.const(_EZ)
    mass = h = ibar = None
    for i in reversed(range(n)):
        if mass is None:
            mass, h, ibar = float(chain.mass[i]), be.const(h_links[i]), be.const(ibar_links[i])
        else:  # composite of i+1.. expressed in frame i, plus link i
            r, p = rots[i + 1], chain.joint_pos[i + 1]
            pc = be.const(p)
            h_r = be.mv(r, h)
            shift = 2.0 * be.dot(pc, h_r) + mass * float(p @ p)
            ibar = (
                be.mmt(be.mm(r, ibar), r)
                + be.eye_scaled(shift)
                - be.outer(h_r, pc)
                - be.outer(pc, h_r)
                - be.const(mass * np.outer(p, p))
                + be.const(ibar_links[i])
            )
            h = h_r + be.const(mass * p + h_links[i])
            mass = mass + float(chain.mass[i])
        f = be.cross(ez, h)  # spatial force of the composite moving about joint i
        nn = be.mv(ibar, ez)
        rows[i][i] = be.comp(nn, 2)
        for j in reversed(range(i)):
            r, pc = rots[j + 1], be.const(chain.joint_pos[j + 1])
            f = be.mv(r, f)
            nn = be.mv(r, nn) + be.cross(pc, f)
            rows[i][j] = rows[j][i] = be.comp(nn, 2)
    return rows


def inverse_dynamics_jacobian(chain: ChainParams) -> ca.Function:
    """``(q, qd, qdd) -> (d tau/dq, d tau/dqd)`` of :func:`rnea` with gravity, (n, n) each.

    CasADi's AD of the O(n) recursion (SX, inlined where it is called); armature
    and damping are left out (their derivatives are constant).

    Args:
        chain: Chain parameters.
    """
    q, qd, qdd = (ca.SX.sym(s, chain.n) for s in ("q", "qd", "qdd"))
    tau = ca.vertcat(*rnea(CasadiBackend(), chain, q, qd, qdd, gravity=True))
    return ca.Function("rnea_jac", [q, qd, qdd], [ca.jacobian(tau, q), ca.jacobian(tau, qd)])


def weighted_inverse_dynamics_hessian(chain: ChainParams) -> ca.Function:
    """``(q, qd, qdd, w) -> d^2 (w' tau) / d(q, qd, qdd)^2`` (3n, 3n) of :func:`rnea` with gravity, ``w`` held fixed.

    Armature and damping are left out (linear: no second derivatives).

    Args:
        chain: Chain parameters.
    """
    q, qd, qdd, w = (ca.SX.sym(s, chain.n) for s in ("q", "qd", "qdd", "w"))
    tau = ca.vertcat(*rnea(CasadiBackend(), chain, q, qd, qdd, gravity=True))
    return ca.Function("rnea_whess", [q, qd, qdd, w], [ca.hessian(ca.dot(w, tau), ca.vertcat(q, qd, qdd))[0]])


class RigidBodyDynamics(JointSpaceModel):
    """Rigid-body dynamics of a chain; the nominal model when built without payload.

    Every method accepts torch tensors of shape (B, n) (batched, differentiable,
    float64 capable) or CasADi SX vectors (n x 1) and answers in the same form.

    Args:
        chain: Numeric chain parameters (see :meth:`ChainParams.from_panda`).
    """

    def __init__(self, chain: ChainParams) -> None:
        self.chain = chain
        self.nq = chain.n

    def mass_matrix(self, q: Any) -> Any:
        """M(q) + diag(armature): (B, n, n) tensor or n x n SX."""
        be = backend_for(q)
        rows = mass_matrix_rows(be, self.chain, q)
        for i in range(self.nq):
            rows[i][i] = rows[i][i] + float(self.chain.armature[i])
        return be.matrix(rows)

    def mass_matrix_and_bias(self, q: Any, qd: Any) -> tuple[Any, Any]:
        """:meth:`mass_matrix` and :meth:`bias` with the joint rotations computed once."""
        be = backend_for(q)
        rots = _rotations(be, self.chain, q)
        rows = mass_matrix_rows(be, self.chain, q, rots)
        for i in range(self.nq):
            rows[i][i] = rows[i][i] + float(self.chain.armature[i])
        tau = rnea(be, self.chain, q, qd, None, gravity=True, rots=rots)
        bias = be.stack([t + float(d) * be.column(qd, i) for i, (t, d) in enumerate(zip(tau, self.chain.damping))])
        return be.matrix(rows), bias

    def gravity(self, q: Any) -> Any:
        """Gravity torque g(q), Nm: (B, n) or n x 1."""
        be = backend_for(q)
        return be.stack(rnea(be, self.chain, q, None, None, gravity=True))

    def coriolis(self, q: Any, qd: Any) -> Any:
        """Coriolis and centrifugal torque c(q, qd), Nm: (B, n) or n x 1."""
        be = backend_for(q)
        return be.stack(rnea(be, self.chain, q, qd, None, gravity=False))

    def bias(self, q: Any, qd: Any) -> Any:
        """c(q, qd) + g(q) + damping * qd, Nm: (B, n) or n x 1."""
        be = backend_for(q)
        tau = rnea(be, self.chain, q, qd, None, gravity=True)
        return be.stack([t + float(d) * be.column(qd, i) for i, (t, d) in enumerate(zip(tau, self.chain.damping))])

    def inverse_dynamics(self, q: Any, qd: Any, qdd: Any) -> Any:
        """Torque for a given motion, Nm: (B, n) or n x 1 (armature and damping included)."""
        be = backend_for(q)
        tau = rnea(be, self.chain, q, qd, qdd, gravity=True)
        return be.stack(
            [
                t + float(a) * be.column(qdd, i) + float(d) * be.column(qd, i)
                for i, (t, a, d) in enumerate(zip(tau, self.chain.armature, self.chain.damping))
            ]
        )

    def forward_dynamics(self, q: Any, qd: Any, tau: Any, params: Any = None) -> Any:
        """Joint accelerations ``M^-1 (tau - c - g - damping qd)``, rad/s^2.

        Args:
            q: (B, n) tensor or n x 1 SX, rad.
            qd: Same shape, rad/s.
            tau: Same shape, Nm.
            params: Unused (the rigid-body model has no runtime parameters).
        """
        be = backend_for(q)
        rots = _rotations(be, self.chain, q)
        rows = mass_matrix_rows(be, self.chain, q, rots)
        bias = rnea(be, self.chain, q, qd, None, gravity=True, rots=rots)
        rhs = []
        for i in range(self.nq):
            rows[i][i] = rows[i][i] + float(self.chain.armature[i])
            rhs.append(be.column(tau, i) - bias[i] - float(self.chain.damping[i]) * be.column(qd, i))
        return be.solve_spd(rows, rhs)

    def state_derivative_jacobian(self, x: ca.SX, u: ca.SX, params: ca.SX | None = None) -> tuple[ca.SX, ca.SX]:
        """``xdot`` and its exact Jacobian (nx, nx + nu), structured (CasADi form).

        With ``ID(q, qd, qdd) = tau`` defining ``qdd``: ``d qdd/d(q, qd) = -M^-1 dID/d(q, qd)``
        at fixed qdd and ``d qdd/d tau = M^-1``; one LDL^T factorisation of M
        gives the accelerations and all 21 columns (CasADi's AD of the
        factorised forward dynamics costs ~2x more; tested equal).
        """
        be, n, chain = CasadiBackend(), self.nq, self.chain
        q, qd = x[:n], x[n:]
        rots = _rotations(be, chain, q)
        rows = mass_matrix_rows(be, chain, q, rots)
        bias = rnea(be, chain, q, qd, None, gravity=True, rots=rots)
        for i in range(n):
            rows[i][i] = rows[i][i] + float(chain.armature[i])
        factor = be.ldl_factor(rows)
        damping = np.asarray(chain.damping, dtype=float)
        qdd = ca.vertcat(*be.ldl_solve(factor, [u[i] - bias[i] - damping[i] * qd[i] for i in range(n)]))
        d_id_q, d_id_qd = inverse_dynamics_jacobian(chain)(q, qd, qdd)
        d_id = ca.horzcat(d_id_q, d_id_qd + ca.diag(ca.DM(damping)), -ca.DM.eye(n))
        cols = [ca.vertcat(*be.ldl_solve(factor, [-d_id[i, k] for i in range(n)])) for k in range(3 * n)]
        jac = ca.vertcat(ca.horzcat(ca.DM(n, n), ca.DM.eye(n), ca.DM(n, n)), ca.horzcat(*cols))  # structural zeros
        return ca.vertcat(qd, qdd), jac

    def state_derivative_hessian(
        self, x: ca.SX, u: ca.SX, mu: ca.SX, params: ca.SX | None = None, xdot: ca.SX | None = None, jac: ca.SX | None = None
    ) -> ca.SX:
        """``d^2 (mu' xdot) / d(x, u)^2`` (nx + nu, nx + nu) through the inverse dynamics (CasADi form).

        ``mu_q' qd`` is linear; for ``mu_v' qdd`` differentiate ``ID(q, qd, qdd(y)) = tau``
        twice along ``y = (q, qd, tau)``: with ``w = M^-1 mu_v`` and
        ``psi(q, qd, a) = w' ID(q, qd, a)`` at fixed ``w`` (linear in ``a``, in ``tau`` absent),
        ``mu_v' d^2 qdd / dy^2 = -(psi_yy + psi_ya a_y + a_y' psi_ay)`` with
        ``a_y = d qdd / dy`` from the Jacobian. The RNEA's Hessian is ~2.5x
        cheaper than CasADi's second derivative of the factorised forward
        dynamics (tested equal).
        """
        if xdot is None or jac is None:
            xdot, jac = self.state_derivative_jacobian(x, u, params)
        be, n, chain = CasadiBackend(), self.nq, self.chain
        q, qd = x[:n], x[n:]
        rows = mass_matrix_rows(be, chain, q)
        for i in range(n):
            rows[i][i] = rows[i][i] + float(chain.armature[i])
        w = ca.vertcat(*be.ldl_solve(be.ldl_factor(rows), [mu[n + i] for i in range(n)]))
        psi = weighted_inverse_dynamics_hessian(chain)(q, qd, xdot[n:], w)  # (3n, 3n) over (q, qd, a)
        psi_yy = ca.diagcat(psi[: 2 * n, : 2 * n], ca.SX(n, n))  # no tau terms
        psi_ya = ca.vertcat(psi[: 2 * n, 2 * n :], ca.SX(n, n))  # (3n, n)
        cross = ca.mtimes(psi_ya, jac[n:, :])
        return -(psi_yy + cross + cross.T)
