"""Training windows and the weightings of eq. (1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from whatmatters.data.dataset import TransitionDataset
from whatmatters.train.weighting import make_windows, objective_mask, weight_statistics, weights


def _dataset(rng: np.random.Generator, lengths=(6, 5), s_hat: bool = True) -> TransitionDataset:
    n = sum(lengths)
    x = rng.normal(0.0, 1.0, (n, 14)) * np.linspace(0.5, 3.0, 14)
    data = TransitionDataset(
        x=x,
        u=rng.normal(0.0, 1.0, (n, 7)),
        x_next=rng.normal(0.0, 1.0, (n, 14)) * np.linspace(0.5, 3.0, 14),
        windows=rng.normal(0.0, 1.0, (n, 15, 21)),
        episode=np.concatenate([np.full(k, i) for i, k in enumerate(lengths)]),
        step=np.concatenate([np.arange(k) for k in lengths]),
        dt=0.02,
        sources=[Path("a"), Path("b")],
        s_hat=rng.normal(0.0, 1.0, (n, 12, 14)) if s_hat else None,
    )
    return data


def test_windows_stay_inside_episodes(rng):
    data = _dataset(rng)
    win = make_windows(data, 3)
    assert len(win) == (6 - 2) + (5 - 2)
    for m, start in enumerate(win.start):
        assert data.episode[start] == data.episode[start + 2]
        np.testing.assert_array_equal(win.x_true[m], data.x_next[start : start + 3])
        np.testing.assert_array_equal(win.u[m], data.u[start : start + 3])
        np.testing.assert_array_equal(win.s_hat[m], np.abs(data.s_hat[start, :3]))


def test_windows_without_sensitivities_are_dropped(rng):
    data = _dataset(rng)
    data.s_hat[2] = np.nan
    starts = make_windows(data, 2).start
    assert 2 not in starts and 1 in starts and 3 in starts


def test_too_long_rollout_is_an_error(rng):
    with pytest.raises(ValueError, match="horizon"):
        make_windows(_dataset(rng), 13)


def test_baseline_weightings_follow_their_definitions(rng):
    win = make_windows(_dataset(rng), 4)
    states = win.x_true.reshape(-1, 14)
    mask = objective_mask("position")
    np.testing.assert_allclose(weights("ones", win, "position")[0, 0], mask.astype(float))
    np.testing.assert_allclose(weights("stand", win, "position")[0, 2], mask / states.std(0))
    np.testing.assert_allclose(weights("norm", win, "both")[0, 1], 1.0 / (states.max(0) - states.min(0)))
    q = np.arange(1.0, 15.0)
    np.testing.assert_allclose(weights("mpc_cost", win, "velocity", q)[0, 3], np.sqrt(q) * objective_mask("velocity"))


def test_ours_is_scaled_sensitivity_with_the_mean_square_of_stand(rng):
    win = make_windows(_dataset(rng), 4)
    ours = weights("ours", win, "position")
    stand = weights("stand", win, "position")
    assert ours.shape == (len(win), 4, 14)
    assert np.all(ours[..., 7:] == 0.0)
    np.testing.assert_allclose(np.mean(ours[..., :7] ** 2), np.mean(stand[..., :7] ** 2), rtol=1e-12)
    ratio = ours[..., :7] / win.s_hat[..., :7]
    np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-12)  # one constant for the whole dataset
    np.testing.assert_allclose(weights("ours_avg", win, "position")[0], ours.mean(0), rtol=1e-12)


def test_per_state_ours_is_stand_times_the_relative_sensitivity(rng):
    win = make_windows(_dataset(rng), 3)
    ours = weights("ours", win, "both", ours_scaling="per_state")
    stand = weights("stand", win, "both")
    expected = win.s_hat / win.s_hat.mean(0, keepdims=True) * stand
    np.testing.assert_allclose(ours, expected, rtol=1e-12)
    np.testing.assert_allclose(weights("ours_avg", win, "both", ours_scaling="per_state"), stand, rtol=1e-12)
    with pytest.raises(ValueError, match="ours_scaling"):
        weights("ours", win, "both", ours_scaling="per_joint")


def test_missing_inputs_are_named(rng):
    win = make_windows(_dataset(rng, s_hat=False), 2)
    with pytest.raises(ValueError, match="sensitivities"):
        weights("ours", win, "position")
    with pytest.raises(ValueError, match="unknown weighting"):
        weights("bogus", win, "position")
    with pytest.raises(ValueError, match="objective"):
        objective_mask("torque")


def test_weight_statistics_closed_form_cases(rng):
    equal = np.ones((200, 4, 14))
    st = weight_statistics(equal)
    assert st["ess_fraction"] == pytest.approx(1.0) and st["p99_over_mean"] == pytest.approx(1.0)
    assert st["top1_share"] == pytest.approx(2 / 200) and st["cosine_to_mean"] == pytest.approx(1.0)
    scaled = equal * rng.uniform(0.5, 2.0, size=(200, 1, 1))  # only the scale differs per window
    assert weight_statistics(scaled)["cosine_to_mean"] == pytest.approx(1.0)
    one = np.zeros((100, 1, 14))
    one[7, 0, 3] = 5.0  # one window holds all the weight
    st = weight_statistics(one)
    assert st["ess_fraction"] == pytest.approx(1 / 100) and st["top1_share"] == pytest.approx(1.0)
    two = np.zeros((2, 1, 2))
    two[0, 0, 0] = two[1, 0, 1] = 1.0  # orthogonal patterns: cosine 1/sqrt(2) with their mean
    assert weight_statistics(two)["cosine_to_mean"] == pytest.approx(1 / np.sqrt(2))
