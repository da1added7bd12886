"""The learned model inside acados: one compiled solver for every checkpoint and context."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from whatmatters.dynamics.learned import LearnedDynamics
from whatmatters.dynamics.registry import resolve_model
from whatmatters.eval.evaluate import Evaluator
from whatmatters.mpc.config import MpcConfig
from whatmatters.mpc.ocp import formulation_key
from whatmatters.mpc.solver import AcadosMpcSolver, MpcBuildError
from whatmatters.sim.simulator import SimConfig
from whatmatters.trajectory.fourier import FourierConfig

Q_HOME = np.array([0.0, -0.4, 0.0, -2.4, 0.0, 2.2, -0.785])


@pytest.fixture(scope="module")
def base() -> LearnedDynamics:
    return resolve_model("base")


def _rk4_learned(model: LearnedDynamics, x: np.ndarray, u: np.ndarray, z: np.ndarray) -> np.ndarray:
    xt = torch.tensor(x[None])
    return model.rk4_step(xt, torch.tensor(u[None]), 0.02, torch.tensor(z[None])).detach().numpy()[0]


def test_checkpoints_and_contexts_are_runtime_parameters(base, mpc_config, params, rng):
    other = LearnedDynamics()
    gen = torch.Generator().manual_seed(0)  # seeded: some perturbations give a model the QP cannot solve
    with torch.no_grad():
        for p in other.residual.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    solver = AcadosMpcSolver(base, mpc_config, params.torque_limits)
    assert formulation_key(other, mpc_config, params.torque_limits) == solver.key
    x0 = np.concatenate([Q_HOME + 0.03, np.zeros(7)])
    x_ref = np.tile(np.concatenate([Q_HOME, np.zeros(7)]), (solver.n + 1, 1))
    solver.set_reference(x_ref)
    preds = []
    for model in (base, other):
        z = rng.normal(size=10)
        model.set_context(z)
        solver.set_parameters(model.parameter_values())
        for _ in range(10):
            res = solver.solve(x0)
        assert res.ok
        for k in (0, 5, 11):
            np.testing.assert_allclose(res.x[k + 1], _rk4_learned(model, res.x[k], res.u[k], z), rtol=1e-8, atol=1e-8)
        preds.append(res.x)
    assert np.abs(preds[0] - preds[1]).max() > 1e-3


def test_base_model_tracks_better_than_nominal():
    cfgs = (MpcConfig.from_yaml(), SimConfig.from_yaml(), FourierConfig.from_yaml())
    nominal = Evaluator("nominal", *cfgs).episode(2001, 4.0)
    learned = Evaluator("base", *cfgs).episode(2001, 4.0)
    assert learned.fallbacks == 0
    assert learned.j_track < 0.7 * nominal.j_track


def test_swap_model_uses_the_new_weights_without_a_rebuild(base, mpc_config, params, nominal):
    other = resolve_model("base")
    gen = torch.Generator().manual_seed(0)  # seeded: some perturbations give a model the QP cannot solve
    with torch.no_grad():
        for p in other.residual.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    solver = AcadosMpcSolver(resolve_model("base"), mpc_config, params.torque_limits)
    solver.swap_model(other)
    assert solver.model is other
    x0 = np.concatenate([Q_HOME + 0.03, np.zeros(7)])
    solver.set_reference(np.tile(np.concatenate([Q_HOME, np.zeros(7)]), (solver.n + 1, 1)))
    for _ in range(10):
        res = solver.solve(x0)
    assert res.ok
    np.testing.assert_allclose(res.x[1], _rk4_learned(other, res.x[0], res.u[0], other.context), rtol=1e-8, atol=1e-8)
    with pytest.raises(MpcBuildError, match="another formulation"):
        solver.swap_model(nominal)


def test_the_kernels_are_part_of_the_formulation(base, mpc_config, params, monkeypatch):
    """Generated code that calls other kernels (another version or architecture) is another solver."""
    key = formulation_key(base, mpc_config, params.torque_limits)
    assert base.code_identity()  # the learned model's Jacobian calls kernels
    monkeypatch.setattr(LearnedDynamics, "code_identity", lambda self: "wm_res_l_other wm_res_v_other")
    assert formulation_key(base, mpc_config, params.torque_limits) != key
