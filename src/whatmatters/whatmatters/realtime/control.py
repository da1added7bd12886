"""The MPC on the robot's clock: 50 Hz control instants, the applied torque, delay compensation.

Control instants lie on a grid of the robot's own clock (the stamps of its
states): ``t_k = anchor + k dt``. The controller solves as soon as the first
state at or after ``t_k`` arrives (so the state is never older than its
delivery) and publishes the command at once. Until the task starts the
anchor is the first state; when the start ``t_0`` is known (the reference
publisher's ``/reference/start``: the tick at which the first command took
effect) the grid is re-anchored there, the context history restarts at the
state of ``t_0`` (at rest, as in a lock-step episode), and the step
``t_0 -> t_0 + dt`` is the first of the task.

Before each solve:

* the previous step's torque is the time-weighted mean of the robot's effort
  samples over ``(t_{k-1}, t_k]`` (:func:`~whatmatters.realtime.torque.mean_applied_torque`):
  the context history sees the torque actually applied, not the command;
* with delay compensation the OCP is solved from the state predicted at
  ``t_k + d`` under the command in force (:class:`~whatmatters.realtime.delay.StatePredictor`),
  with the reference of ``t_k + d``. ``d`` is fixed (``input_delay`` >= 0) or,
  by default, estimated each step: the state's age, the recent solve time and
  the command's transport, rounded up to the robot's tick (a command takes
  effect at a tick).
"""

from __future__ import annotations

import itertools
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from whatmatters.mpc.controller import ControlStep, MpcController
from whatmatters.realtime.delay import StatePredictor
from whatmatters.realtime.reference import ReferenceBuffer
from whatmatters.realtime.torque import mean_applied_torque_of

__all__ = ["RealtimeConfig", "RealtimeMpc", "RealtimeStep"]


@dataclass(frozen=True)
class RealtimeConfig:
    """Settings of the MPC in real time.

    Attributes:
        dt: Control period, s.
        delay_compensation: Solve from the state predicted over the input delay.
        input_delay: Fixed delay from a state's stamp to its command taking effect, s;
            negative: estimated each step.
        command_transport: Delivery time of a command to the robot, s (part of the estimate).
        instant_tolerance: A state this much before an instant counts as its state, s.
        max_age: A state older than this when it is processed is not solved from, s.
    """

    dt: float = 0.02
    delay_compensation: bool = True
    input_delay: float = -1.0
    command_transport: float = 0.0003
    instant_tolerance: float = 0.00025
    max_age: float = 0.1


@dataclass(frozen=True)
class RealtimeStep:
    """One control step in real time.

    Attributes:
        instant_ns: The control instant: the stamp of the state solved from, ns.
        x: The measured state, (nx,).
        x0: The state the OCP was solved from (predicted over the delay), (nx,).
        x_ref: The reference tracked, (N + 1, nx), from the task time of ``instant + delay``.
        delay_s: The input delay compensated, s (0 without compensation).
        started: Whether the task had started.
        out: The controller's output.
    """

    instant_ns: int
    x: np.ndarray
    x0: np.ndarray
    x_ref: np.ndarray
    delay_s: float
    started: bool
    out: ControlStep


