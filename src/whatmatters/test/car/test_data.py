"""Recorded car episodes: files, bad files, training windows."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from whatmatters.car import CarLearnedModel
from whatmatters.car.data import CarDataError, car_windows, load_episodes, load_record, save_episode, sidecar_path
from whatmatters.car.episode import CarEpisode


def _episode(rng: np.random.Generator, steps: int = 30, horizon: int = 5) -> CarEpisode:
    x = rng.normal(size=(steps + 1, 8))
    x[:, 3] = rng.uniform(2.0, 4.0, steps + 1)  # a driving speed
    x[:, 0] = np.linspace(0.0, 3.0, steps + 1)
    z = np.zeros(steps)
    return CarEpisode(z, x, rng.normal(size=(steps, horizon + 1, 8)), rng.normal(size=(steps, 2)), ("solved",) * steps, z, x, 0.1, 5.0, 0.0, 0.02)


def test_an_episode_round_trips(tmp_path):
    ep = _episode(np.random.default_rng(0))
    rec = load_record(save_episode(ep, tmp_path / "env_0003.npz", 3))
    np.testing.assert_array_equal(rec.x, ep.x)
    np.testing.assert_array_equal(rec.u, ep.u)
    np.testing.assert_array_equal(rec.x_ref, ep.x_ref)
    assert rec.dt == 0.02 and rec.env_seed == 3 and rec.s_hat is None


def test_a_corrupt_file_is_skipped_with_its_name(tmp_path, caplog):
    save_episode(_episode(np.random.default_rng(0)), tmp_path / "env_0000.npz", 0)
    (tmp_path / "env_0001.npz").write_bytes(b"not a zip file")
    with caplog.at_level(logging.WARNING):
        recs = load_episodes(tmp_path)
    assert [r.env_seed for r in recs] == [0]
    assert "env_0001.npz" in caplog.text


def test_a_missing_key_is_named(tmp_path):
    np.savez(tmp_path / "bad.npz", x=np.zeros((3, 8)))
    with pytest.raises(CarDataError, match="bad.npz.*missing key 'u'"):
        load_record(tmp_path / "bad.npz")


def test_a_sidecar_of_the_wrong_shape_is_named(tmp_path):
    path = save_episode(_episode(np.random.default_rng(0)), tmp_path / "env_0000.npz", 0)
    np.savez(sidecar_path(path), s_hat=np.zeros((30, 4, 8)))
    with pytest.raises(CarDataError, match="s_hat"):
        load_record(path)


def test_windows_hold_the_next_p_states_and_skip_failed_steps(tmp_path, car_model):
    rng = np.random.default_rng(1)
    path = save_episode(_episode(rng), tmp_path / "env_0000.npz", 0)
    s_hat = rng.normal(size=(30, 5, 8))
    s_hat[7] = np.nan  # a failed step: no window starts there
    np.savez(sidecar_path(path), s_hat=s_hat)
    rec = load_record(path)
    win = car_windows([rec], CarLearnedModel(car_model), 3)
    starts = [t for t in range(28) if t != 7]
    np.testing.assert_array_equal(win.start, starts)
    np.testing.assert_array_equal(win.x0, rec.x[starts])
    np.testing.assert_array_equal(win.x_true[5], rec.x[6:9])  # window 5 starts at step 5
    np.testing.assert_array_equal(win.u[5], rec.u[5:8])
    np.testing.assert_array_equal(win.s_hat[5], np.abs(s_hat[5, :3]))
    assert win.history.shape == (27, CarLearnedModel(car_model).cfg.window, 10)
    with pytest.raises(ValueError, match="exceeds"):
        car_windows([rec], CarLearnedModel(car_model), 6)
