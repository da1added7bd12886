"""The car experiment: its settings, the summary's arithmetic, a tiny sweep end to end (and resumed)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from whatmatters.car.experiment import CarExperimentConfig
from whatmatters.car.sweep import run_car_sweep, summary
from whatmatters.config import config_dir
from whatmatters.errors import ConfigError
from whatmatters.executor import LocalExecutor


def _result(w: str, p: int, seed: int, j: list[float], lap: list[float], off: list[float], fallbacks: list[int] | None = None) -> dict:
    per_env = [{"env": 2000 + i, "j_track": a, "lap_time": b, "off_track": c, "fallbacks": f} for i, (a, b, c, f) in enumerate(zip(j, lap, off, fallbacks or [0] * len(j)))]
    return {"weighting": w, "p": p, "seed": seed, "per_env": per_env}


def test_summary_normalises_each_seed_to_stand():
    results = [
        _result("stand", 4, 0, [2.0, 4.0], [9.0, 11.0], [0.0, 0.2]),
        _result("stand", 4, 1, [1.0, 1.0], [10.0, 10.0], [0.0, 0.0]),
        _result("ours", 4, 0, [1.5, 1.5], [9.5, 10.5], [0.0, 0.0]),  # J 1.5 / 3 = 0.5
        _result("ours", 4, 1, [1.0, 0.5], [9.0, 9.0], [0.1, 0.3], [0, 7]),  # J 0.75 / 1 = 0.75; one failed episode
    ]
    table = summary(results, ("stand", "ours"), (4,))
    assert table["stand/p4"]["j_track"] == {"mean": 1.0, "std": 0.0}
    assert table["ours/p4"]["j_track"]["mean"] == pytest.approx(0.625)
    assert table["ours/p4"]["j_track"]["std"] == pytest.approx(np.std([0.5, 0.75], ddof=1))
    assert table["ours/p4"]["lap_time"]["mean"] == pytest.approx(np.mean([1.0, 0.9]))
    assert table["ours/p4"]["off_track"]["mean"] == pytest.approx(np.mean([0.0, 0.2]))  # seconds, not a ratio
    # per-environment ratios: seed 0 (0.75, 0.375) -> median 0.5625; seed 1 (1.0, 0.5) -> 0.75
    assert table["ours/p4"]["j_paired_median"]["mean"] == pytest.approx(np.mean([0.5625, 0.75]))
    assert table["ours/p4"]["envs_won"]["mean"] == pytest.approx(np.mean([2, 1]))
    assert table["ours/p4"]["failed_envs"]["mean"] == pytest.approx(0.5)


def test_the_shipped_settings_load_with_integer_lengths_and_seeds():
    cfg = CarExperimentConfig.from_yaml(config_dir() / "car" / "experiment.yaml")
    assert cfg.rollout_lengths == (1, 4, 12) and all(isinstance(p, int) for p in cfg.rollout_lengths)
    assert all(isinstance(s, int) for s in cfg.seeds)
    assert set(cfg.seeds_of("pretrain")).isdisjoint(cfg.seeds_of("data"))


@pytest.mark.parametrize(("field", "value", "message"), [("weightings", ("ones", "ours"), "stand"), ("weightings", ("stand", "best"), "unknown"), ("eval_envs", 0, "eval_envs")])
def test_bad_settings_are_named(field, value, message):
    with pytest.raises(ConfigError, match=message):
        CarExperimentConfig(**{field: value})


def test_a_tiny_sweep_runs_and_resumes(tmp_path):
    cfg = replace(
        CarExperimentConfig(), pretrain_envs=1, data_envs=1, eval_envs=1, collect_seconds=1.0, eval_seconds=0.6,
        weightings=("stand", "ours"), rollout_lengths=(2,), seeds=(0,), pretrain_epochs=1, finetune_epochs=1,
    )  # fmt: skip
    with LocalExecutor(1) as executor:
        report = run_car_sweep(cfg, tmp_path, executor)
    assert set(report["summary"]) == {"stand/p2", "ours/p2"} and report["runs"] == 2
    run = json.loads((tmp_path / "runs" / "ours_p2_s0" / "result.json").read_text())
    assert len(run["per_env"]) == 1 and np.isfinite(run["per_env"][0]["j_track"])
    stamp = (tmp_path / "runs" / "ours_p2_s0" / "result.json").stat().st_mtime_ns
    with LocalExecutor(1) as executor:
        again = run_car_sweep(cfg, tmp_path, executor)
    assert json.dumps(again["summary"]) == json.dumps(report["summary"])  # NaN lap times: compared as text
    assert (tmp_path / "runs" / "ours_p2_s0" / "result.json").stat().st_mtime_ns == stamp  # not recomputed


def test_the_report_holds_the_table_the_figure_and_the_track(tmp_path):
    from whatmatters.car import load_car_params, racing_line
    from whatmatters.car.data import CarRecord
    from whatmatters.car.generate import generate_track
    from whatmatters.car.model import CarModel
    from whatmatters.car.report import write_car_report

    track = generate_track(0)
    line = racing_line(track, load_car_params())
    steps = 400
    s = np.linspace(0.0, 1.05 * track.length, steps + 1)
    x = line.states(s)
    rec = CarRecord(tmp_path / "env.npz", x, np.zeros((steps, 2)), np.zeros((steps, 6, 8)), 0.02, 0, np.ones((steps, 5, 8)))
    report = {
        "summary": summary([_result("stand", 4, 0, [2.0], [9.0], [0.0]), _result("ours", 4, 0, [1.0], [8.1], [0.0])], ("stand", "ours"), (4,)),
        "nominal": [{"j_track": 3.0, "lap_time": 9.5, "off_track": 0.2}], "base": [{"j_track": 2.5, "lap_time": 9.2, "off_track": 0.1}],
    }  # fmt: skip
    cfg = replace(CarExperimentConfig(), weightings=("stand", "ours"), rollout_lengths=(4,))
    paths = write_car_report(report, rec, track, line, CarModel.state_labels, cfg, "whatmatters experiment --system car", tmp_path / "report")
    md = paths[0].read_text()
    assert "| ours | 50.0 ± 0.0 | 50.0 ± 0.0 | 1.0 ± 0.0 | 90.0 ± 0.0 | 0.00 ± 0.00 | 0.0 ± 0.0 |" in md
    assert "`whatmatters experiment --system car`" in md
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from whatmatters.car import Track

    assert abs(Track.load(paths[3]).length - track.length) < 1e-3
