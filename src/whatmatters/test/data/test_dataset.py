"""Tests of transition datasets and the history windows."""

from __future__ import annotations

import numpy as np
import torch
from whatmatters.data.bags import EpisodeRecord
from whatmatters.data.dataset import transitions_from_episodes
from whatmatters.dynamics.context import ContextTracker, history_features, history_windows


def _episode(rng, steps, path="ep"):
    from pathlib import Path

    x = np.cumsum(0.01 * rng.normal(size=(steps + 1, 14)), axis=0)
    return EpisodeRecord(Path(path), 0.02 * np.arange(steps + 1), x, rng.normal(size=(steps, 7)), np.zeros((steps + 1, 14)))


def test_features_are_the_unexplained_torque(nominal, rng):
    ep = _episode(rng, 5)
    f = history_features(nominal, ep.x[:, :7], ep.x[:, 7:], ep.tau, 0.02)
    qdd = (ep.x[1:, 7:] - ep.x[:-1, 7:]) / 0.02
    tau_nom = nominal.inverse_dynamics(torch.tensor(ep.x[:-1, :7]), torch.tensor(ep.x[:-1, 7:]), torch.tensor(qdd)).numpy()
    np.testing.assert_allclose(f[:, 14:], ep.tau - tau_nom)
    np.testing.assert_array_equal(f[:, :14], ep.x[:-1])


def test_windows_hold_the_previous_transitions_with_rest_padding(nominal, rng):
    ep = _episode(rng, 20)
    f = history_features(nominal, ep.x[:, :7], ep.x[:, 7:], ep.tau, 0.02)
    w = history_windows(f, ep.x[0], 15)
    assert w.shape == (20, 15, 21)
    np.testing.assert_array_equal(w[0], np.tile(np.concatenate([ep.x[0], np.zeros(7)]), (15, 1)))
    np.testing.assert_array_equal(w[17], f[2:17])  # step 17 sees transitions 2..16
    np.testing.assert_array_equal(w[3, -3:], f[0:3])


def test_online_tracker_reproduces_the_training_windows(nominal, rng):
    ep = _episode(rng, 25)
    f = history_features(nominal, ep.x[:, :7], ep.x[:, 7:], ep.tau, 0.02)
    w = history_windows(f, ep.x[0], 15)
    tracker = ContextTracker(nominal, 15, 0.02)
    tracker.reset(ep.x[0])
    for t in range(25):
        if t > 0:
            tracker.observe(ep.x[t], ep.tau[t - 1], ep.x[t - 1])
        np.testing.assert_allclose(tracker.window_array(), w[t], atol=1e-12)


def test_dataset_aligns_transitions(nominal, rng):
    eps = [_episode(rng, 10, "a"), _episode(rng, 12, "b")]
    data = transitions_from_episodes(eps, nominal, 15)
    assert len(data) == 22
    np.testing.assert_array_equal(data.x[10], eps[1].x[0])
    np.testing.assert_array_equal(data.x_next[10], eps[1].x[1])
    np.testing.assert_array_equal(data.u[10], eps[1].tau[0])
    train, val = data.split_by_episode(0.5, seed=0)
    assert len(train) + len(val) == 22 and set(np.unique(train.episode)).isdisjoint(np.unique(val.episode))
