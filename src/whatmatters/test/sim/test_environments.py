"""Tests of whatmatters.sim.environments: seeded payload draws and the fixed seed sets."""

from __future__ import annotations

import numpy as np
import pytest
from whatmatters.errors import ConfigError
from whatmatters.sim.environments import PayloadDistribution, environment_seeds, make_environment


def test_sets_have_the_specified_sizes_and_never_overlap():
    sets = {name: environment_seeds(name) for name in ("train", "validation", "eval")}
    assert [len(sets[n]) for n in ("train", "validation", "eval")] == [100, 20, 100]
    assert not set(sets["train"]) & set(sets["validation"])
    assert not set(sets["train"]) & set(sets["eval"])
    assert not set(sets["validation"]) & set(sets["eval"])


def test_payload_draws_are_in_range_and_vary():
    envs = [make_environment(s) for s in environment_seeds("train")]
    masses = np.array([e.payload.mass for e in envs])
    offsets = np.array([e.payload.offset for e in envs])
    assert masses.min() >= 0.0 and masses.max() <= 4.0
    assert np.abs(offsets).max() <= 0.3
    assert masses.std() > 0.5 and offsets.std() > 0.1
    np.testing.assert_allclose([e.payload.inertia_diag for e in envs], 0.001)


def test_same_seed_same_environment_other_seed_other_environment():
    assert make_environment(7) == make_environment(7)
    assert make_environment(7).payload != make_environment(8).payload
    assert make_environment(7).reference_seed != make_environment(8).reference_seed


def test_mean_mass_matches_uniform_distribution():
    masses = [make_environment(s, PayloadDistribution()).payload.mass for s in range(2000)]
    assert np.mean(masses) == pytest.approx(2.0, abs=0.1)


def test_seed_list_parsing():
    assert environment_seeds("3, 7,9") == [3, 7, 9]


def test_first_n_of_a_set():
    assert environment_seeds("eval:20") == list(range(2000, 2020))
    assert environment_seeds("validation:3") == [1000, 1001, 1002]


@pytest.mark.parametrize("spec", ["evaluation", "1,x", "-1", "eval:0", "eval:101", "eval:x", "evaluation:3"])
def test_bad_env_spec_is_named(spec):
    with pytest.raises(ConfigError):
        environment_seeds(spec)


def test_negative_seed_rejected():
    with pytest.raises(ConfigError, match="non-negative"):
        make_environment(-3)
