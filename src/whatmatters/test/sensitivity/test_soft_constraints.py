"""Sensitivities of an OCP that is not the arm's: any model, asymmetric input bounds, soft constraints.

The truth is IPOPT on the same problem written independently: prediction
errors ``e`` as parameters, each soft constraint with an explicit slack
``s >= 0`` priced ``penalty / 2 * s^2`` (scaled like its stage), solved to 1e-12
and differenced.
"""

from __future__ import annotations

import casadi as ca
import numpy as np
import pytest
from whatmatters.dynamics.base import DynamicsModel
from whatmatters.mpc.config import MpcConfig
from whatmatters.mpc.constraints import OcpConstraints
from whatmatters.sensitivity.compute import SensitivityComputer, SensitivityConfig


class Unicycle(DynamicsModel):
    """A unicycle with a lagged speed: x = [px, py, heading, speed], u = [speed command, turn rate]."""

    nx, nu = 4, 2
    state_labels = ("px", "py", "heading", "speed")
    input_labels = ("speed_cmd", "turn_rate")

    def state_derivative(self, x, u, params=None):
        if isinstance(x, ca.SX):
            cos, sin = ca.cos, ca.sin
            return ca.vertcat(x[3] * cos(x[2]), x[3] * sin(x[2]), u[1] * (1 + 0.2 * x[3]), 2.0 * (u[0] - x[3]))
        import torch

        return torch.stack([x[:, 3] * torch.cos(x[:, 2]), x[:, 3] * torch.sin(x[:, 2]), u[:, 1] * (1 + 0.2 * x[:, 3]), 2.0 * (u[:, 0] - x[:, 3])], 1)


MPC = MpcConfig(horizon=10, dt=0.1, state_weights=(0.0, 40.0, 5.0, 2.0), input_weights=(0.5, 0.3), terminal_scale=2.0)
#: y <= 0.3 (soft), a speed command at most 0.6 above the speed (soft), asymmetric input bounds.
CONSTRAINTS = OcpConstraints(
    u_lower=np.array([-0.5, -1.5]),
    u_upper=np.array([2.0, 2.5]),
    x_index=(1,),
    x_lower=np.array([-1.0]),
    x_upper=np.array([0.3]),
    g_c=np.array([[0.0, 0.0, 0.0, -1.0]]),
    g_d=np.array([[1.0, 0.0]]),
    g_lower=np.array([-5.0]),
    g_upper=np.array([0.6]),
    penalty=200.0,
)
X0 = np.array([0.0, 0.0, 0.4, 0.5])


def _reference() -> np.ndarray:
    """Drive along y = 0.5 at speed 1.5 (above the soft bound on y: it binds)."""
    t = MPC.dt * np.arange(MPC.horizon + 1)
    return np.stack([1.5 * t, np.full_like(t, 0.5), np.zeros_like(t), np.full_like(t, 1.5)], 1)


