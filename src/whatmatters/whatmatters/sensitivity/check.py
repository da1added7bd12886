"""Checks of a system's sensitivities against an independent solver (finite differences of IPOPT).

:class:`ReferenceOcp` writes the MPC's problem a second time, for any model
and :class:`~whatmatters.mpc.constraints.OcpConstraints`: CasADi's IPOPT on
the full-space NLP, additive prediction errors ``e_1..e_N`` as parameters,
each soft constraint with explicit slacks ``s >= 0`` priced
``penalty / 2 * s^2`` (scaled like its stage), solved to 1e-12. Nothing of
acados, the Riccati pass or the penalty bookkeeping of the sensitivity code is
shared. :func:`check_sensitivities` differences its solutions and compares:

* ``du0/de`` with central differences in ``e`` (the implicit-differentiation result);
* ``dJ*/du0`` at ``u0* + eps`` (the bound multipliers) with central differences of
  the optimal cost with ``u_0`` fixed.

A user adding a system runs it on a few states of their own (as the tests
do for the arm, a unicycle and the race car).
"""

from __future__ import annotations

from dataclasses import dataclass

import casadi as ca
import numpy as np

from whatmatters.dynamics.base import DynamicsModel
from whatmatters.mpc.config import MpcConfig
from whatmatters.mpc.constraints import OcpConstraints, as_constraints
from whatmatters.sensitivity.compute import SensitivityComputer
from whatmatters.sensitivity.point import SensitivityError

__all__ = ["ReferenceOcp", "SensitivityCheck", "check_sensitivities"]


