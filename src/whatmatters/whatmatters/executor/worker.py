"""What runs inside a worker process, for every engine: a job's setup once, then its tasks.

A worker keeps the state of one job at a time (the job functions keep theirs
in module globals, as a process pool's initializer would). The setup runs
lazily, with the first task of a job in this process, so a setup that fails
(a solver that cannot be built, data that cannot be read) fails that task
with its own message instead of breaking the pool.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from whatmatters.executor.base import set_sink

__all__ = ["call", "ensure", "prepare", "ready"]

_STAGED: tuple[str, Callable[..., Any] | None, tuple[Any, ...]] | None = None
_READY: str | None = None


def prepare(key: str, setup: Callable[..., Any] | None, setup_args: tuple[Any, ...], sink: Any = None) -> None:
    """Stages a job's setup in this process (a process pool's initializer).

    Args:
        key: Identity of the job (unique per submission).
        setup: The job's setup function, or None.
        setup_args: Its arguments.
        sink: An object with ``put`` for :func:`~whatmatters.executor.base.report`, or None.
    """
    global _STAGED
    logging.basicConfig(level=logging.WARNING)
    _STAGED = (key, setup, tuple(setup_args))
    set_sink(sink.put if sink is not None else None)


def ready() -> str | None:
    """The key of the job whose setup has run in this process, or None."""
    return _READY


def ensure(key: str) -> None:
    """Runs the staged job's setup in this process unless it already ran.

    Raises:
        RuntimeError: If no job with ``key`` was staged in this process.
        Exception: Whatever the setup raises (it runs again with the next task).
    """
    global _READY
    if _READY == key:
        return
    if _STAGED is None or _STAGED[0] != key:
        raise RuntimeError(f"no job {key} was prepared in this worker process")
    _, setup, setup_args = _STAGED
    _READY = None
    if setup is not None:
        setup(*setup_args)
    _READY = key


def call(key: str, task: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """Runs a task of the staged job (after the job's setup, the first time in this process).

    Raises:
        Exception: Whatever the setup or the task raises.
    """
    ensure(key)
    return task(*args)
