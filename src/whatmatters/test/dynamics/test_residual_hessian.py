"""The residual's psi Hessian blocks against torch autograd and finite differences."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import whatmatters.dynamics.residual_hessian as residual_hessian
from whatmatters.codegen import CompileError
from whatmatters.dynamics.learned import LearnedConfig, LearnedDynamics
from whatmatters.dynamics.residual import ResidualConfig
from whatmatters.dynamics.registry import resolve_model
from whatmatters.dynamics.residual_hessian import ResidualHessian
from whatmatters.dynamics.residual_hessian_kernel import PsiKernel


def _random_weights(seed: int) -> LearnedDynamics:
    """A learned model whose networks are far from their small-output initialisation."""
    torch.manual_seed(seed)
    model = LearnedDynamics()
    with torch.no_grad():
        for p in model.residual.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return model


def _nodes(model: LearnedDynamics, rng: np.random.Generator, count: int) -> tuple[np.ndarray, ...]:
    q, qd, a, w = (rng.normal(0.0, 1.0, (count, 7)) for _ in range(4))
    z = rng.normal(0.0, 1.0, (count, model.context_dim))
    res = model.residual
    p = np.concatenate([np.broadcast_to(res.flat_parameters(), (count, res.n_weights())), z], axis=1)
    return p, z, q, qd, a, w


def _torch_hessian(model: LearnedDynamics, z: np.ndarray, q, qd, a, w) -> np.ndarray:
    """d2/d(q, qd, a)^2 of w' (H_res a + c_res + g_res + d_res qd) by autograd (21, 21)."""
    wt, zt = torch.as_tensor(w), torch.as_tensor(z[None])

    def psi(y: torch.Tensor) -> torch.Tensor:
        h, torque = model.residual.terms(y[None, :7], y[None, 7:14], zt)
        return (wt * ((h @ y[14:, None])[..., 0] + torque)).sum()

    return torch.autograd.functional.hessian(psi, torch.as_tensor(np.concatenate([q, qd, a]))).numpy()


@pytest.mark.parametrize("which", ["shipped", "random"])
def test_blocks_match_autograd(which, rng):
    model = resolve_model("base") if which == "shipped" else _random_weights(3)
    p, z, q, qd, a, w = _nodes(model, rng, 4)
    blocks = ResidualHessian(model.residual).blocks(p, q, qd, a, w)
    for b in range(4):
        ref = _torch_hessian(model, z[b], q[b], qd[b], a[b], w[b])
        assert np.abs(ref[7:, 14:]).max() == 0.0 and np.abs(ref[14:, 14:]).max() == 0.0  # the blocks said to be zero
        for got, want in zip(blocks, (ref[:7, :7], ref[:7, 7:14], ref[7:14, 7:14], ref[:7, 14:])):
            assert np.abs(want).max() > 1e-6
            assert np.abs(got[b] - want).max() <= 1e-12 * np.abs(want).max()


def test_qq_block_matches_finite_differences(rng):
    model = _random_weights(4)
    p, z, q, qd, a, w = _nodes(model, rng, 1)
    zt = torch.as_tensor(z)

    def grad_q(qq: np.ndarray) -> np.ndarray:  # d psi / dq by autograd (first order only)
        qt = torch.as_tensor(qq[None]).requires_grad_(True)
        h, torque = model.residual.terms(qt, torch.as_tensor(qd), zt)
        psi = (torch.as_tensor(w) * ((h @ torch.as_tensor(a)[..., None])[..., 0] + torque)).sum()
        return torch.autograd.grad(psi, qt)[0][0].numpy()

    step = 1e-6
    fd = np.stack([(grad_q(q[0] + step * e) - grad_q(q[0] - step * e)) / (2 * step) for e in np.eye(7)])
    got = ResidualHessian(model.residual).blocks(p, q, qd, a, w)[0][0]
    assert np.abs(got - fd).max() <= 1e-6 * np.abs(fd).max()


