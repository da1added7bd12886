"""The simulated robot at its physics rate, as franka_ros2 and the robot behave.

Each tick ``i`` (time ``t_i``, one physics step ``h`` apart):

1. the state ``x_i`` is the robot's measurement at ``t_i``; the effort that
   goes with it is the torque applied over ``(t_{i-1}, t_i]``;
2. the command in force is the latest valid one *received* at or before
   ``t_i`` (zero-order hold between commands): a command takes effect from
   the first physics step after it arrives, not at the next control period;
3. optionally Franka's torque-rate limit (libfranka's rate limiter: the
   commanded torque without gravity moves at most ``max_rate * h`` per step),
   counted when it acts; then the joint torque limits (counted by the
   simulator);
4. one physics step.

Until the first valid command the robot is held at its start pose (physics
does not run; the effort is zero), as a robot stands before its torque
controller runs; the tick at which the first command takes effect is the
task's start. Without a valid command for ``command_timeout`` after that,
the safe hold (nominal gravity compensation plus damping) is applied. The
plant can keep its own record of every physics step (time, state, applied
torque): the ground truth that real-time bags are tested against.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whatmatters.control.hold import HoldController
from whatmatters.errors import InvalidTorqueError
from whatmatters.io import atomic_write_npz
from whatmatters.sim.simulator import PandaSim

__all__ = ["PlantConfig", "PlantTick", "RealtimePlant"]


@dataclass(frozen=True)
class PlantConfig:
    """Real-time plant settings.

    Attributes:
        command_timeout: Safe hold after this long without a valid command, s.
        rate_limit: Apply Franka's torque-rate limiter.
        max_torque_rate: Its limit, Nm/s (libfranka: 1000).
        record: Keep the record of every physics step.
    """

    command_timeout: float = 0.1
    rate_limit: bool = False
    max_torque_rate: float = 1000.0
    record: bool = False


@dataclass(frozen=True)
class PlantTick:
    """One tick's measurement.

    Attributes:
        stamp_ns: Time of the state, ns.
        q: Joint positions, rad, (7,).
        qd: Joint velocities, rad/s, (7,).
        effort: Mean torque applied since the previous published tick, Nm, (7,).
    """

    stamp_ns: int
    q: np.ndarray
    qd: np.ndarray
    effort: np.ndarray


class RealtimePlant:
    """A :class:`PandaSim` stepped one physics step per tick with the latest command.

    Args:
        sim: The simulator, reset to the episode's start; its ``control_period``
            must equal its ``timestep`` (one physics step per :meth:`PandaSim.step`).
        hold: The safe hold (and the gravity the rate limiter works around).
        cfg: Settings.

    Raises:
        ValueError: If the simulator holds a torque for more than one physics step.
    """

    def __init__(self, sim: PandaSim, hold: HoldController, cfg: PlantConfig) -> None:
        if sim.config.substeps != 1:
            raise ValueError(f"the real-time plant steps physics one step at a time; got {sim.config.substeps} substeps per step")
        self.sim, self.hold, self.cfg = sim, hold, cfg
        self.h_ns = int(round(sim.config.timestep * 1e9))
        self._lock = threading.Lock()
        self._pending: list[tuple[int, np.ndarray]] = []  # (received ns, tau), in arrival order
        self.command: np.ndarray | None = None
        self.command_ns = 0  # reception time of the command in force
        self.start_ns: int | None = None  # tick at which the first command took effect
        self.holding = False
        self.counts = {"commands": 0, "rejected": 0, "hold_steps": 0, "steps": 0, "rate_limited_steps": 0}
        self._limited_prev: np.ndarray | None = None  # rate limiter: last torque without gravity
        self._effort_sum = np.zeros(7)
        self._effort_n = 0
        self._record: list[np.ndarray] = []
        self._record_ns: list[int] = []

    # ---------------------------------------------------------------- inputs
    def receive(self, tau: np.ndarray, received_ns: int) -> bool:
        """Queues a command received at ``received_ns``; False (counted) if malformed. Thread-safe."""
        tau = np.asarray(tau, dtype=float)
        if tau.shape != (7,) or not np.all(np.isfinite(tau)):
            self.counts["rejected"] += 1
            return False
        with self._lock:
            self._pending.append((received_ns, tau))
            self.counts["commands"] += 1
        return True

    # ----------------------------------------------------------------- ticks
    def measure(self, stamp_ns: int) -> PlantTick:
        """The state at tick time ``stamp_ns`` and the mean applied torque since the last measurement."""
        d = self.sim.data
        effort = self._effort_sum / self._effort_n if self._effort_n else np.zeros(7)
        self._effort_sum, self._effort_n = np.zeros(7), 0
        return PlantTick(stamp_ns, d.qpos.copy(), d.qvel.copy(), effort)

    def step(self, stamp_ns: int) -> str:
        """One physics step from tick time ``stamp_ns``; returns ``held``, ``command`` or ``safe_hold``."""
        with self._lock:
            while self._pending and self._pending[0][0] <= stamp_ns:
                self.command_ns, self.command = self._pending.pop(0)
        d = self.sim.data
        q, qd = d.qpos.copy(), d.qvel.copy()
        if self.command is None:  # not started: the robot stands
            self._log(stamp_ns, q, qd, np.zeros(7))
            self._effort_n += 1
            return "held"
        if self.start_ns is None:
            self.start_ns = stamp_ns
        if (stamp_ns - self.command_ns) * 1e-9 > self.cfg.command_timeout:
            self.counts["hold_steps"] += 1
            self.holding, mode = True, "safe_hold"
            tau = self.hold(q, qd)
        else:
            self.holding, mode = False, "command"
            tau = self.command
        if self.cfg.rate_limit:
            tau = self._rate_limited(q, tau)
        try:
            state = self.sim.step(tau)
        except InvalidTorqueError:  # cannot happen (commands are checked on arrival); hold rather than stop
            state = self.sim.step(self.hold(q, qd))
        self.counts["steps"] += 1
        self._log(stamp_ns, q, qd, state.tau)
        self._effort_sum += state.tau
        self._effort_n += 1
        return mode

    def _rate_limited(self, q: np.ndarray, tau: np.ndarray) -> np.ndarray:
        """libfranka's rate limiter on the torque without (nominal) gravity."""
        g = self.hold.gravity(q)
        want = tau - g
        prev = np.zeros(7) if self._limited_prev is None else self._limited_prev
        step = self.cfg.max_torque_rate * self.sim.config.timestep
        limited = prev + np.clip(want - prev, -step, step)
        if np.any(np.abs(limited - want) > 1e-12):
            self.counts["rate_limited_steps"] += 1
        self._limited_prev = limited
        return limited + g

    # ---------------------------------------------------------------- record
    def _log(self, stamp_ns: int, q: np.ndarray, qd: np.ndarray, tau: np.ndarray) -> None:
        if self.cfg.record:
            self._record_ns.append(stamp_ns)
            self._record.append(np.concatenate([q, qd, tau]))

    def save_record(self, path: str | Path) -> Path:
        """Writes the record (atomically) as npz: ``t_ns`` (S,) int64 tick times, ``q``, ``qd`` (S, 7)
        the state at each tick, ``tau`` (S, 7) the torque applied over the step from it, ``start_ns``.

        Raises:
            ValueError: If the plant keeps no record.
        """
        if not self.cfg.record:
            raise ValueError("this plant keeps no record (PlantConfig.record is false)")
        rows = np.array(self._record) if self._record else np.zeros((0, 21))
        return atomic_write_npz(
            Path(path), t_ns=np.array(self._record_ns, dtype=np.int64), q=rows[:, :7], qd=rows[:, 7:14], tau=rows[:, 14:21],
            start_ns=np.int64(-1 if self.start_ns is None else self.start_ns),
        )
