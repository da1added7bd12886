"""The local engine: a ``spawn`` process pool on this machine (the default executor).

One worker runs the job in this process (no pool). A worker process that
dies (killed, out of memory) breaks a Python process pool and with it every
task in flight; those tasks are run again in a fresh pool, up to
``max_retries`` times each. Interrupted, the pool stops its workers at once
(:func:`~whatmatters.executor.pool.worker_pool`).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import uuid
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from contextlib import closing
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from whatmatters.errors import ConfigError
from whatmatters.executor import worker
from whatmatters.executor.base import Executor, Job, Outcome, Task, describe, drain, set_sink
from whatmatters.executor.pool import worker_pool

__all__ = ["LocalExecutor"]

log = logging.getLogger(__name__)


class LocalExecutor(Executor):
    """Runs jobs in worker processes on this machine.

    Args:
        workers: Worker processes (None or 0: one per CPU); each job uses at
            most one per task. 1 runs the job in this process.
        max_retries: How often a task whose worker process died is run again.

    Raises:
        ConfigError: If ``workers`` or ``max_retries`` is negative.
    """

    engine = "local"

    def __init__(self, workers: int | None = None, max_retries: int = 3) -> None:
        if (workers or 0) < 0 or max_retries < 0:
            raise ConfigError(f"executor: workers and max_retries must be >= 0, got {workers} and {max_retries}")
        self.workers = workers or os.cpu_count() or 1
        self.max_retries = max_retries

    def __repr__(self) -> str:
        return f"LocalExecutor(workers={self.workers})"

    def submit(self, job: Job, tasks: Sequence[Task], on_message: Callable[[Any], None] | None = None) -> Generator[Outcome, None, None]:
        """See :meth:`Executor.submit`."""
        if not tasks:
            return
        if min(self.workers, len(tasks)) == 1:
            yield from self._in_process(job, tasks, on_message)
            return
        ctx = mp.get_context("spawn")
        manager = ctx.Manager() if on_message is not None else None
        try:
            sink = manager.Queue() if manager is not None else None
            todo, attempts = list(range(len(tasks))), 0
            while todo:
                broken: list[int] = []
                with closing(self._pool_round(job, tasks, todo, sink, on_message)) as ends:  # closed: the pool stops
                    for i, fut in ends:
                        if isinstance(fut.exception(), BrokenProcessPool) and attempts < self.max_retries:
                            broken.append(i)
                        else:
                            yield _outcome(i, tasks[i], fut)
                if broken:
                    attempts += 1
                    log.warning("%s: a worker process died; %d tasks run again (retry %d of %d): %s", job.name, len(broken), attempts, self.max_retries, ", ".join(tasks[i].name for i in broken))
                todo = broken
        finally:
            if manager is not None:
                manager.shutdown()

    def _pool_round(self, job: Job, tasks: Sequence[Task], todo: list[int], sink: Any, on_message: Callable[[Any], None] | None) -> Iterator[tuple[int, Future[Any]]]:
        key = uuid.uuid4().hex
        with worker_pool(min(self.workers, len(todo)), worker.prepare, (key, job.setup, job.setup_args, sink)) as pool:
            futures = {pool.submit(worker.call, key, job.task, tasks[i].args): i for i in todo}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.5 if sink is not None else None, return_when=FIRST_COMPLETED)
                drain(sink, on_message)
                for fut in done:
                    yield futures[fut], fut
            drain(sink, on_message)

    def _in_process(self, job: Job, tasks: Sequence[Task], on_message: Callable[[Any], None] | None) -> Generator[Outcome, None, None]:
        set_sink(on_message)
        try:
            try:
                if job.setup is not None:
                    job.setup(*job.setup_args)
            except Exception as exc:  # noqa: BLE001 - as in a pool: every task fails with the setup's error
                error = describe(exc)
                yield from (Outcome(i, task, error=error) for i, task in enumerate(tasks))
                return
            for i, task in enumerate(tasks):
                try:
                    result = job.task(*task.args)
                except Exception as exc:  # noqa: BLE001 - reported by name; the other tasks go on
                    yield Outcome(i, task, error=describe(exc))
                    continue
                yield Outcome(i, task, result)
        finally:
            set_sink(None)


def _outcome(index: int, task: Task, fut: Future[Any]) -> Outcome:
    exc = fut.exception()
    return Outcome(index, task, error=describe(exc)) if exc is not None else Outcome(index, task, fut.result())

