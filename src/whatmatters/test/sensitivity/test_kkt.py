"""du0/de and dJ/du0 against finite differences of an independent solver (IPOPT)."""

from __future__ import annotations

from dataclasses import replace

import casadi as ca
import numpy as np
import pytest
from whatmatters.sensitivity.compute import NEWTON_MAX_ITER, SensitivityComputer, SensitivityConfig
from whatmatters.sensitivity.point import warm_start
from whatmatters.trajectory.fourier import sample_fourier_trajectory


class ReferenceOcp:
    """The same OCP with prediction errors e as parameters, solved by IPOPT to 1e-12.

    Optionally u_0 is fixed (for the cost gradient check). Cost in acados'
    convention: 1/2 of the weighted squares, stage costs times dt.
    """

    def __init__(self, model, cfg, limits):
        n, nx, nu = cfg.horizon, model.nx, model.nu
        xs, us = ca.SX.sym("x", nx), ca.SX.sym("u", nu)
        f = ca.Function("F", [xs, us], [model.rk4_step(xs, us, cfg.dt)])
        x, u = ca.SX.sym("X", nx, n + 1), ca.SX.sym("U", nu, n)
        e, x0, ref = ca.SX.sym("E", nx, n), ca.SX.sym("X0", nx), ca.SX.sym("R", nx, n + 1)
        q_w, r_w = ca.DM(cfg.stage_scale * cfg.state_weight), ca.DM(cfg.stage_scale * cfg.input_weight)
        obj, g = 0, [x[:, 0] - x0]
        for k in range(n):
            d = x[:, k] - ref[:, k]
            obj += 0.5 * ca.mtimes([d.T, q_w, d]) + 0.5 * ca.mtimes([u[:, k].T, r_w, u[:, k]])
            g.append(x[:, k + 1] - f(x[:, k], u[:, k]) - e[:, k])
        d = x[:, n] - ref[:, n]
        obj += 0.5 * cfg.terminal_scale * ca.mtimes([d.T, ca.DM(cfg.state_weight), d])
        self.n, self.nx, self.nu, self.limits = n, nx, nu, np.asarray(limits)
        w = ca.vertcat(ca.vec(x), ca.vec(u))
        self.solver = ca.nlpsol(
            "ref", "ipopt", {"x": w, "f": obj, "g": ca.vertcat(*g), "p": ca.vertcat(ca.vec(e), x0, ca.vec(ref))},
            {"ipopt.tol": 1e-12, "ipopt.acceptable_tol": 1e-11, "ipopt.print_level": 0, "print_time": 0, "ipopt.max_iter": 500},
        )

    def solve(self, x0, ref, e=None, u0_fixed=None, init=None):
        n, nx, nu = self.n, self.nx, self.nu
        e = np.zeros((nx, n)) if e is None else e
        lbu = np.tile(-self.limits, n)
        ubu = np.tile(self.limits, n)
        if u0_fixed is not None:
            lbu[:nu] = ubu[:nu] = u0_fixed
        lbx = np.concatenate([np.full(nx * (n + 1), -np.inf), lbu])
        ubx = np.concatenate([np.full(nx * (n + 1), np.inf), ubu])
        sol = self.solver(
            x0=init if init is not None else np.zeros(nx * (n + 1) + nu * n),
            p=np.concatenate([e.ravel(order="F"), x0, ref.T.ravel(order="F")]),
            lbx=lbx, ubx=ubx, lbg=0, ubg=0,
        )
        assert self.solver.stats()["return_status"] in ("Solve_Succeeded", "Solved_To_Acceptable_Level")
        w = np.asarray(sol["x"]).ravel()
        return w, w[nx * (n + 1) :].reshape(n, nu), float(sol["f"])


@pytest.fixture(scope="module")
def computer(nominal, mpc_config, params):
    return SensitivityComputer(nominal, mpc_config, params.torque_limits, SensitivityConfig())


@pytest.fixture(scope="module")
def reference_ocp(nominal, mpc_config, params):
    return ReferenceOcp(nominal, mpc_config, params.torque_limits)


def _case(offset: float, seed: int = 3, t: float = 1.0, wrist_velocity: float = 0.0):
    tr = sample_fourier_trajectory(seed)
    ref = tr.state(t + 0.02 * np.arange(13))
    x0 = tr.state(t)
    x0[:7] += offset
    x0[11:] += wrist_velocity
    return x0, ref


def test_operating_point_solver_uses_the_exact_jacobian(nominal, mpc_config, params):
    """A controller set to the approximate RTI Jacobian still gets exact sensitivities."""
    fast = SensitivityComputer(nominal, replace(mpc_config, rk4_jacobian="first_stage"), params.torque_limits, SensitivityConfig())
    assert fast.solver.cfg.rk4_jacobian == "exact" and fast.solver.cfg.nlp_solver == "SQP"


def _set_tolerance(computer, tol: float) -> None:
    for field in ("tol_stat", "tol_eq", "tol_ineq", "tol_comp"):
        computer.solver.acados.options_set(field, tol)


