"""When a lock-step simulator may advance: the rules ``franka_sim`` and ``car_sim`` share.

A lock-step simulator publishes the state at simulated time ``t`` and
advances one control period when the command answering it has arrived
and, with ``wait_for_sensitivity``, once the logger's sensitivities are at
most ``sensitivity_lag`` steps behind (at the episode's end: all of them).
Without a command for ``lockstep_timeout`` s of wall time it advances with
its safe hold; without the sensitivities for ``sensitivity_timeout`` s it
advances anyway. It starts once the graph is ready (the node decides what
that means) and ``start_delay`` s have passed. :class:`LockstepGate` keeps
that state; the node performs the actions. No ROS here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["LockstepGate", "LockstepSettings"]


@dataclass(frozen=True)
class LockstepSettings:
    """The simulator's lock-step parameters.

    Attributes:
        wait_for_sensitivity: Also wait for the logger's sensitivities.
        sensitivity_lag: Steps the sensitivities may be behind.
        sensitivity_timeout: Wall time to wait for them before advancing anyway, s.
        lockstep_timeout: Wall time without a command before a safe-hold step, s.
        start_delay: Wall time between the graph being ready and the start, s.
    """

    wait_for_sensitivity: bool
    sensitivity_lag: int
    sensitivity_timeout: float
    lockstep_timeout: float
    start_delay: float


class LockstepGate:
    """The lock-step state of one simulator.

    Args:
        settings: Its parameters.
        counts: The node's counters; ``steps`` and ``sensitivities`` are read (the node counts them).
        now: The wall clock, s.
    """

    def __init__(self, settings: LockstepSettings, counts: dict[str, int], now: Callable[[], float] = time.monotonic) -> None:
        self.s, self.counts, self._now = settings, counts, now
        self.started = False  # the graph was ready: states go out
        self.answered = False  # the command for the current state arrived
        self.ending = False  # the episode is over, its last sensitivities are awaited
        self._ready_since: float | None = None
        self._waiting_since = now()

    def sensitivities_ready(self) -> bool:
        """The samples of states 0..k - lag are in (k: the current state); at the end, all."""
        if not self.s.wait_for_sensitivity:
            return True
        if self.ending:
            return self.counts["sensitivities"] >= self.counts["steps"]
        return self.counts["sensitivities"] >= self.counts["steps"] + 1 - self.s.sensitivity_lag

    def published(self) -> None:
        """A state went out: its command is awaited from now."""
        self.answered = False
        self._waiting_since = self._now()

    def may_step(self) -> bool:
        """The current state is answered and the logger is close enough."""
        return self.started and not self.ending and self.answered and self.sensitivities_ready()

    def may_finish(self) -> bool:
        """The episode is over and every sensitivity it waits for is in."""
        return self.ending and self.sensitivities_ready()

    def may_start(self, graph_ready: bool) -> bool:
        """True once (then :attr:`started`): the graph has been ready for ``start_delay`` s."""
        if self.started:
            return False
        if not graph_ready:
            return False
        now = self._now()
        if self._ready_since is None:
            self._ready_since = now
        if now - self._ready_since < self.s.start_delay:
            return False
        self.started = True
        return True

    def timeout(self) -> str | None:
        """``sensitivities`` (waited ``sensitivity_timeout`` for them), ``command`` (waited
        ``lockstep_timeout`` for a command) or None; only once started."""
        if not self.started:
            return None
        waited = self._now() - self._waiting_since
        if (self.ending or self.answered) and waited > self.s.sensitivity_timeout:
            return "sensitivities"
        if not self.answered and not self.ending and waited > self.s.lockstep_timeout:
            return "command"
        return None
