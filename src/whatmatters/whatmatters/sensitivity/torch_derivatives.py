"""Stage derivatives from a model's torch form (batched autograd).

The same quantities as :class:`whatmatters.sensitivity.derivatives.StageDerivatives`
(``F``, ``A = dF/dx``, ``B = dF/du`` and ``W = d^2 (lambda' F) / d(x, u)^2``
per stage, RK4 over dt), for models whose CasADi Hessian is too large to
compile (the learned model: its exact Hessian runs ~4 s per sample in
CasADi's VM). Torch computes them in two reverse passes on a replicated
batch:

* Jacobian: each stage is repeated ``nx`` times; copy ``i`` back-propagates
  output ``F_i``, so one backward pass gives every row of ``[A B]``.
* Hessian: the gradient ``g = d(lambda' F)/dz`` is built once with
  ``create_graph``; its backward pass runs vectorized (``is_grads_batched``,
  torch's vmap) over the ``nz = nx + nu`` unit seeds, one per row of W
  (~35 % faster than repeating every stage ``nz`` times).

The model's runtime parameter vector ``p`` (weights followed by the context,
the CasADi form's layout) is mapped onto the torch form by ``torch_params``:
for a learned model the weights in ``p`` must be the module's own (checked)
and the context is passed as the torch form's ``params``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from whatmatters.dynamics.base import DynamicsModel

__all__ = ["TorchStageDerivatives"]


def _default_torch_params(model: DynamicsModel) -> Callable[[np.ndarray], torch.Tensor | None]:
    """Maps CasADi parameter vectors (S, n_params) to the torch form's ``params`` (S, ...)."""
    n_ctx = int(getattr(model, "context_dim", 0))
    if model.n_params == 0:
        return lambda p: None
    flat = getattr(getattr(model, "residual", None), "flat_parameters", None)
    if flat is None or n_ctx == 0:
        raise TypeError(f"{type(model).__name__} has runtime parameters but no known torch layout; pass torch_params")

    def convert(p: np.ndarray) -> torch.Tensor:
        own = flat()
        nw = own.shape[0]
        if p.shape[1] != model.n_params or not np.array_equal(p[:, :nw], np.broadcast_to(own, (p.shape[0], nw))):
            raise ValueError("the parameter vectors' weights are not the torch model's own; load the checkpoint into the model first")
        return torch.as_tensor(p[:, nw:], dtype=torch.float64)

    return convert


