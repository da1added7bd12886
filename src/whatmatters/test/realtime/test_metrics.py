"""Tests of whatmatters.realtime.metrics: J_track on the reference's clock, latency, from messages and from a bag."""

from __future__ import annotations

import numpy as np
import pytest
from whatmatters.data.bags import MPC_STATE, REFERENCE_START, TYPESTORE, EpisodeBagWriter, _header
from whatmatters.eval.episode import tracking_cost
from whatmatters.realtime.metrics import RealtimeMetrics, bag_figures
from whatmatters.sim.environments import make_environment
from whatmatters.trajectory.fourier import FourierConfig, sample_fourier_trajectory

QW, QDW = np.full(7, 1000.0), np.full(7, 100.0)
DT, H = 0.02, 2_000_000
T0 = 1_000_123_000_000  # the reference's origin, ns (1000 s: the test writer's float seconds are exact to the ns)
OFFSETS = DT * np.arange(13)


@pytest.fixture(scope="module")
def trajectory(params):
    return sample_fourier_trajectory(make_environment(2000).reference_seed, FourierConfig.from_yaml(), params)


def write_realtime_bag(path, trajectory, error: np.ndarray, first_state_ns: int, seconds: float) -> None:
    """States at 500 Hz from ``first_state_ns`` (before T0: the robot standing) = reference + ``error``, references at 50 Hz."""
    T = TYPESTORE.types
    with EpisodeBagWriter(path, {REFERENCE_START: "std_msgs/msg/Header", MPC_STATE: "sensor_msgs/msg/JointState"}) as bag:
        bag.write(REFERENCE_START, T0 * 1e-9, T["std_msgs/msg/Header"](stamp=_header(T0 * 1e-9).stamp, frame_id=""))
        for ns in range(first_state_ns, T0 + int(seconds * 1e9) + 1, H):
            tau = max(0.0, (ns - T0) * 1e-9)
            x = trajectory.state(tau) + error
            bag.joint_state(ns * 1e-9, x[:7], x[7:], np.zeros(7))
            if (ns - first_state_ns) % 20_000_000 == 0:
                bag.reference(ns * 1e-9, trajectory.state(tau + OFFSETS), DT)


def test_j_is_measured_on_the_reference_clock_not_from_the_first_state(tmp_path, trajectory):
    error = np.concatenate([np.full(7, 0.01), np.full(7, -0.02)])
    write_realtime_bag(tmp_path / "bag", trajectory, error, first_state_ns=T0 - 410_000_000, seconds=2.0)  # 0.41 s before the start
    fig = bag_figures(tmp_path / "bag", DT, QW, QDW, seconds=2.0, reference=trajectory.state)
    expected = float(np.sum(np.concatenate([QW, QDW]) * error**2))  # the known error at every grid point
    assert fig["realtime"] and fig["start_ns"] == T0
    assert fig["j_points"] == 101
    assert fig["j_track"] == pytest.approx(expected, rel=1e-9)
    assert fig["j_track_recorded"] == pytest.approx(expected, rel=1e-4)  # the recorded reference, Hermite-interpolated
    # the old reading (time zero at the first recorded state) measures another number
    t = np.arange(101) * DT
    wrong = tracking_cost(np.array([trajectory.state(max(0.0, ti - 0.41)) + error for ti in t]), trajectory.state(t), QW, QDW)
    assert abs(wrong - expected) > expected


def test_latency_pairs_steps_and_commands_by_their_torque():
    metrics = RealtimeMetrics(DT, QW, QDW)
    metrics.set_start(0)
    rng = np.random.default_rng(0)
    lat = []
    for k in range(50):
        tau = rng.normal(size=7)
        instant = k * 20_000_000
        delay = 2_000_000 + (k % 5) * 1_000_000 + (25_000_000 if k == 7 else 0)
        lat.append(delay)
        metrics.add_command(instant + delay, tau) if k % 2 else None  # commands before or after their step record
        metrics.add_step(instant, tau)
        if not k % 2:
            metrics.add_command(instant + delay, tau)
    s = metrics.summary()
    assert s["matched_commands"] == 50 and s["unmatched"] == 0
    assert s["latency_ms_max"] == pytest.approx(max(lat) * 1e-6)
    assert s["latency_ms_median"] == pytest.approx(np.median(lat) * 1e-6)
    assert s["late_commands"] == 1  # the 29 ms one


def test_steps_before_the_start_and_after_the_task_do_not_count():
    metrics = RealtimeMetrics(DT, QW, QDW, seconds=1.0)
    metrics.set_start(10 * 20_000_000)
    for k in range(0, 70):
        tau = np.full(7, float(k))
        metrics.add_step(k * 20_000_000, tau)
        metrics.add_command(k * 20_000_000 + 1_000_000, tau)
    s = metrics.summary()
    assert s["prestart_commands"] == 10
    assert s["matched_commands"] == 50  # instants 0 .. 0.98 s of the task; what answers its last state is past it
