"""Tests of whatmatters.experiment.bounds on hand-made sidecars and runs with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from whatmatters.experiment.bounds import bound_weight_statistics, bounds_markdown, selected_validation_costs, validation_split
from whatmatters.sensitivity.batch import SIDECAR


def _sidecar(folder, s_hat, du0_de, eff, ok):
    folder.mkdir(parents=True)
    np.savez(folder / SIDECAR, s_hat=s_hat, du0_de=du0_de, dj_du0_eff=eff, ok=ok)


def test_bound_statistics_on_known_samples(tmp_path):
    """4 samples, nu = 2, N = 2, nx = 2 (1 objective state): sample 1 has joint 2 at its bound, sample 3 fails."""
    s_hat = np.zeros((4, 2, 2))
    s_hat[:, 0, 0] = [1.0, 3.0, 1.0, 100.0]  # p = 1 weights 1, 9, 1 (sample 3 is not ok)
    s_hat[:, 1, 0] = [1.0, 1.0, 1.0, 100.0]  # p = 2 weights 2, 10, 2
    s_hat[:, :, 1] = 50.0  # not in the objective
    du = np.ones((4, 2, 2, 2))
    du[1, 1] = 0.0  # joint 2 of sample 1 at a bound
    eff = np.array([[1.0, 1.0], [1.0, 3.0], [2.0, 2.0], [9.0, 9.0]])
    ok = np.array([True, True, True, False])
    _sidecar(tmp_path / "env_0000", s_hat, du, eff, ok)
    st = bound_weight_statistics(tmp_path, [1, 2], n_states=1)
    assert "weight_ratio_relaxed" not in st  # sidecars without released rows
    assert st["samples"] == 3
    assert st["share_at_bound"] == pytest.approx(1 / 3)
    assert st["share_at_bound_per_joint"] == pytest.approx([0.0, 1 / 3])
    assert st["eff_share_dropped"] == pytest.approx(0.75)
    assert st["weight_ratio"] == {"1": pytest.approx(9.0), "2": pytest.approx(5.0)}
    assert st["weight_share_at_bound"] == {"1": pytest.approx(9 / 11), "2": pytest.approx(10 / 14)}
    assert "75 % of the sample's sum" in "\n".join(bounds_markdown([], st, {}, [1, 2]))


def test_released_rows_weigh_the_bound_samples_by_their_multiplier(tmp_path):
    """S_hat = eff @ du0/de; released rows of 2 where joint 2 is at its bound: that sample's S doubles and more."""
    s_hat = np.zeros((2, 1, 1))
    du = np.ones((2, 2, 1, 1))
    du[1, 1] = 0.0
    eff = np.array([[1.0, 1.0], [1.0, 3.0]])
    s_hat[:, 0, 0] = (eff[:, :, None, None] * du).sum(axis=1)[:, 0, 0]  # 2 and 1
    relaxed = du.copy()
    relaxed[1, 1] = 2.0  # released: S = 1 + 3 * 2 = 7
    folder = tmp_path / "env_0000"
    folder.mkdir()
    np.savez(folder / SIDECAR, s_hat=s_hat, du0_de=du, du0_de_relaxed=relaxed, dj_du0_eff=eff, ok=np.ones(2, dtype=bool))
    st = bound_weight_statistics(tmp_path, [1], n_states=1)
    assert st["weight_ratio"]["1"] == pytest.approx(1 / 4) and st["weight_ratio_relaxed"]["1"] == pytest.approx(49 / 4)
    assert st["weight_share_at_bound_relaxed"]["1"] == pytest.approx(49 / 53)


def test_no_sidecar_no_statistics(tmp_path):
    assert bound_weight_statistics(tmp_path, [1]) == {}


def _run(weighting: str, seed: int, validation: dict[str, float], selected: int = 1) -> dict:
    epochs = [{"epoch": 1, "validation": {"j_track_per_env": validation}}, {"epoch": 2, "validation": {"j_track_per_env": {k: 1e3 for k in validation}}}]
    return {"weighting": weighting, "p": 4, "seed": seed, "epochs": epochs, "selected": {"epoch": selected}}


def test_validation_split_pairs_the_torque_bound_and_the_other_environments():
    stand = [_run("stand", s, {"1000": 10.0, "1001": 1.0, "1002": 4.0}) for s in (0, 1)]
    ours = [_run("ours", s, {"1000": 20.0, "1001": 0.5, "1002": 1.0}) for s in (0, 1)]
    exact_bound = {"1000": 0.30, "1001": 0.0, "1002": 0.01}  # only 1000 is torque-bound
    split = validation_split([*stand, *ours], "ours", "stand", 4, exact_bound)
    assert split["bound"].ratio == pytest.approx(2.0) and split["bound"].envs == 1 and split["bound"].wins == 0
    assert split["free"].ratio == pytest.approx(np.sqrt(0.5 * 0.25)) and split["free"].wins == 2
    assert validation_split([*stand, *ours], "ours", "ours_avg", 4, exact_bound) == {}


def test_the_selected_epochs_validation_costs_are_read():
    assert selected_validation_costs(_run("ours", 0, {"1000": 3.0}, selected=2)) == {"1000": 1e3}
    assert selected_validation_costs({"epochs": [{"j_track_mean": 1.0}]}) == {}
