"""The race car's MPC: its constraints, its reference along the racing line, a bounded fallback.

The OCP is the project's (:func:`whatmatters.mpc.ocp.build_ocp` through
:class:`~whatmatters.mpc.solver.AcadosMpcSolver`) with the car's model, the
weights of ``config/car/mpc.yaml`` and these constraints
(:func:`car_constraints`):

* hard input bounds: ``min_accel <= a_cmd <= max_accel``, ``|delta_cmd| <= max_steer``;
* soft track bounds on stages 1..N: ``|n| <= half_width - (car width / 2 + margin)``;
* soft steering rate: ``|delta_cmd - delta| <= steer_time_constant * max_steer_rate``
  (the model's steering follows its command with that time constant: the
  rate stays within ``max_steer_rate``).

The state's arc length ``s`` is kept unwrapped by the controller (it grows
by the track length each lap; the curvature series is periodic), so the
horizon never jumps at the start line.

A learned model's context follows the measured motion (its tracker sees
each transition, the context parameters are set before each solve).

Every call returns a command that is finite and inside the input bounds:
the solution's first input; on a failure the previous plan, shifted; when no
plan is left, straight wheels and moderate braking (``fallback_brake``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from whatmatters.car.model import CarModel
from whatmatters.car.raceline import RacingLine
from whatmatters.car.track import Track
from whatmatters.config import YamlConfig
from whatmatters.errors import ConfigError
from whatmatters.mpc.constraints import OcpConstraints
from whatmatters.mpc.controller import FallbackStats
from whatmatters.mpc.solver import AcadosMpcSolver, SolveResult

__all__ = ["CarControlConfig", "CarController", "CarStep", "car_constraints", "safe_stop"]

log = logging.getLogger(__name__)

SOLVED, SHIFTED_PLAN, BRAKE = "solved", "shifted_plan", "brake"


@dataclass(frozen=True)
class CarControlConfig(YamlConfig):
    """The car controller's settings (``config/car/control.yaml``).

    Attributes:
        margin: m kept between the car's side and the track border (soft).
        penalty: Quadratic weight of a soft constraint's violation (per m^2 or rad^2).
        fallback_brake: m/s^2 (< 0) commanded when no plan is left.
        fallback_after: Consecutive failures before braking.
    """

    yaml_file: ClassVar[str] = "car/control.yaml"

    margin: float = 0.05
    penalty: float = 1e4
    fallback_brake: float = -3.0
    fallback_after: int = 5

    def __post_init__(self) -> None:
        if self.margin < 0:
            raise ConfigError(f"car control: 'margin' must be >= 0 m, got {self.margin}")
        if not self.penalty > 0:
            raise ConfigError(f"car control: 'penalty' must be > 0, got {self.penalty}")
        if not self.fallback_brake < 0:
            raise ConfigError(f"car control: 'fallback_brake' must be < 0 m/s^2, got {self.fallback_brake}")
        if self.fallback_after < 1:
            raise ConfigError("car control: 'fallback_after' must be >= 1")


def car_constraints(model: CarModel, track: Track, cfg: CarControlConfig) -> OcpConstraints:
    """The OCP's constraints for ``model`` on ``track`` (module docstring).

    Raises:
        ConfigError: If the car with its margin does not fit the track.
    """
    p = model.p
    room = track.half_width - 0.5 * p.width - cfg.margin
    if not room > 0:
        raise ConfigError(f"car control: a {p.width} m car with a {cfg.margin} m margin does not fit a track {2 * track.half_width} m wide")
    band = model.steer_command_band()
    c = np.zeros((1, model.nx))
    c[0, 6] = -1.0
    return OcpConstraints(
        u_lower=np.array([p.min_accel, -p.max_steer]),
        u_upper=np.array([p.max_accel, p.max_steer]),
        x_index=(1,),
        x_lower=np.array([-room]),
        x_upper=np.array([room]),
        g_c=c,
        g_d=np.array([[0.0, 1.0]]),
        g_lower=np.array([-band]),
        g_upper=np.array([band]),
        penalty=cfg.penalty,
    )


def safe_stop(vx: float, brake: float) -> np.ndarray:
    """The command that stops the car, without a controller: straight wheels and braking at ``brake``
    (m/s^2, < 0), eased to zero as the speed ``vx`` (m/s) does (the last 0.2 s), so it does not reverse, (2,)."""
    return np.array([max(brake, -max(float(vx), 0.0) / 0.2), 0.0])


@dataclass(frozen=True)
class CarStep:
    """One controller output.

    Attributes:
        u: ``(a_cmd, delta_cmd)`` (m/s^2, rad), finite, inside the input bounds, (2,).
        source: ``solved``, ``shifted_plan`` or ``brake``.
        status: acados status of this step's solve.
        solve_ms: acados' solve time, ms.
        wall_ms: Wall time of the whole call, ms.
        x0: The state solved from, ``s`` unwrapped, (8,).
        x_ref: The reference along the horizon, (N + 1, 8).
        prediction: Predicted states, (N + 1, 8).
    """

    u: np.ndarray
    source: str
    status: int
    solve_ms: float
    wall_ms: float
    x0: np.ndarray
    x_ref: np.ndarray
    prediction: np.ndarray


class CarController:
    """Receding-horizon control of the car along a racing line.

    Args:
        solver: A compiled solver of the car's model and :func:`car_constraints`.
        line: The reference.
        track_length: m, for unwrapping ``s``.
        cfg: Fallback settings.
    """

    def __init__(self, solver: AcadosMpcSolver, line: RacingLine, track_length: float, cfg: CarControlConfig | None = None) -> None:
        self.solver, self.line, self.length = solver, line, float(track_length)
        self.cfg = cfg or CarControlConfig()
        self.stats = FallbackStats()
        self.tracker = solver.model.context_tracker()  # a learned model's context from the recent motion
        self._plan: SolveResult | None = None
        self._plan_age = 0
        self._consecutive = 0
        self._laps = 0
        self._last_s: float | None = None
        self._last: tuple[np.ndarray, np.ndarray] | None = None  # (x, u) of the previous step

    def reset(self, x0: np.ndarray) -> None:
        """Starts an episode at model state ``x0`` (``s`` in [0, length)): the iterate along the line."""
        self._laps, self._last_s, self._last = 0, None, None
        self._plan, self._plan_age, self._consecutive = None, 0, 0
        self.stats = FallbackStats()
        if self.tracker is not None:
            self.tracker.reset(np.asarray(x0, dtype=float))
        x = self.unwrap(x0)
        ref = self.line.horizon(float(x[0]), self.solver.cfg.dt, self.solver.n)
        u = np.tile([0.0, float(ref[0, 6])], (self.solver.n, 1))
        self.solver.initialize(ref, self.solver.constraints.clip_input(u))

    def unwrap(self, x: np.ndarray) -> np.ndarray:
        """``x`` with ``s`` continued over laps (a drop of more than half a lap is a new lap), (8,)."""
        x = np.asarray(x, dtype=float).copy()
        s = x[0] + self._laps * self.length
        if self._last_s is not None and s < self._last_s - 0.5 * self.length:
            self._laps += 1
            s += self.length
        self._last_s = s
        x[0] = s
        return x

    def reference(self, x0: np.ndarray) -> np.ndarray:
        """The reference along the horizon, (N + 1, 8): the line at the last plan's predicted
        arc lengths (shifted one step), or along the line from ``x0`` without a plan."""
        n, dt = self.solver.n, self.solver.cfg.dt
        if self._plan is None or self._plan_age > 0:
            return self.line.horizon(float(x0[0]), dt, n)
        s = np.concatenate([self._plan.x[1:, 0], [2 * self._plan.x[-1, 0] - self._plan.x[-2, 0]]])
        s += x0[0] - s[0]  # anchored at the measured s
        return self.line.states(s)

    def __call__(self, x: np.ndarray) -> CarStep:
        """The command for the measured model state ``x`` (``s`` in [0, length)), (8,)."""
        start = time.perf_counter()
        n, nx = self.solver.n, self.solver.nx
        status, solve_ms = -1, 0.0
        x0 = self.unwrap(x) if np.all(np.isfinite(x)) else np.full(nx, np.nan)
        if self.tracker is not None and np.all(np.isfinite(x0)):
            if self._last is not None:
                self.tracker.observe(x0, self._last[1], self._last[0])
            start_idx, z = self.tracker.context()
            if np.all(np.isfinite(z)):
                self.solver.set_parameter_slice(start_idx, z)
            else:
                x0 = np.full(nx, np.nan)  # no trustworthy model: the fallback
        x_ref = self.reference(x0) if np.all(np.isfinite(x0)) else np.full((n + 1, nx), np.nan)
        prediction = np.full((n + 1, nx), np.nan)
        if np.all(np.isfinite(x_ref)):
            self.solver.set_reference(x_ref)
            res = self.solver.solve(x0)
            status, solve_ms, prediction = res.status, 1e3 * res.time_s, res.x
            cons = self.solver.constraints
            if res.ok and np.all(res.u0 >= cons.u_lower - 1e-6) and np.all(res.u0 <= cons.u_upper + 1e-6):
                self._plan, self._plan_age, self._consecutive = res, 0, 0
                self.solver.shift(res)
                return self._done(cons.clip_input(res.u0), SOLVED, status, solve_ms, start, x0, x_ref, prediction)
        u, source = self._fallback(status)
        if np.all(np.isfinite(x0)):
            self.solver.initialize(np.tile(x0, (n + 1, 1)), np.tile(u, (n, 1)))
        return self._done(u, source, status, solve_ms, start, x0, x_ref, prediction)

    def _fallback(self, status: int) -> tuple[np.ndarray, str]:
        self.stats.failures += 1
        self.stats.statuses[status] = self.stats.statuses.get(status, 0) + 1
        self._consecutive += 1
        self._plan_age += 1
        log.debug("car MPC failure (status %d), %d in a row", status, self._consecutive)
        cons = self.solver.constraints
        plan = self._plan
        if plan is not None and self._consecutive < self.cfg.fallback_after and self._plan_age < len(plan.u):
            self.stats.shifted_plan += 1
            return cons.clip_input(plan.u[self._plan_age]), SHIFTED_PLAN
        self.stats.gravity_hold += 1
        return cons.clip_input(np.array([self.cfg.fallback_brake, 0.0])), BRAKE

    def _done(
        self, u: np.ndarray, source: str, status: int, solve_ms: float, start: float, x0: np.ndarray, x_ref: np.ndarray, prediction: np.ndarray
    ) -> CarStep:
        self._last = (x0.copy(), u.copy()) if np.all(np.isfinite(x0)) else None
        return CarStep(u, source, status, solve_ms, 1e3 * (time.perf_counter() - start), x0, x_ref, prediction)
