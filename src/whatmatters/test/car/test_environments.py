"""The car's environments: seeded, within their ranges, and the payload's closed-form effect."""

from __future__ import annotations

import numpy as np
import pytest
from whatmatters.car.environments import CarEnvironment, CarEnvironmentConfig, make_car_environment
from whatmatters.car.params import load_car_params
from whatmatters.errors import ConfigError


def test_environments_are_seeded_and_within_their_ranges():
    cfg = CarEnvironmentConfig()
    envs = [make_car_environment(seed, cfg) for seed in range(200)]
    assert make_car_environment(17, cfg) == envs[17]
    assert len({e.mu_scale for e in envs}) == 200
    for name in ("mu_scale", "payload_mass", "payload_x"):
        values = np.array([getattr(e, name) for e in envs])
        low, high = getattr(cfg, name)
        assert values.min() >= low and values.max() <= high
        assert values.max() - values.min() > 0.8 * (high - low)  # the range is used


def test_a_payload_moves_the_centre_of_gravity_and_the_inertia_as_point_masses_do():
    base = load_car_params()
    params = CarEnvironment(0, 0.8, 1.0, 0.1).params(base)
    total = base.mass + 1.0
    centre = 1.0 * 0.1 / total  # ahead of the old centre of gravity
    assert params.mass == pytest.approx(total)
    assert params.mu == pytest.approx(0.8 * base.mu)
    assert params.lf == pytest.approx(base.lf - centre) and params.lr == pytest.approx(base.lr + centre)
    assert params.wheelbase == pytest.approx(base.wheelbase)
    # the inertia about the new centre of gravity, summed over the two bodies
    assert params.yaw_inertia == pytest.approx(base.yaw_inertia + base.mass * centre**2 + 1.0 * (0.1 - centre) ** 2)


def test_bad_ranges_and_a_centre_of_gravity_off_the_car_are_refused():
    with pytest.raises(ConfigError, match="mu_scale"):
        CarEnvironmentConfig(mu_scale=(1.1, 0.9))
    with pytest.raises(ConfigError, match="leaves the wheelbase"):
        CarEnvironment(3, 1.0, 50.0, 1.0).params(load_car_params())
