"""Per-environment statistics of the sweep, on hand-made runs with known answers."""

from __future__ import annotations

import math

import pytest
from whatmatters.experiment.per_env import (
    base_concentration,
    claims,
    claims_markdown,
    failures,
    paired_markdown,
    paired_to_stand,
    per_env_markdown,
    per_env_normalised,
    verdict,
)
from whatmatters.experiment.statistics import Interval
from whatmatters.experiment.report import results_markdown

BASE = {"2000": 10.0, "2001": 1.0, "2002": 89.0}


def _run(weighting: str, p: int, seed: int, per_epoch: list[dict[str, float]], selected: tuple[int, dict[str, float]] | None = None) -> dict:
    epochs = [
        {"epoch": i + 1, "train_loss": 0.1, "j_track_mean": sum(j.values()) / len(j), "j_track_per_env": j} for i, j in enumerate(per_epoch)
    ]
    run = {"weighting": weighting, "p": p, "seed": seed, "epochs": epochs}
    if selected is not None:
        run["selected"] = {"epoch": selected[0], "j_track_mean": sum(selected[1].values()) / len(selected[1]), "j_track_per_env": selected[1]}
    return run


def test_base_concentration_ranks_environments_by_their_share():
    top = base_concentration(BASE, top=2)
    assert [e for e, _, _ in top] == ["2002", "2000"]
    assert top[0][2] == pytest.approx(0.89) and top[1][2] == pytest.approx(0.10)


def test_each_environment_counts_equally_in_the_normalised_score():
    stand = [_run("stand", 4, s, [{"2000": 2.0, "2001": 1.0, "2002": 100.0}]) for s in (0, 1)]
    # 4x worse in one small environment, 4x better in the large one: the mean over environments says
    # much better (J 22.3 vs 34.3), the per-environment score says even (geometric mean of 4, 1, 1/4 = 1)
    ours = _run("ours", 4, 0, [{"2000": 8.0, "2001": 1.0, "2002": 25.0}])
    half = _run("ours_avg", 4, 0, [{"2000": 1.0, "2001": 0.5, "2002": 50.0}])
    out = per_env_normalised([*stand, ours, half], ["stand", "ours", "ours_avg"], [4, 12])
    assert out["ours"]["4"] == {"mean": pytest.approx(1.0), "std": 0.0, "runs": 1}
    assert out["ours_avg"]["4"]["mean"] == pytest.approx(0.5)
    assert out["stand"]["4"]["mean"] == pytest.approx(1.0)
    assert "12" not in out["ours"]  # no stand run at p = 12: nothing to normalise by


def test_the_normalised_score_uses_the_selected_checkpoint():
    stand = _run("stand", 1, 0, [{"2000": 1.0}, {"2000": 2.0}], selected=(1, {"2000": 1.0, "2001": 4.0}))
    ours = _run("ours", 1, 0, [{"2000": 2.0}, {"2000": 1.0}], selected=(1, {"2000": 2.0, "2001": 1.0}))
    assert per_env_normalised([stand, ours], ["stand", "ours"], [1])["ours"]["1"]["mean"] == pytest.approx(math.sqrt(2.0 * 0.25))  # the last epoch would give 0.5


def test_runs_without_a_selection_are_read_at_their_last_epoch():
    stand = _run("stand", 1, 0, [{"2000": 1.0}, {"2000": 2.0}])
    ours = _run("ours", 1, 0, [{"2000": 2.0}, {"2000": 1.0}])
    assert per_env_normalised([stand, ours], ["stand", "ours"], [1])["ours"]["1"]["mean"] == pytest.approx(0.5)


def test_failures_count_evaluations_above_the_factor_and_name_them():
    runs = [
        _run("stand", 12, 0, [{"2000": 1.0}, {"2000": 99.0}], selected=(1, {"2000": 51.0, "2001": 5.5, "2002": 89.0})),
        _run("stand", 12, 1, [{"2000": 10.0}], selected=(1, {"2000": 10.0, "2001": 1.0, "2002": 445.1})),
    ]
    out = failures(runs, BASE, ["stand"], [12], factor=5.0)["stand"]["12"]
    assert out["evaluations"] == 6  # the selected checkpoints on every evaluation environment; per-epoch ones do not count
    assert out["where"] == ["stand_p12_s0@1:2000", "stand_p12_s0@1:2001", "stand_p12_s1@1:2002"]
    assert out["count"] == 3


