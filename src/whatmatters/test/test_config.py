"""Tests of whatmatters.config: YAML lookup and validated dataclass loading."""

from __future__ import annotations

import pytest
from whatmatters.config import config_dir, dataclass_from_mapping, load_yaml
from whatmatters.errors import ConfigError
from whatmatters.sim.simulator import SimConfig


def test_config_dir_holds_the_project_files():
    for name in ("environments.yaml", "sim.yaml", "reference.yaml"):
        assert (config_dir() / name).is_file()


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="unknown key 'timestpe'"):
        dataclass_from_mapping(SimConfig, {"timestpe": 0.002}, "sim.yaml")


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match="key 'joint_limits'"):
        dataclass_from_mapping(SimConfig, {"joint_limits": "yes"}, "sim.yaml")


def test_invalid_value_is_reported_with_source():
    with pytest.raises(ConfigError, match="sim.yaml.*not a multiple"):
        dataclass_from_mapping(SimConfig, {"control_period": 0.021}, "sim.yaml")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_yaml(tmp_path / "nope.yaml")


def test_yaml_defaults_match_dataclass_defaults():
    # config/sim.yaml documents the defaults; a drift between them is a bug.
    assert SimConfig.from_yaml() == SimConfig()
