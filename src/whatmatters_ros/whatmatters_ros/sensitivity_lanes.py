"""The logger's steps spread over several sensitivity workers, results in step order.

One :class:`~whatmatters_ros.sensitivity_worker.SensitivityWorker` computes a
step after the other, and most of a step is serial (the operating point's
SQP, then the stage Hessians): on two cores it leaves one core idle for most
of each step. :class:`SensitivityLanes` gives the steps to ``len(computers)``
workers in turn (a lane that cannot take a step passes it to the next), each
with its own computer (in real time: its own child process) and warm-started
from its own previous step shifted by the steps in between (the same
converged solutions, a few more SQP iterations). Results are handed to
``on_result`` in the order the steps were accepted, whichever lane finishes
first. No ROS in this module.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from whatmatters_ros.sensitivity_worker import ResultCallback, SensitivityJob, SensitivityWorker, WorkerSettings

__all__ = ["SensitivityLanes"]

log = logging.getLogger(__name__)


class SensitivityLanes:
    """Steps over one worker per computer, results in step order.

    Args:
        computers: One sensitivity computer per lane (>= 1).
        on_result: Called with ``(tag, stamp_ns, s_hat (N, nx) or None)`` per accepted step, in order.
        settings: Every lane's (``max_backlog`` per lane; ``dt`` for the warm starts' shifts).

    Raises:
        ValueError: Without computers.
    """

    def __init__(self, computers: Sequence[Any], on_result: ResultCallback, settings: WorkerSettings) -> None:
        if not computers:
            raise ValueError("SensitivityLanes needs at least one computer")
        self.on_result = on_result
        #: ``offered`` and ``skipped`` steps (here), ``samples`` and ``failed`` (handed on).
        self.counts = {"offered": 0, "skipped": 0, "samples": 0, "failed": 0}
        self._lock = threading.Lock()
        self._seqs: list[deque[int]] = [deque() for _ in computers]  # each lane's accepted steps, oldest first
        self._done: dict[int, tuple[int, int, np.ndarray | None]] = {}
        self._accepted = self._delivered = 0
        self._turn = 0
        self.lanes = [SensitivityWorker(c, self._lane_callback(i), settings) for i, c in enumerate(computers)]

    @property
    def backlog(self) -> int:
        """Steps queued in all lanes and not yet started."""
        return sum(lane.backlog for lane in self.lanes)

    def submit(self, job: SensitivityJob) -> bool:
        """Queues a step on the lane whose turn it is, or the next that takes it; False if none does (skipped)."""
        with self._lock:
            self.counts["offered"] += 1
            for i in range(len(self.lanes)):
                lane = (self._turn + i) % len(self.lanes)
                self._seqs[lane].append(self._accepted)  # before the lane can finish it
                if self.lanes[lane].submit(job):
                    self._accepted += 1
                    self._turn = (lane + 1) % len(self.lanes)
                    return True
                self._seqs[lane].pop()
            self.counts["skipped"] += 1
            return False

    def swap(self, computers: Sequence[Any]) -> None:
        """Uses ``computers`` (one per lane) for the steps queued after this call.

        Raises:
            ValueError: For another number of computers than lanes.
        """
        if len(computers) != len(self.lanes):
            raise ValueError(f"{len(computers)} computers for {len(self.lanes)} lanes")
        for lane, computer in zip(self.lanes, computers):
            lane.swap(computer)

    def close(self, drain: bool) -> None:
        """Stops every lane (after its queued steps if ``drain``); the results that came are handed on in
        order, past the steps a lane dropped (``drain`` False) or never finished."""
        for lane in self.lanes:
            lane.close(drain)
        with self._lock:
            for seq in sorted(self._done):
                self._hand_on([self._done.pop(seq)])

    def _hand_on(self, ready: list[tuple[int, int, np.ndarray | None]]) -> None:
        for _, _, result in ready:
            self.counts["samples" if result is not None else "failed"] += 1
        for item in ready:  # in step order: the caller holds the lock, so two lanes cannot interleave
            try:
                self.on_result(*item)
            except Exception:  # noqa: BLE001 - the receiver's error loses this result, not the lane or the order
                log.exception("handing on the sensitivity of t = %.3f s failed", item[1] * 1e-9)

    def _lane_callback(self, lane: int) -> ResultCallback:
        def done(tag: int, stamp_ns: int, s_hat: np.ndarray | None) -> None:
            with self._lock:
                self._done[self._seqs[lane].popleft()] = (tag, stamp_ns, s_hat)
                ready = []
                while self._delivered in self._done:
                    ready.append(self._done.pop(self._delivered))
                    self._delivered += 1
                self._hand_on(ready)

        return done