def test_operating_point_jacobians_are_the_solutions(computer):
    """The Jacobians read from acados' last QP are those of the RK4 map at the returned iterate,
    not at the one before: checked at a loose tolerance, where successive iterates differ."""
    x0, ref = _case(0.02)
    _set_tolerance(computer, 1e-4)
    try:
        loose = computer.operating_point(x0, ref)
    finally:
        _set_tolerance(computer, computer.cfg.sqp_tol)
    converged = computer.operating_point(x0, ref)
    assert loose.sqp_iter > 2 and converged.sqp_iter > loose.sqp_iter
    for pt in (loose, converged):
        _, a, b = computer.derivatives.jacobians(pt.x[:-1], pt.u, pt.params)
        np.testing.assert_allclose(pt.a, a, rtol=0, atol=1e-12 * np.abs(a).max())
        np.testing.assert_allclose(pt.b, b, rtol=0, atol=1e-12 * np.abs(b).max())
    assert np.abs(loose.a - converged.a).max() > 1e-9 * np.abs(converged.a).max()  # the check can tell iterates apart


def test_operating_point_matches_ipopt(computer, reference_ocp):
    x0, ref = _case(0.02)
    s = computer.compute(x0, ref)
    _, u, _ = reference_ocp.solve(x0, ref)
    np.testing.assert_allclose(s.u, u, atol=1e-6)


def test_du0_de_matches_finite_differences_off_the_bounds(computer, reference_ocp, params, rng):
    x0, ref = _case(0.02)
    s = computer.compute(x0, ref)
    assert np.all(np.abs(s.u) < 0.95 * params.torque_limits)  # no bound active anywhere
    w0, _, _ = reference_ocp.solve(x0, ref)
    h, n, nx = 1e-5, 12, 14
    picks = [(0, j) for j in range(nx)] + [(int(k), int(j)) for k, j in zip(rng.integers(1, n, 10), rng.integers(0, nx, 10))]
    fd, an = [], []
    for k, j in picks:
        e = np.zeros((nx, n))
        e[j, k] = h
        up = reference_ocp.solve(x0, ref, e, init=w0)[1][0]
        dn = reference_ocp.solve(x0, ref, -e, init=w0)[1][0]
        fd.append((up - dn) / (2 * h))
        an.append(s.du0_de[:, k, j])
    fd, an = np.array(fd), np.array(an)
    assert np.abs(an).max() > 1e-2  # a non-trivial sensitivity
    assert np.abs(fd - an).max() / np.abs(an).max() <= 1e-4


def test_fixed_input_predictor_matches_finite_differences(computer, reference_ocp):
    """The re-solves' start: the first-order change of IPOPT's solution when u_0 is fixed off u0*."""
    x0, ref = _case(0.02)
    s = computer.compute(x0, ref)
    n, nx = 12, 14
    point = computer.operating_point(x0, ref)
    direction = np.stack(computer._fixed_inputs(s.u)) - s.u[0]  # the two deltas the re-solves use
    h = 1e-4
    w0, _, _ = reference_ocp.solve(x0, ref)
    for c in range(2):
        up, u_up, _ = reference_ocp.solve(x0, ref, u0_fixed=s.u[0] + h * direction[c], init=w0)
        dn, u_dn, _ = reference_ocp.solve(x0, ref, u0_fixed=s.u[0] - h * direction[c], init=w0)
        fd_x = (up[: nx * (n + 1)] - dn[: nx * (n + 1)]).reshape(n + 1, nx) / (2 * h)
        fd_u = (u_up - u_dn) / (2 * h)
        assert np.abs(point.kkt.fixed_dx[c] - fd_x).max() <= 1e-5 * np.abs(fd_x).max()
        assert np.abs(point.kkt.fixed_du[c] - fd_u).max() <= 1e-5 * np.abs(fd_u).max()


def test_fast_resolves_give_the_numbers_of_plain_resolves(nominal, mpc_config, params):
    """Predictor starts and the exact-Hessian QPs (the defaults) against re-solves from the point with Gauss-Newton QPs."""
    predicted = SensitivityComputer(nominal, mpc_config, params.torque_limits, SensitivityConfig(resolve_start="predictor"))
    plain = SensitivityComputer(nominal, mpc_config, params.torque_limits, SensitivityConfig(resolve_start="point", resolve_hessian="gauss_newton"))
    for case in (_case(0.02), _case(0.01, 2)):
        a, b = predicted.compute(*case), plain.compute(*case)
        for field in ("s_hat", "dj_du0_plus", "dj_du0_minus"):
            want = getattr(b, field)
            np.testing.assert_allclose(getattr(a, field), want, rtol=0, atol=1e-9 * np.abs(want).max(), err_msg=field)


