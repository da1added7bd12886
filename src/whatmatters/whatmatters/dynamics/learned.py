"""The learned model: nominal rigid body + context-aware deep Lagrangian residual.

    qdd = (M_nom + H_res)^-1 (tau - c_nom - g_nom - c_res - g_res - d_res qd)

* torch form (batched, differentiable): ``forward_dynamics(q, qd, tau, z)``
  with the context ``z`` (B, context_dim) as the ``params`` argument.
* CasADi form: ``forward_dynamics(q, qd, tau, p)`` with ``p`` = all network
  weights followed by the context, one acados stage-parameter vector: a new
  checkpoint of the same architecture needs no rebuild, and the context
  changes every control step without one.

Checkpoints are written atomically (temporary file + rename) and hold the
configuration, the weights, the normalisations and free-form metadata.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import casadi as ca
import numpy as np
import torch
from torch import nn

from whatmatters.dynamics.backend import CasadiBackend
from whatmatters.dynamics.base import JointSpaceModel
from whatmatters.dynamics.context import ContextEncoder, ContextTracker
from whatmatters.dynamics.flat_params import ContextParameters
from whatmatters.dynamics.nominal import nominal_model
from whatmatters.dynamics.residual import LagrangianResidual, ResidualConfig
from whatmatters.dynamics.residual_jacobian import residual_derivatives
from whatmatters.dynamics.residual_kernels import kernel_source
from whatmatters.dynamics.rigid_body import RigidBodyDynamics, inverse_dynamics_jacobian, mass_matrix_rows, rnea
from whatmatters.errors import WhatmattersError
from whatmatters.io import atomic_torch_save

__all__ = ["CheckpointError", "LearnedConfig", "LearnedDynamics"]

FORMAT_VERSION = 1


class CheckpointError(WhatmattersError, ValueError):
    """A checkpoint file is missing, corrupt or of another architecture."""


@dataclasses.dataclass(frozen=True)
class LearnedConfig:
    """Architecture of the learned model.

    Attributes:
        residual: Residual network sizes.
        window: History length W (control steps) of the context encoder.
        lstm_hidden: LSTM hidden size.
        dt: Control period the history is sampled at, s.
    """

    residual: ResidualConfig = ResidualConfig()
    window: int = 15
    lstm_hidden: int = 32
    dt: float = 0.02

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LearnedConfig:
        """Inverse of :meth:`to_dict`."""
        res = dict(data["residual"])
        res["hidden"] = tuple(res["hidden"])
        return cls(ResidualConfig(**res), int(data["window"]), int(data["lstm_hidden"]), float(data["dt"]))


class LearnedDynamics(ContextParameters, JointSpaceModel, nn.Module):
    """CaDeLaC-style learned dynamics.

    Args:
        cfg: Architecture.
        nominal: The nominal rigid-body model (the packaged Panda if None).
    """

    def __init__(self, cfg: LearnedConfig | None = None, nominal: RigidBodyDynamics | None = None) -> None:
        nn.Module.__init__(self)
        self.cfg = cfg or LearnedConfig()
        self.nominal = nominal or nominal_model()
        self.nq = self.nominal.nq
        self.residual = LagrangianResidual(self.cfg.residual)
        self.encoder = ContextEncoder(self.cfg.residual.context_dim, self.cfg.lstm_hidden)
        self.torque_scale = nn.Parameter(torch.ones(self.nq), requires_grad=False)
        self.context = np.zeros(self.cfg.residual.context_dim)
        self.metadata: dict[str, Any] = {}
        self.double()

    # ------------------------------------------------------------- parameters
    def context_tracker(self) -> ContextTracker:
        """Online context for the MPC: history window -> LSTM -> the context parameters."""
        return ContextTracker(self.nominal, self.cfg.window, self.cfg.dt, self.encoder, self.residual.n_weights())

    def encode(self, windows: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Context vectors from history windows (B, W, 21) -> (B, context_dim)."""
        w = torch.as_tensor(windows, dtype=self.torque_scale.dtype)
        return self.encoder(w)

    # --------------------------------------------------------------- dynamics
    def forward_dynamics(self, q: Any, qd: Any, tau: Any, params: Any = None) -> Any:
        """Joint accelerations (see module docstring for the two forms)."""
        if isinstance(q, torch.Tensor):
            z = params if params is not None else torch.as_tensor(self.context, dtype=q.dtype)
            h_res, torque = self.residual.terms(q, qd, z)
            mass_nom, bias_nom = self.nominal.mass_matrix_and_bias(q, qd)
            mass = mass_nom + h_res
            rhs = tau - bias_nom - torque
            chol = torch.linalg.cholesky(mass)
            return torch.cholesky_solve(rhs.unsqueeze(-1), chol).squeeze(-1)
        if params is None:
            params = ca.DM(self.parameter_values())
        be = CasadiBackend()
        h_res, torque = self.residual.casadi_terms(q, qd, params)
        chain = self.nominal.chain
        rows = mass_matrix_rows(be, chain, q)
        bias = rnea(be, chain, q, qd, None, gravity=True)
        rhs = []
        for i in range(self.nq):
            for j in range(self.nq):
                rows[i][j] = rows[i][j] + h_res[i, j] + (float(chain.armature[i]) if i == j else 0.0)
            rhs.append(tau[i] - bias[i] - float(chain.damping[i]) * qd[i] - torque[i])
        return be.solve_spd(rows, rhs)

    def code_identity(self) -> str:
        """The C kernels of :meth:`state_derivative_jacobian` (their symbols carry a hash of their source)."""
        return " ".join(kernel_source(self.residual)[0].values())

    def state_derivative_jacobian(self, x: ca.SX, u: ca.SX, params: ca.SX | None = None) -> tuple[ca.SX, ca.SX]:
        """``xdot`` and its exact Jacobian (nx, nx + nu), structured (CasADi form).

        With ``ID(q, qd, qdd) = (M_nom + H_res) qdd + bias_nom + damping qd + tau_res``
        and ``qdd`` solving ``ID = tau``: ``d qdd / d(q, qd) = -M^-1 dID/d(q, qd)``
        at fixed qdd and ``d qdd / d tau = M^-1``. The nominal part of dID comes
        from CasADi's AD of the rigid-body inverse dynamics, the residual's from
        :func:`~whatmatters.dynamics.residual_jacobian.residual_derivatives`; one
        LDL^T factorisation of M serves the accelerations and all 21 columns.
        """
        if params is None:
            params = ca.DM(self.parameter_values())
        be, chain, n = CasadiBackend(), self.nominal.chain, self.nq
        q, qd = x[:n], x[n:]
        rd = residual_derivatives(self.residual, q, qd, params)
        rows = mass_matrix_rows(be, chain, q)
        bias = rnea(be, chain, q, qd, None, gravity=True)
        damping = np.asarray(chain.damping, dtype=float)
        for i in range(n):
            for j in range(n):
                rows[i][j] = rows[i][j] + rd.h_res[i, j] + (float(chain.armature[i]) if i == j else 0.0)
        factor = be.ldl_factor(rows)
        qdd = ca.vertcat(*be.ldl_solve(factor, [u[i] - bias[i] - damping[i] * qd[i] - rd.torque[i] for i in range(n)]))
        d_id_q, d_id_qd = inverse_dynamics_jacobian(self.nominal.chain)(q, qd, qdd)
        d_id = ca.horzcat(d_id_q + rd.d_h_times(qdd) + rd.d_torque_dq, d_id_qd + ca.diag(ca.DM(damping)) + rd.d_torque_dqd, -ca.DM.eye(n))
        cols = [ca.vertcat(*be.ldl_solve(factor, [-d_id[i, k] for i in range(n)])) for k in range(3 * n)]
        jac = ca.vertcat(ca.horzcat(ca.DM(n, n), ca.DM.eye(n), ca.DM(n, n)), ca.horzcat(*cols))  # structural zeros
        return ca.vertcat(qd, qdd), jac

    def inverse_dynamics(self, q: torch.Tensor, qd: torch.Tensor, qdd: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Torque the model needs for a motion, Nm, (B, 7) (torch form only)."""
        h_res, torque = self.residual.terms(q, qd, z)
        return self.nominal.inverse_dynamics(q, qd, qdd) + (h_res @ qdd.unsqueeze(-1)).squeeze(-1) + torque

    def rollout(self, x0: torch.Tensor, u: torch.Tensor, z: torch.Tensor, dt: float | None = None) -> torch.Tensor:
        """p-step RK4 rollout from true initial states under given torques.

        Args:
            x0: Initial states, (B, 14).
            u: Torques, (B, p, 7).
            z: Contexts (held constant), (B, context_dim).
            dt: Step, s (the configured control period by default).

        Returns:
            Predicted states x_1..x_p, (B, p, 14).
        """
        dt = self.cfg.dt if dt is None else dt
        out, x = [], x0
        for k in range(u.shape[1]):
            x = self.rk4_step(x, u[:, k], dt, z)
            out.append(x)
        return torch.stack(out, dim=1)

    # ------------------------------------------------------------ checkpoints
    def save(self, path: str | Path, **metadata: Any) -> None:
        """Writes a checkpoint atomically (a reader sees the old or the new file, never half)."""
        meta = {**self.metadata, **metadata}
        self.metadata = meta
        atomic_torch_save({"format": FORMAT_VERSION, "config": self.cfg.to_dict(), "state": self.state_dict(), "metadata": meta}, path)

    @classmethod
    def load(cls, path: str | Path, nominal: RigidBodyDynamics | None = None) -> LearnedDynamics:
        """Reads a checkpoint written by :meth:`save`.

        Raises:
            CheckpointError: Naming the file, if it is missing, corrupt or not a whatmatters checkpoint.
        """
        path = Path(path)
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError as exc:
            raise CheckpointError(f"checkpoint {path} does not exist") from exc
        except Exception as exc:  # torch raises many types for a corrupt file
            raise CheckpointError(f"checkpoint {path} cannot be read: {exc}") from exc
        if not isinstance(blob, dict) or blob.get("format") != FORMAT_VERSION:
            raise CheckpointError(f"{path} is not a whatmatters checkpoint (format {FORMAT_VERSION})")
        try:
            model = cls(LearnedConfig.from_dict(blob["config"]), nominal)
            model.load_state_dict(blob["state"])
        except (KeyError, TypeError, RuntimeError) as exc:
            raise CheckpointError(f"checkpoint {path} does not match the model: {exc}") from exc
        model.metadata = dict(blob.get("metadata", {}))
        return model
