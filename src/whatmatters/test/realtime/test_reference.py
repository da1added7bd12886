"""Tests of whatmatters.realtime.reference: Hermite interpolation and the task clock's start gate."""

from __future__ import annotations

import numpy as np
import pytest
from whatmatters.realtime.reference import ReferenceBuffer, hermite
from whatmatters.sim.environments import make_environment
from whatmatters.trajectory.fourier import FourierConfig, sample_fourier_trajectory

DT = 0.02
OFFSETS = DT * np.arange(13)


@pytest.fixture(scope="module")
def trajectory(params):
    return sample_fourier_trajectory(make_environment(2000).reference_seed, FourierConfig.from_yaml(), params)


def test_hermite_is_exact_on_a_cubic(rng):
    coef = rng.normal(size=(4, 3))
    q = lambda t: coef[0] + coef[1] * t + coef[2] * t**2 + coef[3] * t**3  # noqa: E731
    qd = lambda t: coef[1] + 2 * coef[2] * t + 3 * coef[3] * t**2  # noqa: E731
    t_nodes = DT * np.arange(5)
    points = np.array([np.concatenate([q(t), qd(t)]) for t in t_nodes])
    when = rng.uniform(0.0, 4 * DT, 50)
    out = hermite(points, DT, when)
    np.testing.assert_allclose(out[:, :3], np.array([q(t) for t in when]), atol=1e-12)
    np.testing.assert_allclose(out[:, 3:], np.array([qd(t) for t in when]), atol=1e-10)


def test_hermite_between_reference_points_matches_the_trajectory(trajectory, rng):
    t0 = 3.17
    points = trajectory.state(t0 + OFFSETS)
    when = rng.uniform(0.0, 12 * DT, 200)
    err = hermite(points, DT, when) - trajectory.state(t0 + when)
    assert np.abs(err[:, :7]).max() < 1e-6  # rad: O(dt^4)
    assert np.abs(err[:, 7:]).max() < 1e-4  # rad/s: O(dt^3)


def test_hermite_past_the_last_point_extrapolates_with_its_velocity():
    points = np.zeros((3, 2))
    points[-1] = [1.0, 2.0]
    out = hermite(points, DT, np.array([2 * DT + 0.01]))
    np.testing.assert_allclose(out, [[1.0 + 0.02, 2.0]])


def test_buffer_shifts_a_message_to_the_query_time(trajectory):
    buf = ReferenceBuffer(DT)
    buf.start_ns = 1_000_000_000
    stamp = buf.start_ns + 2_000_000_000  # task time 2 s
    buf.add(stamp, trajectory.state(2.0 + OFFSETS))
    out = buf.at(stamp + 7_000_000)  # 7 ms later
    truth = trajectory.state(2.007 + OFFSETS)
    np.testing.assert_allclose(out[:-1, :7], truth[:-1, :7], atol=1e-6)  # between the message's points
    np.testing.assert_allclose(out[-1], truth[-1], atol=1e-2)  # the last one extrapolated 7 ms past the message
    assert buf.at(stamp - 1) is None  # no message at or before that time
    assert buf.at(stamp + 300_000_000) is None  # older than its own horizon


def test_no_task_time_passes_before_the_start(trajectory):
    buf = ReferenceBuffer(DT)
    held = trajectory.state(0.0 + OFFSETS)
    buf.add(5_000_000_000, held)
    assert buf.task_time(9_000_000_000) == 0.0
    np.testing.assert_array_equal(buf.at(5_013_000_000), held)  # the first point is held, not advanced
    buf.start_ns = 5_010_000_000
    assert buf.task_time(5_010_000_000) == 0.0
    assert buf.task_time(5_013_000_000) == pytest.approx(0.003)
    np.testing.assert_allclose(buf.at(5_013_000_000)[0], trajectory.state(0.003), atol=1e-6)  # from the start on


def test_a_restarted_clock_drops_the_old_episodes_references(trajectory):
    buf = ReferenceBuffer(DT, keep=50)
    old = [trajectory.state(0.02 * k + OFFSETS) for k in range(60)]  # episode 1: 1.2 s of references
    for k, ref in enumerate(old):
        buf.add(20_000_000 * k, ref)
    new = [ref + 0.5 for ref in old[:3]]  # episode 2: the clock starts again at 0
    for k, ref in enumerate(new):
        buf.add(20_000_000 * k, ref)
        np.testing.assert_array_equal(buf.exact(20_000_000 * k), ref)  # kept, and not the old episode's
    assert sorted(buf.refs) == [0, 20_000_000, 40_000_000]
    np.testing.assert_array_equal(buf.at(1_000_000_000), new[-1])  # a later stamp: episode 2's newest, not episode 1's
