"""The racing line and its speed profile against closed forms (circle, straight) and the geometry of its own points."""

from __future__ import annotations

import numpy as np
import pytest
from whatmatters.car.generate import generate_track
from whatmatters.car.params import GRAVITY, load_car_params
from whatmatters.car.raceline import RacingLine, RacingLineConfig, racing_line
from whatmatters.car.track import Track, TrackError, wrap_angle
from whatmatters.errors import ConfigError

PARAMS = load_car_params()
CFG = RacingLineConfig()
A_LAT = CFG.friction_factor * PARAMS.mu * GRAVITY  # m/s^2


def _circle(radius: float, half_width: float) -> Track:
    return Track(np.array([[0.0, 0.0], [radius, 0.0]]), np.array([[0.0, 0.0], [0.0, radius]]), half_width)


def _oval(radius: float, straight: float, half_width: float, points: int = 512) -> Track:
    """Two semicircles joined by straights, counter-clockwise, from the middle of the lower straight."""
    u = (2.0 * np.pi * radius + 2.0 * straight) * np.arange(points) / points
    half = np.pi * radius + straight
    side = np.where(u < half, 1.0, -1.0)  # the lower straight and right bend, then their mirror image
    w = np.where(u < half, u, u - half)
    on_straight = w < straight / 2
    on_bend = (w >= straight / 2) & (w < straight / 2 + np.pi * radius)
    angle = (w - straight / 2) / radius - np.pi / 2
    x = np.where(on_straight, w, np.where(on_bend, straight / 2 + radius * np.cos(angle), straight - w + np.pi * radius))
    y = np.where(on_straight, -radius, np.where(on_bend, radius * np.sin(angle), radius))
    return Track.from_points(side * x, side * y, half_width)


