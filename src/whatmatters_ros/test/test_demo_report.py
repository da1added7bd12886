"""The demo's table and verdict on known numbers, and its config checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from whatmatters.errors import ConfigError
from whatmatters_ros.demo import DemoConfig
from whatmatters_ros.demo_report import demo_table, demo_verdict

J = {"base": {2000: 4.0, 2001: 2.0}, "stand": {2000: 5.0, 2001: 2.0}, "ours": {2000: 3.0, 2001: 2.4}}  # means 3.0, 3.5, 2.7


def test_table_has_each_environment_the_mean_and_percent_of_base() -> None:
    lines = demo_table(J).splitlines()
    assert lines[2] == "| 2000 | 4.0000 | 5.0000 | 3.0000 | 125.0 % | 75.0 % |"
    assert lines[-1] == "| mean | 3.0000 | 3.5000 | 2.7000 | 116.7 % | 90.0 % |"


def test_verdict_compares_the_means_and_counts_wins() -> None:
    ok, text = demo_verdict(J)
    assert ok and "ours lower than stand on 1 and than base on 1 of 2" in text
    worse = {**J, "ours": {2000: 3.9, 2001: 2.4}}  # mean 3.15: below stand, above base
    ok, text = demo_verdict(worse)
    assert not ok and "does NOT beat base" in text and "stand and" not in text.split("this time")[0]


def test_config_reads_integer_seed_lists_of_any_length(tmp_path: Path) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text("train_envs: [0, 1, 2, 3]\neval_envs: [2005]\n")
    cfg = DemoConfig.from_yaml(path)
    assert cfg.train_envs == (0, 1, 2, 3) and cfg.eval_envs == (2005,)
    path.write_text("train_envs: [0, 1.5]\n")
    with pytest.raises(ConfigError, match="train_envs"):
        DemoConfig.from_yaml(path)


def test_config_refuses_evaluating_on_training_environments() -> None:
    with pytest.raises(ConfigError, match="overlap"):
        DemoConfig(train_envs=(0, 2000), eval_envs=(2000,))


def test_demo_refuses_a_domain_whose_parallel_graphs_would_pass_the_last_ros_domain(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from whatmatters_ros.demo import main

    assert main(["--domain-id", "232", "--parallel", "2", "--out", str(tmp_path / "demo")]) == 2
    assert "--domain-id 232: the demo uses ROS domains 232..233" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()  # refused before anything started
