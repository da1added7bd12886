"""A wall-clock pacer with drift correction, and its timing figures.

Tick ``i`` is due at ``origin + i * period`` on the system clock (the clock
ROS time uses): the schedule is absolute, so sleep overshoots never add up.
A tick processed after its deadline is late by the difference; one processed
more than a whole period late counts as a late step. A pacer that falls
behind catches up (ticks back to back) rather than skipping time, as the
physics of a robot cannot skip.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import numpy as np

__all__ = ["PacedClock"]


class PacedClock:
    """Ticks at a fixed period against the wall clock.

    Args:
        period_s: Tick period, s.
        now_ns: The clock, ns (``time.time_ns``: ROS's system time).
        sleep: Sleeps a number of seconds.
        window: Lags kept for the median and p99 (the most recent ticks).
    """

    def __init__(
        self,
        period_s: float,
        now_ns: Callable[[], int] = time.time_ns,
        sleep: Callable[[float], None] = time.sleep,
        window: int = 50_000,
    ) -> None:
        if period_s <= 0:
            raise ValueError(f"period must be > 0, got {period_s}")
        self.period_ns = int(round(period_s * 1e9))
        self._now, self._sleep = now_ns, sleep
        self.origin_ns: int | None = None
        self.ticks = 0
        self.late_steps = 0
        self.max_lag_ns = 0
        self.lag_ns = 0
        self._lags: deque[int] = deque(maxlen=window)

    def start(self, origin_ns: int | None = None) -> int:
        """Sets tick 0's deadline (now if None); returns it, ns."""
        self.origin_ns = self._now() if origin_ns is None else origin_ns
        self.ticks = 0
        return self.origin_ns

    def reset_figures(self) -> None:
        """Starts the lag statistics afresh (e.g. when the task starts); the schedule is kept."""
        self.late_steps, self.max_lag_ns, self.lag_ns = 0, 0, 0
        self._lags.clear()

    def deadline(self, tick: int) -> int:
        """Deadline of a tick, ns."""
        if self.origin_ns is None:
            raise RuntimeError("PacedClock.start() was not called")
        return self.origin_ns + tick * self.period_ns

    def wait(self) -> int:
        """Sleeps until the next tick is due and returns its deadline, ns (the tick's time)."""
        due = self.deadline(self.ticks)
        now = self._now()
        if now < due:
            self._sleep((due - now) * 1e-9)
            now = self._now()
        lag = max(0, now - due)
        self.lag_ns = lag
        self.max_lag_ns = max(self.max_lag_ns, lag)
        self._lags.append(lag)
        if lag > self.period_ns:
            self.late_steps += 1
        self.ticks += 1
        return due

    def figures(self) -> dict[str, float]:
        """``lag_ms`` (last tick), ``lag_ms_median``, ``lag_ms_p99``, ``lag_ms_max``, ``late_steps``, ``ticks``."""
        lags = np.asarray(self._lags, dtype=float) * 1e-6 if self._lags else np.zeros(1)
        return {
            "lag_ms": self.lag_ns * 1e-6,
            "lag_ms_median": float(np.median(lags)),
            "lag_ms_p99": float(np.percentile(lags, 99)),
            "lag_ms_max": self.max_lag_ns * 1e-6,
            "late_steps": self.late_steps,
            "ticks": self.ticks,
        }
