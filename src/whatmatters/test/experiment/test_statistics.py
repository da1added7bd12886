"""The environment-paired ratio and its bootstrap interval on closed-form and synthetic cases."""

from __future__ import annotations

import numpy as np
import pytest
from whatmatters.experiment.statistics import paired_ratio


def test_a_uniform_factor_is_the_ratio_and_its_interval():
    """Every environment 0.8 of the reference and no seed noise: nothing for the bootstrap to vary."""
    rng = np.random.default_rng(0)
    ref = np.tile(rng.uniform(0.5, 50.0, 20), (5, 1))
    got = paired_ratio(0.8 * ref, ref)
    assert got.ratio == pytest.approx(0.8, rel=1e-12)
    assert got.low == pytest.approx(0.8, rel=1e-12) and got.high == pytest.approx(0.8, rel=1e-12)
    assert (got.wins, got.envs) == (20, 20)


def test_environments_weigh_equally_and_seeds_are_averaged_first():
    ref = np.array([[1.0, 100.0], [3.0, 300.0]])  # seed means 2 and 200
    j = np.array([[4.0, 100.0], [4.0, 100.0]])  # seed means 4 and 100: ratios 2 and 1/2
    got = paired_ratio(j, ref)
    assert got.ratio == pytest.approx(1.0, rel=1e-12)  # the mean-J reading would say 104 / 202
    assert (got.wins, got.envs) == (1, 2)


def test_the_bootstrap_is_seeded():
    rng = np.random.default_rng(1)
    ref = rng.uniform(1.0, 10.0, (3, 12))
    j = ref * rng.lognormal(-0.1, 0.3, (3, 12))
    assert paired_ratio(j, ref, seed=4) == paired_ratio(j, ref, seed=4)


def test_the_interval_covers_the_true_ratio_about_as_often_as_it_says():
    """Synthetic sweeps: environments drawn from a population whose geometric-mean ratio is exp(mu)."""
    rng = np.random.default_rng(2)
    mu, covered, trials = -0.15, 0, 200
    for _ in range(trials):
        base = rng.lognormal(1.0, 1.0, 30)  # environment difficulty
        effect = np.exp(mu + 0.2 * rng.standard_normal(30))  # per-environment true ratio
        ref = base * rng.lognormal(0.0, 0.1, (5, 30))
        j = base * effect * rng.lognormal(0.0, 0.1, (5, 30))
        got = paired_ratio(j, ref, samples=1000, seed=int(rng.integers(1 << 30)))
        covered += got.low <= np.exp(mu) <= got.high
    assert 0.88 <= covered / trials <= 0.99


@pytest.mark.parametrize(("j", "ref"), [(np.ones((2, 3)), np.ones((2, 4))), (np.ones((2, 3)), -np.ones((2, 3))), (np.ones((0, 3)), np.ones((2, 3)))])
def test_bad_input_is_refused(j, ref):
    with pytest.raises(ValueError):
        paired_ratio(j, ref)
