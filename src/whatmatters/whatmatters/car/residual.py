"""The race car's learned tyre correction: an MLP on the slip angles, speed, loads and context.

For one axle ``i`` (front, rear) the learned model's lateral force is::

    F_y,i = mu C_S,i F_z,i alpha_i  +  F_z,i g_i(phi),
    phi   = [alpha_f / slip_scale, alpha_r / slip_scale, vx / speed_scale, F_zf / (m g), F_zr / (m g), z]

the nominal linear tyre plus the nominal normal load times a network output
``g_i``: a friction-like factor (dimensionless), so the correction scales with
the load as the magic formula's does. The scales bring the inputs to order
one (slip angles of ~0.1 rad, speeds of a few m/s); the loads are normalised
by the car's weight. The MLP is tanh with a zero-initialised last layer: a
fresh residual is exactly zero.

The torch form is :meth:`TyreResidual.forward`; the CasADi form
:meth:`TyreResidual.casadi_forces` reads the weights and the context from one
flat parameter vector (:class:`~whatmatters.dynamics.flat_params.FlatParameters`,
as the arm's residual does), so a compiled solver takes new weights without
a rebuild.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import casadi as ca
import numpy as np
import torch
from torch import nn

from whatmatters.dynamics.flat_params import FlatParameters

__all__ = ["CarResidualConfig", "TyreResidual"]

#: Inputs of the network before the context: alpha_f, alpha_r, vx, F_zf / (m g), F_zr / (m g).
N_INPUTS = 5


@dataclasses.dataclass(frozen=True)
class CarResidualConfig:
    """Architecture of the tyre residual.

    Attributes:
        hidden: Hidden layer sizes (tanh).
        context_dim: Length of the context vector z.
        slip_scale: Slip angle that maps to a network input of 1, rad.
        speed_scale: Speed that maps to a network input of 1, m/s.
    """

    hidden: tuple[int, ...] = (32, 32)
    context_dim: int = 4
    slip_scale: float = 0.1
    speed_scale: float = 5.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CarResidualConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(
            tuple(int(h) for h in data["hidden"]), int(data["context_dim"]), float(data["slip_scale"]), float(data["speed_scale"])
        )


class TyreResidual(FlatParameters, nn.Module):
    """Corrections of the two lateral tyre forces, N.

    Args:
        cfg: Architecture.
        weight: The car's weight ``m g``, N (normalises the loads).
    """

    def __init__(self, cfg: CarResidualConfig, weight: float) -> None:
        super().__init__()
        if not weight > 0:
            raise ValueError(f"the car's weight must be > 0 N, got {weight}")
        self.cfg, self.weight = cfg, float(weight)
        layers: list[nn.Module] = []
        n_in = N_INPUTS + cfg.context_dim
        for width in cfg.hidden:
            layers += [nn.Linear(n_in, width), nn.Tanh()]
            n_in = width
        layers.append(nn.Linear(n_in, 2))
        self.net = nn.Sequential(*layers)
        with torch.no_grad():  # a fresh residual is zero: the learned model starts as the nominal one
            self.net[-1].weight.zero_()
            self.net[-1].bias.zero_()

    # ------------------------------------------------------------------ torch
    def forward(
        self, alpha_f: torch.Tensor, alpha_r: torch.Tensor, vx: torch.Tensor, fzf: torch.Tensor, fzr: torch.Tensor, z: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The corrections ``(dF_yf, dF_yr)``, N, (B,) each.

        Args:
            alpha_f, alpha_r: Slip angles, rad, (B,).
            vx: Longitudinal speed, m/s, (B,).
            fzf, fzr: Nominal normal loads, N, (B,).
            z: Contexts, (B, context_dim) or (context_dim,).
        """
        c = self.cfg
        phi = torch.stack(
            [alpha_f / c.slip_scale, alpha_r / c.slip_scale, vx / c.speed_scale, fzf / self.weight, fzr / self.weight], dim=-1
        )
        phi = torch.cat([phi, z.expand(*phi.shape[:-1], z.shape[-1])], dim=-1)  # (B, 5 + context_dim)
        g = self.net(phi)  # (B, 2)
        return g[..., 0] * fzf, g[..., 1] * fzr

    # ----------------------------------------------------------------- casadi
    def casadi_forces(self, alpha_f: ca.SX, alpha_r: ca.SX, vx: ca.SX, fzf: ca.SX, fzr: ca.SX, p: ca.SX | ca.DM) -> tuple[ca.SX, ca.SX]:
        """The same corrections with the weights and the context taken from ``p``.

        Args:
            alpha_f, alpha_r, vx, fzf, fzr: SX scalars (rad, rad, m/s, N, N).
            p: Flat parameters (weights then context), :meth:`n_weights` + context_dim.

        Returns:
            ``(dF_yf, dF_yr)``, N: SX scalars.
        """
        c, values = self.cfg, self.casadi_values(p)
        h = ca.vertcat(
            alpha_f / c.slip_scale, alpha_r / c.slip_scale, vx / c.speed_scale, fzf / self.weight, fzr / self.weight, values["context"]
        )
        layers = self.casadi_layers("net", values)
        for n, (w, b) in enumerate(layers):
            h = ca.mtimes(w, h) + b
            if n < len(layers) - 1:
                h = ca.tanh(h)
        return h[0] * fzf, h[1] * fzr
