"""The curvature series in arc length: against the track's exact curvature, a known trigonometric
polynomial, its periodicity; torch and CasADi forms; its CasADi derivative against finite differences."""

from __future__ import annotations

import casadi as ca
import numpy as np
import pytest
import torch
from whatmatters.car.curvature import CurvatureSeries
from whatmatters.car.generate import generate_track
from whatmatters.car.track import TrackError


@pytest.fixture(scope="module")
def track():
    return generate_track(0)


def _relative_error(track, harmonics: int | None, rng: np.random.Generator) -> float:
    """Max error at 2,000 random s relative to max |kappa| (None: the default harmonics)."""
    s = rng.uniform(0.0, track.length, 2000)
    exact = track.point(s)[3]
    series = track.curvature_series() if harmonics is None else track.curvature_series(harmonics)
    return float(np.abs(series(s) - exact).max() / np.abs(exact).max())


def test_the_series_matches_the_exact_curvature_at_random_arc_lengths():
    """The error relative to max |kappa| at 2,000 random s falls exponentially with the harmonics.

    Measured on the default generated tracks (``TrackConfig()``, seeds 0-5): the
    64 harmonics reach 8e-8 to 3e-4 (seed 0: 3.8e-5, seed 3: 2.9e-4), so 1e-6 is
    not reached by 64 on every track; 96 harmonics reach 2e-11 to 4e-6 and 128
    (the default) 8e-15 to 6e-8. Asserted: 64 below 1e-3 and the default below 1e-6.
    """
    rng = np.random.default_rng(11)
    for seed in range(6):
        track = generate_track(seed)
        assert _relative_error(track, 64, rng) < 1e-3, seed
        assert _relative_error(track, None, rng) < 1e-6, seed


def test_a_trigonometric_polynomial_is_recovered_exactly():
    length, m = 7.0, 64
    s = length * np.arange(m) / m
    w = 2.0 * np.pi / length
    kappa = 0.1 + 0.05 * np.cos(2 * w * s) - 0.02 * np.sin(5 * w * s)
    series = CurvatureSeries.from_samples(kappa, length, 6)
    assert series.a0 == pytest.approx(0.1, abs=1e-15)
    np.testing.assert_allclose(series.a, [0, 0.05, 0, 0, 0, 0], atol=1e-15)
    np.testing.assert_allclose(series.b, [0, 0, 0, 0, -0.02, 0], atol=1e-15)


def test_harmonics_the_samples_cannot_resolve_are_refused(track):
    with pytest.raises(ValueError, match="6 harmonics need"):
        CurvatureSeries.from_samples(np.ones(12), 7.0, 6)
    with pytest.raises(TrackError, match="harmonics must be >= 1"):
        track.curvature_series(0)
    with pytest.raises(ValueError, match="K >= 1"):
        CurvatureSeries(7.0, 0.0, np.zeros(0), np.zeros(0))


def test_the_series_is_periodic_in_the_track_length(track):
    series = track.curvature_series()
    s = np.random.default_rng(3).uniform(0.0, track.length, 500)
    base = series(s)
    for laps in (-2, 1, 3):
        np.testing.assert_allclose(series(s + laps * track.length), base, rtol=0, atol=1e-12)


def test_torch_and_casadi_give_the_numpy_values(track):
    series = track.curvature_series()
    s = np.random.default_rng(5).uniform(-track.length, 2.0 * track.length, 2000)
    want = series(s)
    got_torch = series(torch.tensor(s, dtype=torch.float64))
    assert got_torch.dtype == torch.float64 and got_torch.shape == (2000,)
    np.testing.assert_allclose(got_torch.numpy(), want, rtol=0, atol=1e-12)
    sym = ca.SX.sym("s")
    fun = ca.Function("kappa", [sym], [series(sym)]).map(s.size)
    np.testing.assert_allclose(np.array(fun(s.reshape(1, -1))).ravel(), want, rtol=0, atol=1e-12)


def test_the_casadi_derivative_matches_central_differences(track):
    series = track.curvature_series()
    sym = ca.SX.sym("s")
    slope = ca.Function("dkappa", [sym], [ca.jacobian(series(sym), sym)]).map(300)
    s = np.random.default_rng(9).uniform(0.0, track.length, 300)
    got = np.array(slope(s.reshape(1, -1))).ravel()
    h = 1e-5
    want = (series(s + h) - series(s - h)) / (2.0 * h)
    assert np.abs(got).max() > 0.05  # the curvature does vary along this track, 1/m^2
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-7 * np.abs(got).max())
