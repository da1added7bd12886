"""Tests of the hand-structured exact derivatives of the learned model (CasADi form)."""

from __future__ import annotations

import casadi as ca
import numpy as np
import pytest
import torch
from whatmatters.dynamics.check import central_difference_jacobian, check_state_jacobian
from whatmatters.dynamics.learned import LearnedConfig, LearnedDynamics
from whatmatters.dynamics.nominal import exact_model, nominal_model
from whatmatters.dynamics.residual import ResidualConfig
from whatmatters.dynamics.residual_jacobian import residual_derivatives
from whatmatters.robot.payload import Payload


def _perturbed(cfg: LearnedConfig | None = None, seed: int = 5, scale: float = 0.5) -> LearnedDynamics:
    torch.manual_seed(seed)
    m = LearnedDynamics(cfg)
    with torch.no_grad():  # far from the initialisation: every second-derivative term matters
        for p in m.residual.parameters():
            p.add_(scale * torch.randn_like(p))
    return m


@pytest.fixture(scope="module")
def model() -> LearnedDynamics:
    return _perturbed()


def _point(rng, m):
    x = np.concatenate([rng.uniform(-2.5, 2.5, 7), rng.normal(0, 1.5, 7)])
    return x, rng.normal(0, 20, 7), np.concatenate([m.residual.flat_parameters(), rng.normal(size=m.context_dim)])


def test_residual_derivatives_equal_casadi_ad(model, rng):
    res = model.residual
    q, qd, w = ca.SX.sym("q", 7), ca.SX.sym("qd", 7), ca.SX.sym("w", 7)
    p = ca.SX.sym("p", model.n_params)
    h, t = res.casadi_terms(q, qd, p)
    rd = residual_derivatives(res, q, qd, p)
    ref = ca.Function("ref", [q, qd, p, w], [h, t, ca.jacobian(t, q), ca.jacobian(t, qd), ca.jacobian(ca.mtimes(h, w), q)])
    new = ca.Function("new", [q, qd, p, w], [rd.h_res, rd.torque, rd.d_torque_dq, rd.d_torque_dqd, rd.d_h_times(w)])
    for _ in range(5):
        x, _, params = _point(rng, model)
        args = (x[:7], x[7:], params, rng.normal(size=7))
        for name, a, b in zip(("H_res", "torque", "dtorque/dq", "dtorque/dqd", "dH/dq w"), ref(*args), new(*args)):
            a, b = np.array(a), np.array(b)
            assert np.abs(a).max() > 1e-3, name  # the term is not trivially zero
            np.testing.assert_allclose(b, a, rtol=0, atol=1e-10 * np.abs(a).max(), err_msg=name)


def test_state_jacobian_equals_ad_and_finite_differences(model, rng):
    for _ in range(4):
        x, u, params = _point(rng, model)
        chk = check_state_jacobian(model, x, u, params)
        assert chk.f_error < 1e-12
        assert chk.ad_error < 1e-10
        assert chk.fd_error < 1e-6


def test_other_architecture_and_no_damping(rng):
    """Depth and widths come from the config: one and three hidden layers, no damping term."""
    for hidden in ((12,), (9, 8, 7)):
        m = _perturbed(LearnedConfig(ResidualConfig(hidden=hidden, context_dim=4, damping=False)), seed=7)
        x, u, params = _point(rng, m)
        chk = check_state_jacobian(m, x, u, params)
        assert chk.ad_error < 1e-10 and chk.fd_error < 1e-6, (hidden, chk)


@pytest.mark.parametrize("which", ["nominal", "exact"])
def test_structured_jacobian_of_the_rigid_body_model_passes_the_check(which, rng):
    """The rigid-body model's structured Jacobian against CasADi's AD and central
    differences; ``exact``: with payload, armature and damping."""
    m = nominal_model() if which == "nominal" else exact_model(Payload(1.5, (0.05, -0.02, 0.1)), armature=0.1, damping=1.0)
    for _ in range(3):
        chk = check_state_jacobian(m, np.concatenate([rng.uniform(-2, 2, 7), rng.normal(size=7)]), rng.normal(0, 10, 7))
        assert chk.ad_error < 1e-12 and chk.fd_error < 1e-6, chk


def test_central_differences_of_a_closed_form():
    def fun(v):
        return np.array([np.sin(v[0]) * v[1], v[1] ** 3])

    x = np.array([0.3, -1.2])
    exact = np.array([[np.cos(0.3) * -1.2, np.sin(0.3)], [0.0, 3 * 1.44]])
    np.testing.assert_allclose(central_difference_jacobian(fun, x), exact, atol=1e-8)
