"""Tests of the learned model: both forms agree, structure holds, checkpoints round-trip."""

from __future__ import annotations

import casadi as ca
import numpy as np
import pytest
import torch
from whatmatters.dynamics.base import rk4
from whatmatters.dynamics.learned import CheckpointError, LearnedConfig, LearnedDynamics
from whatmatters.dynamics.residual import ResidualConfig


@pytest.fixture(scope="module")
def model() -> LearnedDynamics:
    torch.manual_seed(3)
    m = LearnedDynamics()
    with torch.no_grad():  # a model far from its initialisation, so every term matters
        for p in m.residual.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return m


def _batch(rng, n=20, ctx=10):
    q = torch.tensor(rng.uniform(-2.5, 2.5, (n, 7)))
    qd = torch.tensor(rng.normal(size=(n, 7)))
    tau = torch.tensor(5.0 * rng.normal(size=(n, 7)))
    z = torch.tensor(rng.normal(size=(n, ctx)))
    return q, qd, tau, z


def test_torch_and_casadi_forms_agree(model, rng):
    q, qd, tau, z = _batch(rng)
    qdd = model.forward_dynamics(q, qd, tau, z).detach().numpy()
    qs, qds, ts = ca.SX.sym("q", 7), ca.SX.sym("qd", 7), ca.SX.sym("t", 7)
    ps = ca.SX.sym("p", model.n_params)
    fn = ca.Function("fd", [qs, qds, ts, ps], [model.forward_dynamics(qs, qds, ts, ps)])
    weights = model.residual.flat_parameters()
    for i in range(len(q)):
        ref = np.array(fn(q[i].numpy(), qd[i].numpy(), tau[i].numpy(), np.concatenate([weights, z[i].numpy()]))).ravel()
        np.testing.assert_allclose(qdd[i], ref, rtol=1e-8, atol=1e-8 * np.abs(ref).max())


def test_residual_torque_terms_agree_with_autograd(model, rng):
    """The hand-propagated Jacobians equal torch autograd's (a third derivation)."""
    q, qd, _, z = _batch(rng, n=3)
    res = model.residual
    for i in range(3):
        qi = q[i].clone().requires_grad_(True)

        def kinetic(qq):
            h, _ = res.terms(qq[None], qd[i : i + 1], z[i : i + 1])
            return 0.5 * qd[i] @ h[0] @ qd[i]

        def mass(qq):
            return res.terms(qq[None], qd[i : i + 1], z[i : i + 1])[0][0]

        h_dot = torch.autograd.functional.jvp(mass, qi, qd[i])[1]
        grad_t = torch.autograd.grad(kinetic(qi), qi)[0]
        c_res = h_dot @ qd[i] - grad_t
        _, torque = res.terms(q[i : i + 1], qd[i : i + 1], z[i : i + 1])
        # remove the potential and damping parts to isolate c_res
        zero_qd = torch.zeros_like(qd[i : i + 1])
        _, g_only = res.terms(q[i : i + 1], zero_qd, z[i : i + 1])
        damp = torch.nn.functional.softplus(res.damping_raw) * qd[i]
        np.testing.assert_allclose((torque[0] - g_only[0] - damp).detach().numpy(), c_res.detach().numpy(), rtol=1e-9, atol=1e-10)


def test_total_inertia_is_symmetric_positive_definite(model, rng):
    q, qd, _, z = _batch(rng, n=50)
    h_res, _ = model.residual.terms(q, qd, z)
    total = (model.nominal.mass_matrix(q) + h_res).detach().numpy()
    np.testing.assert_allclose(total, np.swapaxes(total, 1, 2), atol=1e-12)
    assert np.linalg.eigvalsh(h_res.detach().numpy()).min() > 0.0
    assert np.linalg.eigvalsh(total).min() > 0.0


def test_lagrangian_structure_conserves_energy():
    """tau = g (nominal and learned potential cancelled), no damping: energy is conserved.

    Without its damping term the model is a Lagrangian system; under
    tau = g_nom(q) + g_res(q) the flow conserves E = 1/2 qd' (M_nom + H_res) qd
    only if c_res is the Coriolis term the Lagrangian implies. E then drifts by
    RK4's truncation error alone, which falls as dt^4 (a wrong c_res would
    leave an O(1) drift that does not shrink with the step).
    """
    torch.manual_seed(0)
    m = LearnedDynamics(LearnedConfig(residual=ResidualConfig(damping=False)))
    with torch.no_grad():
        for p in m.residual.parameters():
            p.add_(0.3 * torch.randn_like(p))
    z = torch.zeros(1, 10, dtype=torch.float64)

    def energy(x: torch.Tensor) -> float:
        q, qd = x[:, :7], x[:, 7:]
        h_res, _ = m.residual.terms(q, qd, z)
        mass = m.nominal.mass_matrix(q) + h_res
        return float(0.5 * qd[0] @ mass[0] @ qd[0])

    def gravity(q: torch.Tensor) -> torch.Tensor:
        _, g_res = m.residual.terms(q, torch.zeros_like(q), z)
        return m.nominal.gravity(q) + g_res

    def field(x: torch.Tensor) -> torch.Tensor:  # tau = g(q) applied continuously
        q, qd = x[:, :7], x[:, 7:]
        return torch.cat([qd, m.forward_dynamics(q, qd, gravity(q), z)], -1)

    def run(dt: float, steps: int) -> float:
        x = torch.tensor([[0.1, -0.4, 0.2, -2.2, 0.1, 2.0, -0.7, 0.8, -0.5, 0.6, 0.4, -0.9, 0.7, 1.0]], dtype=torch.float64)
        e0 = energy(x)
        for _ in range(steps):
            x = rk4(field, x, dt)
        return abs(energy(x) - e0) / e0

    with torch.no_grad():
        coarse, fine = run(0.01, 25), run(0.005, 50)  # the same 0.25 s
    assert fine < 1e-5
    assert coarse / fine > 10.0  # RK4's O(dt^4) drift: conserved in the limit (2^4 = 16)


def test_checkpoint_round_trips_exactly(model, tmp_path, rng):
    model.set_context(rng.normal(size=10))
    path = tmp_path / "m.pt"
    model.save(path, note="test")
    back = LearnedDynamics.load(path)
    np.testing.assert_array_equal(back.residual.flat_parameters(), model.residual.flat_parameters())
    for (ka, a), (kb, b) in zip(model.state_dict().items(), back.state_dict().items()):
        assert ka == kb and torch.equal(a, b)
    q, qd, tau, z = _batch(rng, n=4)
    assert torch.equal(model.forward_dynamics(q, qd, tau, z), back.forward_dynamics(q, qd, tau, z))
    assert back.metadata["note"] == "test"
    assert not list(tmp_path.glob(".m.pt.*"))  # no temporary file left behind


def test_corrupt_checkpoint_is_named(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt"):
        LearnedDynamics.load(bad)
    with pytest.raises(CheckpointError, match="missing.pt"):
        LearnedDynamics.load(tmp_path / "missing.pt")


def test_rollout_matches_repeated_rk4(model, rng):
    q, qd, tau, z = _batch(rng, n=3)
    x0 = torch.cat([q, qd], -1)
    u = tau.unsqueeze(1).repeat(1, 4, 1)
    roll = model.rollout(x0, u, z)
    x = x0
    for k in range(4):
        x = model.rk4_step(x, u[:, k], 0.02, z)
        assert torch.equal(roll[:, k], x)