def _menger(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signed curvature of the circle through each closed polygon point and its neighbours, and the mean chord there."""
    ax, ay = x - np.roll(x, 1), y - np.roll(y, 1)
    bx, by = np.roll(x, -1) - x, np.roll(y, -1) - y
    a, b = np.hypot(ax, ay), np.hypot(bx, by)
    c = np.hypot(ax + bx, ay + by)
    return 2.0 * (ax * by - ay * bx) / (a * b * c), 0.5 * (a + b)


def _line_points(track: Track, line: RacingLine) -> tuple[np.ndarray, np.ndarray]:
    x, y, _ = track.from_frenet(line.s, line.n, np.zeros_like(line.s))
    return x, y


@pytest.fixture(scope="module")
def generated() -> tuple[Track, RacingLine]:
    track = generate_track(0)
    return track, racing_line(track, PARAMS, CFG)


def test_on_a_circle_the_line_is_the_outermost_circle():
    track = _circle(3.0, 0.5)
    line = racing_line(track, PARAMS, CFG)
    bound = 0.5 - 0.5 * PARAMS.width - CFG.safety_distance
    np.testing.assert_allclose(line.n, -bound, atol=1e-9)  # counter-clockwise: right of the driving direction is outside
    np.testing.assert_allclose(line.mu, 0.0, atol=1e-9)
    np.testing.assert_allclose(line.kappa, 1.0 / (3.0 + bound), rtol=1e-9)


def test_on_a_circle_the_speed_is_the_constant_lateral_limit():
    track = _circle(3.0, 0.5)
    line = racing_line(track, PARAMS, CFG)
    radius = 3.0 + 0.5 - 0.5 * PARAMS.width - CFG.safety_distance
    np.testing.assert_allclose(line.v, np.sqrt(A_LAT * radius), rtol=1e-9)
    assert line.lap_time() == pytest.approx(2.0 * np.pi * radius / np.sqrt(A_LAT * radius), rel=1e-9)


def test_the_line_stays_within_the_margin_and_curves_less_than_the_centre_line(generated):
    track, line = generated
    assert np.abs(line.n).max() <= track.half_width - 0.5 * PARAMS.width - CFG.safety_distance + 1e-6
    kappa_line, ds_line = _menger(*_line_points(track, line))
    kappa_centre, ds_centre = _menger(*track.point(line.s)[:2])
    assert np.sum(kappa_line**2 * ds_line) < 0.6 * np.sum(kappa_centre**2 * ds_centre)


def test_the_heading_and_curvature_are_those_of_the_line_points(generated):
    track, line = generated
    x, y = _line_points(track, line)
    chord_heading = np.arctan2(np.roll(y, -1) - np.roll(y, 1), np.roll(x, -1) - np.roll(x, 1))
    np.testing.assert_allclose(wrap_angle(chord_heading - track.point(line.s)[2] - line.mu), 0.0, atol=1e-3)
    np.testing.assert_allclose(line.kappa, _menger(x, y)[0], atol=3e-3)


def test_the_speed_profile_stays_within_the_lateral_and_longitudinal_limits(generated):
    track, line = generated
    assert (line.v**2 * np.abs(line.kappa)).max() <= A_LAT * (1.0 + 1e-12)
    assert line.v.max() <= CFG.max_speed_cap
    x, y = _line_points(track, line)
    chord = np.hypot(np.roll(x, -1) - x, np.roll(y, -1) - y)
    accel = (np.roll(line.v, -1) ** 2 - line.v**2) / (2.0 * chord)
    f = CFG.friction_factor
    assert accel.max() <= f * PARAMS.max_accel * (1.0 + 1e-3)
    assert accel.min() >= f * PARAMS.min_accel * (1.0 + 1e-3)


def test_on_a_straight_the_speed_follows_the_constant_acceleration_closed_form():
    track = _oval(3.0, 20.0, 0.8)
    cfg = RacingLineConfig(max_speed_cap=15.0)  # the straight ends before the speed reaches it
    line = racing_line(track, PARAMS, cfg)
    x, y = _line_points(track, line)
    straight = np.abs(_menger(x, y)[0]) < 5e-3  # a_y < 15^2 5e-3 m/s^2: the friction circle leaves all of max_accel
    rising = straight & np.roll(straight, -1) & (np.roll(line.v, -1) > line.v)
    runs = np.split(np.flatnonzero(rising), np.flatnonzero(np.diff(np.flatnonzero(rising)) > 1) + 1)
    run = max(runs, key=len)  # the longest stretch of straight on which the speed rises
    first, last = int(run[0]), int(run[-1])  # not the last segment, into the peak: the braking ends it
    assert last - first > 50  # several metres of it
    distance = np.sum(np.hypot(np.diff(x[first : last + 1]), np.diff(y[first : last + 1])))
    v2 = line.v[first] ** 2 + 2.0 * cfg.friction_factor * PARAMS.max_accel * distance
    assert line.v[last] ** 2 == pytest.approx(v2, rel=1e-4)


def test_the_horizon_progresses_at_the_frenet_rate_of_the_line(generated):
    track, line = generated
    dt = 1e-3
    s = line.horizon(5.0, dt, 3000)[:, 0]
    mid = 0.5 * (s[1:] + s[:-1])
    rate = line.speed(mid) * np.cos(line.heading(mid)) / (1.0 - line.offset(mid) * track.point(mid)[3])
    np.testing.assert_allclose(np.diff(s) / dt, rate, rtol=1e-3)


def test_the_horizon_has_a_row_per_step_and_keeps_s_increasing_past_the_length(generated):
    _, line = generated
    ref = line.horizon(line.length - 1.0, 0.05, 40)
    assert ref.shape == (41, 8)
    assert ref[0, 0] == line.length - 1.0
    assert (np.diff(ref[:, 0]) > 0).all() and ref[-1, 0] > line.length + 1.0
    np.testing.assert_allclose(line.horizon(-1.0, 0.05, 40)[:, 0], ref[:, 0] - line.length, atol=1e-9)


def test_the_horizon_states_are_those_of_a_car_on_the_line(generated):
    _, line = generated
    dt = 1e-3
    ref = line.horizon(20.0, dt, 2000)
    s, n, mu, vx, vy, r, delta, a = ref.T
    np.testing.assert_allclose(np.stack([n, mu, vx, vy]), np.stack([line.offset(s), line.heading(s), line.speed(s), 0 * s]))
    np.testing.assert_allclose(r, vx * line.curvature(s), atol=1e-12)
    np.testing.assert_allclose(np.tan(delta), PARAMS.wheelbase * line.curvature(s), atol=1e-12)
    assert vx[-1] - vx[0] == pytest.approx(np.sum(0.5 * (a[1:] + a[:-1])) * dt, abs=0.02)  # a = dv/dt


def test_save_and_load_give_the_same_line(generated, tmp_path):
    _, line = generated
    loaded = RacingLine.load(line.save(tmp_path / "line.csv"), PARAMS)
    assert loaded.length == pytest.approx(line.length, rel=1e-14)
    for key in ("s", "n", "mu", "v", "kappa", "kappa_centre"):
        np.testing.assert_array_equal(getattr(loaded, key), getattr(line, key))
    np.testing.assert_allclose(loaded.horizon(3.0, 0.05, 20), line.horizon(3.0, 0.05, 20), rtol=1e-12, atol=1e-12)


def test_bad_racing_line_files_are_named(generated, tmp_path):
    _, line = generated
    with pytest.raises(TrackError, match="missing.csv"):
        RacingLine.load(tmp_path / "missing.csv")
    columns = tmp_path / "columns.csv"
    columns.write_text("s_m,n_m\n0,0\n")
    with pytest.raises(TrackError, match="columns.csv: columns"):
        RacingLine.load(columns)
    text = line.save(tmp_path / "good.csv").read_text().splitlines()
    row = text[5].split(",")
    row[3] = "-1.0"
    stopped = tmp_path / "stopped.csv"
    stopped.write_text("\n".join(text[:5] + [",".join(row)] + text[6:]) + "\n")
    with pytest.raises(TrackError, match="stopped.csv: v_mps"):
        RacingLine.load(stopped)


def test_bad_settings_are_named():
    with pytest.raises(ConfigError, match="friction_factor"):
        RacingLineConfig(friction_factor=1.5)
    with pytest.raises(ConfigError, match="spacing"):
        RacingLineConfig(spacing=0.0)
    with pytest.raises(ConfigError, match="safety_distance"):
        racing_line(_circle(3.0, 0.2), PARAMS, RacingLineConfig(safety_distance=0.1))
