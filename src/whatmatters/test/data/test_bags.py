"""Tests of the episode bags: round trip, standard types, damaged files."""

from __future__ import annotations

import numpy as np
import pytest
from rosbags.rosbag2 import Reader
from whatmatters.data.bags import TOPIC_TYPES, BagError, EpisodeBagWriter, read_bag_dir, read_episode
from whatmatters.robot.payload import Payload


def write_episode(path, rng, steps=30, dt=0.02):
    x = rng.normal(size=(steps + 1, 14))
    tau = rng.normal(size=(steps, 7))
    x_ref = rng.normal(size=(steps + 1, 13, 14))
    payload = Payload(1.5, (0.1, -0.2, 0.05))
    with EpisodeBagWriter(path) as bag:
        bag.payload(0.0, payload)
        last = np.zeros(7)
        for i in range(steps):
            bag.joint_state(i * dt, x[i, :7], x[i, 7:], last)
            bag.reference(i * dt, x_ref[i], dt)
            bag.command(i * dt, tau[i])
            last = tau[i]
        bag.joint_state(steps * dt, x[-1, :7], x[-1, 7:], last)
    return x, tau, x_ref, payload


def test_round_trip(tmp_path, rng):
    x, tau, x_ref, payload = write_episode(tmp_path / "ep", rng)
    ep = read_episode(tmp_path / "ep")
    np.testing.assert_array_equal(ep.x, x)
    np.testing.assert_array_equal(ep.tau, tau)
    np.testing.assert_array_equal(ep.x_ref[:-1], x_ref[:-1, 0])
    assert np.all(np.isnan(ep.x_ref[-1]))  # no reference was sent with the final state
    assert ep.payload == payload
    assert ep.dt == pytest.approx(0.02)
    np.testing.assert_allclose(ep.t, 0.02 * np.arange(31), atol=1e-9)


def test_mcap_storage_and_standard_types(tmp_path, rng):
    write_episode(tmp_path / "ep", rng, steps=3)
    assert list((tmp_path / "ep").glob("*.mcap"))
    with Reader(tmp_path / "ep") as reader:
        assert {c.topic: c.msgtype for c in reader.connections} == TOPIC_TYPES
        assert reader.message_count == 1 + 4 + 3 + 3  # payload, 4 states, 3 references, 3 commands


def test_truncated_bag_is_skipped_by_name_and_the_rest_loads(tmp_path, rng, caplog):
    for i in range(3):
        write_episode(tmp_path / f"ep{i}", rng, steps=20)
    mcap = next((tmp_path / "ep1").glob("*.mcap"))
    data = mcap.read_bytes()
    mcap.write_bytes(data[: len(data) // 2])  # cut mid-file
    episodes, skipped = read_bag_dir(tmp_path)
    assert len(episodes) == 2
    assert len(skipped) == 1 and skipped[0][0].name == "ep1"
    assert "ep1" in caplog.text


def test_missing_commands_are_reported(tmp_path, rng):
    with EpisodeBagWriter(tmp_path / "ep") as bag:
        for i in range(5):
            bag.joint_state(0.02 * i, np.zeros(7), np.zeros(7), np.zeros(7))
    with pytest.raises(BagError, match="commands"):
        read_episode(tmp_path / "ep")


def test_empty_folder_is_an_error(tmp_path):
    with pytest.raises(BagError, match="no bags"):
        read_bag_dir(tmp_path)
