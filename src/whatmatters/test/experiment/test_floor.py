"""The achievable floor: the share of the base model's gap closed, on hand-made runs with known answers."""

from __future__ import annotations

import pytest
from whatmatters.experiment.floor import BOUND_THRESHOLD, bound_environments, floor_markdown, gap_closed_table

BASE = {"2000": 5.0, "2001": 8.0}
EXACT = {"2000": 1.0, "2001": 2.0}
BOUND = {"2000": 0.0, "2001": 0.2}


def _run(weighting: str, p: int, seed: int, last: dict[str, float]) -> dict:
    return {"weighting": weighting, "p": p, "seed": seed, "epochs": [{"epoch": 1, "train_loss": 0.0, "j_track_per_env": last}]}


RUNS = [_run("ours", 4, s, {"2000": 2.0, "2001": 4.0}) for s in (0, 1)] + [_run("stand", 4, 0, BASE)]


def test_the_threshold_splits_the_environments():
    assert bound_environments(BOUND) == {"2001"}
    assert bound_environments({"2000": BOUND_THRESHOLD}) == set()  # at the threshold: not bound


def test_the_gap_closed_is_the_closed_form_share_on_all_and_on_the_free_environments():
    """Gaps 4 and 6 of the base model; ours leaves 1 and 2: 70 % closed on both, 75 % on 2000 alone."""
    everywhere = gap_closed_table(RUNS, BASE, EXACT, ["stand", "ours"], [4])
    assert everywhere["ours"]["4"].value == pytest.approx(0.7)
    assert everywhere["stand"]["4"].value == pytest.approx(0.0)
    free = gap_closed_table(RUNS, BASE, EXACT, ["ours"], [4], {"2000"})
    assert free["ours"]["4"].value == pytest.approx(0.75)


def test_the_report_section_states_the_threshold_and_both_tables():
    text = "\n".join(floor_markdown(RUNS, BASE, EXACT, BOUND, ["stand", "ours"], [4, 12]))
    assert "more than 5 % of the steps): 1 of 2 (2001)" in text
    assert "| ours | 0.700 [" in text and "| ours | 0.750 [" in text
    assert "| stand | 0.000 [0.000, 0.000] | — |" in text  # no run at p = 12
    assert floor_markdown(RUNS, BASE, {}, {}, ["ours"], [4]) == []
