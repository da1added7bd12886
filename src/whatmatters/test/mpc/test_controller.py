"""Tests of the MPC controller's bounded fallback."""

from __future__ import annotations

import numpy as np
import pytest
from whatmatters.mpc.controller import GRAVITY_HOLD, SHIFTED_PLAN, SOLVED, MpcController
from whatmatters.mpc.solver import SolveResult

Q_HOME = np.array([0.0, -0.4, 0.0, -2.4, 0.0, 2.2, -0.785])


@pytest.fixture
def controller(nominal_solver, nominal):
    ctrl = MpcController(nominal_solver, nominal)
    x0 = np.concatenate([Q_HOME, np.zeros(7)])
    ctrl.reset(x0)
    return ctrl


def _ref(n):
    return np.tile(np.concatenate([Q_HOME, np.zeros(7)]), (n + 1, 1))


def test_success_path(controller, params):
    out = controller(np.concatenate([Q_HOME + 0.01, np.zeros(7)]), _ref(controller.solver.n))
    assert out.source == SOLVED and out.status == 0
    assert np.all(np.isfinite(out.tau)) and np.all(np.abs(out.tau) <= params.torque_limits)


def test_forced_failures_use_shifted_plan_then_gravity(controller, params, monkeypatch):
    x = np.concatenate([Q_HOME + 0.01, np.zeros(7)])
    ref = _ref(controller.solver.n)
    good = controller(x, ref)
    plan = controller._plan
    assert good.source == SOLVED and plan is not None

    real_solve = controller.solver.solve

    def failing(x0):
        res = real_solve(x0)
        return SolveResult(4, np.full(7, np.nan), res.x, np.full_like(res.u, np.nan), res.time_s, res.sqp_iter)

    monkeypatch.setattr(controller.solver, "solve", failing)
    k = controller.solver.cfg.fallback_gravity_after
    outs = [controller(x, ref) for _ in range(k + 2)]
    assert [o.source for o in outs[: k - 1]] == [SHIFTED_PLAN] * (k - 1)
    np.testing.assert_allclose(outs[0].tau, np.clip(plan.u[1], -params.torque_limits, params.torque_limits))
    assert all(o.source == GRAVITY_HOLD for o in outs[k - 1 :])
    np.testing.assert_allclose(outs[-1].tau, controller.hold(x[:7], x[7:]))
    for o in outs:
        assert np.all(np.isfinite(o.tau)) and np.all(np.abs(o.tau) <= params.torque_limits)
    assert controller.stats.failures == k + 2 and controller.stats.statuses == {4: k + 2}
    assert controller.stats.fallbacks == k + 2

    monkeypatch.setattr(controller.solver, "solve", real_solve)
    recovered = controller(x, ref)
    assert recovered.source == SOLVED


def test_nan_state_never_gives_nan_torque(controller, params):
    out = controller(np.full(14, np.nan), _ref(controller.solver.n))
    assert out.source == GRAVITY_HOLD
    assert np.all(np.isfinite(out.tau)) and np.all(np.abs(out.tau) <= params.torque_limits)


def test_real_solver_failure_is_caught(controller, params):
    """An absurd state makes acados fail for real; the torque stays finite and bounded."""
    x = np.concatenate([Q_HOME, np.full(7, 1e8)])
    out = controller(x, _ref(controller.solver.n))
    assert np.all(np.isfinite(out.tau)) and np.all(np.abs(out.tau) <= params.torque_limits)
    if out.source != SOLVED:
        assert controller.stats.failures == 1
    # and the controller recovers on a sane state
    ok = controller(np.concatenate([Q_HOME, np.zeros(7)]), _ref(controller.solver.n))
    assert np.all(np.isfinite(ok.tau))
