"""The environment-paired ratio and its bootstrap interval on closed-form and synthetic cases."""

from __future__ import annotations

import numpy as np
import pytest
from whatmatters.experiment.statistics import bootstrap, gap_closed, paired_ratio, ratio_change


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


def test_gap_closed_is_the_closed_form_share_of_the_base_gap():
    """Base gaps 4 and 6 (total 10); the weighting's seed means leave 1 and 2: 70 % closed, with no seed noise none to vary."""
    base, exact = np.array([5.0, 8.0]), np.array([1.0, 2.0])
    j = np.array([[2.0, 4.0], [2.0, 4.0]])
    got = gap_closed(j, base, exact, samples=500)
    assert got.value == pytest.approx(0.7, rel=1e-12)
    assert got.low <= got.value <= got.high
    assert gap_closed(np.tile(exact, (3, 1)), base, exact).value == pytest.approx(1.0)
    assert gap_closed(np.tile(base, (3, 1)), base, exact).value == pytest.approx(0.0)


def test_gap_closed_refuses_a_base_model_at_the_floor():
    with pytest.raises(ValueError, match="no gap"):
        gap_closed(np.ones((2, 3)), np.ones(3), np.ones(3))


def test_ratio_change_divides_the_paired_ratios():
    """No seed noise (every seed the same J): the interval collapses onto the closed-form value."""
    rng = np.random.default_rng(3)
    ref_a, ref_b = np.tile(rng.uniform(1.0, 9.0, 15), (4, 1)), np.tile(rng.uniform(1.0, 9.0, 15), (4, 1))
    got = ratio_change(0.9 * ref_a, ref_a, 0.6 * ref_b, ref_b)
    assert got.value == pytest.approx(0.6 / 0.9, rel=1e-12)
    assert got.low == pytest.approx(0.6 / 0.9, rel=1e-9) and got.high == pytest.approx(0.6 / 0.9, rel=1e-9)


def test_bootstrap_of_the_mean_covers_it_about_as_often_as_it_says():
    """A second statistic through the same resampling: the mean over environments of normal draws."""
    rng = np.random.default_rng(5)
    covered, trials = 0, 200
    for _ in range(trials):
        x = rng.normal(2.0, 1.0, (1, 40))
        got = bootstrap([x], lambda g: g[0].mean(axis=(-2, -1)), samples=1000, seed=int(rng.integers(1 << 30)))
        covered += got.low <= 2.0 <= got.high
    assert 0.88 <= covered / trials <= 0.99
