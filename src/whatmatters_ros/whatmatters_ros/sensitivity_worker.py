"""The sensitivity logger's worker thread: S_hat of the control steps, online.

By default (``batch`` 1) each step is computed whole by
:meth:`whatmatters.sensitivity.SensitivityComputer.compute`, warm-started from
the previous step's operating point (the ``u0* + eps`` re-solve in a second
thread; the time a step takes is in docs/sensitivities.md, "Speed"). With ``batch`` > 1 the
operating points are computed as steps come and finished
(:meth:`SensitivityComputer.finish`) ``batch`` at a time, or as soon as no new
step arrives for ``flush_after`` s: only the torch derivatives
(``sensitivity.derivatives: torch``) batch better; the numbers are the same.

Steps are queued without limit (``queue_all``, lock-step: every step is
computed, the simulator waits for them) or, in real time, up to
``max_backlog`` steps while the worker is busy: a step arriving when that
many wait is skipped and counted (0: every step arriving while it is busy).
A backlog lets a worker whose mean time per step is below the control
period compute every step although single steps take longer; it also keeps
each step warm-started from the one before it (a skipped step makes the
next one start from further back, which costs SQP iterations).
Results are handed to ``on_result(tag, stamp_ns, s_hat | None)`` in step order
from the worker thread; None means the step failed (no converged operating
point, singular KKT system). A new model (:meth:`swap`) takes effect between
two queued steps. No ROS in this module.
"""

from __future__ import annotations

import logging
import queue
from concurrent.futures import BrokenExecutor
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from whatmatters.sensitivity.point import OperatingPoint, SensitivityError, SensitivitySample, warm_start

