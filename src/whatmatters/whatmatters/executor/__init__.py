"""Executors: one seam through which every parallel job runs, on a local process pool or on Ray.

* :class:`Job`, :class:`Task`, :class:`Outcome`, :class:`Executor`: the seam (:mod:`.base`).
* :class:`LocalExecutor`: worker processes on this machine (the default).
* :class:`~whatmatters.executor.ray_engine.RayExecutor`: Ray tasks (optional
  dependency, imported only when asked for).
* :class:`ExecutorConfig` and :func:`make_executor`: ``config/executor.yaml``.
"""

from whatmatters.executor.base import Executor, Job, Outcome, Task, TaskError, report
from whatmatters.executor.config import ENGINES, ExecutorConfig, make_executor
from whatmatters.executor.local import LocalExecutor

__all__ = ["ENGINES", "Executor", "ExecutorConfig", "Job", "LocalExecutor", "Outcome", "Task", "TaskError", "make_executor", "report"]
