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
