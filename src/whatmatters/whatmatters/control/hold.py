"""Holding a pose: nominal gravity compensation plus a joint-space PD term.

``tau = g_nom(q) + kp (q_target - q) - kd qd``, clamped to the torque limits.
The gravity term comes from the nominal model (it does not know the payload),
so with a payload the pose is held with a steady-state error that the PD term
keeps small. With ``kp = 0`` this is the "gravity compensation plus damping"
safe hold.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import casadi as ca
import numpy as np

from whatmatters.dynamics.rigid_body import RigidBodyDynamics
from whatmatters.sim.environments import Environment
from whatmatters.sim.simulator import PandaSim

__all__ = ["HoldController", "HoldResult", "run_hold"]


class HoldController:
    """Gravity compensation plus PD.

    Args:
        model: Model whose gravity torque is compensated (the nominal model).
        q_target: Pose to hold, rad, shape (7,); None for damping only.
        kp: Position gains, Nm/rad, scalar or shape (7,).
        kd: Velocity gains, Nm s/rad, scalar or shape (7,).
        torque_limits: Symmetric torque limits, Nm, shape (7,).
    """

    def __init__(
        self,
        model: RigidBodyDynamics,
        q_target: np.ndarray | None,
        torque_limits: np.ndarray,
        kp: float | np.ndarray = (200.0, 200.0, 200.0, 200.0, 50.0, 50.0, 20.0),  # type: ignore[assignment]
        kd: float | np.ndarray = (20.0, 20.0, 20.0, 20.0, 5.0, 5.0, 2.0),  # type: ignore[assignment]
    ) -> None:
        q = ca.SX.sym("q", model.nq)
        self._gravity = ca.Function("g", [q], [model.gravity(q)])
        self.q_target = None if q_target is None else np.asarray(q_target, dtype=float)
        self.kp = np.broadcast_to(np.asarray(kp, dtype=float), (model.nq,))
        self.kd = np.broadcast_to(np.asarray(kd, dtype=float), (model.nq,))
        self.torque_limits = np.asarray(torque_limits, dtype=float)

    def gravity(self, q: np.ndarray) -> np.ndarray:
        """Nominal gravity torque, Nm, shape (7,)."""
        return np.asarray(self._gravity(q)).ravel()

    def __call__(self, q: np.ndarray, qd: np.ndarray) -> np.ndarray:
        """Torque command, Nm, shape (7,), finite and inside the limits."""
        tau = self.gravity(q) - self.kd * qd
        if self.q_target is not None:
            tau = tau + self.kp * (self.q_target - q)
        return np.clip(tau, -self.torque_limits, self.torque_limits)


@dataclass(frozen=True)
class HoldResult:
    """Outcome of :func:`run_hold`.

    Attributes:
        sim_seconds: Simulated time, s.
        wall_seconds: Wall-clock time of the loop, s.
        final_q: Joint positions at the end, rad, shape (7,).
        max_error: Largest |q - q_target| over the run, rad.
        clamps: Steps whose command was clamped.
    """

    sim_seconds: float
    wall_seconds: float
    final_q: np.ndarray
    max_error: float
    clamps: int

    @property
    def realtime_factor(self) -> float:
        """Simulated seconds per wall-clock second."""
        return self.sim_seconds / max(self.wall_seconds, 1e-12)


def run_hold(sim: PandaSim, env: Environment, q_target: np.ndarray, seconds: float, model: RigidBodyDynamics) -> HoldResult:
    """Holds ``q_target`` from rest for ``seconds`` of simulated time.

    Args:
        sim: The simulator (reset here to ``env``).
        env: The payload environment.
        q_target: Pose to start at and hold, rad, shape (7,).
        seconds: Simulated duration, s.
        model: Model for the gravity compensation.
    """
    ctrl = HoldController(model, q_target, sim.torque_limits)
    state = sim.reset(env, q_target)
    steps = int(round(seconds / sim.config.control_period))
    max_err = 0.0
    start = time.perf_counter()
    for _ in range(steps):
        state = sim.step(ctrl(state.q, state.qd))
        max_err = max(max_err, float(np.max(np.abs(state.q - q_target))))
    wall = time.perf_counter() - start
    return HoldResult(state.time, wall, state.q, max_err, sim.clamp_count)