class SlackOcp:
    """The OCP with explicit slacks, solved by IPOPT; ``e`` (nx, N) are additive prediction errors."""

    def __init__(self, model: DynamicsModel, cfg: MpcConfig, cons: OcpConstraints) -> None:
        n, nx, nu = cfg.horizon, model.nx, model.nu
        xs, us = ca.SX.sym("x", nx), ca.SX.sym("u", nu)
        f = ca.Function("F", [xs, us], [model.rk4_step(xs, us, cfg.dt)])
        x, u = ca.SX.sym("X", nx, n + 1), ca.SX.sym("U", nu, n)
        sx, sg = ca.SX.sym("SX", 2, n + 1), ca.SX.sym("SG", 2, n)  # lower/upper slacks
        e, ref = ca.SX.sym("E", nx, n), ca.SX.sym("R", nx, n + 1)
        q_w, r_w, h = ca.DM(cfg.state_weight), ca.DM(cfg.input_weight), cfg.stage_scale
        obj, g, lbg, ubg = 0, [x[:, 0] - X0], [0.0] * nx, [0.0] * nx
        i = cons.x_index[0]
        for k in range(n + 1):
            scale = h if k < n else cfg.terminal_scale
            d = x[:, k] - ref[:, k]
            obj += 0.5 * scale * ca.mtimes([d.T, q_w, d])
            if k > 0:
                obj += 0.5 * (h if k < n else 1.0) * cons.penalty * ca.sumsqr(sx[:, k])
                g += [x[i, k] + sx[0, k], x[i, k] - sx[1, k]]
                lbg += [cons.x_lower[0], -np.inf]
                ubg += [np.inf, cons.x_upper[0]]
            if k < n:
                obj += 0.5 * h * ca.mtimes([u[:, k].T, r_w, u[:, k]]) + 0.5 * h * cons.penalty * ca.sumsqr(sg[:, k])
                lin = ca.mtimes(ca.DM(cons.g_c), x[:, k]) + ca.mtimes(ca.DM(cons.g_d), u[:, k])
                g += [x[:, k + 1] - f(x[:, k], u[:, k]) - e[:, k], lin + sg[0, k], lin - sg[1, k]]
                lbg += [0.0] * nx + [cons.g_lower[0], -np.inf]
                ubg += [0.0] * nx + [np.inf, cons.g_upper[0]]
        self.n, self.nx, self.nu, self.cons = n, nx, nu, cons
        self.nw = nx * (n + 1) + nu * n
        w = ca.vertcat(ca.vec(x), ca.vec(u), ca.vec(sx), ca.vec(sg))
        self.lbg, self.ubg = np.array(lbg), np.array(ubg)
        self.solver = ca.nlpsol(
            "slack", "ipopt", {"x": w, "f": obj, "g": ca.vertcat(*g), "p": ca.vertcat(ca.vec(e), ca.vec(ref))},
            {"ipopt.tol": 1e-12, "ipopt.print_level": 0, "print_time": 0, "ipopt.max_iter": 500},
        )

    def solve(self, ref: np.ndarray, e: np.ndarray | None = None, u0_fixed: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        n, nx, nu = self.n, self.nx, self.nu
        e = np.zeros((nx, n)) if e is None else e
        lbu, ubu = np.tile(self.cons.u_lower, n), np.tile(self.cons.u_upper, n)
        if u0_fixed is not None:
            lbu[:nu] = ubu[:nu] = u0_fixed
        n_slack = 2 * (n + 1) + 2 * n
        lbx = np.concatenate([np.full(nx * (n + 1), -np.inf), lbu, np.zeros(n_slack)])
        ubx = np.concatenate([np.full(nx * (n + 1), np.inf), ubu, np.full(n_slack, np.inf)])
        sol = self.solver(x0=np.zeros(lbx.size), p=np.concatenate([e.ravel(order="F"), ref.T.ravel(order="F")]), lbx=lbx, ubx=ubx, lbg=self.lbg, ubg=self.ubg)
        assert self.solver.stats()["return_status"] in ("Solve_Succeeded", "Solved_To_Acceptable_Level")
        w = np.asarray(sol["x"]).ravel()
        return w[nx * (n + 1) : self.nw].reshape(n, nu), float(sol["f"])


@pytest.fixture(scope="module")
def computer():
    return SensitivityComputer(Unicycle(), MPC, CONSTRAINTS, SensitivityConfig(eps=0.05, parallel=False))


@pytest.fixture(scope="module")
def sample(computer):
    return computer.compute(X0, _reference())


@pytest.fixture(scope="module")
def truth():
    return SlackOcp(Unicycle(), MPC, CONSTRAINTS)


def test_both_soft_constraints_bind_and_no_input_bound(sample):
    """The case is the one meant: y above 0.3 and the speed command above speed + 0.6 somewhere."""
    assert sample.x[1:, 1].max() > 0.3 + 1e-3
    assert (sample.u[:, 0] - sample.x[:-1, 3]).max() > 0.6 + 1e-3
    assert np.all(sample.u > CONSTRAINTS.u_lower + 1e-3) and np.all(sample.u < CONSTRAINTS.u_upper - 1e-3)


def test_operating_point_matches_ipopt(sample, truth):
    u, _ = truth.solve(_reference())
    np.testing.assert_allclose(sample.u, u, atol=1e-7)


def test_du0_de_matches_finite_differences(sample, truth):
    ref, h, n, nx = _reference(), 1e-5, MPC.horizon, 4
    fd = np.empty((2, n, nx))
    for k in range(n):
        for j in range(nx):
            e = np.zeros((nx, n))
            e[j, k] = h
            fd[:, k, j] = (truth.solve(ref, e)[0][0] - truth.solve(ref, -e)[0][0]) / (2 * h)
    assert np.abs(fd).max() > 0.1  # not trivial
    assert np.abs(sample.du0_de - fd).max() <= 1e-5 * np.abs(fd).max()


def test_cost_gradient_matches_finite_differences(computer, sample, truth):
    ref, h = _reference(), 1e-5
    u_fix = sample.u[0] + computer.cfg.eps
    fd = np.empty(2)
    for i in range(2):
        d = np.zeros(2)
        d[i] = h
        fd[i] = (truth.solve(ref, u0_fixed=u_fix + d)[1] - truth.solve(ref, u0_fixed=u_fix - d)[1]) / (2 * h)
    np.testing.assert_allclose(sample.dj_du0_plus, fd, rtol=1e-5)


def test_an_upper_input_bound_gives_a_zero_row():
    """Asymmetric bounds: a low ceiling on the speed command makes u_0[0] sit at it."""
    cons = OcpConstraints(np.array([-0.5, -4.0]), np.array([0.7, 4.0]), penalty=200.0)
    s = SensitivityComputer(Unicycle(), MPC, cons, SensitivityConfig(eps=0.05, parallel=False)).compute(X0, _reference())
    assert s.active0.tolist() == [True, False]
    assert s.u[0, 0] == pytest.approx(0.7, abs=1e-8)
    np.testing.assert_array_equal(s.du0_de[0], 0.0)
