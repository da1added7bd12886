"""The controller's steps rebuilt from its messages, with the context it used (for the sensitivity logger).

In real time the sensitivity logger computes S_hat for the problem the MPC
solved at a step: the state it solved from (predicted over the delay), the
reference it tracked, and for a learned model the context from the same
history. The first two are published by the MPC (``/mpc/prediction`` point 0,
``/mpc/reference``); the history is rebuilt here exactly as
:class:`~whatmatters.realtime.control.RealtimeMpc` builds it: restarted at the
state of the task's start, then one transition per control step, from the
measured state of the previous instant under the mean applied torque
(:func:`~whatmatters.realtime.torque.mean_applied_torque`) to the measured
state of this one. Steps are released in order, once the robot's states cover
their instant and their reference has arrived.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from whatmatters.realtime.torque import mean_applied_torque_of

__all__ = ["ReadyStep", "StepAssembler"]


@dataclass(frozen=True)
class ReadyStep:
    """One control step with the inputs of its OCP.

    Attributes:
        instant_ns: Stamp of the state solved from, ns.
        x: Measured state, (nx,).
        x0: State the OCP was solved from, (nx,).
        x_ref: Reference tracked, (N + 1, nx).
        context: ``(first parameter index, context vector)``, or None for a model without context.
    """

    instant_ns: int
    x: np.ndarray
    x0: np.ndarray
    x_ref: np.ndarray
    context: tuple[int, np.ndarray] | None


class StepAssembler:
    """Collects the messages of the controller's steps and releases each step with its context.

    Args:
        tracker: The model's context tracker (None: no context).
        keep: Robot states kept for the applied torque.
    """

    def __init__(self, tracker: Any | None, keep: int = 2000) -> None:
        self.tracker = tracker
        self._samples: deque[tuple[int, np.ndarray, np.ndarray]] = deque(maxlen=keep)
        self._steps: dict[int, dict[str, Any]] = {}
        self.start_ns: int | None = None
        self._prev: tuple[int, np.ndarray, np.ndarray | None] | None = None  # (instant, x, tau commanded) of the last step
        self.dropped = 0

    def on_start(self, start_ns: int) -> None:
        """The task's start (``/reference/start``)."""
        self.start_ns = start_ns
        self._prev = None

    def on_state(self, stamp_ns: int, x: np.ndarray, effort: np.ndarray) -> None:
        """A robot state with the torque applied over the interval ending at it."""
        self._samples.append((stamp_ns, np.asarray(x, dtype=float), np.asarray(effort, dtype=float)))

    def on_step(self, instant_ns: int, x: np.ndarray, tau: np.ndarray) -> None:
        """``/mpc/state``: a step's measured state and commanded torque."""
        self._steps.setdefault(instant_ns, {}).update(x=np.asarray(x, dtype=float), tau=np.asarray(tau, dtype=float))

    def on_solve(self, instant_ns: int, x0: np.ndarray | None = None, x_ref: np.ndarray | None = None) -> None:
        """``/mpc/prediction`` (its first point: ``x0``) or ``/mpc/reference`` (``x_ref``) of a step."""
        entry = self._steps.setdefault(instant_ns, {})
        if x0 is not None:
            entry["x0"] = np.asarray(x0, dtype=float)
        if x_ref is not None:
            entry["x_ref"] = np.asarray(x_ref, dtype=float)

    def ready(self) -> list[ReadyStep]:
        """The steps complete now, in order (each released once)."""
        out: list[ReadyStep] = []
        while self._steps:
            instant = min(self._steps)
            entry = self._steps[instant]
            if self.start_ns is None or instant <= self.start_ns:
                if self.start_ns is not None or len(self._steps) > 100:  # before the task: not a step of it
                    del self._steps[instant]
                    continue
                break
            later = len(self._steps) > 1
            covered = bool(self._samples) and self._samples[-1][0] >= instant
            if "x" not in entry or "x_ref" not in entry or not covered or ("x0" not in entry and not later):
                if later and len(self._steps) > 50:  # stuck (a message lost): give the step up
                    del self._steps[instant]
                    self.dropped += 1
                    continue
                break
            del self._steps[instant]
            out.append(ReadyStep(instant, entry["x"], entry.get("x0", entry["x"]), entry["x_ref"], self._context(instant, entry)))
        return out

    def _context(self, instant: int, entry: dict[str, Any]) -> tuple[int, np.ndarray] | None:
        if self.tracker is None:
            return None
        if self._prev is None:  # the first step of the task: the history restarts at the start's state
            start = min(self._samples, key=lambda s: abs(s[0] - self.start_ns))  # type: ignore[operator]
            self.tracker.reset(start[1])
            self._prev = (self.start_ns, start[1], None)  # type: ignore[assignment]
        prev_ns, x_prev, tau_prev = self._prev  # type: ignore[misc]
        applied = mean_applied_torque_of(self._samples, prev_ns, instant)
        tau = applied if applied is not None else tau_prev
        if tau is not None:
            self.tracker.observe(entry["x"], tau, x_prev)
        self._prev = (instant, entry["x"], entry.get("tau"))
        return self.tracker.context() if getattr(self.tracker, "encoder", None) is not None else None
