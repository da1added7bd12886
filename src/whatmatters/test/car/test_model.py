"""The nominal car model: its torch and CasADi forms, the plant's body dynamics up to the tyres'
cubic term, Frenet rates against the plant's motion, its Jacobian, closed forms, Frenet conversions."""

from __future__ import annotations

import casadi as ca
import numpy as np
import pytest
import torch
from whatmatters.car.curvature import CurvatureSeries
from whatmatters.car.generate import generate_track
from whatmatters.car.model import CarModel, frenet_state, nominal_car_model, plant_pose
from whatmatters.car.params import load_car_params
from whatmatters.car.plant import CarPlant
from whatmatters.car.track import Track, wrap_angle
from whatmatters.dynamics.check import check_state_jacobian


def _circle(radius: float, half_width: float = 0.8) -> Track:
    return Track(np.array([[0.0, 0.0], [radius, 0.0]]), np.array([[0.0, 0.0], [0.0, radius]]), half_width)


def _straight(length: float = 1000.0) -> CurvatureSeries:
    return CurvatureSeries(length, 0.0, np.zeros(1), np.zeros(1))


def _random_state(rng: np.random.Generator, track: Track) -> tuple[np.ndarray, np.ndarray]:
    x = np.array([
        rng.uniform(0.0, track.length), rng.uniform(-track.half_width, track.half_width), rng.uniform(-0.5, 0.5),
        rng.uniform(1.0, 6.0), rng.uniform(-0.5, 0.5), rng.uniform(-2.0, 2.0), rng.uniform(-0.4, 0.4), rng.uniform(-5.0, 5.0),
    ])  # fmt: skip
    return x, np.array([rng.uniform(-5.0, 5.0), rng.uniform(-0.4, 0.4)])


def _torch_xdot(model: CarModel, x: np.ndarray, u: np.ndarray) -> np.ndarray:
    return model.state_derivative(torch.tensor(x[None]), torch.tensor(u[None]))[0].numpy()


@pytest.fixture(scope="module")
def track() -> Track:
    return generate_track(0)


def test_torch_and_casadi_forms_agree(track):
    model = nominal_car_model(track)
    rng = np.random.default_rng(21)
    states, inputs = map(np.array, zip(*(_random_state(rng, track) for _ in range(50))))
    got = model.state_derivative(torch.tensor(states), torch.tensor(inputs))
    assert got.dtype == torch.float64 and got.shape == (50, 8)
    f = model.casadi_functions()["f"]
    want = np.stack([np.array(f(x, u, np.zeros(0))).ravel() for x, u in zip(states, inputs)])
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-12 * np.abs(want).max())


def test_body_rates_match_the_plant_up_to_the_tyres_cubic_term():
    """The plant's magic formula is the model's linear tyre plus O(alpha^3): with the slip
    angles scaled by eps, the rates of (vx, vy, r, delta, a) differ by c eps^3 (a wrong
    constant, linear or quadratic term would make the ratio 1, 2 or 4)."""
    track = _circle(4.0)
    params = load_car_params()
    model, plant = nominal_car_model(track, params), CarPlant(params)

    def error(eps: float) -> float:
        xm = np.array([3.0, 0.2, 0.1, 3.0, 0.3 * eps, 1.0 * eps, 0.5 * eps, 1.5])
        u = np.array([2.0, 0.5 * eps + 0.1])  # within the steering band: the plant's rate limit idle
        xp = plant_pose(track, xm)
        return float(np.abs(plant.derivative(xp, u)[3:] - _torch_xdot(model, frenet_state(track, xp), u)[3:]).max())

    errors = [error(eps) for eps in (0.2, 0.1, 0.05)]
    assert 7.5 < errors[0] / errors[1] < 8.5 and 7.8 < errors[1] / errors[2] < 8.2, errors
    assert errors[2] < 0.02  # m/s^2, rad/s^2 at slip angles of ~0.01 rad


