"""Tests of real-time bags read on the control grid (whatmatters.data.realtime_episode through read_episode)."""

from __future__ import annotations

import numpy as np
import pytest
from whatmatters.data.bags import MPC_STATE, REFERENCE_START, SENSITIVITY, TYPESTORE, BagError, EpisodeBagWriter, _header, read_episode
from whatmatters.data.dataset import load_transitions

H, DT_NS = 2_000_000, 20_000_000
T0 = 1_000_000_000_000  # 1000 s: float seconds (the test writer's) are exact to the ns there
STEPS = 25
OFFSETS = 0.02 * np.arange(13)


def state_at(ns: int) -> np.ndarray:
    t = max(0.0, (ns - T0) * 1e-9)
    return np.concatenate([0.1 * np.sin(np.arange(1, 8) * t), 0.1 * np.arange(1, 8) * np.cos(np.arange(1, 8) * t)])


def command(k: int) -> np.ndarray:
    return np.arange(7) + 10.0 * k


def write_bag(path, latency_ticks: int = 2, drop_mpc_state: int | None = None, gap: int | None = None) -> None:
    """500 Hz states; the command of step k takes effect ``latency_ticks`` ticks after its instant; S_hat on some steps."""
    T = TYPESTORE.types
    extra = {REFERENCE_START: "std_msgs/msg/Header", MPC_STATE: "sensor_msgs/msg/JointState", SENSITIVITY: "std_msgs/msg/Float64MultiArray"}
    with EpisodeBagWriter(path, extra) as bag:
        bag.write(REFERENCE_START, T0 * 1e-9, T["std_msgs/msg/Header"](stamp=_header(T0 * 1e-9).stamp, frame_id=""))
        for i in range(-30, STEPS * 10 + 1):  # from 60 ms before the start
            ns = T0 + i * H
            if gap is not None and i == gap:
                continue
            # the effort at tick i is the torque over (i-1, i]: step k's command from tick 10 k + latency on
            k = (i - 1 - latency_ticks) // 10
            effort = command(k) if i - 1 >= latency_ticks else np.zeros(7)
            x = state_at(ns)
            bag.joint_state(ns * 1e-9, x[:7], x[7:], effort)
            if i >= 0 and i % 10 == 0:
                k = i // 10
                bag.reference(ns * 1e-9, np.array([state_at(ns + int(o * 1e9)) for o in OFFSETS]), 0.02)
                if k != drop_mpc_state:
                    msg = T["sensor_msgs/msg/JointState"](header=_header(ns * 1e-9), name=[f"panda_joint{j}" for j in range(1, 8)],
                                                          position=x[:7] + 1e-3, velocity=x[7:], effort=command(k))  # +1e-3: tells the sources apart
                    bag.write(MPC_STATE, ns * 1e-9, msg)
                if k % 3 == 0:
                    from whatmatters.data.bags import float64_array

                    bag.write(SENSITIVITY, ns * 1e-9, float64_array(np.full((12, 14), float(k)), ("horizon", "state")))


def test_states_are_the_controllers_at_its_instants(tmp_path):
    write_bag(tmp_path / "bag", drop_mpc_state=4)
    ep = read_episode(tmp_path / "bag", (SENSITIVITY,))
    assert ep.x.shape == (STEPS + 1, 14) and ep.tau.shape == (STEPS, 7)
    np.testing.assert_allclose(np.diff(ep.t), 0.02, atol=1e-6)
    for k in range(STEPS + 1):
        truth = state_at(T0 + k * DT_NS)
        if k != 4:
            truth[:7] += 1e-3  # the /mpc/state the controller recorded
        np.testing.assert_allclose(ep.x[k], truth, atol=1e-12)


def test_the_torque_of_a_step_is_the_time_weighted_mean_of_what_was_applied(tmp_path):
    write_bag(tmp_path / "bag", latency_ticks=3)
    ep = read_episode(tmp_path / "bag")
    np.testing.assert_allclose(ep.tau[0], 0.3 * np.zeros(7) + 0.7 * command(0), atol=1e-12)  # 6 ms standing, then command 0
    for k in range(1, STEPS):  # 6 ms of the previous command, 14 ms of this step's
        np.testing.assert_allclose(ep.tau[k], 0.3 * command(k - 1) + 0.7 * command(k), atol=1e-9)


def test_reference_and_sensitivities_sit_on_their_steps(tmp_path):
    write_bag(tmp_path / "bag")
    ep = read_episode(tmp_path / "bag", (SENSITIVITY,))
    for k in range(STEPS):
        np.testing.assert_allclose(ep.x_ref_horizon[k, 0], state_at(T0 + k * DT_NS), atol=1e-12)
    np.testing.assert_array_equal(ep.extra_steps[SENSITIVITY], np.arange(0, STEPS + 1, 3))
    np.testing.assert_array_equal(ep.extra[SENSITIVITY][:, 0, 0], np.arange(0, STEPS + 1, 3))


def test_a_missing_state_at_an_instant_names_the_bag(tmp_path):
    write_bag(tmp_path / "bag", drop_mpc_state=5, gap=50)
    with pytest.raises(BagError, match=r"bag .*bag: no /joint_states within .* of control instant 5"):
        read_episode(tmp_path / "bag")


def test_real_time_bags_build_transitions_like_lock_step_bags(tmp_path, nominal):
    write_bag(tmp_path / "bags" / "a")
    data = load_transitions(tmp_path / "bags", nominal, 15, sensitivities=True)
    assert len(data) == STEPS and data.windows.shape == (STEPS, 15, 21)
    np.testing.assert_allclose(data.x_next[:-1], data.x[1:])  # consecutive instants: one chain
    assert np.isfinite(data.s_hat[::3]).all() and np.isnan(data.s_hat[1]).all()
