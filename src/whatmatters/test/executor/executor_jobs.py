"""Job functions for the executor tests: importable by worker processes (the tests put this folder on PYTHONPATH)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from whatmatters.executor import report

SETUPS = 0


def setup(tag: str) -> None:
    global SETUPS
    SETUPS += 1


def square(x: int) -> int:
    return x * x


def fail_on(x: int, bad: int) -> int:
    if x == bad:
        raise ValueError(f"task {x} is the bad one")
    return x


def reports(x: int) -> int:
    report(("done", x))
    return x


def setups_seen(_: int) -> tuple[int, int]:
    time.sleep(0.05)
    return os.getpid(), SETUPS


def dies_once(marker: str, x: int) -> int:
    """Kills its own worker process the first time any task of the job runs (marker file absent)."""
    path = Path(marker)
    if not path.exists():
        path.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return x * x


def node_of(_: int) -> str:
    import ray

    time.sleep(0.2)
    return ray.get_runtime_context().get_node_id()


def broken_setup() -> None:
    raise RuntimeError("no C compiler here")