@pytest.mark.parametrize("which", ["circle", "generated"])
def test_frenet_rates_match_differences_of_the_plants_motion(which, track):
    """s_dot, n_dot, mu_dot against central differences of ``to_frenet`` along the plant's
    world-frame motion, one RK4 step forwards and backwards, of 1 ms and of 0.5 ms,
    Richardson-extrapolated: the difference's h^2 x''' / 6 reaches 5e-4 rad/s in mu at 1 ms
    in a hard transient (r_dot ~ 100 rad/s^2); the extrapolation leaves at most 5e-8 here."""
    track = _circle(4.0) if which == "circle" else track
    params = load_car_params()
    model, plant = CarModel(params, track.curvature_series(128)), CarPlant(params)
    rng, h = np.random.default_rng(4), 1e-3

    def step(x: np.ndarray, u: np.ndarray, dt: float) -> np.ndarray:
        k1 = plant.derivative(x, u)
        k2 = plant.derivative(x + 0.5 * dt * k1, u)
        k3 = plant.derivative(x + 0.5 * dt * k2, u)
        k4 = plant.derivative(x + dt * k3, u)
        return x + dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)

    def difference(xp: np.ndarray, u: np.ndarray, dt: float) -> np.ndarray:
        (s1, n1, mu1), (s0, n0, mu0) = (track.to_frenet(*step(xp, u, sign * dt)[:3]) for sign in (1.0, -1.0))
        ds = np.mod(s1 - s0 + 0.5 * track.length, track.length) - 0.5 * track.length
        return np.array([ds, n1 - n0, wrap_angle(mu1 - mu0)]) / (2.0 * dt)

    for _ in range(10):
        xm, u = _random_state(rng, track)
        u[1] = xm[6] + rng.uniform(-1.0, 1.0) * model.steer_command_band()
        xp = plant_pose(track, xm)
        fd = (4.0 * difference(xp, u, 0.5 * h) - difference(xp, u, h)) / 3.0
        np.testing.assert_allclose(_torch_xdot(model, frenet_state(track, xp), u)[:3], fd, rtol=0, atol=1e-6)


def test_the_state_jacobian_passes_the_finite_difference_check(track):
    model = nominal_car_model(track)
    rng = np.random.default_rng(8)
    for _ in range(5):
        chk = check_state_jacobian(model, *_random_state(rng, track))
        assert chk.f_error == 0.0 and chk.ad_error == 0.0 and chk.fd_error < 1e-6, chk


def test_driving_straight_along_a_straight_line_is_the_closed_form():
    model = CarModel(load_car_params(), _straight())
    x = np.array([12.0, 0.3, 0.0, 2.5, 0.0, 0.0, 0.0, 1.2])
    xdot = _torch_xdot(model, x, np.array([1.2, 0.0]))
    np.testing.assert_allclose(xdot, [2.5, 0.0, 0.0, 1.2, 0.0, 0.0, 0.0, 0.0], rtol=0, atol=1e-15)


def test_small_steering_gives_the_linear_bicycles_steady_yaw_rate():
    params, steer = load_car_params(), 0.05
    model = CarModel(params, _straight())
    rk4 = model.casadi_functions()["rk4"]
    x = np.array([0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0])
    for _ in range(400):  # 2 s
        x = np.array(rk4(x, [0.0, steer], 0.005, np.zeros(0))).ravel()
    front, rear = model.normal_loads(0.0)
    c_front, c_rear = params.mu * params.cs_front * front, params.mu * params.cs_rear * rear  # N/rad
    understeer = params.mass / params.wheelbase * (params.lr / c_front - params.lf / c_rear)
    v = x[3]
    assert x[5] == pytest.approx(v * steer / (params.wheelbase + understeer * v * v), rel=5e-4)


def test_the_steering_band_is_where_the_plants_rate_limit_begins():
    params = load_car_params()
    model, plant = CarModel(params, _straight()), CarPlant(params)
    band = model.steer_command_band()
    assert band == pytest.approx(params.steer_time_constant * params.max_steer_rate, rel=1e-15)
    x = np.array([0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.1, 0.0])
    for offset in (-band, 0.5 * band, band):
        u = np.array([0.0, 0.1 + offset])
        assert _torch_xdot(model, x, u)[6] == pytest.approx(plant.derivative(x, u)[6], rel=1e-12)
    assert plant.derivative(x, np.array([0.0, 0.1 + 1.5 * band]))[6] == pytest.approx(params.max_steer_rate)


def test_frenet_state_and_plant_pose_round_trip(track):
    rng = np.random.default_rng(13)
    states = np.stack([_random_state(rng, track)[0] for _ in range(100)])
    back = frenet_state(track, plant_pose(track, states))
    ds = np.mod(back[:, 0] - states[:, 0] + 0.5 * track.length, track.length) - 0.5 * track.length
    assert np.abs(ds).max() < 1e-9
    np.testing.assert_allclose(back[:, 1:], states[:, 1:], rtol=0, atol=1e-9)
    plant_states = plant_pose(track, states)
    plant_states[:, 2] += 2.0 * np.pi  # the plant's yaw is not wrapped
    again = plant_pose(track, frenet_state(track, plant_states))
    np.testing.assert_allclose(again[:, [0, 1, 3, 4, 5, 6, 7]], plant_states[:, [0, 1, 3, 4, 5, 6, 7]], rtol=0, atol=1e-9)
    np.testing.assert_allclose(wrap_angle(again[:, 2] - plant_states[:, 2]), 0.0, atol=1e-9)
