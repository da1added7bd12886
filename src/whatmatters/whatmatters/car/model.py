"""The MPC's nominal model of the race car, in Frenet coordinates along the track.

State ``x`` (8,): ``s`` (m, arc length along the centre line), ``n`` (m,
lateral offset, positive left), ``mu`` (rad, heading relative to the centre
line), ``vx, vy`` (m/s, body frame at the centre of gravity), ``r`` (rad/s),
``delta`` (rad, front wheel angle), ``a`` (m/s^2, drive acceleration).
Input ``u`` (2,): ``a_cmd`` (m/s^2), ``delta_cmd`` (rad), the plant's order.

Kinematics along the track (curvature ``kappa(s)`` from a
:class:`~whatmatters.car.curvature.CurvatureSeries`)::

    s_dot  = (vx cos mu - vy sin mu) / (1 - n kappa(s))
    n_dot  =  vx sin mu + vy cos mu
    mu_dot = r - kappa(s) s_dot

The body dynamics are the plant's (:class:`~whatmatters.car.plant.CarPlant`:
same force balance, same normal loads with longitudinal load transfer from
``a``) with the tyres' linear part, ``F_y = mu C_S F_z alpha`` (the magic
formula's slope at zero slip), and the actuator lags without the steering's
rate limit: the MPC bounds ``|delta_cmd - delta|`` by :meth:`CarModel.steer_command_band`
instead, which keeps the rate within ``max_steer_rate`` (rate = difference / time constant).

Domain: ``vx > 0`` (the slip angles are ``atan2(., vx)``, equal to the plant's
``atan(./vx)`` there; no ``MIN_SPEED`` clamp, which is not smooth) and
``|n kappa(s)| < 1`` (on the track: ``s_dot`` is singular at the centre of curvature).
"""

from __future__ import annotations

from typing import Any

import casadi as ca
import numpy as np
import torch

from whatmatters.car.curvature import CurvatureSeries
from whatmatters.car.params import GRAVITY, CarParams, load_car_params
from whatmatters.car.track import Track
from whatmatters.dynamics.backend import backend_for
from whatmatters.dynamics.base import DynamicsModel

__all__ = ["CarModel", "frenet_state", "nominal_car_model", "plant_pose"]


def _atan2(y: Any, x: Any) -> Any:
    """``atan2(y, x)`` for torch tensors and CasADi expressions alike."""
    return torch.atan2(y, x) if isinstance(y, torch.Tensor) else ca.atan2(y, x)


