"""The learned car model: its fresh state is the nominal model, torch and CasADi forms agree (weights as
parameters, no rebuild), its Jacobian, rollouts, context features and tracker, checkpoints."""

from __future__ import annotations

import casadi as ca
import numpy as np
import pytest
import torch
from whatmatters.car.context import car_history_features, car_history_windows
from whatmatters.car.generate import generate_track
from whatmatters.car.learned import CarLearnedConfig, CarLearnedModel
from whatmatters.car.model import CarModel, frenet_state, nominal_car_model, plant_pose
from whatmatters.car.params import load_car_params
from whatmatters.car.plant import CarPlant
from whatmatters.car.residual import CarResidualConfig
from whatmatters.car.track import Track
from whatmatters.dynamics.check import check_state_jacobian
from whatmatters.dynamics.learned import CheckpointError

DT = 0.02


@pytest.fixture(scope="module")
def track() -> Track:
    return generate_track(0)


@pytest.fixture(scope="module")
def nominal(track) -> CarModel:
    return nominal_car_model(track)


def _random_model(nominal: CarModel, seed: int, cfg: CarLearnedConfig | None = None) -> CarLearnedModel:
    """A model whose last residual layer is re-initialised from a seeded normal (the rest: torch's seeded init)."""
    torch.manual_seed(seed)
    model = CarLearnedModel(nominal, cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.residual.net[-1].parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
    return model


def _random_states(rng: np.random.Generator, track: Track, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n states (vx in [1, 6] m/s) and inputs, (n, 8) and (n, 2)."""
    lo = np.array([0.0, -track.half_width, -0.5, 1.0, -0.5, -2.0, -0.4, -5.0])
    hi = np.array([track.length, track.half_width, 0.5, 6.0, 0.5, 2.0, 0.4, 5.0])
    return rng.uniform(lo, hi, (n, 8)), rng.uniform([-5.0, -0.4], [5.0, 0.4], (n, 2))


def _casadi_xdot(model: CarModel, states: np.ndarray, inputs: np.ndarray, params: np.ndarray) -> np.ndarray:
    """xdot of the CasADi form, one row per (state, input, parameter vector), (n, 8)."""
    f = model.casadi_functions()["f"]
    return np.stack([np.array(f(x, u, p)).ravel() for x, u, p in zip(states, inputs, params)])


def _plant_episode(track: Track, mu: float, steps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Model states (steps + 1, 8) and commands (steps, 2) of the plant cornering on ``track`` with friction ``mu``."""
    params = load_car_params()
    plant, rng = CarPlant(params.with_values(mu=mu)), np.random.default_rng(seed)
    xp = plant_pose(track, np.array([1.0, 0.0, 0.0, 4.0, 0.0, 0.0, 0.0, 0.0]))
    states, inputs = [xp], []
    for _ in range(steps):
        s = frenet_state(track, xp)[0]
        u = np.array([rng.uniform(-1.0, 2.0), params.wheelbase * track.point(s)[3] + rng.uniform(-0.15, 0.15)])
        xp = plant.simulate(xp, u, DT)
        states.append(xp)
        inputs.append(u)
    return frenet_state(track, np.array(states)), np.array(inputs)


def _nominal_episode(model: CarModel, u: np.ndarray, dt: float, x0: np.ndarray | None = None) -> np.ndarray:
    """The nominal model's own motion under inputs ``u`` (T, 2) sampled every ``dt`` (10 RK4 substeps each), (T + 1, 8)."""
    rk4 = model.casadi_functions()["rk4"]
    x = np.array([1.0, 0.1, 0.05, 4.0, 0.1, 0.5, 0.05, 0.5]) if x0 is None else x0
    states = [x]
    for uk in u:
        for _ in range(10):
            x = np.array(rk4(x, uk, dt / 10, np.zeros(0))).ravel()
        states.append(x)
    return np.array(states)


def _wavy_inputs(dt: float, steps: int) -> np.ndarray:
    """Smoothly varying commands sampled every ``dt``, (steps, 2)."""
    t = dt * np.arange(steps)
    return np.stack([1.0 + np.sin(20.0 * t), 0.1 * np.cos(10.0 * t)], axis=1)


def test_a_fresh_model_is_the_nominal_model_exactly(nominal, track):
    model = CarLearnedModel(nominal)
    states, inputs = _random_states(np.random.default_rng(1), track, 30)
    z = np.random.default_rng(2).normal(size=(30, model.context_dim))
    want = nominal.state_derivative(torch.tensor(states), torch.tensor(inputs)).numpy()
    got = model.state_derivative(torch.tensor(states), torch.tensor(inputs), torch.tensor(z)).detach().numpy()
    np.testing.assert_array_equal(got, want)
    params = np.concatenate([np.tile(model.residual.flat_parameters(), (30, 1)), z], axis=1)
    np.testing.assert_array_equal(_casadi_xdot(model, states, inputs, params), want)


def test_torch_and_casadi_forms_agree_with_random_weights(nominal, track):
    model = _random_model(nominal, 5)
    states, inputs = _random_states(np.random.default_rng(3), track, 50)
    z = np.random.default_rng(4).normal(size=(50, model.context_dim))
    got = model.state_derivative(torch.tensor(states), torch.tensor(inputs), torch.tensor(z)).detach().numpy()
    assert np.abs(got - nominal.state_derivative(torch.tensor(states), torch.tensor(inputs)).numpy()).max() > 1.0  # the residual acts
    params = np.concatenate([np.tile(model.residual.flat_parameters(), (50, 1)), z], axis=1)
    np.testing.assert_allclose(_casadi_xdot(model, states, inputs, params), got, rtol=0, atol=1e-10)


def test_the_casadi_form_takes_another_models_weights_without_a_rebuild(nominal, track):
    built, other = _random_model(nominal, 6), _random_model(nominal, 7)
    states, inputs = _random_states(np.random.default_rng(5), track, 20)
    z = np.random.default_rng(6).normal(size=other.context_dim)
    other.set_context(z)
    want = other.state_derivative(torch.tensor(states), torch.tensor(inputs)).detach().numpy()  # the stored context
    got = _casadi_xdot(built, states, inputs, np.tile(other.parameter_values(), (20, 1)))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
    own = _casadi_xdot(built, states, inputs, np.tile(np.concatenate([built.residual.flat_parameters(), z]), (20, 1)))
    assert np.abs(own - want).max() > 1.0


def test_the_state_jacobian_passes_the_finite_difference_check(nominal, track):
    model = _random_model(nominal, 8)
    rng = np.random.default_rng(9)
    states, inputs = _random_states(rng, track, 5)
    for x, u in zip(states, inputs):
        chk = check_state_jacobian(model, x, u, np.concatenate([model.residual.flat_parameters(), rng.normal(size=model.context_dim)]))
        assert chk.fd_error < 1e-6, chk


def test_rollout_equals_repeated_casadi_rk4_steps(nominal, track):
    model, rng, horizon = _random_model(nominal, 10), np.random.default_rng(11), 6
    x0, _ = _random_states(rng, track, 4)
    u = rng.uniform([-2.0, -0.2], [2.0, 0.2], (4, horizon, 2))
    z = rng.normal(size=(4, model.context_dim))
    got = model.rollout(torch.tensor(x0), torch.tensor(u), torch.tensor(z)).detach().numpy()
    assert got.shape == (4, horizon, 8)
    rk4, weights = model.casadi_functions()["rk4"], model.residual.flat_parameters()
    for b in range(4):
        x = x0[b]
        for k in range(horizon):
            x = np.array(rk4(x, u[b, k], DT, np.concatenate([weights, z[b]]))).ravel()
            np.testing.assert_allclose(got[b, k], x, rtol=0, atol=1e-10 * max(1.0, np.abs(x).max()))


def test_the_first_windows_are_the_stated_padding(nominal, track):
    x, u = _plant_episode(track, load_car_params().mu, 4, seed=0)
    feats = car_history_features(nominal, x, u, DT)
    windows = car_history_windows(feats, x[0], 3)
    pad = np.concatenate([x[0, 3:8], np.zeros(5)])  # first state's (vx, vy, r, delta, a), zero inputs and errors
    np.testing.assert_array_equal(windows[0], np.tile(pad, (3, 1)))
    np.testing.assert_array_equal(windows[2], np.stack([pad, feats[0], feats[1]]))
    np.testing.assert_array_equal(windows[3], feats[:3])


def test_the_tracker_builds_the_training_windows_online(nominal, track):
    model = _random_model(nominal, 12)
    x, u = _plant_episode(track, 0.6, 25, seed=1)  # longer than the window of 15
    windows = car_history_windows(car_history_features(nominal, x, u, DT), x[0], model.cfg.window)
    tracker = model.context_tracker()
    tracker.reset(x[0])
    tracker.observe(x[0], None, None)  # the first step has no transition
    for t in range(len(u)):
        np.testing.assert_allclose(tracker.window_array(), windows[t], rtol=0, atol=1e-12)
        tracker.observe(x[t + 1], u[t], x[t])


def test_the_trackers_context_is_the_encoder_of_its_window_after_the_weights(nominal, track):
    model = _random_model(nominal, 13)
    x, u = _plant_episode(track, 0.6, 5, seed=2)
    tracker = model.context_tracker()
    tracker.reset(x[0])
    for t in range(len(u)):
        tracker.observe(x[t + 1], u[t], x[t])
    start, z = tracker.context()
    assert start == model.residual.n_weights() and model.parameter_values()[start:].shape == z.shape
    with torch.no_grad():
        np.testing.assert_allclose(z, model.encode(tracker.window_array()[None])[0].numpy(), rtol=0, atol=1e-12)


def test_the_features_model_error_is_the_finite_difference_minus_the_nominal_rates(nominal):
    u = _wavy_inputs(DT, 20)
    x = _nominal_episode(nominal, u, DT)
    feats = car_history_features(nominal, x, u, DT)
    rates = nominal.state_derivative(torch.tensor(x[:-1]), torch.tensor(u)).numpy()[:, 3:6]  # torch, not CasADi
    np.testing.assert_array_equal(feats[:, :7], np.concatenate([x[:-1, 3:8], u], axis=1))
    np.testing.assert_allclose(feats[:, 7:], (x[1:, 3:6] - x[:-1, 3:6]) / DT - rates, rtol=0, atol=1e-11)


def test_the_model_error_of_the_nominal_models_own_motion_vanishes_with_dt(nominal):
    """A forward difference: the error is dt/2 times the second derivative, so halving dt halves it."""
    errors = []
    for dt in (0.001, 0.0005):
        u = np.tile(_wavy_inputs(dt, 1), (3, 1))  # the same held input over the first 3 steps
        errors.append(np.abs(car_history_features(nominal, _nominal_episode(nominal, u, dt), u, dt)[0, 7:]).max())
    assert 1.9 < errors[0] / errors[1] < 2.1, errors  # a bias (wrong rates) would give 1


def test_the_model_error_of_a_low_friction_plant_is_large_in_steady_cornering(nominal):
    """3 s at a constant command: the motion is steady, so the nominal model's own error is tiny,
    while a plant on half the friction needs larger slip angles, at which the nominal tyres push
    harder than the plant's (the features read the body states only; the pose is set to 0)."""
    x0, u = np.array([0.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.0]), np.tile([0.0, 0.08], (150, 1))
    own = car_history_features(nominal, _nominal_episode(nominal, u, DT, x0), u, DT)[-10:, 7:]
    plant, xp = CarPlant(load_car_params().with_values(mu=0.5)), [x0]
    for uk in u:
        xp.append(plant.simulate(xp[-1], uk, DT))
    xs = np.array(xp)
    xs[:, :3] = 0.0  # the plant's world pose, not a Frenet one
    slippery = car_history_features(nominal, xs, u, DT)[-10:, 7:]
    assert np.abs(own).max() < 1e-3, own
    assert np.abs(slippery[:, 1]).min() > 1.0, slippery  # m/s^2 of lateral acceleration unexplained


def test_a_checkpoint_round_trip_keeps_every_parameter(nominal, tmp_path):
    cfg = CarLearnedConfig(CarResidualConfig(hidden=(16,), context_dim=3), window=10, lstm_hidden=8)
    model = _random_model(nominal, 14, cfg)
    model.encoder.set_normalization(np.linspace(-1.0, 1.0, 10), np.linspace(0.5, 2.0, 10))
    model.set_context(np.array([0.1, -0.2, 0.3]))
    model.save(tmp_path / "car.pt", step=7)
    loaded = CarLearnedModel.load(tmp_path / "car.pt", nominal_car_model(generate_track(1)))  # any track
    assert loaded.cfg == cfg and loaded.metadata == {"step": 7}
    want = model.state_dict()
    assert set(loaded.state_dict()) == set(want)
    for name, value in loaded.state_dict().items():
        assert value.dtype == torch.float64 and torch.equal(value, want[name]), name
    np.testing.assert_array_equal(loaded.residual.flat_parameters(), model.residual.flat_parameters())


def test_a_corrupt_or_missing_checkpoint_raises_naming_the_file(nominal, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    for path in (bad, tmp_path / "missing.pt"):
        with pytest.raises(CheckpointError, match=str(path)):
            CarLearnedModel.load(path, nominal)


def test_a_checkpoint_of_another_car_is_refused(nominal, track, tmp_path):
    CarLearnedModel(nominal).save(tmp_path / "car.pt")
    other = CarModel(nominal.p.with_values(mu=0.8), nominal.curvature)
    with pytest.raises(CheckpointError, match=r"car\.pt.*mu"):
        CarLearnedModel.load(tmp_path / "car.pt", other)
