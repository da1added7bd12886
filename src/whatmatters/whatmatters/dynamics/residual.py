"""Deep Lagrangian residual (CaDeLaC style) in torch and CasADi.

On inputs ``phi = [cos q, sin q, z]`` (z: the context vector):

* ``H_res(q, z) = L L^T`` with ``L`` lower triangular, diagonal
  ``softplus(.) + floor`` (so ``H_res`` is positive definite);
* a potential ``V(q, z)`` with ``g_res = dV/dq``;
* ``c_res = Hdot_res qd - 1/2 d/dq (qd' H_res qd)``, the Coriolis/centrifugal
  term the Lagrangian ``1/2 qd' H_res qd - V`` implies (not a free network);
* optionally a dissipative joint damping ``d_res * qd`` with ``d_res >= 0``
  (softplus), constant per joint: damping is not Lagrangian.

Both the L and V networks are MLPs (tanh, sizes from :class:`ResidualConfig`).

The torch form propagates the networks' Jacobians w.r.t. q *by hand*
(forward mode through each layer: batched matmuls, no autograd graph for the
inner derivatives); the CasADi form gets the same derivatives from CasADi's
AD. The tests compare the two, which checks both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import casadi as ca
import numpy as np
import torch
from torch import nn

from whatmatters.dynamics.flat_params import FlatParameters

__all__ = ["ResidualConfig", "LagrangianResidual", "softplus"]

NQ = 7


@dataclass(frozen=True)
class ResidualConfig:
    """Sizes of the residual networks.

    Attributes:
        hidden: Hidden layer sizes of both MLPs.
        context_dim: Length of the context vector z.
        diag_floor: Floor added to L's softplus diagonal.
        init_inertia: Initial diagonal of H_res, kg m^2 (sets the output bias).
        damping: Whether to learn a non-negative diagonal joint damping.
    """

    hidden: tuple[int, ...] = (30, 20)
    context_dim: int = 10
    diag_floor: float = 0.1
    init_inertia: float = 0.05
    damping: bool = True


def softplus(x: torch.Tensor | ca.SX) -> torch.Tensor | ca.SX:
    """Overflow-free ``log(1 + exp(x))``, the same formula in both forms."""
    if isinstance(x, torch.Tensor):
        return torch.clamp(x, min=0.0) + torch.log1p(torch.exp(-torch.abs(x)))
    return ca.fmax(x, 0) + ca.log1p(ca.exp(-ca.fabs(x)))


def _tril_indices() -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.tril_indices(NQ)
    return rows, cols


class LagrangianResidual(FlatParameters, nn.Module):
    """The residual terms (H_res, c_res, g_res, damping) of the learned model.

    Args:
        cfg: Network sizes.
    """

    def __init__(self, cfg: ResidualConfig) -> None:
        super().__init__()
        self.cfg = cfg
        n_in = 2 * NQ + cfg.context_dim
        n_l = NQ * (NQ + 1) // 2
        self.l_net = self._mlp(n_in, n_l)
        self.v_net = self._mlp(n_in, 1)
        rows, cols = _tril_indices()
        self.register_buffer("rows", torch.as_tensor(rows), persistent=False)
        self.register_buffer("cols", torch.as_tensor(cols), persistent=False)
        self.diag_mask = rows == cols
        with torch.no_grad():
            last = self.l_net[-1]
            last.weight.mul_(0.1)
            last.bias.zero_()
            target = max(math.sqrt(cfg.init_inertia) - cfg.diag_floor, 1e-3)
            last.bias[torch.as_tensor(self.diag_mask)] = math.log(math.expm1(target))
            self.v_net[-1].weight.mul_(0.1)
            self.v_net[-1].bias.zero_()
        self.damping_raw = nn.Parameter(torch.full((NQ,), -3.0)) if cfg.damping else None

    def _mlp(self, n_in: int, n_out: int) -> nn.Sequential:
        layers: list[nn.Module] = []
        for width in self.cfg.hidden:
            layers += [nn.Linear(n_in, width), nn.Tanh()]
            n_in = width
        layers.append(nn.Linear(n_in, n_out))
        return nn.Sequential(*layers)

    # ------------------------------------------------------------------ torch
    def _mlp_with_jacobian(self, net: nn.Sequential, phi: torch.Tensor, dphi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """MLP output (B, m) and its Jacobian w.r.t. q (B, m, 7), forward mode."""
        h, jac = phi, dphi  # (B, n_in), (B, n_in, 7)
        for layer in net:
            if isinstance(layer, nn.Linear):
                h = layer(h)
                jac = layer.weight @ jac
            else:
                h = torch.tanh(h)
                jac = (1.0 - h * h).unsqueeze(-1) * jac
        return h, jac

    def _features(self, q: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = torch.cos(q), torch.sin(q)
        phi = torch.cat([cos, sin, z.expand(*q.shape[:-1], z.shape[-1])], dim=-1)
        eye = torch.eye(NQ, dtype=q.dtype, device=q.device)
        dphi = torch.cat(
            [-sin.unsqueeze(-1) * eye, cos.unsqueeze(-1) * eye, q.new_zeros(*q.shape[:-1], z.shape[-1], NQ)], dim=-2
        )
        return phi, dphi

    def terms(self, q: torch.Tensor, qd: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Residual inertia and torque.

        Args:
            q: (B, 7) rad.  qd: (B, 7) rad/s.  z: (B, context_dim) or (context_dim,).

        Returns:
            ``H_res`` (B, 7, 7) and ``c_res + g_res + d_res qd`` (B, 7), Nm.
        """
        phi, dphi = self._features(q, z)
        raw, d_raw = self._mlp_with_jacobian(self.l_net, phi, dphi)  # (B, 28), (B, 28, 7)
        diag = torch.as_tensor(self.diag_mask, device=q.device)
        vals = torch.where(diag, softplus(raw) + self.cfg.diag_floor, raw)
        d_vals = torch.where(diag.unsqueeze(-1), torch.sigmoid(raw).unsqueeze(-1) * d_raw, d_raw)
        batch = q.shape[:-1]
        low = q.new_zeros(*batch, NQ, NQ)
        low[..., self.rows, self.cols] = vals
        d_low = q.new_zeros(*batch, NQ, NQ, NQ)  # [i, j, k] = dL_ij / dq_k
        d_low[..., self.rows, self.cols, :] = d_vals
        h_res = low @ low.transpose(-1, -2)
        l_dot = (d_low @ qd.unsqueeze(-2).unsqueeze(-1)).squeeze(-1)  # (B, 7, 7)
        h_dot = l_dot @ low.transpose(-1, -2) + low @ l_dot.transpose(-1, -2)
        a = (low.transpose(-1, -2) @ qd.unsqueeze(-1)).squeeze(-1)  # L' qd
        grad_kin = 2.0 * torch.einsum("...i,...ijk,...j->...k", qd, d_low, a)  # d/dq (qd' H qd)
        c_res = (h_dot @ qd.unsqueeze(-1)).squeeze(-1) - 0.5 * grad_kin
        _, d_v = self._mlp_with_jacobian(self.v_net, phi, dphi)
        torque = c_res + d_v[..., 0, :]
        if self.damping_raw is not None:
            torque = torque + softplus(self.damping_raw) * qd
        return h_res, torque

    # ----------------------------------------------------------------- casadi
    def casadi_terms(self, q: ca.SX, qd: ca.SX, p: ca.SX) -> tuple[ca.SX, ca.SX]:
        """The same terms with the weights and context taken from ``p``.

        Args:
            q, qd: 7 x 1 SX.
            p: Flat parameters (weights then context), :meth:`n_weights` + context_dim.

        Returns:
            ``H_res`` (7 x 7 SX) and ``c_res + g_res + d_res qd`` (7 x 1 SX).
        """
        values = self.casadi_values(p)
        z = values["context"]
        phi = ca.vertcat(ca.cos(q), ca.sin(q), z)

        def mlp(prefix: str) -> ca.SX:
            h = phi
            layers = self.casadi_layers(prefix, values)
            for n, (weight, bias) in enumerate(layers):
                h = ca.mtimes(weight, h) + bias
                if n < len(layers) - 1:
                    h = ca.tanh(h)
            return h

        raw = mlp("l_net")
        low = ca.SX.zeros(NQ, NQ)
        rows, cols = _tril_indices()
        for n, (i, j) in enumerate(zip(rows, cols)):
            low[i, j] = softplus(raw[n]) + self.cfg.diag_floor if i == j else raw[n]
        h_res = ca.mtimes(low, low.T)
        v = mlp("v_net")
        kin = ca.mtimes(qd.T, ca.mtimes(h_res, qd))
        c_res = ca.jtimes(ca.mtimes(h_res, qd), q, qd) - 0.5 * ca.gradient(kin, q)
        torque = c_res + ca.gradient(v, q)
        if self.damping_raw is not None:
            torque = torque + softplus(values["damping_raw"]) * qd
        return h_res, torque