def test_distinct_weight_vectors_in_one_batch(rng):
    one, two = _random_weights(5), _random_weights(6)
    p1, _, q, qd, a, w = _nodes(one, rng, 3)
    p2 = p1.copy()
    p2[1, : one.residual.n_weights()] = two.residual.flat_parameters()
    mixed = ResidualHessian(one.residual).blocks(p2, q, qd, a, w)
    alone = ResidualHessian(one.residual).blocks(p2[1:2], q[1:2], qd[1:2], a[1:2], w[1:2])
    first = ResidualHessian(one.residual).blocks(p1, q, qd, a, w)
    for m, s, f in zip(mixed, alone, first):
        assert np.array_equal(m[1], s[0])
        assert np.array_equal(m[[0, 2]], f[[0, 2]])
        assert np.abs(m[1] - f[1]).max() > 1e-6


def test_new_weights_are_read_again_after_a_call_with_others(rng):
    shipped, other = resolve_model("base"), _random_weights(5)
    p1, _, q, qd, a, w = _nodes(shipped, rng, 3)
    p2 = np.concatenate([np.broadcast_to(other.residual.flat_parameters(), (3, other.residual.n_weights())), p1[:, -shipped.context_dim :]], axis=1)
    hess = ResidualHessian(shipped.residual)
    first = hess.blocks(p1, q, qd, a, w)
    p1[:] = p2  # the caller reuses its buffer for other weights
    for got, want in zip(hess.blocks(p2, q, qd, a, w), ResidualHessian(shipped.residual).blocks(p2, q, qd, a, w)):
        np.testing.assert_array_equal(got, want)
    p1_again = np.concatenate([np.broadcast_to(shipped.residual.flat_parameters(), (3, shipped.residual.n_weights())), p2[:, -shipped.context_dim :]], axis=1)
    for got, want in zip(hess.blocks(p1_again, q, qd, a, w), first):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("hidden", [(30, 20), (12,), (9, 8, 7)])
def test_compiled_blocks_equal_numpy(hidden, rng):
    """The C kernel against the numpy form, the architecture from the config (depth, widths, context)."""
    torch.manual_seed(8)
    model = LearnedDynamics(LearnedConfig(ResidualConfig(hidden=hidden, context_dim=4 if hidden != (30, 20) else 10, damping=hidden == (30, 20))))
    with torch.no_grad():
        for p in model.residual.parameters():
            p.add_(0.5 * torch.randn_like(p))
    p, _, q, qd, a, w = _nodes(model, rng, 6)
    compiled = ResidualHessian(model.residual)
    got = compiled.blocks(p, q, qd, a, w)
    assert compiled._compiled_kernel() is not None  # the kernel ran, not the fallback
    for g, want in zip(got, ResidualHessian(model.residual, compiled=False).blocks(p, q, qd, a, w)):
        assert np.abs(want).max() > 1e-6
        assert np.abs(g - want).max() <= 1e-13 * np.abs(want).max()


def test_without_a_compiler_numpy_serves(monkeypatch, caplog, rng):
    model = _random_weights(9)
    p, _, q, qd, a, w = _nodes(model, rng, 2)

    def no_gcc(residual, flags=None):  # type: ignore[no-untyped-def]
        raise CompileError("gcc is not installed")

    monkeypatch.setattr(residual_hessian, "PsiKernel", no_gcc)
    hess = ResidualHessian(model.residual)
    with caplog.at_level(logging.WARNING):
        got = hess.blocks(p, q, qd, a, w)
    assert "runs in numpy" in caplog.text and not hess.compiled
    for g, want in zip(got, ResidualHessian(model.residual, compiled=False).blocks(p, q, qd, a, w)):
        np.testing.assert_array_equal(g, want)


def test_kernel_refuses_a_short_weight_vector(rng):
    """The C kernel reads the weights by offset: a short vector is refused, named, before any C runs."""
    model = _random_weights(2)
    _, z, q, qd, a, w = _nodes(model, rng, 1)
    kernel = PsiKernel(model.residual)
    with pytest.raises(ValueError, match="weight vector"):
        kernel.blocks(model.residual.flat_parameters()[:100], z, q, qd, a, w)
