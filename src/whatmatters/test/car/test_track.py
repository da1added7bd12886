"""The track's geometry against closed forms and finite differences; Frenet round trips; files."""

from __future__ import annotations

import numpy as np
import pytest
from whatmatters.car.generate import TrackConfig, generate_track
from whatmatters.car.track import Track, TrackError, wrap_angle


def _ellipse(a: float, b: float, half_width: float = 0.3) -> Track:
    return Track(np.array([[0.0, 0.0], [a, 0.0]]), np.array([[0.0, 0.0], [0.0, b]]), half_width)


def _mod_diff(s1: np.ndarray, s2: np.ndarray, length: float) -> np.ndarray:
    d = np.mod(s1 - s2, length)
    return np.minimum(d, length - d)


def test_a_circle_has_its_closed_form_length_heading_and_curvature():
    radius = 3.0
    track = _ellipse(radius, radius)
    assert track.length == pytest.approx(2.0 * np.pi * radius, rel=1e-13)
    s = np.linspace(0.0, track.length, 13)
    x, y, psi, kappa = track.point(s)
    angle = s / radius
    np.testing.assert_allclose(x, radius * np.cos(angle), atol=1e-12)
    np.testing.assert_allclose(y, radius * np.sin(angle), atol=1e-12)
    np.testing.assert_allclose(wrap_angle(psi - angle - np.pi / 2), 0.0, atol=1e-12)
    np.testing.assert_allclose(kappa, 1.0 / radius, rtol=1e-12)


def test_an_ellipse_length_matches_an_independent_quadrature():
    a, b = 5.0, 2.0
    theta = np.linspace(0.0, 2.0 * np.pi, 400_001)
    speed = np.hypot(a * np.sin(theta), b * np.cos(theta))
    length = float(np.sum(0.5 * (speed[1:] + speed[:-1]) * np.diff(theta)))
    assert _ellipse(a, b).length == pytest.approx(length, rel=1e-10)


def test_arc_length_is_uniform_along_the_curve():
    track = generate_track(3)
    s = np.linspace(0.0, track.length, 2001)
    x, y, _, _ = track.point(s)
    chord = np.hypot(np.diff(x), np.diff(y))  # short chords: arc length to O(ds^3)
    np.testing.assert_allclose(chord, np.diff(s), rtol=1e-4)


def test_curvature_is_the_derivative_of_the_heading_along_s():
    track = generate_track(1)
    s = np.linspace(0.0, track.length, 97, endpoint=False)
    h = 1e-4
    dpsi = wrap_angle(track.point(s + h)[2] - track.point(s - h)[2]) / (2.0 * h)
    np.testing.assert_allclose(track.point(s)[3], dpsi, atol=1e-6)


def test_frenet_coordinates_round_trip_on_the_track():
    track = generate_track(0)
    rng = np.random.default_rng(7)
    s = rng.uniform(0.0, track.length, 200)
    n = rng.uniform(-track.half_width, track.half_width, 200)
    mu = rng.uniform(-1.5, 1.5, 200)
    x, y, psi = track.from_frenet(s, n, mu)
    s2, n2, mu2 = track.to_frenet(x, y, psi)
    assert _mod_diff(s2, s, track.length).max() < 1e-9
    np.testing.assert_allclose(n2, n, atol=1e-9)
    np.testing.assert_allclose(mu2, mu, atol=1e-9)


def test_the_lateral_offset_is_positive_left_of_the_driving_direction():
    track = _ellipse(3.0, 3.0)  # counter-clockwise: left is the inside
    s, n, _ = track.to_frenet(np.array([2.5, 3.5]), np.array([0.0, 0.0]), np.array([np.pi / 2, np.pi / 2]))
    np.testing.assert_allclose(n, [0.5, -0.5], atol=1e-12)
    assert _mod_diff(s, np.zeros(2), track.length).max() < 1e-12


def test_save_and_load_give_the_same_track(tmp_path):
    track = generate_track(2)
    loaded = Track.load(track.save(tmp_path / "track.csv"))
    s = np.linspace(0.0, track.length, 50, endpoint=False)
    assert loaded.length == pytest.approx(track.length, rel=1e-8)
    assert loaded.half_width == track.half_width
    for got, want in zip(loaded.point(s), track.point(s)):
        np.testing.assert_allclose(got, want, atol=1e-7)


def test_bad_track_files_are_named(tmp_path):
    with pytest.raises(TrackError, match="missing.csv"):
        Track.load(tmp_path / "missing.csv")
    bad = tmp_path / "columns.csv"
    bad.write_text("s,x,y\n0,1,2\n")
    with pytest.raises(TrackError, match="columns.csv: columns"):
        Track.load(bad)
    short = tmp_path / "short.csv"
    short.write_text("s_m,x_m,y_m,psi_rad,kappa_1pm,half_width_m\n" + "0,1,0,0,0,0.5\n" * 3)
    with pytest.raises(TrackError, match="short.csv: 3 rows"):
        Track.load(short)


def test_generated_tracks_are_seeded_drivable_and_free_of_overlap():
    cfg = TrackConfig()
    first, again, other = generate_track(5, cfg), generate_track(5, cfg), generate_track(6, cfg)
    np.testing.assert_array_equal(first.coef_x, again.coef_x)
    assert not np.allclose(first.coef_x, other.coef_x)
    for track in (first, other):
        kappa = track.point(np.linspace(0.0, track.length, 2000, endpoint=False))[3]
        assert 1.0 / np.abs(kappa).max() >= cfg.min_corner_radius
        track.check()


def test_a_folding_border_and_a_self_overlap_are_refused():
    with pytest.raises(TrackError, match="border folds"):
        _ellipse(1.0, 1.0, half_width=1.2).check()
    theta = 2.0 * np.pi * np.arange(128) / 128
    x, y = 10.0 * np.cos(theta), 5.0 * np.sin(theta) * (0.3 + 0.7 * np.cos(theta) ** 2)  # a dumbbell, its neck 3 m wide
    dumbbell = Track.from_points(x, y, 1.9)  # corners no tighter than 2.01 m: the borders do not fold
    with pytest.raises(TrackError, match="overlaps itself: 3.00 m"):
        dumbbell.check()
    Track.from_points(x, y, 1.4).check()  # 2.8 m of track across a 3 m neck