class TorchStageDerivatives:
    """``F``, ``A``, ``B`` and the multiplier-weighted Hessian of many stages, via torch autograd.

    Stages of many samples are evaluated in one batch (chunks of ``chunk``
    samples): the per-operation overhead of the small rigid-body operations
    dominates otherwise; the autograd graph's memory grows linearly with the chunk.

    Args:
        model: Dynamics model with a float64 torch form (``rk4_step`` on tensors).
        dt: Step of the RK4 map, s.
        horizon: Number of stages N.
        torch_params: Maps CasADi parameter vectors (S, n_params) to the torch
            form's ``params`` argument, one row per sample (default: weights
            checked against the model's own, context passed).
        chunk: Samples per batch.
    """

    def __init__(
        self,
        model: DynamicsModel,
        dt: float,
        horizon: int,
        torch_params: Callable[[np.ndarray], torch.Tensor | None] | None = None,
        chunk: int = 16,
    ) -> None:
        self.model, self.dt, self.n, self.chunk = model, dt, horizon, chunk
        self.nx, self.nu = model.nx, model.nu
        self.torch_params = torch_params or _default_torch_params(model)

    def _step(self, z: torch.Tensor, params: torch.Tensor | None) -> torch.Tensor:
        """RK4 map on a batch of stacked (x, u), (B, nz) -> (B, nx), params (B, ...) or None."""
        return self.model.rk4_step(z[:, : self.nx], z[:, self.nx :], self.dt, params)

    def _rows(self, x: np.ndarray, u: np.ndarray, p: np.ndarray, copies: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Stage rows (S * N * copies, nz) and their params, copy-major within a stage."""
        s, n = x.shape[0], x.shape[1]
        z = torch.as_tensor(np.concatenate([x, u], axis=2).reshape(s * n, -1), dtype=torch.float64)
        params = self.torch_params(np.asarray(p, dtype=float).reshape(s, -1))
        if params is not None:
            params = params.repeat_interleave(n * copies, dim=0)
        return z.repeat_interleave(copies, dim=0).requires_grad_(True), params

    def jacobians_many(self, x: np.ndarray, u: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """F (S, N, nx), A (S, N, nx, nx), B (S, N, nx, nu) at x (S, N, nx), u (S, N, nu), p (S, n_params)."""
        out = [self._jac_chunk(x[i : i + self.chunk], u[i : i + self.chunk], p[i : i + self.chunk]) for i in range(0, x.shape[0], self.chunk)]
        return tuple(np.concatenate([o[j] for o in out]) for j in range(3))  # type: ignore[return-value]

    def _jac_chunk(self, x: np.ndarray, u: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s, n, nx = x.shape[0], x.shape[1], self.nx
        z, params = self._rows(x, u, p, nx)
        with torch.enable_grad():
            f = self._step(z, params)
            pick = torch.eye(nx, dtype=torch.float64).repeat(s * n, 1)
            (jac,) = torch.autograd.grad((f * pick).sum(), z)
        jac_np = jac.detach().numpy().reshape(s, n, nx, -1)
        f_np = f.detach().numpy()[::nx].reshape(s, n, nx)
        return f_np, jac_np[..., :nx], jac_np[..., nx:]

    def hessians_many(self, x: np.ndarray, u: np.ndarray, p: np.ndarray, lam: np.ndarray) -> np.ndarray:
        """W (S, N, nz, nz) with lambda_1..lambda_N per sample (S, N, nx)."""
        return np.concatenate(
            [self._hess_chunk(x[i : i + self.chunk], u[i : i + self.chunk], p[i : i + self.chunk], lam[i : i + self.chunk]) for i in range(0, x.shape[0], self.chunk)]
        )

    def _hess_chunk(self, x: np.ndarray, u: np.ndarray, p: np.ndarray, lam: np.ndarray) -> np.ndarray:
        s, n, nz = x.shape[0], x.shape[1], self.nx + self.nu
        z, params = self._rows(x, u, p, 1)
        lam_t = torch.as_tensor(lam.reshape(s * n, -1), dtype=torch.float64)
        with torch.enable_grad():
            f = self._step(z, params)
            (g,) = torch.autograd.grad((lam_t * f).sum(), z, create_graph=True)
            seeds = torch.eye(nz, dtype=torch.float64).unsqueeze(1).expand(nz, s * n, nz)  # seed j picks g_j of every row
            (hess,) = torch.autograd.grad(g, z, grad_outputs=seeds, is_grads_batched=True)  # (nz, S * N, nz)
        w = hess.detach().permute(1, 0, 2).numpy().reshape(s, n, nz, nz)
        return 0.5 * (w + w.transpose(0, 1, 3, 2))

    def jacobians(self, x: np.ndarray, u: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One sample: F (N, nx), A (N, nx, nx), B (N, nx, nu) at x (N, nx), u (N, nu), p (n_params,)."""
        f, a, b = self.jacobians_many(x[None], u[None], np.asarray(p, dtype=float)[None])
        return f[0], a[0], b[0]

    def hessians(self, x: np.ndarray, u: np.ndarray, p: np.ndarray, lam: np.ndarray) -> np.ndarray:
        """One sample: W (N, nz, nz) with lambda_1..lambda_N (N, nx)."""
        return self.hessians_many(x[None], u[None], np.asarray(p, dtype=float)[None], lam[None])[0]
