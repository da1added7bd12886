"""Torch stage derivatives against the CasADi ones (an independent AD implementation)."""

from __future__ import annotations

import numpy as np
import pytest
from whatmatters.dynamics.registry import resolve_model
from whatmatters.sensitivity.derivatives import StageDerivatives
from whatmatters.sensitivity.torch_derivatives import TorchStageDerivatives

from ..conftest import random_states

N = 3
DT = 0.02


@pytest.fixture(scope="module")
def base():
    return resolve_model("base")


def _samples(params, model, rng, count):
    xs, us, ps, lams = [], [], [], []
    for _ in range(count):
        q, qd, tau = random_states(params, rng, N)
        xs.append(np.hstack([q, 0.5 * qd]))
        us.append(0.3 * tau)
        model.set_context(rng.normal(0.0, 0.5, model.context_dim))
        ps.append(model.parameter_values())
        lams.append(rng.normal(0.0, 1.0, (N, 14)))
    return np.stack(xs), np.stack(us), np.stack(ps), np.stack(lams)


def test_learned_model_matches_casadi(base, params, rng):
    xs, us, ps, lams = _samples(params, base, rng, 2)
    ref = StageDerivatives(base, DT, N, compile=False)
    fast = TorchStageDerivatives(base, DT, N)
    f, a, b = fast.jacobians_many(xs, us, ps)
    w = fast.hessians_many(xs, us, ps, lams)
    for i in range(2):
        f_r, a_r, b_r = ref.jacobians(xs[i], us[i], ps[i])
        w_r = ref.hessians(xs[i], us[i], ps[i], lams[i])
        assert np.max(np.abs(f[i] - f_r)) <= 1e-10
        assert np.max(np.abs(a[i] - a_r)) <= 1e-9 * max(1.0, np.abs(a_r).max())
        assert np.max(np.abs(b[i] - b_r)) <= 1e-9 * max(1.0, np.abs(b_r).max())
        assert np.abs(w_r).max() > 1e-3  # the second-order terms are not trivially zero
        assert np.max(np.abs(w[i] - w_r)) <= 1e-8 * np.abs(w_r).max()


def test_nominal_model_matches_casadi(nominal, params, rng):
    q, qd, tau = random_states(params, rng, N)
    x, u, lam = np.hstack([q, qd]), tau, rng.normal(0.0, 1.0, (N, 14))
    ref = StageDerivatives(nominal, DT, N, compile=False)
    fast = TorchStageDerivatives(nominal, DT, N)
    _, a_r, b_r = ref.jacobians(x, u, np.zeros(0))
    _, a, b = fast.jacobians(x, u, np.zeros(0))
    assert np.max(np.abs(a - a_r)) <= 1e-9 * np.abs(a_r).max()
    assert np.max(np.abs(b - b_r)) <= 1e-9 * np.abs(b_r).max()
    w_r = ref.hessians(x, u, np.zeros(0), lam)
    assert np.max(np.abs(fast.hessians(x, u, np.zeros(0), lam) - w_r)) <= 1e-8 * np.abs(w_r).max()


def test_batches_equal_single_samples(base, params, rng):
    xs, us, ps, lams = _samples(params, base, rng, 5)
    fast = TorchStageDerivatives(base, DT, N, chunk=2)
    w = fast.hessians_many(xs, us, ps, lams)
    _, a, _ = fast.jacobians_many(xs, us, ps)
    for i in range(5):
        assert np.max(np.abs(w[i] - fast.hessians(xs[i], us[i], ps[i], lams[i]))) <= 1e-10 * np.abs(w[i]).max()
        assert np.max(np.abs(a[i] - fast.jacobians(xs[i], us[i], ps[i])[1])) <= 1e-12 * np.abs(a[i]).max()


def test_foreign_weights_are_rejected(base, params, rng):
    xs, us, ps, _ = _samples(params, base, rng, 1)
    ps[0, 0] += 1.0
    with pytest.raises(ValueError, match="weights"):
        TorchStageDerivatives(base, DT, N).jacobians_many(xs, us, ps)
