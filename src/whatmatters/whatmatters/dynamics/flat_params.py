"""Network weights as one flat runtime-parameter vector, read back as CasADi symbols.

A learned model's CasADi form takes its weights (and context) from a flat
parameter vector, so a compiled acados solver takes a new checkpoint without
a rebuild. :class:`FlatParameters` is the mixin that defines the layout for any
``nn.Module`` residual: its named parameters in registration order, flattened
row-major, then the context.
"""

from __future__ import annotations

import casadi as ca
import numpy as np
import torch
from torch import nn

__all__ = ["ContextParameters", "FlatParameters"]


class FlatParameters:
    """Mixin for an ``nn.Module`` whose weights are a CasADi form's parameters.

    The module needs ``cfg.context_dim`` (the context's length, placed after the weights).
    """

    def parameter_layout(self) -> list[tuple[str, tuple[int, ...]]]:
        """Names and shapes of the flat parameter vector, in order (context last)."""
        module = self._module()
        return [(name, tuple(p.shape)) for name, p in module.named_parameters()] + [("context", (module.cfg.context_dim,))]  # type: ignore[attr-defined]

    def flat_parameters(self) -> np.ndarray:
        """All network weights, flattened row-major in :meth:`parameter_layout` order (no context), (n_weights,)."""
        return torch.cat([p.detach().reshape(-1) for p in self._module().parameters()]).cpu().double().numpy()

    def n_weights(self) -> int:
        """Number of network weights."""
        return sum(p.numel() for p in self._module().parameters())

    def casadi_values(self, p: ca.SX | ca.DM) -> dict[str, ca.SX]:
        """The flat parameter vector split into named weights (:meth:`parameter_layout`), context included."""
        offset = 0
        values: dict[str, ca.SX] = {}
        for name, shape in self.parameter_layout():
            size = int(np.prod(shape))
            flat = p[offset : offset + size]
            # torch stores row-major; CasADi reshapes column-major
            values[name] = ca.reshape(flat, shape[1], shape[0]).T if len(shape) == 2 else flat
            offset += size
        return values

    def casadi_layers(self, prefix: str, values: dict[str, ca.SX]) -> list[tuple[ca.SX, ca.SX]]:
        """(weight, bias) of each linear layer of the ``nn.Sequential`` attribute ``prefix``, in order."""
        idx = [i for i, layer in enumerate(getattr(self, prefix)) if isinstance(layer, nn.Linear)]
        return [(values[f"{prefix}.{i}.weight"], values[f"{prefix}.{i}.bias"]) for i in idx]

    def _module(self) -> nn.Module:
        if not isinstance(self, nn.Module):
            raise TypeError(f"{type(self).__name__} uses FlatParameters without being an nn.Module")
        return self


class ContextParameters:
    """Mixin for a learned model whose CasADi form's parameters are ``[residual weights, context]``.

    The model needs ``residual`` (a :class:`FlatParameters` module), ``context``
    (the current context, (context_dim,)) and ``cfg.residual.context_dim``.
    """

    @property
    def context_dim(self) -> int:
        """Length of the context vector."""
        return int(self.cfg.residual.context_dim)  # type: ignore[attr-defined]

    @property
    def n_params(self) -> int:
        """Residual weights + context: the CasADi form's runtime parameters."""
        return self.residual.n_weights() + self.context_dim  # type: ignore[attr-defined]

    def parameter_values(self) -> np.ndarray:
        """Current residual weights followed by the current context, (n_params,)."""
        return np.concatenate([self.residual.flat_parameters(), self.context])  # type: ignore[attr-defined]

    def set_context(self, z: np.ndarray) -> None:
        """Sets the context used by :meth:`parameter_values` (and the torch form without one), (context_dim,)."""
        z = np.asarray(z, dtype=float)
        if z.shape != (self.context_dim,):
            raise ValueError(f"context must have shape ({self.context_dim},), got {z.shape}")
        self.context = z
