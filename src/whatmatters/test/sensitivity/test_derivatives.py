"""Tests of the compiled stage derivatives against finite differences of the RK4 map."""

from __future__ import annotations

import numpy as np
import torch
from whatmatters.sensitivity.derivatives import StageDerivatives


def test_jacobians_and_hessians_match_finite_differences(nominal, rng):
    n = 3
    d = StageDerivatives(nominal, 0.02, n, compile=False)
    x = np.array([0.0, -0.4, 0.0, -2.4, 0.0, 2.2, -0.785] + [0.0] * 7) + 0.2 * rng.normal(size=(n, 14))
    u = 3.0 * rng.normal(size=(n, 7))
    lam = rng.normal(size=(n, 14))

    def big_f(xx, uu):
        return nominal.rk4_step(torch.tensor(xx[None]), torch.tensor(uu[None]), 0.02).numpy()[0]

    f, a, b = d.jacobians(x, u, np.zeros(0))
    hess = d.hessians(x, u, np.zeros(0), lam)
    h = 1e-6
    for k in range(n):
        np.testing.assert_allclose(f[k], big_f(x[k], u[k]), rtol=1e-12, atol=1e-12)
        z = np.concatenate([x[k], u[k]])
        jac_fd = np.empty((14, 21))
        grad = lambda zz: torch.autograd.functional.jacobian(  # noqa: E731
            lambda t: (torch.tensor(lam[k]) * nominal.rk4_step(t[None, :14], t[None, 14:], 0.02)[0]).sum(), torch.tensor(zz)
        ).numpy()
        hess_fd = np.empty((21, 21))
        for j in range(21):
            dz = np.zeros(21)
            dz[j] = h
            jac_fd[:, j] = (big_f((z + dz)[:14], (z + dz)[14:]) - big_f((z - dz)[:14], (z - dz)[14:])) / (2 * h)
            hess_fd[:, j] = (grad(z + dz) - grad(z - dz)) / (2 * h)
        np.testing.assert_allclose(np.concatenate([a[k], b[k]], 1), jac_fd, rtol=1e-6, atol=1e-6 * np.abs(jac_fd).max())
        np.testing.assert_allclose(hess[k], hess_fd, rtol=1e-5, atol=1e-6 * np.abs(hess_fd).max())
        np.testing.assert_allclose(hess[k], hess[k].T, atol=1e-10)


def test_chained_hessian_equals_casadi_hessian_of_the_map(nominal, rng):
    """The chained form (small models) against CasADi's AD of the whole RK4 map (large models' form)."""
    from whatmatters.sensitivity.derivatives import _direct_stage

    n = 4
    d = StageDerivatives(nominal, 0.02, n, compile=False)
    jac_ref, hess_ref = _direct_stage(nominal, 0.02)
    x = np.array([0.0, -0.4, 0.0, -2.4, 0.0, 2.2, -0.785] + [0.0] * 7) + 0.3 * rng.normal(size=(n, 14))
    u = 10.0 * rng.normal(size=(n, 7))
    lam = rng.normal(size=(n, 14))
    f, a, b = d.jacobians(x, u, np.zeros(0))
    hess = d.hessians(x, u, np.zeros(0), lam)
    assert d.form == "chained"  # the nominal model is small
    for k in range(n):
        f_ref, j_ref = (np.asarray(v) for v in jac_ref(x[k], u[k], np.zeros(0)))
        h_ref = np.asarray(hess_ref(x[k], u[k], np.zeros(0), lam[k]))
        np.testing.assert_allclose(f[k], f_ref.ravel(), rtol=1e-14, atol=1e-13)
        np.testing.assert_allclose(np.concatenate([a[k], b[k]], 1), j_ref, rtol=0, atol=1e-13 * np.abs(j_ref).max())
        np.testing.assert_allclose(hess[k], h_ref, rtol=0, atol=1e-12 * np.abs(h_ref).max())
