"""The Ray engine: a job's tasks as Ray tasks, on a local Ray instance or a cluster.

Ray is an optional dependency (``pip install 'whatmatters[ray]'``) imported
only here. What the engine does:

* The job's setup function and its arguments go once into Ray's object
  store; each worker process runs the setup with its first task of the job
  (compiled solvers come from the node's own cache, ``~/.cache/whatmatters``
  or ``$WHATMATTERS_CACHE``, built once per node under a file lock).
* Every task asks for one CPU. A task whose worker process or node dies is
  run again by Ray (``max_retries``); a task that raises is not, and is
  reported by name while the others go on.
* Before its first task a worker checks the job's shared paths; a node that
  lacks one, or whose setup fails (no C compiler, say), fails with the node
  named (host, IP and Ray node id).
* Progress messages travel through a :class:`ray.util.queue.Queue`.

Without an address the engine starts a local Ray instance that listens on
the loopback interface only, and stops it again on :meth:`RayExecutor.close`.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import uuid
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any

from whatmatters.errors import ConfigError, WhatmattersError
from whatmatters.executor import worker
from whatmatters.executor.base import Executor, Job, Outcome, Task, describe, drain, set_sink

__all__ = ["NodeError", "RayExecutor"]

log = logging.getLogger(__name__)

#: Ray reads this once, when it is imported: "0" makes a local instance use 127.0.0.1 only.
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


class NodeError(WhatmattersError, RuntimeError):
    """A node cannot run a job (a shared path is missing there, or the job's setup failed); names the node."""


def _import_ray(local: bool) -> Any:
    if local and "ray" not in sys.modules:
        os.environ.setdefault(_LOOPBACK_ENV, "0")
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("executor 'ray' needs Ray: pip install 'whatmatters[ray]' (make install does)") from exc
    return ray


def _node() -> str:
    import ray

    ctx = ray.get_runtime_context()
    return f"node {socket.gethostname()} ({ray.util.get_node_ip_address()}, id {ctx.get_node_id()[:12]})"


def _remote_call(key: str, bundle: tuple[Callable[..., Any] | None, tuple[Any, ...], tuple[str, ...]], sink: Any, task: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """The body of every Ray task: the job's setup once per worker process, then the task."""
    if worker.ready() != key:
        setup, setup_args, shared_paths = bundle
        missing = [p for p in shared_paths if not Path(p).exists()]
        if missing:
            raise NodeError(f"{_node()}: {', '.join(missing)} not found there; every node must see the job's folders on the same path (docs/scale.md)")
        worker.prepare(key, setup, setup_args, sink)
        try:
            worker.ensure(key)
        except Exception as exc:
            raise NodeError(f"{_node()}: the job's setup failed: {describe(exc)}") from exc
    set_sink(sink.put if sink is not None else None)
    return task(*args)


class RayExecutor(Executor):
    """Runs jobs as Ray tasks.

    Args:
        address: ``None`` or ``""``: start a local Ray instance (loopback
            only); ``auto``: the cluster that ``ray start`` made on this
            machine; ``HOST:PORT``: that cluster's head.
        workers: CPUs of a local instance (None or 0: all); ignored when
            connecting to a cluster, whose CPUs set the parallelism.
        max_retries: How often Ray runs a task again whose worker process or node died.

    Raises:
        ConfigError: If Ray is not installed, or an argument is out of range.
    """

    engine = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, max_retries: int = 3) -> None:
        if (workers or 0) < 0 or max_retries < 0:
            raise ConfigError(f"executor: workers and max_retries must be >= 0, got {workers} and {max_retries}")
        self.address = address or None
        self.max_retries = max_retries
        ray = self._ray = _import_ray(local=self.address is None)
        self._owns = not ray.is_initialized()
        if self._owns:
            if self.address is None:
                ray.init(num_cpus=workers or None, include_dashboard=False, _node_ip_address="127.0.0.1")
            else:
                ray.init(address=self.address)
            log.info("ray: %s", ray.cluster_resources())
        self._remote = ray.remote(_remote_call)

    def __repr__(self) -> str:
        return f"RayExecutor(address={self.address!r})"

    @property
    def workers(self) -> int:
        """CPUs of the cluster (the tasks in flight at most)."""
        return int(self._ray.cluster_resources().get("CPU", 1))

    def submit(self, job: Job, tasks: Sequence[Task], on_message: Callable[[Any], None] | None = None) -> Generator[Outcome, None, None]:
        """See :meth:`Executor.submit`."""
        if not tasks:
            return
        ray = self._ray
        from ray.util.queue import Queue

        key = uuid.uuid4().hex
        bundle = ray.put((job.setup, tuple(job.setup_args), tuple(str(p) for p in job.shared_paths)))
        sink = Queue(actor_options={"num_cpus": 0}) if on_message is not None else None  # never waits for a free CPU
        remote = self._remote.options(num_cpus=1, max_retries=self.max_retries, name=f"{job.name}")
        refs = {remote.remote(key, bundle, sink, job.task, t.args): i for i, t in enumerate(tasks)}
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1, timeout=0.5, fetch_local=False)
                drain(sink, on_message)
                for ref in done:
                    i = refs[ref]
                    yield self._outcome(i, tasks[i], ref)
            drain(sink, on_message)
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        finally:
            if sink is not None:
                ray.kill(sink.actor)

    def _outcome(self, index: int, task: Task, ref: Any) -> Outcome:
        ray = self._ray
        try:
            return Outcome(index, task, ray.get(ref))
        except ray.exceptions.RayTaskError as exc:  # the task raised: its own exception
            cause = exc.cause if isinstance(exc.cause, BaseException) else exc
            return Outcome(index, task, error=describe(cause))
        except ray.exceptions.RayError as exc:  # a worker or node died more often than max_retries
            return Outcome(index, task, error=f"{type(exc).__name__}: {exc}")

    def close(self) -> None:
        """Shuts down the local Ray instance or the connection this executor made."""
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
            self._owns = False

