"""The executor seam: every parallel job of the project runs through :class:`Executor`.

A :class:`Job` is a batch of independent tasks that share per-worker state:
``setup(*setup_args)`` runs once in every worker process before its first task
of the job (it compiles or loads the solvers, loads the data), then
``task(*args)`` runs once per :class:`Task`. Both are module-level functions,
so any engine can ship them by reference. Job code builds the job and hands it
to an executor; it never knows which engine runs it:

* :class:`~whatmatters.executor.local.LocalExecutor`: a process pool on this
  machine (the default);
* :class:`~whatmatters.executor.ray_engine.RayExecutor`: Ray tasks, on a local
  Ray instance or a cluster.

Results do not depend on the engine: a task's numbers come from its arguments
(seeds and data order from the run's identity), never from scheduling. A task
that raises is reported by its name and the other tasks go on;
:meth:`Executor.run` raises :class:`TaskError` once all have ended.

Tasks may send small progress messages to the driver with :func:`report`.
"""

from __future__ import annotations

import logging
import queue as queue_mod
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from whatmatters.errors import WhatmattersError

__all__ = ["Executor", "Job", "Outcome", "Task", "TaskError", "report"]

log = logging.getLogger(__name__)


class TaskError(WhatmattersError, RuntimeError):
    """One or more tasks of a job failed; the message names each one and its error.

    Attributes:
        failed: The failed tasks' outcomes.
    """

    def __init__(self, job: str, failed: Sequence[Outcome], total: int) -> None:
        self.failed = list(failed)
        lines = "\n".join(f"  {o.task.name}: {o.error}" for o in self.failed)
        super().__init__(f"{job}: {len(self.failed)} of {total} tasks failed (the others finished):\n{lines}")


@dataclass(frozen=True)
class Job:
    """A batch of tasks sharing per-worker state.

    Attributes:
        name: Shown in progress and error messages (``sweep``, ``sensitivities``, ...).
        task: Module-level function run once per task with the task's ``args``.
        setup: Module-level function run once per worker process before its
            first task of this job (None: nothing to set up).
        setup_args: Arguments of ``setup``; shipped once per worker (through
            Ray's object store on the Ray engine), so they may be large.
        shared_paths: Folders every worker must see (inputs it reads, outputs
            it writes). The Ray engine checks them on each node and fails with
            the node and the path named when one is missing.
    """

    name: str
    task: Callable[..., Any]
    setup: Callable[..., Any] | None = None
    setup_args: tuple[Any, ...] = ()
    shared_paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class Task:
    """One task of a job.

    Attributes:
        name: What the task is, for messages (a run id, a bag, an environment).
        args: Arguments of the job's ``task`` function.
    """

    name: str
    args: tuple[Any, ...]


@dataclass(frozen=True)
class Outcome:
    """How a task ended.

    Attributes:
        index: The task's position in the submitted sequence.
        task: The task.
        result: The task function's return value (None if it failed).
        error: ``Type: message`` of the exception it raised, or None.
    """

    index: int
    task: Task
    result: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the task returned."""
        return self.error is None


def describe(exc: BaseException) -> str:
    """``Type: message`` and the innermost frame of an exception, for an :class:`Outcome`."""
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" (at {tb[-1].filename}:{tb[-1].lineno})" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"


# ------------------------------------------------------------ progress messages
_SINK: Callable[[Any], None] | None = None


def set_sink(sink: Callable[[Any], None] | None) -> None:
    """Where :func:`report` sends messages in this process (set by the engines)."""
    global _SINK
    _SINK = sink


def report(message: Any) -> None:
    """Sends a small picklable progress message from a task to the driver's ``on_message``.

    Does nothing where the driver asked for no messages.
    """
    if _SINK is not None:
        _SINK(message)


def drain(sink: Any, on_message: Callable[[Any], None] | None) -> None:
    """Hands every message waiting in ``sink`` (a queue with ``get_nowait``) to ``on_message``."""
    if sink is None or on_message is None:
        return
    while True:
        try:
            on_message(sink.get_nowait())
        except queue_mod.Empty:
            return


class Executor(ABC):
    """Runs jobs. Engines implement :meth:`submit`; :meth:`run` is the common driver loop.

    Executors are context managers: leaving the block releases the engine's
    resources (worker processes, a Ray instance this executor started).
    """

    #: Engine name, as in ``--executor``.
    engine: str = ""

    @abstractmethod
    def submit(self, job: Job, tasks: Sequence[Task], on_message: Callable[[Any], None] | None = None) -> Generator[Outcome, None, None]:
        """Runs every task; yields each outcome as it ends (completion order).

        Messages sent with :func:`report` reach ``on_message`` in the driver
        while the tasks run. Interrupted (the generator closed or an exception
        raised into it), the engine stops the tasks still running.
        """

    def run(
        self,
        job: Job,
        tasks: Sequence[Task],
        on_message: Callable[[Any], None] | None = None,
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> list[Any]:
        """Runs every task and returns the results in task order.

        Args:
            job: The job.
            tasks: Its tasks.
            on_message: Called in the driver with each :func:`report` message.
            on_outcome: Called in the driver as each task ends (progress bars).

        Raises:
            TaskError: After every task has ended, if any failed; each failure
                is also logged as it happens, with the task's name.
        """
        outcomes: dict[int, Outcome] = {}
        with closing(self.submit(job, tasks, on_message)) as ends:  # interrupted: the engine stops its tasks at once
            for outcome in ends:
                outcomes[outcome.index] = outcome
                if not outcome.ok:
                    log.error("%s: task %s failed: %s", job.name, outcome.task.name, outcome.error)
                if on_outcome is not None:
                    on_outcome(outcome)
        failed = [outcomes[i] for i in sorted(outcomes) if not outcomes[i].ok]
        if failed:
            raise TaskError(job.name, failed, len(tasks))
        return [outcomes[i].result for i in range(len(tasks))]

    def close(self) -> None:
        """Releases the engine's resources (nothing by default)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
