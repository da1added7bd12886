"""SensitivityConfig: the shipped file loads, bad values name the key."""

from __future__ import annotations

import pytest
from whatmatters.errors import ConfigError
from whatmatters.sensitivity.config import SensitivityConfig


def test_shipped_settings_load():
    cfg = SensitivityConfig.from_yaml()
    assert cfg.resolve_start == "predictor" and cfg.resolve_hessian == "exact"


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"derivatives": "fast"}, "sensitivity.derivatives"),
        ({"resolve_start": "middle"}, "sensitivity.resolve_start"),
        ({"resolve_hessian": "newton"}, "sensitivity.resolve_hessian"),
        ({"resolve_start": "point"}, "resolve_hessian: exact needs resolve_start: predictor"),
        ({"eps": 0.0}, "sensitivity.eps"),
    ],
)
def test_bad_values_name_the_key(changes, key):
    with pytest.raises(ConfigError, match=key):
        SensitivityConfig(**changes)
