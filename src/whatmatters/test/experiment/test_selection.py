"""Tests of whatmatters.experiment.selection: the checkpoint chosen on validation, closed-form cases."""

from __future__ import annotations

import math

import pytest
from whatmatters.experiment.selection import select_epoch, selected_costs, selection_score


def test_score_is_the_geometric_mean():
    assert selection_score({"1000": 2.0, "1001": 8.0}) == pytest.approx(4.0)


def test_a_heavy_environment_does_not_decide_alone():
    """Epoch 1 is better in the mean of J (one large environment), epoch 2 in every other environment."""
    epoch1 = {"a": 100.0, "b": 2.0, "c": 2.0, "d": 2.0}
    epoch2 = {"a": 110.0, "b": 1.0, "c": 1.0, "d": 1.0}
    assert sum(epoch1.values()) < sum(epoch2.values())
    assert select_epoch([epoch1, epoch2]) == 2


def test_ties_go_to_the_earliest_epoch():
    same = {"a": 3.0, "b": 5.0}
    assert select_epoch([{"a": 4.0, "b": 5.0}, same, dict(same)]) == 2


def test_a_failed_episode_is_never_preferred():
    assert selection_score({"a": 1.0, "b": math.nan}) == math.inf
    assert select_epoch([{"a": 0.1, "b": math.inf}, {"a": 50.0, "b": 50.0}]) == 2


@pytest.mark.parametrize("bad", [[], [{}], [{"a": 1.0}, {"b": 1.0}]])
def test_bad_input_is_named(bad):
    with pytest.raises(ValueError):
        select_epoch(bad)


def test_runs_without_a_selection_report_their_last_epoch():
    run = {"epochs": [{"j_track_per_env": {"2000": 5.0}}, {"j_track_per_env": {"2000": 4.0}}]}
    assert selected_costs(run) == {"2000": 4.0}
    run["selected"] = {"epoch": 1, "j_track_per_env": {"2000": 5.0, "2001": 7.0}}
    assert selected_costs(run) == {"2000": 5.0, "2001": 7.0}
