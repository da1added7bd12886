"""Worker pools (whatmatters.executor.pool): an interrupted pool stops its workers at once; a normal one waits for its tasks."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from whatmatters.executor.pool import worker_pool


def test_an_interrupted_pool_terminates_its_workers_and_cancels_the_rest() -> None:
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with worker_pool(2) as pool:
            futures = [pool.submit(time.sleep, 60) for _ in range(4)]
            while not futures[0].running():
                time.sleep(0.05)
            procs = list(pool._processes.values())
            raise KeyboardInterrupt  # what Ctrl-C (or the sweep's SIGTERM handler) raises in the waiting loop
    assert time.monotonic() - t0 < 30  # a plain ProcessPoolExecutor would wait 2 x 60 s for the tasks
    assert _within(10.0, lambda: not any(proc.is_alive() for proc in procs))  # (another thread may reap them)
    assert _within(10.0, lambda: all(f.done() for f in futures))  # the pool's manager thread settles them
    assert all(f.cancelled() or f.exception() is not None for f in futures)  # none ran to its end


def _within(seconds: float, condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_pool_left_normally_finishes_its_tasks() -> None:
    with worker_pool(2, None, ()) as pool:
        futures = [pool.submit(time.sleep, 0.2)] + [pool.submit(pow, 2, k) for k in range(6)]
    assert all(f.done() for f in futures)  # finished when the block is left, not only later
    assert [f.result() for f in futures[1:]] == [1, 2, 4, 8, 16, 32]
