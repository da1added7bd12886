"""Tests of whatmatters.config: YAML lookup and validated dataclass loading."""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class _Tuples:
    seeds: tuple[int, ...] = (0, 1, 2)
    weights: tuple[float, ...] = (1.0, 2.0)
    names: tuple[str, ...] = ("a", "b")


def test_integer_tuples_stay_integers_of_any_length():
    cfg = dataclass_from_mapping(_Tuples, {"seeds": [4, 5.0, 6, 7], "names": ["x"]}, "t.yaml")
    assert cfg.seeds == (4, 5, 6, 7) and all(type(s) is int for s in cfg.seeds)
    assert cfg.names == ("x",)


def test_a_fraction_in_an_integer_tuple_is_named():
    with pytest.raises(ConfigError, match="t.yaml.*seeds"):
        dataclass_from_mapping(_Tuples, {"seeds": [1, 2.5]}, "t.yaml")


def test_a_float_vector_keeps_its_length():
    with pytest.raises(ConfigError, match="weights.*expected 2 values"):
        dataclass_from_mapping(_Tuples, {"weights": [1.0, 2.0, 3.0]}, "t.yaml")
