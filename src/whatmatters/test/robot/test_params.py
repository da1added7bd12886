"""Tests of whatmatters.robot.params: parsing, rotations, lumped inertias."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from whatmatters.errors import ConfigError
from whatmatters.robot.params import Inertial, load_panda_params, matrix_to_quat, parse_panda_params, rpy_to_matrix


def test_rpy_matches_elementary_rotations():
    r = rpy_to_matrix([np.pi / 2, 0.0, 0.0])
    np.testing.assert_allclose(r @ [0, 1, 0], [0, 0, 1], atol=1e-15)
    r = rpy_to_matrix([0.3, -0.2, 1.1])
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-14)
    assert np.linalg.det(r) == pytest.approx(1.0)


def test_quaternion_round_trip(rng):
    for _ in range(20):
        rpy = rng.uniform(-np.pi, np.pi, 3)
        rot = rpy_to_matrix(rpy)
        w, x, y, z = matrix_to_quat(rot)
        back = np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
            ]
        )
        np.testing.assert_allclose(back, rot, atol=1e-12)


def test_lumping_two_point_masses_gives_parallel_axis_inertia():
    a = Inertial(1.0, np.array([1.0, 0, 0]), np.zeros((3, 3)))
    b = Inertial(3.0, np.array([-1.0, 0, 0]), np.zeros((3, 3)))
    total = a + b
    assert total.mass == 4.0
    np.testing.assert_allclose(total.com, [-0.5, 0, 0])
    # closed form: sum m d^2 about the common centre for the y and z axes
    expected = 1.0 * 1.5**2 + 3.0 * 0.5**2
    np.testing.assert_allclose(np.diag(total.inertia), [0.0, expected, expected])


def test_panda_limits_and_hand(params):
    assert len(params.joints) == 7
    np.testing.assert_allclose(params.torque_limits, [87, 87, 87, 87, 12, 12, 12])
    assert params.lower[3] == pytest.approx(-3.0718) and params.upper[5] == pytest.approx(3.7525)
    ee = params.end_effector_inertial()
    assert ee.mass == pytest.approx(0.73 + 2 * 0.015)
    np.testing.assert_allclose(params.flange_pos, [0, 0, 0.107])


def test_missing_joint_is_named():
    data = yaml.safe_load(
        __import__("importlib.resources").resources.files("whatmatters.robot")
        .joinpath("data/panda_parameters.yaml")
        .read_text()
    )
    data["joints"] = [j for j in data["joints"] if j["name"] != "panda_joint3"]
    with pytest.raises(ConfigError, match="panda_joint3"):
        parse_panda_params(data, "broken.yaml")


def test_unreadable_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="missing.yaml"):
        load_panda_params(str(tmp_path / "missing.yaml"))
