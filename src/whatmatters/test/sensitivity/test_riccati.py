"""The compiled Riccati pass against the numpy reference (:func:`first_input_sensitivity`)."""

from __future__ import annotations

import numpy as np
import pytest
from whatmatters.sensitivity.kkt import first_input_sensitivity
from whatmatters.sensitivity.riccati import CompiledRiccati

N, NX, NU = 12, 14, 7


@pytest.fixture(scope="module")
def riccati():
    return CompiledRiccati(NX, NU, N)


def _problem(rng: np.random.Generator, curvature: float = 0.01):
    """A stable-ish LQ problem with symmetric second-order terms, shapes as the Panda OCP's."""
    a = np.eye(NX) + 0.05 * rng.normal(size=(N, NX, NX))
    b = 0.1 * rng.normal(size=(N, NX, NU))
    h = curvature * rng.normal(size=(N, NX + NU, NX + NU))
    q_w = np.diag(rng.uniform(1.0, 10.0, NX))
    return a, b, h + h.transpose(0, 2, 1), q_w, np.diag(rng.uniform(0.1, 1.0, NU)), 3.0 * q_w


@pytest.mark.parametrize("active_fraction", [0.0, 0.3])
def test_matches_the_numpy_pass(riccati, rng, active_fraction):
    a, b, h, q_w, r_w, qn_w = _problem(rng)
    active = rng.uniform(size=(N, NU)) < active_fraction
    active[0, 2] = active_fraction > 0  # u_0 itself partly at its bound in the second case
    ref = first_input_sensitivity(a, b, h, q_w, r_w, qn_w, active)
    got = riccati(a, b, h, q_w, r_w, qn_w, active)
    assert np.array_equal(got.free0, ref.free0)
    np.testing.assert_allclose(got.du0_de, ref.du0_de, rtol=0, atol=1e-12 * np.abs(ref.du0_de).max())
    np.testing.assert_allclose(got.quu0, ref.quu0, rtol=1e-13, atol=0)
    assert np.all(got.du0_de[~got.free0] == 0.0)


@pytest.mark.parametrize("active_fraction", [0.0, 0.3])
def test_fixed_input_predictor_matches_the_numpy_pass(riccati, rng, active_fraction):
    a, b, h, q_w, r_w, qn_w = _problem(rng)
    active = rng.uniform(size=(N, NU)) < active_fraction
    delta = rng.normal(0.0, 0.5, (2, NU))
    ref = first_input_sensitivity(a, b, h, q_w, r_w, qn_w, active, delta)
    got = riccati(a, b, h, q_w, r_w, qn_w, active, delta)
    for name in ("fixed_dx", "fixed_du"):
        want = getattr(ref, name)
        np.testing.assert_allclose(getattr(got, name), want, rtol=0, atol=1e-12 * np.abs(want).max(), err_msg=name)
    np.testing.assert_array_equal(got.fixed_du[:, 0], delta)
    assert np.all(got.fixed_du[:, 1:][:, active[1:]] == 0.0)  # the other stages' active inputs stay put


def test_all_of_u0_active_gives_zero(riccati, rng):
    a, b, h, q_w, r_w, qn_w = _problem(rng)
    active = np.zeros((N, NU), dtype=bool)
    active[0] = True
    got = riccati(a, b, h, q_w, r_w, qn_w, active)
    assert not got.free0.any() and np.all(got.du0_de == 0.0)


def test_indefinite_reduced_hessian_raises(riccati, rng):
    a, b, h, q_w, r_w, qn_w = _problem(rng)
    h[5, NX + 1, NX + 1] = -1e6  # stage 5's Quu loses definiteness
    with pytest.raises(np.linalg.LinAlgError):
        first_input_sensitivity(a, b, h, q_w, r_w, qn_w, np.zeros((N, NU), dtype=bool))
    with pytest.raises(np.linalg.LinAlgError, match="not positive definite"):
        riccati(a, b, h, q_w, r_w, qn_w, np.zeros((N, NU), dtype=bool))


def test_casadi_vm_fallback_gives_the_same_numbers(riccati, rng):
    """Without a C compiler the pass runs in CasADi's VM (the fallback path)."""
    a, b, h, q_w, r_w, qn_w = _problem(rng)
    active = rng.uniform(size=(N, NU)) < 0.2
    vm = CompiledRiccati(NX, NU, N, compile=False)
    got, ref = vm(a, b, h, q_w, r_w, qn_w, active), riccati(a, b, h, q_w, r_w, qn_w, active)
    np.testing.assert_allclose(got.du0_de, ref.du0_de, rtol=0, atol=1e-12 * np.abs(ref.du0_de).max())


def _dense_unconstrained_du0_de(a, b, q_w, r_w, qn_w):
    """du0/de of the LQ problem without bounds from its dense form (an independent truth):
    x = Su u + Se e with x_0 = 0, min 1/2 x'Qbar x + 1/2 u'Rbar u  ->  du/de = -(Su'Qbar Su + Rbar)^-1 Su'Qbar Se."""
    su, se = np.zeros((N * NX, N * NU)), np.zeros((N * NX, N * NX))
    for k in range(1, N + 1):  # row block k-1 holds x_k
        for j in range(k):  # u_j and e_{j+1} reach x_k through A_{k-1} ... A_{j+1}
            phi = np.eye(NX)
            for m in range(j + 1, k):
                phi = a[m] @ phi
            su[(k - 1) * NX : k * NX, j * NU : (j + 1) * NU] = phi @ b[j]
            se[(k - 1) * NX : k * NX, j * NX : (j + 1) * NX] = phi
    qbar = np.zeros((N * NX, N * NX))
    for k in range(1, N + 1):
        qbar[(k - 1) * NX : k * NX, (k - 1) * NX : k * NX] = qn_w if k == N else q_w
    rbar = np.kron(np.eye(N), r_w)
    du_de = -np.linalg.solve(su.T @ qbar @ su + rbar, su.T @ qbar @ se)
    return du_de[:NU].reshape(NU, N, NX)


@pytest.mark.parametrize("backend", ["compiled", "numpy"])
def test_released_rows_equal_the_dense_problem_without_bounds(riccati, rng, backend):
    """Linear-quadratic case: with u_0's bounds released (no other stage active) the pass is the
    unconstrained problem's, whose du0/de the dense KKT solve gives in closed form."""
    from whatmatters.sensitivity.kkt import released_du0_de

    a, b, _, q_w, r_w, qn_w = _problem(rng)
    h = np.zeros((N, NX + NU, NX + NU))
    active = np.zeros((N, NU), dtype=bool)
    active[0, [1, 5]] = True  # two joints of u_0 at their bounds
    pass_ = riccati if backend == "compiled" else first_input_sensitivity
    held = pass_(a, b, h, q_w, r_w, qn_w, active).du0_de
    assert np.all(held[[1, 5]] == 0.0)
    got = released_du0_de(pass_, a, b, h, q_w, r_w, qn_w, active)
    want = _dense_unconstrained_du0_de(a, b, q_w, r_w, qn_w)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9 * np.abs(want).max())
    assert np.abs(got[[1, 5]]).max() > 0.01 * np.abs(want).max()  # the bound rows are no longer zero
    np.testing.assert_array_equal(released_du0_de(pass_, a, b, h, q_w, r_w, qn_w, np.zeros_like(active)), pass_(a, b, h, q_w, r_w, qn_w, np.zeros_like(active)).du0_de)