def test_active_bounds_give_zero_rows(nominal, mpc_config, params):
    """With torque limits at 15 % the first input of joints 2, 4 and 6 saturates."""
    limits = 0.15 * params.torque_limits
    computer = SensitivityComputer(nominal, mpc_config, limits)
    reference_ocp = ReferenceOcp(nominal, mpc_config, limits)
    x0, ref = _case(0.02)
    s = computer.compute(x0, ref)
    assert s.active0.any() and not s.active0.all()
    np.testing.assert_array_equal(s.du0_de[s.active0], 0.0)
    # and IPOPT agrees that a small e does not move the saturated inputs
    w0, u_ref, _ = reference_ocp.solve(x0, ref)
    e = np.zeros((14, 12))
    e[:, 0] = 1e-5
    u_pert = reference_ocp.solve(x0, ref, e, init=w0)[1][0]
    np.testing.assert_allclose(u_pert[s.active0], u_ref[0][s.active0], atol=1e-9)
    # released bounds: the saturated joints' rows are those of the action the controller asks for (test_riccati.py
    # checks the pass against the dense problem); they are not zero
    assert s.du0_de_relaxed is not None and np.abs(s.du0_de_relaxed[s.active0]).max(axis=(1, 2)).min() > 0


def test_without_active_bounds_the_released_rows_are_du0_de(computer):
    x0, ref = _case(0.02)
    s = computer.compute(x0, ref)
    assert not s.active0.any()
    np.testing.assert_array_equal(s.du0_de_relaxed, s.du0_de)


def test_multiplier_gradient_matches_finite_differences_of_the_cost(computer, reference_ocp):
    x0, ref = _case(0.02)
    s = computer.compute(x0, ref)
    u_fix = s.u[0] + computer.cfg.eps
    computer.solver.set_reference(ref)
    grad, _ = computer.cost_gradient_u0(x0, u_fix, s.x, s.u)
    np.testing.assert_allclose(grad, s.dj_du0_plus, rtol=1e-8, atol=1e-10)
    h = 1e-4
    fd = np.empty(7)
    for i in range(7):
        d = np.zeros(7)
        d[i] = h
        fd[i] = (reference_ocp.solve(x0, ref, u0_fixed=u_fix + d)[2] - reference_ocp.solve(x0, ref, u0_fixed=u_fix - d)[2]) / (2 * h)
    assert np.abs(fd - grad).max() / np.abs(grad).max() <= 1e-4


def test_one_at_a_time_equals_batch(computer):
    cases = [_case(o, seed) for o, seed in ((0.01, 1), (0.03, 2), (0.02, 4))]
    single = [computer.compute(*c).s_hat for c in cases]
    batch = [computer.compute(*c).s_hat for c in cases[::-1]][::-1]  # another order, warm solver
    finished = [s.s_hat for s in computer.finish([computer.operating_point(*c) for c in cases])]  # the batch job's path
    for a, b, f in zip(single, batch, finished):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10 * np.abs(a).max())
        np.testing.assert_allclose(a, f, rtol=1e-10, atol=1e-10 * np.abs(a).max())


def test_parallel_re_solves_give_the_serial_numbers(nominal, mpc_config, params):
    """compute() with the u0* + eps re-solve in a thread equals the serial path exactly."""
    threaded = SensitivityComputer(nominal, mpc_config, params.torque_limits, SensitivityConfig(parallel=True))
    serial = SensitivityComputer(nominal, mpc_config, params.torque_limits, SensitivityConfig(parallel=False))
    if threaded._pool is None:
        pytest.skip("one CPU: no thread is used")
    assert serial._pool is None
    for case in (_case(0.02), _case(0.01, 2)):
        a, b = threaded.compute(*case), serial.compute(*case)
        for field in ("s_hat", "du0_de", "dj_du0_plus", "dj_du0_minus", "x", "u"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)


def test_warm_start_hessians_keep_the_numbers(computer):
    """The previous step's second-order terms (each at its stage) in the next SQP: the same sample, not more iterations."""
    first = computer.compute(*_case(0.02, t=1.0))
    x_init, u_init, w_init = warm_start(first)
    assert w_init is not None and np.array_equal(w_init, first.stage_hessians)
    assert np.array_equal(x_init[:-1], first.x[1:]) and np.array_equal(u_init[:-1], first.u[1:])
    x0, ref = _case(0.02, t=1.02)
    with_w = computer.compute(x0, ref, None, x_init, u_init, w_init)
    plain = computer.compute(x0, ref, None, x_init, u_init, None)
    assert with_w.sqp_iter <= plain.sqp_iter
    for field in ("s_hat", "u", "dj_du0_plus"):
        want = getattr(plain, field)
        np.testing.assert_allclose(getattr(with_w, field), want, rtol=0, atol=1e-9 * np.abs(want).max(), err_msg=field)


def test_a_failing_second_order_start_falls_back_to_gauss_newton(computer):
    """Second-order terms that wreck the QPs: the SQP gives up within its bound and the plain one answers."""
    x0, ref = _case(0.02)
    plain = computer.compute(x0, ref)
    bad = np.tile(-1e4 * np.eye(21), (12, 1, 1))
    computer.step_seconds.clear()
    got = computer.compute(x0, ref, None, None, None, bad)
    assert computer.step_seconds["operating_point_iter"] > NEWTON_MAX_ITER  # the bounded attempt, then the fallback
    np.testing.assert_allclose(got.s_hat, plain.s_hat, rtol=0, atol=1e-9 * np.abs(plain.s_hat).max())
