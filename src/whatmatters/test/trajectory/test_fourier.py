"""Tests of whatmatters.trajectory.fourier: limits, start at rest, derivatives, seeding."""

from __future__ import annotations

import numpy as np
import pytest
from whatmatters.errors import TrajectoryError
from whatmatters.trajectory.fourier import FourierConfig, sample_fourier_trajectory

SEEDS = range(30)


@pytest.fixture(scope="module")
def config() -> FourierConfig:
    return FourierConfig.from_yaml()


def test_yaml_matches_dataclass_defaults(config):
    assert config == FourierConfig()


def test_inside_joint_and_velocity_limits(config, params):
    t = np.arange(0.0, config.duration, 0.001)  # finer than the sampler's own grid
    vmax = np.minimum(config.max_velocity, params.velocity_limits)
    for seed in SEEDS:
        q, qd, _ = sample_fourier_trajectory(seed, config).evaluate(t)
        assert np.all(q > params.lower) and np.all(q < params.upper)
        assert np.all(np.abs(qd) <= vmax + 1e-9)


def test_starts_at_rest_near_home(config):
    home = np.asarray(config.q_home)
    for seed in SEEDS:
        q, qd, qdd = sample_fourier_trajectory(seed, config).evaluate(0.0)
        assert np.abs(q - home).max() <= config.start_spread + 1e-12
        np.testing.assert_allclose(qd, 0.0, atol=1e-12)
        np.testing.assert_allclose(qdd, 0.0, atol=1e-12)


def test_derivatives_match_finite_differences(config):
    traj = sample_fourier_trajectory(4, config)
    t, h = np.linspace(0.3, 9.7, 40), 1e-5
    q_p, qd_p, _ = traj.evaluate(t + h)
    q_m, qd_m, _ = traj.evaluate(t - h)
    _, qd, qdd = traj.evaluate(t)
    np.testing.assert_allclose((q_p - q_m) / (2 * h), qd, atol=1e-8)
    np.testing.assert_allclose((qd_p - qd_m) / (2 * h), qdd, atol=1e-7)


def test_seeded_and_periodic(config):
    a, b = sample_fourier_trajectory(9, config), sample_fourier_trajectory(9, config)
    np.testing.assert_array_equal(a.state(np.linspace(0, 10, 11)), b.state(np.linspace(0, 10, 11)))
    assert not np.allclose(a.q0, sample_fourier_trajectory(10, config).q0)
    np.testing.assert_allclose(a.state(config.duration + 0.37), a.state(0.37), atol=1e-12)


def test_scalar_and_vector_evaluation_agree(config):
    traj = sample_fourier_trajectory(2, config)
    assert traj.state(1.25).shape == (14,)
    np.testing.assert_allclose(traj.state(np.array([1.25]))[0], traj.state(1.25))


def test_impossible_limits_raise(config):
    cfg = FourierConfig(amplitude=(5.0,) * 7, max_attempts=5)
    with pytest.raises(TrajectoryError, match="amplitude"):
        sample_fourier_trajectory(0, cfg)
