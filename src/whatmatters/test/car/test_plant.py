"""The car plant against closed forms: tyre slope and peak, load transfer, straight driving,
steady cornering of the linear bicycle, RK4's order, the actuators; its parameter file."""

from __future__ import annotations

import numpy as np
import pytest
from whatmatters.car.params import GRAVITY, load_car_params
from whatmatters.car.plant import CarPlant, magic_formula
from whatmatters.errors import ConfigError


@pytest.fixture(scope="module")
def plant() -> CarPlant:
    return CarPlant(load_car_params())


def test_the_tyre_has_the_linear_models_slope_and_saturates_at_mu_fz(plant):
    p, fz = plant.p, 10.0
    h = 1e-7
    slope = (magic_formula(h, fz, p.mu, p.cs_front, p.shape_c, p.curvature_e) - magic_formula(-h, fz, p.mu, p.cs_front, p.shape_c, p.curvature_e)) / (2 * h)
    assert slope == pytest.approx(p.mu * p.cs_front * fz, rel=1e-8)
    alpha = np.linspace(-1.5, 1.5, 30001)
    force = magic_formula(alpha, fz, p.mu, p.cs_front, p.shape_c, p.curvature_e)
    assert force.max() == pytest.approx(p.mu * fz, rel=1e-6)
    np.testing.assert_allclose(force, -force[::-1], atol=1e-12)


def test_load_transfer_keeps_the_weight_and_moves_m_a_h_over_l_rearwards(plant):
    p = plant.p
    front0, rear0 = plant.normal_loads(0.0)
    front, rear = plant.normal_loads(3.0)
    assert front + rear == pytest.approx(p.mass * GRAVITY, rel=1e-14)
    assert rear - rear0 == pytest.approx(p.mass * 3.0 * p.cog_height / p.wheelbase, rel=1e-12)
    assert front0 == pytest.approx(p.mass * GRAVITY * p.lr / p.wheelbase, rel=1e-14)


def test_without_steering_or_drive_the_car_coasts_straight(plant):
    x = plant.simulate(np.array([1.0, 2.0, 0.3, 2.0, 0.0, 0.0, 0.0, 0.0]), np.zeros(2), 1.0)
    np.testing.assert_allclose(x[:3], [1.0 + 2.0 * np.cos(0.3), 2.0 + 2.0 * np.sin(0.3), 0.3], atol=1e-12)
    np.testing.assert_allclose(x[3:], [2.0, 0.0, 0.0, 0.0, 0.0], atol=1e-12)


def test_small_steering_gives_the_linear_bicycles_steady_yaw_rate(plant):
    p, steer = plant.p, 0.05
    x = plant.simulate(np.array([0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0]), np.array([0.0, steer]), 2.0)
    front, rear = plant.normal_loads(0.0)
    c_front, c_rear = p.mu * p.cs_front * front, p.mu * p.cs_rear * rear  # N/rad
    understeer = p.mass / p.wheelbase * (p.lr / c_front - p.lf / c_rear)
    v = x[3]
    assert x[5] == pytest.approx(v * steer / (p.wheelbase + understeer * v * v), rel=1e-3)


def test_rk4_converges_with_the_fourth_power_of_the_step():
    params = load_car_params()  # a smooth case: the steering's rate limit (a kink) does not act
    x0, u = np.array([0.0, 0.0, 0.0, 3.0, 0.1, 0.5, 0.1, 1.0]), np.array([2.0, 0.12])
    reference = CarPlant(params, step=1.25e-4).simulate(x0, u, 0.2)
    errors = [np.abs(CarPlant(params, step=h).simulate(x0, u, 0.2) - reference).max() for h in (0.004, 0.002)]
    assert 12.0 < errors[0] / errors[1] < 20.0


def test_the_steering_follows_its_rate_limit_then_its_lag_and_commands_are_clipped(plant):
    p = plant.p
    u = plant.clip_input(np.array([50.0, 1.0]))
    np.testing.assert_array_equal(u, [p.max_accel, p.max_steer])
    x0 = np.array([0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0])
    x = plant.simulate(x0, np.array([0.0, 0.4]), 0.05)  # (0.4 - delta) / tau > max rate until delta = 0.24
    assert x[6] == pytest.approx(p.max_steer_rate * 0.05, rel=1e-9)


def test_car_parameter_files_are_checked_by_name(tmp_path):
    with pytest.raises(ConfigError, match="missing.yaml"):
        load_car_params(tmp_path / "missing.yaml")
    bad = tmp_path / "car.yaml"
    bad.write_text("chassis: {mass: 3.7}\ntyres: {}\nactuators: {}\n")
    with pytest.raises(ConfigError, match="car.yaml: unknown keys \\[\\], missing keys"):
        load_car_params(bad)
    with pytest.raises(ConfigError, match="mass"):
        load_car_params().with_values(mass=-1.0)