def test_the_report_section_appears_only_with_the_base_models_costs():
    runs = [_run("stand", 1, 0, [{"2000": 10.0, "2001": 1.0, "2002": 89.0}]), _run("ours", 1, 0, [{"2000": 5.0, "2001": 1.0, "2002": 60.0}])]
    md = per_env_markdown(runs, BASE, ["stand", "ours"], [1])
    text = "\n".join(md)
    assert "environment 2002: J 89.0 (89 % of the sum)" in text
    score = 100 * math.exp((math.log(0.5) + math.log(60.0 / 89.0)) / 3)
    assert f"| ours | {score:.1f} ± 0.0 % (1) |" in text
    assert "| ours | 0 of 3 |" in text
    assert per_env_markdown(runs, {}, ["stand", "ours"], [1]) == []
    fig = {k: {"stand": {}, "ours": {}} for k in ("selected", "selected_first", "final", "best5", "paired")}
    meta = {
        "config": {"data_envs": 1, "data_seconds": 1.0, "eval_envs": 3, "eval_set": "eval", "eval_seconds": 1.0, "finetune": {}},
        "command": "whatmatters experiment",
        "runs_done": 2,
        "runs_total": 2,
        "machine": "test",
        "wall_h": 0.1,
        "sitting_s": 1.0,
        "windows": "windows per p: 1",
        "base_j": 33.3,
    }
    assert "## Per environment" not in results_markdown(fig, meta, ["stand", "ours"], [1], "fig2.png", runs)
    assert "## Per environment" in results_markdown(fig, {**meta, "base_per_env": BASE}, ["stand", "ours"], [1], "fig2.png", runs)


def test_paired_ratios_to_stand_pair_environments_and_name_their_wins():
    stand = [_run("stand", 4, s, [{"2000": 2.0, "2001": 1.0, "2002": 100.0}]) for s in (0, 1)]
    ours = [_run("ours", 4, s, [{"2000": 8.0, "2001": 1.0, "2002": 25.0}]) for s in (0, 1)]
    out = paired_to_stand([*stand, *ours], ["stand", "ours"], [4, 12])
    got = out["ours"]["4"]
    assert got.ratio == pytest.approx(1.0) and (got.wins, got.envs) == (1, 3)  # 4, 1, 1/4: even; better in one
    assert got.low <= 1.0 <= got.high
    assert "4" not in out["stand"] and "12" not in out["ours"]
    md = "\n".join(paired_markdown([*stand, *ours], ["stand", "ours"], [4]))
    assert "1.000 [" in md and ", 1 of 3 |" in md


def test_claims_state_each_ratio_with_its_verdict():
    """No seed noise: ours is 0.5 of stand at p = 1 and 0.25 at p = 4 everywhere; ours_avg equals ours."""
    envs = {"2000": 2.0, "2001": 8.0, "2002": 40.0}
    runs = []
    for p, factor in ((1, 0.5), (4, 0.25)):
        for s in (0, 1):
            runs += [_run("stand", p, s, [envs]), _run("ours", p, s, [{e: factor * j for e, j in envs.items()}])]
            runs.append(_run("ours_avg", p, s, [{e: factor * j for e, j in envs.items()}]))
    got = dict(claims(runs, [1, 4]))
    assert got["ours beats stand at p = 1"].value == pytest.approx(0.5)
    assert got["ours beats stand at p = 4"].high == pytest.approx(0.25)
    assert got["ours beats ours_avg at p = 4"].value == pytest.approx(1.0)
    assert got["ours' gain over stand grows from p = 1 to p = 4"].value == pytest.approx(0.5)
    assert verdict(got["ours beats stand at p = 1"]).startswith("holds")
    assert verdict(got["ours beats ours_avg at p = 4"]).startswith("not resolved")
    assert verdict(Interval(1.2, 1.1, 1.3)).startswith("the opposite")
    text = "\n".join(claims_markdown(runs, [1, 4]))
    assert "| ours beats stand at p = 4 | 0.250 [0.250, 0.250] | holds" in text
