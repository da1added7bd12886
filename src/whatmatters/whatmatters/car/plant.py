"""The race car's "true" system: single track, magic-formula tyres, load transfer, actuator lags.

State ``x`` (8,): ``X, Y`` (m, world), ``psi`` (rad, yaw), ``vx, vy`` (m/s, body
frame at the centre of gravity), ``r`` (rad/s, yaw rate), ``delta`` (rad,
front wheel angle), ``a`` (m/s^2, the drive's realised acceleration).
Input ``u`` (2,): ``a_cmd`` (m/s^2) and ``delta_cmd`` (rad), clipped to the
actuator limits and held over a control period.

Forces:

* normal loads with longitudinal load transfer,
  ``F_zf = m (g l_r - a h) / L``, ``F_zr = m (g l_f + a h) / L``;
* lateral tyre forces by the magic formula on the slip angles
  ``alpha_f = delta - atan((vy + l_f r) / vx)``, ``alpha_r = -atan((vy - l_r r) / vx)``:
  ``F_y = D sin(C atan(B alpha - E (B alpha - atan(B alpha))))``, ``D = mu F_z``,
  ``B = C_S / C`` (the slope at zero slip is ``mu C_S F_z``, the F1TENTH gym's linear tyre);
* the drive force ``m a`` along the body.

Actuators: the steering follows its command with time constant
``steer_time_constant`` and at most ``max_steer_rate``; the drive with
``accel_time_constant``. Integrated by RK4 at ``step`` (1 ms). The slip angles
use ``max(vx, MIN_SPEED)``: the model is a driving model, not one for standing
still.
"""

from __future__ import annotations

import numpy as np

from whatmatters.car.params import GRAVITY, CarParams

__all__ = ["CarPlant", "MIN_SPEED", "magic_formula"]

#: m/s, the longitudinal speed below which the slip angles stop growing.
MIN_SPEED = 0.5


def magic_formula(alpha: np.ndarray, fz: np.ndarray, mu: float, cs: float, c: float, e: float) -> np.ndarray:
    """Lateral tyre force, N, of slip angles ``alpha`` (rad) under normal loads ``fz`` (N)."""
    b = cs / c
    ba = b * alpha
    return mu * fz * np.sin(c * np.arctan(ba - e * (ba - np.arctan(ba))))


class CarPlant:
    """The simulated car.

    Args:
        params: Its parameters (an environment's draw).
        step: Integration step, s.
    """

    nx, nu = 8, 2

    def __init__(self, params: CarParams, step: float = 0.001) -> None:
        if not step > 0:
            raise ValueError(f"the integration step must be > 0 s, got {step}")
        self.p, self.dt = params, step

    def clip_input(self, u: np.ndarray) -> np.ndarray:
        """The command the actuators accept: ``a_cmd`` within [min_accel, max_accel], ``delta_cmd`` within +-max_steer."""
        p = self.p
        u = np.asarray(u, dtype=float)
        return np.array([np.clip(u[0], p.min_accel, p.max_accel), np.clip(u[1], -p.max_steer, p.max_steer)])

    def normal_loads(self, a: float) -> tuple[float, float]:
        """Front and rear axle loads, N, at longitudinal acceleration ``a`` (m/s^2)."""
        p = self.p
        return p.mass * (GRAVITY * p.lr - a * p.cog_height) / p.wheelbase, p.mass * (GRAVITY * p.lf + a * p.cog_height) / p.wheelbase

    def derivative(self, x: np.ndarray, u: np.ndarray) -> np.ndarray:
        """dx/dt (8,) at state ``x`` (8,) under an already clipped input ``u`` (2,)."""
        p = self.p
        _, _, psi, vx, vy, r, delta, a = x
        v_eff = max(vx, MIN_SPEED)
        alpha_f = delta - np.arctan2(vy + p.lf * r, v_eff)
        alpha_r = -np.arctan2(vy - p.lr * r, v_eff)
        fzf, fzr = self.normal_loads(a)
        fyf = magic_formula(alpha_f, fzf, p.mu, p.cs_front, p.shape_c, p.curvature_e)
        fyr = magic_formula(alpha_r, fzr, p.mu, p.cs_rear, p.shape_c, p.curvature_e)
        steer_rate = np.clip((u[1] - delta) / p.steer_time_constant, -p.max_steer_rate, p.max_steer_rate)
        return np.array([
            vx * np.cos(psi) - vy * np.sin(psi),
            vx * np.sin(psi) + vy * np.cos(psi),
            r,
            a - fyf * np.sin(delta) / p.mass + vy * r,
            (fyr + fyf * np.cos(delta)) / p.mass - vx * r,
            (p.lf * fyf * np.cos(delta) - p.lr * fyr) / p.yaw_inertia,
            steer_rate,
            (u[0] - a) / p.accel_time_constant,
        ])  # fmt: skip

    def simulate(self, x: np.ndarray, u: np.ndarray, duration: float) -> np.ndarray:
        """The state after ``duration`` s (a whole number of steps) with the command ``u`` held (clipped first)."""
        steps = int(round(duration / self.dt))
        if steps < 1 or abs(steps * self.dt - duration) > 1e-9:
            raise ValueError(f"duration {duration} s is not a whole number of {self.dt} s steps")
        u, x, h = self.clip_input(u), np.asarray(x, dtype=float).copy(), self.dt
        for _ in range(steps):
            k1 = self.derivative(x, u)
            k2 = self.derivative(x + 0.5 * h * k1, u)
            k3 = self.derivative(x + 0.5 * h * k2, u)
            k4 = self.derivative(x + h * k3, u)
            x = x + h / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        return x
