"""Tests of whatmatters.robot.mjcf: the compiled MuJoCo model has the specified physics."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
from whatmatters.robot.mjcf import MjcfOptions, panda_mjcf


@pytest.fixture(scope="module")
def model(params):
    return mujoco.MjModel.from_xml_string(panda_mjcf(params, MjcfOptions()))


def test_seven_limited_hinges_fingers_fixed(model, params):
    assert model.nq == 7 and model.nv == 7 and model.njnt == 7
    assert np.all(model.jnt_type == mujoco.mjtJoint.mjJNT_HINGE)
    assert np.all(model.jnt_limited == 1)
    np.testing.assert_allclose(model.jnt_range[:, 0], params.lower)
    np.testing.assert_allclose(model.jnt_range[:, 1], params.upper)


def test_torque_motors_with_published_limits(model):
    assert model.nu == 7
    np.testing.assert_allclose(model.actuator_ctrlrange[:, 1], [87, 87, 87, 87, 12, 12, 12])
    np.testing.assert_allclose(model.actuator_ctrlrange[:, 0], -model.actuator_ctrlrange[:, 1])
    np.testing.assert_allclose(model.actuator_gear[:, 0], 1.0)


def test_armature_damping_integrator_timestep(model):
    np.testing.assert_allclose(model.dof_armature, 0.1)
    np.testing.assert_allclose(model.dof_damping, 1.0)
    assert model.opt.integrator == mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    assert model.opt.timestep == pytest.approx(0.002)


def test_total_mass_includes_hand_and_fingers(model, params):
    payload_id = model.body("payload").id
    arm = sum(lk.mass for lk in params.links) + 0.73 + 2 * 0.015
    assert model.body_mass.sum() - model.body_mass[payload_id] - model.body_mass[model.body("panda_link0").id] == pytest.approx(arm)
