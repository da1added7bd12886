"""OcpConstraints: validation, the solver key, the penalties' derivatives against finite differences."""

from __future__ import annotations

import numpy as np
import pytest
from whatmatters.dynamics.check import central_difference_jacobian
from whatmatters.errors import ConfigError
from whatmatters.mpc.constraints import OcpConstraints, as_constraints

CONS = OcpConstraints(
    u_lower=np.array([-1.0, -2.0]),
    u_upper=np.array([3.0, 2.0]),
    x_index=(0, 2),
    x_lower=np.array([-0.5, -0.1]),
    x_upper=np.array([0.5, 0.1]),
    g_c=np.array([[1.0, 0.0, -1.0], [0.0, 2.0, 0.0]]),
    g_d=np.array([[0.5, 0.0], [0.0, -1.0]]),
    g_lower=np.array([-0.2, -1.0]),
    g_upper=np.array([0.2, 1.0]),
    penalty=50.0,
)


def _penalty(x: np.ndarray, u: np.ndarray, scale: float) -> float:
    """The penalty written out directly: sum over stages of scale * penalty / 2 * violation^2."""
    n, total = u.shape[0], 0.0
    for k in range(n + 1):
        w = CONS.penalty * (scale if k < n else 1.0)
        if k > 0:
            y = x[k, list(CONS.x_index)]
            total += 0.5 * w * np.sum(np.maximum(0, y - CONS.x_upper) ** 2 + np.maximum(0, CONS.x_lower - y) ** 2)
        if k < n:
            g = CONS.g_c @ x[k] + CONS.g_d @ u[k]
            total += 0.5 * w * np.sum(np.maximum(0, g - CONS.g_upper) ** 2 + np.maximum(0, CONS.g_lower - g) ** 2)
    return total


def test_penalty_derivatives_match_finite_differences():
    rng = np.random.default_rng(5)
    n, nx, nu, scale = 4, 3, 2, 0.02
    x, u = rng.uniform(-1, 1, (n + 1, nx)), rng.uniform(-1, 1, (n, nu))
    grad, hess, hess_n = CONS.penalty_terms(x, u, scale)
    assert np.abs(grad).max() > 0 and np.abs(hess).max() > 0 and np.abs(hess_n).max() > 0  # bounds violated
    flat = lambda z: _penalty(z[: x.size].reshape(x.shape), z[x.size :].reshape(u.shape), scale)  # noqa: E731
    z = np.concatenate([x.ravel(), u.ravel()])
    fd_grad = central_difference_jacobian(lambda v: np.array([flat(v)]), z, 1e-6)[0]
    np.testing.assert_allclose(grad, fd_grad[: x.size].reshape(x.shape), atol=1e-6)
    fd_hess = central_difference_jacobian(lambda v: central_difference_jacobian(lambda w: np.array([flat(w)]), v, 1e-4)[0], z, 1e-4)
    for k in range(n):
        idx = list(range(k * nx, (k + 1) * nx)) + list(range(x.size + k * nu, x.size + (k + 1) * nu))
        np.testing.assert_allclose(hess[k], fd_hess[np.ix_(idx, idx)], atol=1e-3)
    last = list(range(n * nx, (n + 1) * nx))
    np.testing.assert_allclose(hess_n, fd_hess[np.ix_(last, last)], atol=1e-3)


def test_nothing_violated_gives_zero_terms():
    x, u = np.zeros((4, 3)), np.zeros((3, 2))
    grad, hess, hess_n = CONS.penalty_terms(x, u, 0.1)
    assert not grad.any() and not hess.any() and not hess_n.any()


def test_the_fixed_initial_state_is_not_penalised():
    x, u = np.zeros((4, 3)), np.zeros((3, 2))
    x[0, 0] = 5.0  # far outside its soft bound, and x_1 = 0 inside; only the linear constraint sees x_0
    grad = CONS.penalty_terms(x, u, 1.0)[0]
    np.testing.assert_allclose(grad[0], CONS.penalty * (5.0 - 0.2) * CONS.g_c[0])


def test_symmetric_bounds_are_run_time_data():
    cons = as_constraints(np.array([2.0, 3.0]))
    np.testing.assert_array_equal(cons.u_lower, [-2.0, -3.0])
    assert cons.key() is None and CONS.key() is not None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"u_lower": [1.0], "u_upper": [0.0]}, "input bounds"),
        ({"u_lower": [0.0], "u_upper": [1.0], "x_index": (0,), "x_lower": [], "x_upper": []}, "x_index"),
        ({"u_lower": [0.0], "u_upper": [1.0], "g_lower": [0.0], "g_upper": [1.0]}, "g_c and g_d"),
        ({"u_lower": [0.0], "u_upper": [1.0], "penalty": 0.0}, "penalty"),
    ],
)
def test_bad_constraints_are_named(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        OcpConstraints(**kwargs)


def test_dimensions_are_checked_against_the_model():
    with pytest.raises(ConfigError, match="3 states|x_index"):
        OcpConstraints(np.zeros(2), np.ones(2), x_index=(3,), x_lower=[0.0], x_upper=[1.0]).check_dims(3, 2)
    with pytest.raises(ConfigError, match="2 input bounds"):
        CONS.check_dims(3, 1)
