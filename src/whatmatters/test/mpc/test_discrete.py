"""The chained RK4 map and Jacobian (acados DISCRETE dynamics) against independent forms."""

from __future__ import annotations

import math

import casadi as ca
import numpy as np
import pytest
import torch
from whatmatters.dynamics.base import DynamicsModel, rk4
from whatmatters.dynamics.learned import LearnedDynamics
from whatmatters.mpc.discrete import rk4_functions

DT = 0.02


def _state(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    q = np.array([0.0, -0.4, 0.0, -2.4, 0.0, 2.2, -0.785]) + 0.3 * rng.normal(size=7)
    return np.concatenate([q, rng.normal(size=7)]), 5.0 * rng.normal(size=7)


def _learned(nominal: DynamicsModel) -> LearnedDynamics:
    torch.manual_seed(0)
    model = LearnedDynamics(nominal=nominal)
    with torch.no_grad():  # random weights: second MLP derivatives far from the initialisation's
        for w in model.residual.parameters():
            w.normal_(0.0, 0.3)
    model.set_context(np.random.default_rng(3).normal(size=model.context_dim))
    return model


def _plain_rk4(model: DynamicsModel) -> ca.Function:
    """CasADi's own Jacobian of the expanded RK4 expression, in acados' (u, x) layout."""
    x, u, p = ca.SX.sym("x", model.nx), ca.SX.sym("u", model.nu), ca.SX.sym("p", model.n_params)
    f = ca.Function("f", [x, u, p], [model.state_derivative(x, u, p)])
    phi = rk4(lambda s: f(s, u, p), x, DT)
    return ca.Function("plain", [x, u, p], [phi, ca.jacobian(phi, ca.vertcat(u, x)).T])


@pytest.mark.parametrize("kind", ["nominal", "learned"])
def test_chained_jacobian_equals_casadi_ad_of_the_expanded_rk4(nominal, kind, rng):
    model = nominal if kind == "nominal" else _learned(nominal)
    phi_fun, phi_jac = rk4_functions(model, DT, "t")
    plain = _plain_rk4(model)
    p = model.parameter_values()
    for _ in range(3):
        x, u = _state(rng)
        phi_ref, jac_ref = (np.array(v) for v in plain(x, u, p))
        phi, jac = (np.array(v) for v in phi_jac(x, u, p))
        np.testing.assert_allclose(np.array(phi_fun(x, u, p)), phi_ref, rtol=0, atol=1e-13)
        np.testing.assert_allclose(phi, phi_ref, rtol=0, atol=1e-13)
        assert jac.shape == (model.nu + model.nx, model.nx)
        np.testing.assert_allclose(jac, jac_ref, rtol=1e-10, atol=1e-10 * np.abs(jac_ref).max())


def test_chained_jacobian_matches_central_differences(nominal, rng):
    model = _learned(nominal)
    phi_fun, phi_jac = rk4_functions(model, DT, "t")
    p = model.parameter_values()
    x, u = _state(rng)
    _, jac = phi_jac(x, u, p)
    jac = np.array(jac).T  # (nx, nu + nx)
    z = np.concatenate([u, x])
    h = 1e-6
    fd = np.empty_like(jac)
    for j in range(z.size):
        zp, zm = z.copy(), z.copy()
        zp[j] += h
        zm[j] -= h
        fd[:, j] = (np.array(phi_fun(zp[7:], zp[:7], p)) - np.array(phi_fun(zm[7:], zm[:7], p))).ravel() / (2 * h)
    np.testing.assert_allclose(jac, fd, rtol=0, atol=1e-7 * max(1.0, np.abs(jac).max()))


def test_phi_is_the_models_rk4_step(nominal, rng):
    phi_fun, _ = rk4_functions(nominal, DT, "t")
    x, u = _state(rng)
    fns = nominal.casadi_functions()
    np.testing.assert_allclose(np.array(phi_fun(x, u, np.zeros(0))).ravel(), np.array(fns["rk4"](x, u, DT, np.zeros(0))).ravel(), rtol=0, atol=1e-13)


def test_first_stage_jacobian_is_the_rk4_polynomial_of_the_first_stage_jacobian(nominal, rng):
    """Closed form: with J_f frozen at (x, u), RK4's Jacobian is the stability polynomial
    dphi/dx = sum_k (h Jx)^k / k! (k <= 4), dphi/du = h (sum_k (h Jx)^k / (k + 1)!) Ju (k <= 3)."""
    model = _learned(nominal)
    phi_fun, phi_jac = rk4_functions(model, DT, "t", jacobian="first_stage")
    _, exact_jac = rk4_functions(model, DT, "t")
    x_s, u_s = ca.SX.sym("x", model.nx), ca.SX.sym("u", model.nu)
    p_s = ca.SX.sym("p", model.n_params)
    f_ad = ca.Function("j", [x_s, u_s, p_s], [ca.jacobian(model.state_derivative(x_s, u_s, p_s), ca.vertcat(x_s, u_s))])
    p = model.parameter_values()
    for _ in range(2):
        x, u = _state(rng)
        jf = np.array(f_ad(x, u, p))
        jx, ju = DT * jf[:, :14], jf[:, 14:]
        powers = [np.eye(14)]
        for _k in range(4):
            powers.append(powers[-1] @ jx)
        a_ref = sum(pw / math.factorial(k) for k, pw in enumerate(powers))
        b_ref = DT * sum(pw / math.factorial(k + 1) for k, pw in enumerate(powers[:4])) @ ju
        phi, jac = (np.array(v) for v in phi_jac(x, u, p))
        jac = jac.T  # (nx, nu + nx)
        np.testing.assert_allclose(phi, np.array(phi_fun(x, u, p)), rtol=0, atol=1e-13)  # the map itself is exact
        np.testing.assert_allclose(jac[:, 7:], a_ref, rtol=0, atol=1e-11 * np.abs(a_ref).max())
        np.testing.assert_allclose(jac[:, :7], b_ref, rtol=0, atol=1e-11 * np.abs(b_ref).max())
        exact = np.array(exact_jac(x, u, p)[1]).T
        gap = np.abs(jac - exact).max() / np.abs(exact).max()
        assert 1e-8 < gap < 0.25, gap  # an approximation (~10 % here: random weights make J_f vary fast)
