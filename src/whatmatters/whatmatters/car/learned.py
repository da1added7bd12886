"""The race car's learned model: the nominal Frenet model with learned tyre forces and a context.

:class:`CarLearnedModel` is a :class:`~whatmatters.car.model.CarModel` whose
:meth:`~CarLearnedModel.tyre_forces` add a :class:`~whatmatters.car.residual.TyreResidual`
to the linear tyres; an LSTM (:class:`~whatmatters.dynamics.context.ContextEncoder`
over :mod:`whatmatters.car.context`'s features) gives the context ``z``.

* torch form (batched, differentiable): ``params`` is the context (B, context_dim)
  (the stored context if None).
* CasADi form: ``params`` is the flat vector ``[weights, context]``, one acados
  stage-parameter vector (the current values if None): a new checkpoint of the
  same architecture needs no rebuild, and the context changes every control
  step without one.

A checkpoint holds the configuration, the weights, the encoder's
normalisation, the nominal car's parameters (checked on loading: the residual
corrects *that* car's tyres) and free-form metadata; not the track (neither
the tyre forces nor the context features depend on it, so a checkpoint serves
every track). The caller rebuilds the nominal model and passes it to
:meth:`CarLearnedModel.load`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import casadi as ca
import numpy as np
import torch
from torch import nn

from whatmatters.car.context import N_CAR_FEATURES, CarContextTracker
from whatmatters.car.model import CarModel
from whatmatters.car.params import GRAVITY
from whatmatters.car.residual import CarResidualConfig, TyreResidual
from whatmatters.dynamics.backend import backend_for
from whatmatters.dynamics.context import ContextEncoder
from whatmatters.dynamics.flat_params import ContextParameters
from whatmatters.dynamics.learned import CheckpointError
from whatmatters.io import atomic_torch_save

__all__ = ["CarLearnedConfig", "CarLearnedModel"]

FORMAT_VERSION = 1
#: The checkpoint's ``kind``: tells a car checkpoint from an arm's.
KIND = "car"


@dataclasses.dataclass(frozen=True)
class CarLearnedConfig:
    """Architecture of the learned car model.

    Attributes:
        residual: Tyre residual sizes.
        window: History length W (control steps) of the context encoder (15: 0.3 s at 0.02 s).
        lstm_hidden: LSTM hidden size.
        dt: Control period the history is sampled at, s.
    """

    residual: CarResidualConfig = CarResidualConfig()
    window: int = 15
    lstm_hidden: int = 16
    dt: float = 0.02

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CarLearnedConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(CarResidualConfig.from_dict(data["residual"]), int(data["window"]), int(data["lstm_hidden"]), float(data["dt"]))


class CarLearnedModel(ContextParameters, CarModel, nn.Module):
    """Nominal car model + context-aware tyre residual (float64).

    Args:
        nominal: The nominal model (its car and the track's curvature are shared, the model kept for the context features).
        cfg: Architecture.

    Attributes:
        nominal: The nominal model.
        residual: The tyre residual.
        encoder: The context encoder (10 features per transition).
        context: The context the CasADi form uses by default, (context_dim,).
        metadata: Free-form, saved with the checkpoint.
    """

    def __init__(self, nominal: CarModel, cfg: CarLearnedConfig | None = None) -> None:
        nn.Module.__init__(self)
        CarModel.__init__(self, nominal.p, nominal.curvature)
        self.cfg = cfg or CarLearnedConfig()
        self.nominal = nominal
        self.residual = TyreResidual(self.cfg.residual, nominal.p.mass * GRAVITY)
        self.encoder = ContextEncoder(self.cfg.residual.context_dim, self.cfg.lstm_hidden, n_features=N_CAR_FEATURES)
        self.context = np.zeros(self.cfg.residual.context_dim)
        self.metadata: dict[str, Any] = {}
        self.double()

    # ------------------------------------------------------------- parameters
    def context_tracker(self) -> CarContextTracker:
        """Online context for the MPC: history window -> LSTM -> the context parameters."""
        return CarContextTracker(self.nominal, self.cfg.window, self.cfg.dt, self.encoder, self.residual.n_weights())

    def encode(self, windows: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Context vectors of history windows (B, W, 10) -> (B, context_dim)."""
        return self.encoder(torch.as_tensor(windows, dtype=torch.float64))

    # --------------------------------------------------------------- dynamics
    def tyre_forces(self, x: Any, params: Any = None) -> tuple[Any, Any]:
        """Lateral forces of the front and rear tyres, N: the nominal linear tyres plus the residual.

        Args:
            x: States, (B, 8) tensor or 8 x 1 SX.
            params: torch: the context, (B, context_dim) or (context_dim,) (the stored one if None);
                CasADi: the flat ``[weights, context]`` (n_params x 1; the current values if None).

        Returns:
            ``(F_yf, F_yr)``: (B,) tensors or SX scalars.
        """
        fyf, fyr = super().tyre_forces(x)
        be = backend_for(x)
        alpha_f, alpha_r = self.slip_angles(x)
        fzf, fzr = self.normal_loads(be.column(x, 7))
        vx = be.column(x, 3)
        if isinstance(x, torch.Tensor):
            z = torch.as_tensor(self.context if params is None else params, dtype=x.dtype)
            dfyf, dfyr = self.residual(alpha_f, alpha_r, vx, fzf, fzr, z)
        else:
            p = ca.DM(self.parameter_values()) if params is None else params
            dfyf, dfyr = self.residual.casadi_forces(alpha_f, alpha_r, vx, fzf, fzr, p)
        return fyf + dfyf, fyr + dfyr

    def rollout(self, x0: torch.Tensor, u: torch.Tensor, z: torch.Tensor, dt: float | None = None) -> torch.Tensor:
        """p-step RK4 rollout from true initial states under given inputs.

        Args:
            x0: Initial states, (B, 8).
            u: Inputs ``(a_cmd, delta_cmd)``, (B, p, 2).
            z: Contexts (held constant), (B, context_dim).
            dt: Step, s (the configured control period by default).

        Returns:
            Predicted states x_1..x_p, (B, p, 8).
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
        self.metadata = {**self.metadata, **metadata}
        blob = {
            "format": FORMAT_VERSION, "kind": KIND, "config": self.cfg.to_dict(), "car": dataclasses.asdict(self.p),
            "state": self.state_dict(), "metadata": self.metadata,
        }  # fmt: skip
        atomic_torch_save(blob, path)

    @classmethod
    def load(cls, path: str | Path, nominal: CarModel) -> CarLearnedModel:
        """Reads a checkpoint written by :meth:`save`.

        Args:
            path: The file.
            nominal: The nominal model, rebuilt by the caller (any track; the car must be the checkpoint's).

        Raises:
            CheckpointError: Naming the file, if it is missing, corrupt, not a car checkpoint, or of another car.
        """
        path = Path(path)
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError as exc:
            raise CheckpointError(f"checkpoint {path} does not exist") from exc
        except Exception as exc:  # torch raises many types for a corrupt file
            raise CheckpointError(f"checkpoint {path} cannot be read: {exc}") from exc
        if not isinstance(blob, dict) or blob.get("format") != FORMAT_VERSION or blob.get("kind") != KIND:
            raise CheckpointError(f"{path} is not a whatmatters car checkpoint (format {FORMAT_VERSION})")
        try:
            car = dict(blob["car"])
            model = cls(nominal, CarLearnedConfig.from_dict(blob["config"]))
            model.load_state_dict(blob["state"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"checkpoint {path} does not match the model: {exc}") from exc
        mine = dataclasses.asdict(nominal.p)
        differ = sorted(k for k in set(mine) | set(car) if mine.get(k) != car.get(k))
        if differ:
            changes = ", ".join(f"{k} {car.get(k)} (checkpoint) != {mine.get(k)}" for k in differ)
            raise CheckpointError(f"checkpoint {path} was trained for another car: {changes}")
        model.metadata = dict(blob.get("metadata", {}))
        return model
