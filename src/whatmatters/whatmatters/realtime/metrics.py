"""Figures of a real-time run: J_track on the reference's clock, state-to-command latency, late commands.

* **J_track** (eq. 7) on the task's clock: the states nearest to the grid
  ``t_0 + k dt`` (``t_0``: the reference's time origin, ``/reference/start``)
  against the recorded reference at the same times (cubic Hermite
  interpolation of the ``/reference`` messages,
  :class:`~whatmatters.realtime.reference.ReferenceBuffer`). A lock-step
  episode is the special case where the states lie on that grid.
* **Latency**: for every control step the controller records (``/mpc/state``:
  the stamp of the state it solved from and the torque it commanded), the
  arrival of that command (its reception time) minus the state's stamp, over
  the task's steps. A command later than one control period is *late*: it is
  applied a period or more after the state it answers.

:class:`RealtimeMetrics` takes the messages one at a time, so the same code
serves a live node and a recorded bag (:func:`bag_figures`, any bag: the
simulator's or a real robot's).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from whatmatters.realtime.reference import ReferenceBuffer

__all__ = ["RealtimeMetrics", "bag_figures"]


class RealtimeMetrics:
    """Accumulates the figures of a run from its messages.

    Args:
        dt: Control period (grid spacing and spacing of the reference's points), s.
        q_weights: Q on q of eq. (7), (7,).
        qd_weights: Q on qd, (7,).
        seconds: Task time covered by J (grid points up to this time); None: all.
        max_gap: A grid point without a state within this much of it is missing, s.
        reference: ``x_ref(task time s) -> (14,)``: the reference itself (e.g. regenerated
            from its seed) instead of the recorded messages.
    """

    def __init__(
        self,
        dt: float,
        q_weights: np.ndarray,
        qd_weights: np.ndarray,
        seconds: float | None = None,
        max_gap: float = 0.005,
        reference: Callable[[float], np.ndarray] | None = None,
    ) -> None:
        self.dt_ns = int(round(dt * 1e9))
        self.reference = reference
        self.weights = np.concatenate([np.asarray(q_weights, dtype=float), np.asarray(qd_weights, dtype=float)])
        self.seconds, self.max_gap_ns = seconds, int(round(max_gap * 1e9))
        self.refs = ReferenceBuffer(dt)
        self._early: deque[tuple[int, np.ndarray]] = deque(maxlen=2000)  # states before the start is known
        self._prev: tuple[int, np.ndarray] | None = None
        self._k = 0
        self._sum, self._points, self._missing = 0.0, 0, 0
        self._errors: list[np.ndarray] = []
        self._steps: deque[tuple[int, np.ndarray]] = deque()
        self._commands: deque[tuple[int, np.ndarray]] = deque()
        self.latencies_ns: list[int] = []
        self.instants_ns: list[int] = []
        self.unmatched = 0

    # ------------------------------------------------------------ the clock
    def set_start(self, start_ns: int) -> None:
        """The reference's time origin, ns; states received before it is known are used now."""
        if self.refs.start_ns is not None:
            return
        self.refs.start_ns = start_ns
        early = list(self._early)
        self._early.clear()
        for stamp, x in early:
            self.add_state(stamp, x)

    def add_reference(self, stamp_ns: int, x_ref: np.ndarray) -> None:
        """A reference message (N + 1 states from the task time of its stamp)."""
        self.refs.add(stamp_ns, x_ref)

    def add_state(self, stamp_ns: int, x: np.ndarray) -> None:
        """A state of the robot (any rate), in stamp order."""
        start = self.refs.start_ns
        if start is None:
            self._early.append((stamp_ns, np.asarray(x, dtype=float)))
            return
        if stamp_ns < start - self.max_gap_ns:
            return
        x = np.asarray(x, dtype=float)
        while True:
            grid = start + self._k * self.dt_ns
            if self.seconds is not None and self._k * self.dt_ns > self.seconds * 1e9 + 1e3:
                break
            if stamp_ns < grid:
                break
            best = (stamp_ns, x) if self._prev is None or abs(stamp_ns - grid) <= abs(self._prev[0] - grid) else self._prev
            if abs(best[0] - grid) > self.max_gap_ns:
                self._missing += 1
            else:
                self._add_point(grid, best[1])
            self._k += 1
        self._prev = (stamp_ns, x)

    def finish(self) -> None:
        """The states have ended: the grid points left, up to the last state's time plus ``max_gap``, take the last state."""
        start = self.refs.start_ns
        if start is None or self._prev is None:
            return
        while True:
            grid = start + self._k * self.dt_ns
            if (self.seconds is not None and self._k * self.dt_ns > self.seconds * 1e9 + 1e3) or grid - self._prev[0] > self.max_gap_ns:
                return
            self._add_point(grid, self._prev[1])
            self._k += 1

    def _add_point(self, grid_ns: int, x: np.ndarray) -> None:
        if self.reference is not None:
            x_ref = np.asarray(self.reference(self._k * self.dt_ns * 1e-9), dtype=float)
        else:
            ref = self.refs.at(grid_ns)
            if ref is None:
                self._missing += 1
                return
            x_ref = ref[0]
        err = x - x_ref
        self._sum += float(np.sum(self.weights * err**2))
        self._points += 1

    # --------------------------------------------------------------- latency
    def add_step(self, instant_ns: int, tau: np.ndarray) -> None:
        """A control step: the stamp of the state solved from and the torque commanded."""
        start = self.refs.start_ns
        if start is not None and self.seconds is not None and instant_ns >= start + self.seconds * 1e9 - self.max_gap_ns:
            return  # the task's last state (what answers it is past the task) and the holds once the robot went quiet
        self._steps.append((instant_ns, np.asarray(tau, dtype=float)))
        self._match()

    def add_command(self, received_ns: int, tau: np.ndarray) -> None:
        """A command as it arrived, ns."""
        self._commands.append((received_ns, np.asarray(tau, dtype=float)))
        self._match()

    def _match(self) -> None:
        """Pairs steps and commands in order by their torque (the same float64 values)."""
        while self._steps and self._commands:
            (instant, tau_s), (received, tau_c) = self._steps[0], self._commands[0]
            if tau_s.shape == tau_c.shape and np.array_equal(tau_s, tau_c):
                self.latencies_ns.append(received - instant)
                self.instants_ns.append(instant)
                self._steps.popleft()
                self._commands.popleft()
            elif received < instant:  # a command older than the step: not one of these steps'
                self._commands.popleft()
                self.unmatched += 1
            else:
                self._steps.popleft()
                self.unmatched += 1

    # --------------------------------------------------------------- summary
    def summary(self) -> dict[str, Any]:
        """``j_track`` (None before the start), ``j_points``, ``j_missing``, ``latency_ms_median``,
        ``latency_ms_p99``, ``latency_ms_max``, ``late_commands`` (later than one period),
        ``matched_commands``, ``unmatched``. Latencies count the task's steps (from its start on);
        the steps before it (the robot standing, the controller starting) are ``prestart_commands``."""
        start = self.refs.start_ns
        all_lat = np.asarray(self.latencies_ns, dtype=float) * 1e-6
        task = np.asarray(self.instants_ns, dtype=np.int64) >= start if start is not None else np.ones(all_lat.size, dtype=bool)
        lat = all_lat[task] if all_lat.size else all_lat
        return {
            "j_track": self._sum / self._points if self._points else None,
            "j_points": self._points,
            "j_missing": self._missing,
            "latency_ms_median": float(np.median(lat)) if lat.size else None,
            "latency_ms_p99": float(np.percentile(lat, 99)) if lat.size else None,
            "latency_ms_max": float(lat.max()) if lat.size else None,
            "late_commands": int(np.sum(lat > self.dt_ns * 1e-6)),
            "matched_commands": int(lat.size),
            "prestart_commands": int(all_lat.size - lat.size),
            "unmatched": self.unmatched + len(self._steps),
        }


def bag_figures(
    bag: str | Path,
    dt: float,
    q_weights: np.ndarray,
    qd_weights: np.ndarray,
    seconds: float | None = None,
    reference: Callable[[float], np.ndarray] | None = None,
) -> dict[str, Any]:
    """:class:`RealtimeMetrics` of a recorded bag, plus the simulator's real-time lag if it is recorded.

    The reference's origin is ``/reference/start``; a bag without it (lock-step)
    is read on the clock of its first joint state. Commands are taken at their
    reception (the bag's log time).

    Args:
        bag: The bag folder.
        dt: Control period, s.
        q_weights: Q on q, (7,).
        qd_weights: Q on qd, (7,).
        seconds: Task time covered by J, s (None: all).
        reference: The reference as a function of task time (e.g. regenerated from its seed);
            then ``j_track`` uses it and ``j_track_recorded`` the recorded messages.

    Returns:
        :meth:`RealtimeMetrics.summary` with ``j_track_recorded``, ``start_ns``, ``realtime`` (whether the bag
        has a reference origin) and ``sim`` (the last real-time figures of ``franka_sim``
        on ``/diagnostics``: ``lag_ms_p99``, ``lag_ms_max``, ``late_steps``, ...; {} if none).

    Raises:
        BagError: If the bag cannot be read.
    """
    from rosbags.rosbag2 import Reader

    from whatmatters.data.bags import COMMANDS, JOINT_STATES, MPC_STATE, REFERENCE, REFERENCE_START, TYPESTORE, BagError, message_stamp_ns

    metrics = RealtimeMetrics(dt, q_weights, qd_weights, seconds, reference=reference)
    recorded = RealtimeMetrics(dt, q_weights, qd_weights, seconds) if reference is not None else metrics
    topics = {JOINT_STATES, COMMANDS, MPC_STATE, REFERENCE, REFERENCE_START, "/diagnostics"}
    events: list[tuple[int, str, Any]] = []
    try:
        with Reader(Path(bag)) as reader:
            conns = [c for c in reader.connections if c.topic in topics]
            for conn, ts, raw in reader.messages(connections=conns):
                events.append((ts, conn.topic, TYPESTORE.deserialize_cdr(raw, conn.msgtype)))
    except Exception as exc:  # rosbags raises several types for damaged files
        raise BagError(f"bag {bag} cannot be read: {type(exc).__name__}: {exc}") from exc
    stamp = message_stamp_ns
    starts = [stamp(msg) for _, topic, msg in events if topic == REFERENCE_START]
    states = sorted(((stamp(msg), msg) for _, topic, msg in events if topic == JOINT_STATES), key=lambda e: e[0])
    if not states:
        raise BagError(f"bag {bag}: no {JOINT_STATES}")
    start = starts[0] if starts else states[0][0]
    accumulators = {id(metrics): metrics, id(recorded): recorded}.values()
    refs = [(stamp(msg), 0, msg) for _, topic, msg in events if topic == REFERENCE]
    for acc in accumulators:
        acc.set_start(start)
    for ns, kind, msg in sorted(refs + [(ns, 1, msg) for ns, msg in states], key=lambda e: (e[0], e[1])):
        for acc in accumulators:
            if kind == 0:  # references before the states of the same stamp
                acc.add_reference(ns, np.array([np.concatenate([p.positions, p.velocities]) for p in msg.points]))
            else:
                acc.add_state(ns, np.concatenate([msg.position, msg.velocity]))
    for acc in accumulators:
        acc.finish()
    sim: dict[str, Any] = {}
    for ts, topic, msg in sorted(events, key=lambda e: e[0]):
        if topic == MPC_STATE:
            metrics.add_step(stamp(msg), np.asarray(msg.effort, dtype=float))
        elif topic == COMMANDS:
            metrics.add_command(ts, np.asarray(msg.data, dtype=float))
        elif topic == "/diagnostics":
            for status in msg.status:
                if status.name == "franka_sim":
                    sim = {kv.key: _number(kv.value) for kv in status.values}
    return {**metrics.summary(), "j_track_recorded": recorded.summary()["j_track"], "start_ns": start, "realtime": bool(starts), "sim": sim}


def _number(text: str) -> Any:
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text else value