class CarModel(DynamicsModel):
    """Single track with linear tyres and load transfer, in Frenet coordinates.

    A model with a learned residual subclasses it, overrides :meth:`tyre_forces`
    (the two lateral forces, adding its correction) and :attr:`n_params`.

    Args:
        params: The car (the nominal one: :func:`nominal_car_model`).
        curvature: The track's curvature as a function of ``s``.

    Attributes:
        p: The car parameters.
        curvature: ``kappa(s)``, 1/m.
    """

    nx = 8
    nu = 2
    state_labels = ("s", "n", "mu", "vx", "vy", "r", "delta", "a")
    input_labels = ("a_cmd", "delta_cmd")
    #: The training objective's state groups (:func:`whatmatters.train.weighting.objective_mask`):
    #: the pose along the track and the body velocities.
    objective_groups = {"position": (0, 1, 2), "velocity": (3, 4, 5)}

    def __init__(self, params: CarParams, curvature: CurvatureSeries) -> None:
        self.p = params
        self.curvature = curvature

    def steer_command_band(self) -> float:
        """The bound on ``|delta_cmd - delta|``, rad, that keeps the steering rate within ``max_steer_rate``."""
        return self.p.steer_time_constant * self.p.max_steer_rate

    def normal_loads(self, a: Any) -> tuple[Any, Any]:
        """Front and rear axle loads, N, at drive acceleration ``a`` (m/s^2; any form, elementwise)."""
        p = self.p
        return p.mass * (GRAVITY * p.lr - a * p.cog_height) / p.wheelbase, p.mass * (GRAVITY * p.lf + a * p.cog_height) / p.wheelbase

    def slip_angles(self, x: Any) -> tuple[Any, Any]:
        """Front and rear slip angles, rad, of states ``x`` ((B, nx) tensor: (B,) each; or nx x 1 SX: scalars).

        ``alpha_f = delta - atan2(vy + l_f r, vx)``, ``alpha_r = -atan2(vy - l_r r, vx)``; for ``vx > 0``.
        """
        be, p = backend_for(x), self.p
        vx, vy, r, delta = (be.column(x, i) for i in (3, 4, 5, 6))
        return delta - _atan2(vy + p.lf * r, vx), -_atan2(vy - p.lr * r, vx)

    def tyre_forces(self, x: Any, params: Any = None) -> tuple[Any, Any]:
        """Lateral forces of the front and rear tyres, N: ``mu C_S F_z alpha`` per axle.

        Args:
            x: States, (B, nx) tensor or nx x 1 SX.
            params: The runtime parameters (none here; a residual's weights in a subclass).

        Returns:
            ``(F_yf, F_yr)``: (B,) tensors or SX scalars.
        """
        p = self.p
        alpha_f, alpha_r = self.slip_angles(x)
        fzf, fzr = self.normal_loads(backend_for(x).column(x, 7))
        return p.mu * p.cs_front * fzf * alpha_f, p.mu * p.cs_rear * fzr * alpha_r

    def state_derivative(self, x: Any, u: Any, params: Any = None) -> Any:
        """``xdot`` (see the module docstring) for states ``x`` and inputs ``u``.

        Args:
            x: States: (B, 8) tensor or 8 x 1 SX.
            u: Inputs ``(a_cmd, delta_cmd)``: (B, 2) tensor or 2 x 1 SX.
            params: CasADi form only: the runtime parameters (n_params x 1), passed to :meth:`tyre_forces`.

        Returns:
            xdot, (B, 8) or 8 x 1.
        """
        be, p = backend_for(x), self.p
        s, n, mu, vx, vy, r, delta, a = (be.column(x, i) for i in range(8))
        a_cmd, delta_cmd = be.column(u, 0), be.column(u, 1)
        fyf, fyr = self.tyre_forces(x, params)
        kappa = self.curvature(s)
        cos_mu, sin_mu, cos_d, sin_d = be.cos(mu), be.sin(mu), be.cos(delta), be.sin(delta)
        s_dot = (vx * cos_mu - vy * sin_mu) / (1.0 - n * kappa)
        return be.stack([
            s_dot,
            vx * sin_mu + vy * cos_mu,
            r - kappa * s_dot,
            a - fyf * sin_d / p.mass + vy * r,
            (fyr + fyf * cos_d) / p.mass - vx * r,
            (p.lf * fyf * cos_d - p.lr * fyr) / p.yaw_inertia,
            (delta_cmd - delta) / p.steer_time_constant,
            (a_cmd - a) / p.accel_time_constant,
        ])  # fmt: skip


def nominal_car_model(track: Track, params: CarParams | None = None, harmonics: int = 128) -> CarModel:
    """The nominal model on ``track``: the shipped parameters (no payload, the file's friction) by default.

    Args:
        track: The track (its curvature series with ``harmonics`` terms).
        params: The car (:func:`~whatmatters.car.params.load_car_params` if None).
        harmonics: Harmonics of the curvature series.
    """
    return CarModel(params or load_car_params(), track.curvature_series(harmonics))


def frenet_state(track: Track, plant_state: np.ndarray) -> np.ndarray:
    """The model's state of plant states.

    Args:
        track: The track.
        plant_state: ``(X, Y, psi, vx, vy, r, delta, a)``, (..., 8).

    Returns:
        ``(s, n, mu, vx, vy, r, delta, a)``, (..., 8): ``s`` in [0, length), ``mu`` in (-pi, pi].
    """
    plant_state = np.asarray(plant_state, dtype=float)
    s, n, mu = track.to_frenet(plant_state[..., 0], plant_state[..., 1], plant_state[..., 2])
    return np.concatenate([np.stack([s, n, mu], axis=-1), plant_state[..., 3:]], axis=-1)


def plant_pose(track: Track, model_state: np.ndarray) -> np.ndarray:
    """The plant's state of model states (the pose from the Frenet coordinates, the rest copied).

    Args:
        track: The track.
        model_state: ``(s, n, mu, vx, vy, r, delta, a)``, (..., 8).

    Returns:
        ``(X, Y, psi, vx, vy, r, delta, a)``, (..., 8): ``psi`` in (-pi, pi].
    """
    model_state = np.asarray(model_state, dtype=float)
    x, y, psi = track.from_frenet(model_state[..., 0], model_state[..., 1], model_state[..., 2])
    return np.concatenate([np.stack([x, y, psi], axis=-1), model_state[..., 3:]], axis=-1)