class RealtimeMpc:
    """The controller's real-time loop, without ROS.

    Args:
        controller: The MPC controller.
        refs: The reference messages (their ``start_ns`` is set by :meth:`on_start`).
        cfg: Settings.
        predictor: The state predictor (required with delay compensation).
        now_ns: The clock of the stamps, ns.
    """

    def __init__(
        self,
        controller: MpcController,
        refs: ReferenceBuffer,
        cfg: RealtimeConfig,
        predictor: StatePredictor | None = None,
        now_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        if cfg.delay_compensation and predictor is None:
            raise ValueError("delay compensation needs a StatePredictor")
        self.controller, self.refs, self.cfg, self.predictor = controller, refs, cfg, predictor
        self._now = now_ns
        self.dt_ns = int(round(cfg.dt * 1e9))
        self._tol_ns = int(round(cfg.instant_tolerance * 1e9))
        self._samples: deque[tuple[int, np.ndarray, np.ndarray]] = deque(maxlen=2000)  # (stamp, x, effort)
        self._solve_ns: deque[int] = deque(maxlen=50)
        self.skipped_old = 0
        self._reset_episode()

    def _reset_episode(self) -> None:
        self.anchor_ns: int | None = None
        self.next_ns: int | None = None
        self.prev_instant_ns: int | None = None
        self.started = False
        self._pending_start: int | None = None
        self.last_sent: np.ndarray | None = None
        self._step_begin_ns = 0
        self.steps = 0

    # ----------------------------------------------------------------- inputs
    def on_start(self, start_ns: int) -> None:
        """The task started at ``start_ns`` (the tick the first command took effect)."""
        if self.refs.start_ns == start_ns:
            return
        self.refs.start_ns = start_ns
        self._pending_start = start_ns

    def tick_ns(self) -> int:
        """The robot's state period, ns (median of recent stamp differences; 1 ns if unknown)."""
        if len(self._samples) < 3:
            return 1
        stamps = np.array([s for s, _, _ in itertools.islice(reversed(self._samples), 50)][::-1], dtype=np.int64)
        return max(1, int(np.median(np.diff(stamps))))

    def delay_ns(self, stamp_ns: int, now_ns: int) -> int:
        """The input delay of a step solved now from a state stamped ``stamp_ns``, ns."""
        if not self.cfg.delay_compensation:
            return 0
        if self.cfg.input_delay >= 0:
            return int(round(self.cfg.input_delay * 1e9))
        solve = int(np.median(self._solve_ns)) if self._solve_ns else 0
        raw = max(0, now_ns - stamp_ns) + solve + int(round(self.cfg.command_transport * 1e9))
        tick = self.tick_ns()
        return int(math.ceil(raw / tick)) * tick

    def on_state(self, stamp_ns: int, x: np.ndarray, effort: np.ndarray) -> RealtimeStep | None:
        """A state of the robot; returns a step when it is the state of a control instant.

        The caller publishes ``step.out.tau`` at once and then calls :meth:`sent`.
        Returns None between instants and, before the first reference, at an instant
        (the caller holds; see ``no_reference``).
        """
        now = self._now()
        if self._samples and stamp_ns < self._samples[-1][0]:  # the robot (simulator) restarted
            self._samples.clear()
            self._reset_episode()
        self._samples.append((stamp_ns, np.asarray(x, dtype=float), np.asarray(effort, dtype=float)))
        if self._pending_start is not None and stamp_ns >= self._pending_start - self._tol_ns:
            self._restart_at(self._pending_start)
        if self.next_ns is None:
            self.next_ns = stamp_ns
            self.anchor_ns = stamp_ns
        if stamp_ns < self.next_ns - self._tol_ns:
            return None
        if now - stamp_ns > self.cfg.max_age * 1e9:  # a backlog (the node was starting, or stalled): never solve from an old state
            self.skipped_old += 1
            return None
        self._step_begin_ns = now
        delay = self.delay_ns(stamp_ns, now)
        x_ref = self.refs.at(stamp_ns + delay)
        k = (stamp_ns - self.anchor_ns + self._tol_ns) // self.dt_ns  # type: ignore[operator]
        self.next_ns = self.anchor_ns + (k + 1) * self.dt_ns  # type: ignore[operator]
        if x_ref is None:
            self.no_reference = True
            return None
        self.no_reference = False
        if self.prev_instant_ns is None:
            self.controller.reset(np.asarray(x, dtype=float), x_ref)  # a new episode: cold start along the reference
        else:
            applied = self.applied_torque(self.prev_instant_ns, stamp_ns)
            if applied is not None:
                self.controller.applied(applied)
        predict = self._predictor(delay) if delay > 0 and self.started and self.last_sent is not None else None
        out = self.controller(np.asarray(x, dtype=float), x_ref, predict)
        self.prev_instant_ns = stamp_ns
        self.steps += 1
        x0 = out.prediction[0] if np.all(np.isfinite(out.prediction[0])) else np.asarray(x, dtype=float)
        return RealtimeStep(stamp_ns, np.asarray(x, dtype=float), x0, x_ref, delay * 1e-9 if predict is not None else 0.0, self.started, out)

    no_reference = False

    def sent(self, tau: np.ndarray) -> None:
        """The command of the last step was published now (its solve time enters the delay estimate)."""
        self.last_sent = np.asarray(tau, dtype=float).copy()
        self._solve_ns.append(max(0, self._now() - self._step_begin_ns))

    def applied_torque(self, t0_ns: int, t1_ns: int) -> np.ndarray | None:
        """Mean torque applied over ``(t0, t1]`` from the robot's effort samples, Nm, (nu,), or None."""
        return mean_applied_torque_of(self._samples, t0_ns, t1_ns)

    # -------------------------------------------------------------- internals
    def _restart_at(self, start_ns: int) -> None:
        """Re-anchors the grid at the task's start and restarts the context history there."""
        self._pending_start = None
        state = min(self._samples, key=lambda s: abs(s[0] - start_ns))
        self.controller.restart_history(state[1], self.last_sent)
        self.anchor_ns = start_ns
        self.next_ns = start_ns + self.dt_ns
        self.prev_instant_ns = start_ns
        self.started = True

    def _predictor(self, delay_ns: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        tau = self.last_sent
        predictor = self.predictor

        def predict(x: np.ndarray, params: np.ndarray) -> np.ndarray:
            return predictor(x, [(delay_ns * 1e-9, tau)], params)  # type: ignore[misc]

        return predict
