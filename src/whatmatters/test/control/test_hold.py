"""Tests of whatmatters.control.hold."""

from __future__ import annotations

import numpy as np
import pytest
from whatmatters.control.hold import HoldController, run_hold
from whatmatters.dynamics.nominal import exact_model
from whatmatters.sim.environments import make_environment
from whatmatters.sim.simulator import PandaSim

Q = np.array([0.1, -0.3, 0.0, -2.2, 0.1, 2.0, -0.7])


def test_command_is_finite_and_within_limits(nominal, params):
    ctrl = HoldController(nominal, Q, params.torque_limits)
    tau = ctrl(Q + 2.0, np.full(7, 50.0))
    assert np.all(np.isfinite(tau)) and np.all(np.abs(tau) <= params.torque_limits)


def test_hold_with_payload_stays_close(nominal):
    res = run_hold(PandaSim(), make_environment(2000), Q, 2.0, nominal)
    assert res.sim_seconds == pytest.approx(2.0)
    assert 0.0 < res.max_error < 0.3  # PD keeps the unmodelled payload's sag bounded
    assert res.clamps == 0


def test_exact_gravity_without_pd_is_exact(params):
    env = make_environment(3)
    model = exact_model(env.payload, 0.1, 1.0, params)
    res = run_hold(PandaSim(), env, Q, 1.0, model)
    assert res.max_error < 1e-6