class ReferenceOcp:
    """The MPC's OCP solved by IPOPT (module docstring).

    Args:
        model: The dynamics (its CasADi form with its current parameters).
        cfg: The OCP settings (horizon, dt, weights, cost scaling).
        limits: The constraints, or symmetric input bounds (nu,).
    """

    def __init__(self, model: DynamicsModel, cfg: MpcConfig, limits: np.ndarray | OcpConstraints) -> None:
        cons = as_constraints(limits)
        n, nx, nu, h = cfg.horizon, model.nx, model.nu, cfg.stage_scale
        xs, us = ca.SX.sym("x", nx), ca.SX.sym("u", nu)
        p = model.parameter_values()
        f = ca.Function("F", [xs, us], [model.rk4_step(xs, us, cfg.dt, ca.DM(p) if p.size else None)])
        x, u = ca.SX.sym("X", nx, n + 1), ca.SX.sym("U", nu, n)
        e, x0, ref = ca.SX.sym("E", nx, n), ca.SX.sym("X0", nx), ca.SX.sym("R", nx, n + 1)
        mx, mg = cons.n_soft_x, cons.n_soft_g
        sx, sg = ca.SX.sym("SX", 2 * mx, n + 1), ca.SX.sym("SG", 2 * mg, n)
        q_w, r_w = ca.DM(cfg.state_weight), ca.DM(cfg.input_weight)
        obj, g, lbg, ubg = 0, [x[:, 0] - x0], [np.zeros(nx)], [np.zeros(nx)]
        idx = list(cons.x_index)
        for k in range(n + 1):
            d = x[:, k] - ref[:, k]
            if k < n:
                obj += 0.5 * h * (ca.mtimes([d.T, q_w, d]) + ca.mtimes([u[:, k].T, r_w, u[:, k]]))
                g.append(x[:, k + 1] - f(x[:, k], u[:, k]) - e[:, k])
                lbg.append(np.zeros(nx))
                ubg.append(np.zeros(nx))
            else:
                obj += 0.5 * cfg.terminal_scale * ca.mtimes([d.T, q_w, d])
            if k > 0 and mx:
                obj += 0.5 * (h if k < n else 1.0) * cons.penalty * ca.sumsqr(sx[:, k])
                g += [x[idx, k] + sx[:mx, k], x[idx, k] - sx[mx:, k]]
                lbg += [cons.x_lower, np.full(mx, -np.inf)]
                ubg += [np.full(mx, np.inf), cons.x_upper]
            if k < n and mg:
                obj += 0.5 * h * cons.penalty * ca.sumsqr(sg[:, k])
                lin = ca.mtimes(ca.DM(cons.g_c), x[:, k]) + ca.mtimes(ca.DM(cons.g_d), u[:, k])
                g += [lin + sg[:mg, k], lin - sg[mg:, k]]
                lbg += [cons.g_lower, np.full(mg, -np.inf)]
                ubg += [np.full(mg, np.inf), cons.g_upper]
        self.n, self.nx, self.nu, self.cons = n, nx, nu, cons
        self._n_slack = 2 * mx * (n + 1) + 2 * mg * n
        self._lbg, self._ubg = np.concatenate(lbg), np.concatenate(ubg)
        w = ca.vertcat(ca.vec(x), ca.vec(u), ca.vec(sx), ca.vec(sg))
        nlp = {"x": w, "f": obj, "g": ca.vertcat(*g), "p": ca.vertcat(ca.vec(e), x0, ca.vec(ref))}
        opts = {"ipopt.tol": 1e-12, "ipopt.acceptable_tol": 1e-11, "ipopt.print_level": 0, "ipopt.sb": "yes", "print_time": 0, "ipopt.max_iter": 1000}
        self._solver = ca.nlpsol("reference_ocp", "ipopt", nlp, opts)

    def solve(
        self, x0: np.ndarray, x_ref: np.ndarray, e: np.ndarray | None = None, u0_fixed: np.ndarray | None = None, init: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
        """One solve.

        Args:
            x0: Initial state, (nx,).
            x_ref: Reference, (N + 1, nx).
            e: Prediction errors, (N, nx) (row k is e_{k+1}); zero if None.
            u0_fixed: u_0 held at this value, (nu,), or free.
            init: Start (a previous solution's primal vector).

        Returns:
            ``x`` (N + 1, nx), ``u`` (N, nu), the optimal cost, and the primal vector.

        Raises:
            SensitivityError: If IPOPT does not converge.
        """
        n, nx, nu = self.n, self.nx, self.nu
        lbu, ubu = np.tile(self.cons.u_lower, n), np.tile(self.cons.u_upper, n)
        if u0_fixed is not None:
            lbu[:nu] = ubu[:nu] = u0_fixed
        nxs = nx * (n + 1)
        lbw = np.concatenate([np.full(nxs, -np.inf), lbu, np.zeros(self._n_slack)])
        ubw = np.concatenate([np.full(nxs, np.inf), ubu, np.full(self._n_slack, np.inf)])
        if init is None:
            init = np.concatenate([np.ravel(np.asarray(x_ref, dtype=float)), np.clip(np.zeros(n * nu), lbu, ubu), np.zeros(self._n_slack)])
        e = np.zeros((n, nx)) if e is None else np.asarray(e, dtype=float)
        sol = self._solver(x0=init, p=np.concatenate([e.ravel(), x0, np.ravel(x_ref)]), lbx=lbw, ubx=ubw, lbg=self._lbg, ubg=self._ubg)
        status = self._solver.stats()["return_status"]
        if status not in ("Solve_Succeeded", "Solved_To_Acceptable_Level"):
            raise SensitivityError(f"IPOPT: {status}")
        w = np.asarray(sol["x"]).ravel()
        return w[:nxs].reshape(n + 1, nx), w[nxs : nxs + n * nu].reshape(n, nu), float(sol["f"]), w


@dataclass(frozen=True)
class SensitivityCheck:
    """Errors of one sample's sensitivities against finite differences of :class:`ReferenceOcp`.

    Attributes:
        u_error: max |u* - u*_IPOPT|.
        du0_de_error: max |du0/de - FD| / max |FD| over the checked entries.
        du0_de_scale: max |FD| (a check of a trivial zero is no check).
        gradient_error: max |dJ*/du0 - FD| / max |FD| at ``u0* + eps``.
    """

    u_error: float
    du0_de_error: float
    du0_de_scale: float
    gradient_error: float


def check_sensitivities(
    computer: SensitivityComputer, reference: ReferenceOcp, x0: np.ndarray, x_ref: np.ndarray, picks: list[tuple[int, int]] | None = None, step: float = 1e-5
) -> SensitivityCheck:
    """Compares the computer's sample at ``x0`` with finite differences of ``reference``.

    Args:
        computer: The sensitivity computer under test.
        reference: The same OCP in IPOPT.
        x0: State, (nx,).
        x_ref: Reference, (N + 1, nx).
        picks: ``(stage k, state j)`` entries of du0/de to check (e_{k+1}, state j); all if None.
        step: Central-difference step (on e, and on u_0 for the gradient).
    """
    sample = computer.compute(x0, x_ref)
    n, nx, nu = reference.n, reference.nx, reference.nu
    _, u_ipopt, _, w0 = reference.solve(x0, x_ref)
    picks = [(k, j) for k in range(n) for j in range(nx)] if picks is None else picks
    fd, an = [], []
    for k, j in picks:
        e = np.zeros((n, nx))
        e[k, j] = step
        up = reference.solve(x0, x_ref, e, init=w0)[1][0]
        dn = reference.solve(x0, x_ref, -e, init=w0)[1][0]
        fd.append((up - dn) / (2 * step))
        an.append(sample.du0_de[:, k, j])
    fd_a, an_a = np.array(fd), np.array(an)
    scale = float(np.abs(fd_a).max())
    u_fix = np.clip(sample.u[0] + computer.cfg.eps, computer.lower, computer.upper)
    grad = np.empty(nu)
    for i in range(nu):
        d = np.zeros(nu)
        d[i] = step
        grad[i] = (reference.solve(x0, x_ref, u0_fixed=u_fix + d, init=w0)[2] - reference.solve(x0, x_ref, u0_fixed=u_fix - d, init=w0)[2]) / (2 * step)
    return SensitivityCheck(
        u_error=float(np.abs(sample.u - u_ipopt).max()),
        du0_de_error=float(np.abs(an_a - fd_a).max() / max(scale, 1e-300)),
        du0_de_scale=scale,
        gradient_error=float(np.abs(sample.dj_du0_plus - grad).max() / max(float(np.abs(grad).max()), 1e-300)),
    )
