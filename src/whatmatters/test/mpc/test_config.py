"""Tests of whatmatters.mpc.config."""

from __future__ import annotations

import numpy as np
import pytest
from whatmatters.errors import ConfigError
from whatmatters.mpc.config import MpcConfig


def test_yaml_matches_defaults_and_anchor_setup():
    cfg = MpcConfig.from_yaml()
    assert cfg == MpcConfig()
    assert cfg.horizon == 12 and cfg.dt == pytest.approx(0.02)
    np.testing.assert_allclose(np.diag(cfg.state_weight)[:7], [1000] * 4 + [500] * 3)
    np.testing.assert_allclose(np.diag(cfg.state_weight)[7:], [100] * 4 + [50] * 3)
    np.testing.assert_allclose(np.diag(cfg.input_weight), [0.2] * 4 + [1] * 3)


@pytest.mark.parametrize(
    "kwargs, key",
    [({"nlp_solver": "IPOPT"}, "nlp_solver"), ({"r_weights": (0.0,) * 7}, "r_weights"), ({"q_weights": (1.0,) * 6}, "q_weights"),
        ({"rk4_jacobian": "frozen"}, "rk4_jacobian"),
        ({"rk4_jacobian": "first_stage", "nlp_solver": "SQP", "hpipm_mode": "SPEED"}, "rk4_jacobian"),  # a converged SQP needs the exact Jacobian
        ({"rk4_jacobian": "exact", "nlp_solver": "SQP", "hpipm_mode": "SPEED_ABS"}, "hpipm_mode"),  # and accurate QPs
        ({"qp_cond_n": 13}, "qp_cond_n"),
        ({"rk4_jacobian": "first_stage", "integrator": "erk"}, "rk4_jacobian"),
    ],
)
def test_invalid_values_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        MpcConfig(**kwargs)


def test_a_converged_sqp_is_valid_with_the_exact_jacobian_and_accurate_qps():
    """The default first-stage Jacobian and SPEED_ABS QPs are for SQP_RTI; SQP takes ``rk4_jacobian: exact``
    and ``hpipm_mode: SPEED``, the exact Hessian the exact Jacobian."""
    assert MpcConfig().rk4_jacobian == "first_stage"
    assert MpcConfig(nlp_solver="SQP", rk4_jacobian="exact", hpipm_mode="SPEED").nlp_solver == "SQP"
    assert MpcConfig(hessian="EXACT", rk4_jacobian="exact").hessian == "EXACT"
