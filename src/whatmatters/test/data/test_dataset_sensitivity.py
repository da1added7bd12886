"""S_hat for the dataset: from the sidecar, else from the bag's /mpc/sensitivity topic (one reader)."""

from __future__ import annotations

import numpy as np
import pytest
from whatmatters.data.bags import SENSITIVITY, EpisodeBagWriter, float64_array
from whatmatters.data.dataset import load_transitions
from whatmatters.dynamics.nominal import nominal_model


def _bag(path, rng, steps=20, with_topic=True):
    """An episode whose S_hat is recorded (as the ROS logger does) at every other step, plus one past the end."""
    s_hat = rng.normal(size=(steps + 1, 12, 14))
    with EpisodeBagWriter(path, {SENSITIVITY: "std_msgs/msg/Float64MultiArray"}) as bag:
        for k in range(steps + 1):
            q = 0.1 * rng.normal(size=7)
            bag.joint_state(0.02 * k, q, np.zeros(7), np.zeros(7))
            if k < steps:
                bag.command(0.02 * k, rng.normal(size=7))
            if with_topic and k % 2 == 0:
                bag.write(SENSITIVITY, 0.02 * k, float64_array(s_hat[k], ("horizon", "state")))
    return s_hat


def test_s_hat_from_the_bag_topic_aligned_by_step(tmp_path, rng):
    s_hat = _bag(tmp_path / "bags" / "a", rng)
    data = load_transitions(tmp_path / "bags", nominal_model(), 5, sensitivities=True)
    assert data.s_hat.shape == (20, 12, 14)
    np.testing.assert_array_equal(data.s_hat[0::2], s_hat[0:20:2])
    assert np.all(np.isnan(data.s_hat[1::2]))


def test_sidecar_wins_and_missing_both_names_the_bag(tmp_path, rng):
    _bag(tmp_path / "bags" / "a", rng)
    side = rng.normal(size=(20, 12, 14))
    np.savez(tmp_path / "bags" / "a" / "sensitivity.npz", s_hat=side)
    data = load_transitions(tmp_path / "bags", nominal_model(), 5, sensitivities=True)
    np.testing.assert_array_equal(data.s_hat, side)
    _bag(tmp_path / "bags" / "b", rng, with_topic=False)
    with pytest.raises(ValueError, match="bags/b has no sensitivity.npz and no /mpc/sensitivity"):
        load_transitions(tmp_path / "bags", nominal_model(), 5, sensitivities=True)


def test_only_the_given_bags_and_damaged_ones_reported(tmp_path, rng):
    _bag(tmp_path / "a", rng)
    _bag(tmp_path / "b", rng)
    mcap = next((tmp_path / "b").glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[:200])
    _bag(tmp_path / "c", rng)
    data = load_transitions(tmp_path, nominal_model(), 5, bags=[tmp_path / "a", tmp_path / "b"])
    assert data.sources == [tmp_path / "a"] and [b for b, _ in data.skipped] == [tmp_path / "b"]


def test_per_joint_action_weights_divide_each_joint_by_its_mean(tmp_path, rng):
    _bag(tmp_path / "bags" / "a", rng)
    eff = np.abs(rng.normal(size=(20, 7))) * np.array([1.0, 2.0, 3.0, 4.0, 5.0, 50.0, 0.5])
    eff[3] = np.nan  # a step without sensitivities
    du0 = rng.normal(size=(20, 7, 12, 14))
    s_hat = np.einsum("sj,sjkn->skn", eff, du0)
    np.savez(tmp_path / "bags" / "a" / "sensitivity.npz", s_hat=s_hat, dj_du0_eff=eff, du0_de=du0)
    data = load_transitions(tmp_path / "bags", nominal_model(), 5, sensitivities=True, action_weights="per_joint")
    mean = np.nanmean(eff, axis=0)
    t = 7
    expected = sum(eff[t, j] / mean[j] * du0[t, j] for j in range(7))
    np.testing.assert_allclose(data.s_hat[t], expected, rtol=1e-12)
    assert np.all(np.isnan(data.s_hat[3])) and np.isfinite(data.s_hat[np.arange(20) != 3]).all()
    # the stored S_hat is eq. (5) with the unnormalised factors
    np.testing.assert_allclose(load_transitions(tmp_path / "bags", nominal_model(), 5, sensitivities=True).s_hat, s_hat)


def test_per_joint_action_weights_need_the_sidecar(tmp_path, rng):
    _bag(tmp_path / "bags" / "a", rng)  # S_hat only on the topic: no factors
    with pytest.raises(ValueError, match="bags/a has no sensitivity.npz: per-joint"):
        load_transitions(tmp_path / "bags", nominal_model(), 5, sensitivities=True, action_weights="per_joint")
    with pytest.raises(ValueError, match="action_weights"):
        load_transitions(tmp_path / "bags", nominal_model(), 5, sensitivities=True, action_weights="bogus")
    with pytest.raises(ValueError, match="bags/a has no sensitivity.npz: released bound rows"):
        load_transitions(tmp_path / "bags", nominal_model(), 5, sensitivities=True, action_weights="bound_relaxed")


def test_released_rows_need_a_sidecar_that_holds_them(tmp_path, rng):
    """A sidecar made before the released rows existed is named, with what to do."""
    bag = tmp_path / "bags" / "a"
    _bag(bag, rng)
    steps = 20
    np.savez(bag / "sensitivity.npz", s_hat=np.zeros((steps, 12, 14)), du0_de=np.zeros((steps, 7, 12, 14)), dj_du0_eff=np.ones((steps, 7)), ok=np.ones(steps, dtype=bool))
    with pytest.raises(ValueError, match="sensitivity.npz has no du0_de_relaxed .*whatmatters sensitivities"):
        load_transitions(tmp_path / "bags", nominal_model(), 5, sensitivities=True, action_weights="bound_relaxed")