__all__ = ["SensitivityJob", "SensitivityWorker", "WorkerSettings"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SensitivityJob:
    """One control step to compute.

    Attributes:
        tag: Caller's label (the bag it belongs to), passed back with the result.
        stamp_ns: The step's stamp, ns.
        x: Measured state, (nx,).
        x_ref: Reference over the horizon, (N + 1, nx).
        params: Model parameters with the step's context, (n_params,).
    """

    tag: int
    stamp_ns: int
    x: np.ndarray
    x_ref: np.ndarray
    params: np.ndarray


ResultCallback = Callable[[int, int, "np.ndarray | None"], None]
_Solved = TypeVar("_Solved", OperatingPoint, SensitivitySample)


@dataclass(frozen=True)
class WorkerSettings:
    """How a :class:`SensitivityWorker` takes its steps (the logger's parameters).

    Attributes:
        batch: Operating points finished together (>= 1).
        flush_after: Finish a partial batch after this long without a new step, s (> 0).
        queue_all: Queue every step (lock-step) instead of skipping steps while busy.
        max_backlog: Without ``queue_all``: steps that may wait while the worker is busy (>= 0).
        dt: Control period, s: a step is warm-started from the last result shifted by the
            steps between their stamps (None: by one step).

    Raises:
        ValueError: For a value outside these ranges, naming it.
    """

    batch: int = 1
    flush_after: float = 0.2
    queue_all: bool = False
    max_backlog: int = 0
    dt: float | None = None

    def __post_init__(self) -> None:
        for bad, what in (
            (self.batch < 1, f"batch must be >= 1, got {self.batch}"),
            (not self.flush_after > 0, f"flush_after must be > 0 s, got {self.flush_after}"),
            (self.max_backlog < 0, f"max_backlog must be >= 0, got {self.max_backlog}"),
            (self.dt is not None and not self.dt > 0, f"dt must be > 0 s, got {self.dt}"),
        ):
            if bad:
                raise ValueError(what)


class SensitivityWorker:
    """Computes S_hat for queued steps in one thread.

    Args:
        computer: The model's sensitivity computer (a :class:`SensitivityComputer`, or anything
            with its ``operating_point``, ``finish`` and ``compute``, e.g.
            :class:`~whatmatters_ros.sensitivity_process.ProcessComputer`).
        on_result: Called with ``(tag, stamp_ns, s_hat (N, nx) or None)`` per step, in order.
        settings: How the steps are taken.
    """

    def __init__(self, computer: Any, on_result: ResultCallback, settings: WorkerSettings) -> None:
        self.computer = computer
        self.on_result = on_result
        self.settings = settings
        self.counts = {"offered": 0, "skipped": 0, "samples": 0, "failed": 0}
        self._jobs: queue.Queue[Any] = queue.Queue()  # jobs, a new computer, or None (stop)
        self._idle = threading.Event()
        self._idle.set()
        self._warm: OperatingPoint | SensitivitySample | None = None  # the last result: the next SQP start
        self._warm_ns = 0  # its step's stamp
        self._thread = threading.Thread(target=self._run, name="sensitivity", daemon=True)
        self._thread.start()

    @property
    def backlog(self) -> int:
        """Steps queued and not yet started."""
        return self._jobs.qsize()

    def submit(self, job: SensitivityJob) -> bool:
        """Queues a step; False if it was skipped (real time, worker busy and ``max_backlog`` steps waiting)."""
        self.counts["offered"] += 1
        waiting = self._jobs.qsize()
        if not self.settings.queue_all and (not self._idle.is_set() or waiting) and waiting >= self.settings.max_backlog:
            self.counts["skipped"] += 1
            return False
        self._idle.clear()
        self._jobs.put(job)
        return True

    def swap(self, computer: Any) -> None:
        """Uses ``computer`` for the steps queued after this call."""
        self._jobs.put(computer)

    def close(self, drain: bool) -> None:
        """Stops the thread: after the queued steps (``drain``) or after the current one."""
        if not drain:
            try:
                while True:
                    self._jobs.get_nowait()
            except queue.Empty:
                pass
        self._jobs.put(None)
        self._thread.join(timeout=60.0 if drain else 10.0)
        if hasattr(self.computer, "close"):
            self.computer.close()

    # ----------------------------------------------------------------- thread
    def _run(self) -> None:
        pending: list[tuple[int, int, OperatingPoint | None]] = []
        while True:
            try:
                item = self._jobs.get(timeout=self.settings.flush_after if pending else None)
            except queue.Empty:
                self._finish(pending)
                self._idle.set()
                continue
            if item is None or not isinstance(item, SensitivityJob):  # the end, or a new computer
                self._finish(pending)
                if item is None:
                    return
                old, self.computer, self._warm = self.computer, item, None
                if hasattr(old, "close"):
                    old.close()
                continue
            if self.settings.batch == 1:
                self._compute(item)
            else:
                pending.append((item.tag, item.stamp_ns, self._operating_point(item)))
            if len(pending) >= self.settings.batch:
                self._finish(pending)
            if self._jobs.empty() and not pending:
                self._idle.set()
            elif not self.settings.queue_all and self._jobs.empty():
                self._idle.set()  # real time: take the next step while the batch fills

    def _compute(self, job: SensitivityJob) -> None:
        sample = self._warm_started(job, self.computer.compute)
        self.counts["samples" if sample is not None else "failed"] += 1
        self.on_result(job.tag, job.stamp_ns, None if sample is None else sample.s_hat)

    def _operating_point(self, job: SensitivityJob) -> OperatingPoint | None:
        return self._warm_started(job, self.computer.operating_point)

    def _warm_started(self, job: SensitivityJob, method: Callable[..., _Solved]) -> _Solved | None:
        """``method(x, x_ref, params, x_init, u_init, w_init)`` from the last result shifted; None (logged) if it fails."""
        init = (None, None, None) if self._warm is None else warm_start(self._warm, self._stages_since_warm(job.stamp_ns))
        try:
            out = method(job.x, job.x_ref, job.params, *init)
        except (SensitivityError, np.linalg.LinAlgError, BrokenExecutor) as exc:  # BrokenExecutor: a computer's process died
            self._warm = None
            log.warning("sensitivity at t = %.3f s failed: %s", job.stamp_ns * 1e-9, exc)
            return None
        except Exception:  # noqa: BLE001 - any other error fails this step, not the worker (the steps after it go on)
            self._warm = None
            log.exception("sensitivity at t = %.3f s failed unexpectedly", job.stamp_ns * 1e-9)
            return None
        self._warm, self._warm_ns = out, job.stamp_ns
        return out

    def _stages_since_warm(self, stamp_ns: int) -> int:
        """Control steps from the last result's step to ``stamp_ns`` (>= 1; 1 without ``dt``)."""
        if self.settings.dt is None:
            return 1
        return max(1, round((stamp_ns - self._warm_ns) * 1e-9 / self.settings.dt))

    def _finish(self, pending: list[tuple[int, int, OperatingPoint | None]]) -> None:
        if not pending:
            return
        points = [pt for _, _, pt in pending if pt is not None]
        try:
            samples = iter(self.computer.finish(points) if points else [])
        except (SensitivityError, np.linalg.LinAlgError, RuntimeError) as exc:
            log.warning("finishing %d sensitivities failed: %s", len(points), exc)
            samples = iter([None] * len(points))
        for tag, ns, pt in pending:
            sample = next(samples) if pt is not None else None
            self.counts["samples" if sample is not None else "failed"] += 1
            self.on_result(tag, ns, None if sample is None else sample.s_hat)
        pending.clear()
