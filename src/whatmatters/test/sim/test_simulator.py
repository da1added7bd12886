"""Tests of whatmatters.sim.simulator: stepping, clamping, payload, determinism, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from whatmatters.dynamics.nominal import exact_model
from whatmatters.errors import InvalidTorqueError
from whatmatters.robot.payload import Payload
from whatmatters.sim.environments import make_environment
from whatmatters.sim.simulator import PandaSim, SimConfig

Q_HOME = np.array([0.0, -0.4, 0.0, -2.4, 0.0, 2.2, -0.785])


@pytest.fixture
def sim() -> PandaSim:
    return PandaSim()


def test_step_holds_torque_for_one_control_period(sim):
    sim.reset(make_environment(1), Q_HOME)
    st = sim.step(np.zeros(7))
    assert st.time == pytest.approx(0.02)
    assert sim.config.substeps == 10
    np.testing.assert_array_equal(sim.data.ctrl, np.zeros(7))


def test_deterministic_for_a_seed(sim, rng):
    taus = rng.uniform(-5, 5, size=(50, 7))
    runs = []
    for _ in range(2):
        sim.reset(make_environment(3), Q_HOME)
        runs.append(np.array([np.concatenate([sim.step(t).q, sim.data.qvel]) for t in taus]))
    np.testing.assert_array_equal(runs[0], runs[1])


def test_torque_is_clamped_and_counted(sim):
    sim.reset(make_environment(1), Q_HOME)
    st = sim.step(np.array([100.0, 0, 0, 0, 0, 0, -50.0]))
    assert st.clamped and sim.clamp_count == 1
    np.testing.assert_array_equal(st.tau, [87.0, 0, 0, 0, 0, 0, -12.0])
    sim.step(np.zeros(7))
    assert sim.clamp_count == 1


@pytest.mark.parametrize("bad", [np.full(7, np.nan), np.array([0, 0, 0, np.inf, 0, 0, 0]), np.zeros(6)])
def test_invalid_torque_raises_and_leaves_state_untouched(sim, bad):
    sim.reset(make_environment(1), Q_HOME)
    sim.step(np.ones(7))
    before = (sim.time, sim.data.qpos.copy(), sim.data.qvel.copy())
    with pytest.raises(InvalidTorqueError):
        sim.step(bad)
    assert sim.time == before[0]
    np.testing.assert_array_equal(sim.data.qpos, before[1])
    np.testing.assert_array_equal(sim.data.qvel, before[2])


def test_payload_changes_gravity_as_the_exact_model_predicts(sim, params):
    """MuJoCo's bias force at rest with the payload equals the exact model's g(q)."""
    env = make_environment(11)
    sim.reset(env, Q_HOME)
    model = exact_model(env.payload, armature=0.1, damping=1.0, params=params)
    g = model.gravity(torch.tensor(Q_HOME)[None]).numpy()[0]
    np.testing.assert_allclose(sim.data.qfrc_bias, g, rtol=1e-10, atol=1e-10)
    sim.reset(Payload(), Q_HOME)  # a lighter payload really changes the simulator
    assert np.abs(sim.data.qfrc_bias - g).max() > 0.1


def test_exact_gravity_compensation_holds_still(sim, params):
    env = make_environment(5)
    st = sim.reset(env, Q_HOME)
    model = exact_model(env.payload, armature=0.1, damping=1.0, params=params)
    for _ in range(50):
        g = model.gravity(torch.tensor(st.q)[None]).numpy()[0]
        st = sim.step(g)
    assert np.abs(st.q - Q_HOME).max() < 1e-6


def test_bad_reset_state_is_rejected(sim):
    with pytest.raises(ValueError, match="q0"):
        sim.reset(None, np.zeros(6))


def test_config_validation():
    with pytest.raises(ValueError, match="multiple"):
        SimConfig(control_period=0.015, timestep=0.002)
    with pytest.raises(ValueError, match="integrator"):
        SimConfig(integrator="leapfrog")
