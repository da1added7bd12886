"""The learned model's structured stage Hessians against torch autograd of the whole RK4 map."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from whatmatters.dynamics.learned import LearnedDynamics
from whatmatters.dynamics.registry import resolve_model
from whatmatters.sensitivity.learned_derivatives import LearnedStageDerivatives
from whatmatters.sensitivity.torch_derivatives import TorchStageDerivatives

from ..conftest import random_states

N = 3
DT = 0.02


def _model(which: str) -> LearnedDynamics:
    if which == "shipped":
        return resolve_model("base")
    torch.manual_seed(11)
    model = LearnedDynamics()
    with torch.no_grad():
        for p in model.residual.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return model


def _samples(model, params, rng, count):
    xs, us, ps, lams = [], [], [], []
    for _ in range(count):
        q, qd, tau = random_states(params, rng, N)
        xs.append(np.hstack([q, 0.5 * qd]))
        us.append(0.3 * tau)
        ps.append(np.concatenate([model.residual.flat_parameters(), rng.normal(0.0, 0.5, model.context_dim)]))
        lams.append(rng.normal(0.0, 50.0, (N, 14)))
    return np.stack(xs), np.stack(us), np.stack(ps), np.stack(lams)


@pytest.mark.parametrize("which", ["shipped", "random"])
def test_matches_torch_autograd(which, params, rng):
    model = _model(which)
    xs, us, ps, lams = _samples(model, params, rng, 3)
    want = TorchStageDerivatives(model, DT, N).hessians_many(xs, us, ps, lams)
    got = LearnedStageDerivatives(model, DT, N).hessians_many(xs, us, ps, lams)
    assert np.abs(want).max() > 1e-3
    assert np.abs(got - want).max() <= 1e-10 * np.abs(want).max()


def test_one_sample_equals_its_batch(params, rng):
    model = _model("random")
    xs, us, ps, lams = _samples(model, params, rng, 3)
    fast = LearnedStageDerivatives(model, DT, N)
    batch = fast.hessians_many(xs, us, ps, lams)
    for i in range(3):
        assert np.abs(fast.hessians(xs[i], us[i], ps[i], lams[i]) - batch[i]).max() <= 1e-12 * np.abs(batch[i]).max()
