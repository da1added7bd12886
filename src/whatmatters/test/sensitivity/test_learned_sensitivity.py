"""S_hat of the learned model: the fast path (structured Hessians, predictor-started re-solves)
against the reference path (torch autograd Hessians, re-solves from the operating point)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from whatmatters.dynamics.learned import LearnedDynamics
from whatmatters.dynamics.registry import resolve_model
from whatmatters.sensitivity.compute import SensitivityComputer, SensitivityConfig
from whatmatters.trajectory.fourier import sample_fourier_trajectory


def _model(which: str) -> LearnedDynamics:
    if which == "shipped":
        return resolve_model("base")
    torch.manual_seed(21)
    model = resolve_model("base")
    with torch.no_grad():  # the shipped architecture with other weights: the same compiled solver
        for p in model.residual.parameters():
            p.mul_(1.0 + 0.3 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("which", ["shipped", "random"])
def test_fast_path_equals_the_reference_path(which, mpc_config, params, rng):
    model = _model(which)
    fast = SensitivityComputer(model, mpc_config, params.torque_limits, SensitivityConfig(derivatives="structured", resolve_start="predictor"))
    ref = SensitivityComputer(model, mpc_config, params.torque_limits, SensitivityConfig(derivatives="torch", resolve_start="point", resolve_hessian="gauss_newton"))
    tr = sample_fourier_trajectory(5)
    for t in (0.5, 1.3):
        x0, x_ref = tr.state(t), tr.state(t + 0.02 * np.arange(13))
        x0[:7] += 0.01
        model.set_context(rng.normal(0.0, 0.5, model.context_dim))
        p = model.parameter_values()
        a, b = fast.compute(x0, x_ref, p), ref.compute(x0, x_ref, p)
        for field in ("s_hat", "du0_de", "dj_du0_eff"):
            want = getattr(b, field)
            assert np.abs(want).max() > 0.0
            assert np.abs(getattr(a, field) - want).max() <= 1e-8 * np.abs(want).max(), field
