"""The race car's bench figures: the learned model it times."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from whatmatters.car import nominal_car_model
from whatmatters.car.generate import generate_track
from whatmatters.cli.bench_car import learned_car_model


def test_the_timed_learned_car_model_is_the_same_in_every_process():
    """Every weight comes from the seed, whatever torch's global random state (each process has its own)."""
    system = SimpleNamespace(nominal=nominal_car_model(generate_track(0)))
    torch.manual_seed(1)
    first = learned_car_model(system).parameter_values()
    torch.manual_seed(2)
    state = torch.random.get_rng_state()
    second = learned_car_model(system).parameter_values()
    np.testing.assert_array_equal(first, second)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global state is left as it was
    assert not np.array_equal(learned_car_model(system, seed=1).parameter_values(), first)
