"""Running a node: init, parameter errors as a clean stop, spin until done or a stop signal, close.

Stop signals (SIGINT, SIGTERM) are handled here, in the main thread, rather
than by rclpy's own handlers: those shut the context down from a second
(deferred signal-handling) thread while the main thread may already be
destroying the node, and that race crashed about one node process in 80 with
SIGSEGV in ``Node.destroy_node`` (Fast DDS). Here a signal only asks the spin
loop to end; the node is closed and destroyed, then the context shut down, all
in one thread.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from whatmatters.errors import WhatmattersError

__all__ = ["EXIT_CONFIG", "EXIT_INTERRUPTED", "STOP_SIGNALS", "StopSignals", "flush_publishers", "process_threads", "realtime_priority", "run_node", "thread_name"]

EXIT_CONFIG = 2  # exit status of a node stopped by a bad parameter or configuration
EXIT_INTERRUPTED = 130  # exit status of a node interrupted while starting, or by a second stop signal
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

log = logging.getLogger(__name__)


class StopSignals:
    """SIGINT and SIGTERM as a stop request, while installed (a context manager).

    Once the node is built (``deferring`` True) the first signal only sets
    :attr:`received`: the spin loop sees it within one turn (0.1 s) and the
    node closes in order. A signal while the node is being built, or a second
    signal at any time, raises ``KeyboardInterrupt`` so that a slow start or a
    stuck close can still be interrupted. Outside the main thread (where
    Python cannot install signal handlers) nothing is installed.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self.deferring = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = self.received is None
        if first:
            self.received = signum
            log.info("%s received: stopping", signal.Signals(signum).name)
        if not (first and self.deferring):
            raise KeyboardInterrupt


def run_node(factory: Callable[[], Node], args: Sequence[str] | None = None) -> int:
    """Creates the node, spins it and shuts down cleanly.

    The node may set ``done = True`` to end the spin (e.g. the simulator at the
    end of an episode) and may define ``close()``, called once on any exit
    (SIGINT, SIGTERM, end of episode, error) before the node is destroyed and
    ``rclpy`` shuts down (:class:`StopSignals`: rclpy installs no signal handlers).

    Args:
        factory: Builds the node (after ``rclpy.init``).
        args: Command line (ROS arguments included); ``sys.argv`` if None.

    Returns:
        The exit status: 0, :data:`EXIT_CONFIG` for a configuration error,
        :data:`EXIT_INTERRUPTED` if interrupted (see :class:`StopSignals`).
    """
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [%(name)s]: %(message)s", stream=sys.stderr)
    with StopSignals() as stop:
        try:
            return _run(factory, args, stop)
        except KeyboardInterrupt:  # a signal during start-up, or a second one: close may not have finished
            log.warning("interrupted")
            return EXIT_INTERRUPTED


def _run(factory: Callable[[], Node], args: Sequence[str] | None, stop: StopSignals) -> int:
    """:func:`run_node` under installed :class:`StopSignals`."""
    rclpy.init(args=list(args) if args is not None else sys.argv, signal_handler_options=SignalHandlerOptions.NO)
    node: Any = None
    try:
        try:
            node = factory()
        except WhatmattersError as exc:
            rclpy.logging.get_logger("whatmatters_ros").fatal(f"{exc}")
            return EXIT_CONFIG
        # Everything built so far (torch, acados, the model) lives as long as the node: move it out
        # of the garbage collector's reach. A full collection over it takes ~0.1 s here, which
        # stalled the control loop and the simulator's clock when it struck.
        gc.collect()
        gc.freeze()
        executor = make_executor()
        executor.add_node(node)
        stop.deferring = True
        try:
            while stop.received is None and rclpy.ok() and not getattr(node, "done", False):
                executor.spin_once(timeout_sec=0.1)
        except ExternalShutdownException:
            pass
        finally:
            if getattr(node, "done", False):
                flush_publishers(node, FLUSH_SECONDS)
            _close(node)  # first: files (bags) are closed before any ROS teardown can fail
            executor.shutdown(timeout_sec=1.0)
    finally:
        if node is not None:
            _close(node)
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


FLUSH_SECONDS = 2.0  # a node that ends by itself waits at most this long for its last messages' acknowledgements


def flush_publishers(node: Node, timeout: float) -> bool:
    """Waits until every subscriber has acknowledged what the node's reliable publishers sent
    (``timeout`` s in all). A node that ends by itself, as the simulator after its episode's last
    state, would otherwise exit before DDS delivered its last messages. Returns whether all were.
    """
    deadline = time.monotonic() + timeout
    for pub in list(node.publishers):
        left = deadline - time.monotonic()
        if left <= 0 or not pub.wait_for_all_acked(Duration(nanoseconds=int(left * 1e9))):
            log.warning("%s: not every subscriber acknowledged %s within %.1f s", node.get_name(), pub.topic_name, timeout)
            return False
    return True


def make_executor() -> Any:
    """The executor of a node: rclpy's EventsExecutor (C++, one thread) where it exists, else the SingleThreadedExecutor.

    One thread on purpose: rclpy's MultiThreadedExecutor was seen to delay callbacks
    of a mutually exclusive group by over a second (lock-step stalls); slow work
    (loading a checkpoint, sensitivities, physics) runs in plain threads. The
    EventsExecutor dispatches a callback in a few microseconds where the Python
    executor takes ~0.3-1 ms (its wait set is rebuilt every turn): with the robot's
    states at 500 Hz that is the difference between a few percent of a core and
    half of one. ``WHATMATTERS_EXECUTOR=single`` selects the Python executor.
    """
    if os.environ.get("WHATMATTERS_EXECUTOR", "events") != "single":
        try:
            from rclpy.experimental import EventsExecutor
        except ImportError:
            pass
        else:
            return EventsExecutor()
    return SingleThreadedExecutor()


ORDINARY_THREADS = ("dds.asyn",)  # thread names that realtime_priority(process=True) leaves alone


def process_threads() -> list[int]:
    """Thread ids of this process (Linux ``/proc/self/task``; elsewhere ``[0]``, the caller)."""
    return [int(t) for t in os.listdir("/proc/self/task")] if os.path.isdir("/proc/self/task") else [0]


def thread_name(tid: int) -> str:
    """A thread's name (``/proc/self/task/<tid>/comm``); '' if it is gone or unknown."""
    try:
        return Path(f"/proc/self/task/{tid}/comm").read_text().strip()
    except OSError:
        return ""


def realtime_priority(priority: int, what: str, process: bool = False) -> bool:
    """Puts the calling thread (``process``: every thread of this process, DDS's included)
    under SCHED_FIFO at ``priority`` (1..99; 0: leave it), as ``chrt -f`` or ros2_control's
    controller manager do for a control loop: it then preempts every ordinary thread at once.
    A whole process matters in Python: a thread waiting for the GIL waits for whichever
    thread holds it, and DDS's threads deliver the messages.

    Fast DDS's asynchronous writer threads (``dds.asyn.*``: discovery announcements, resends)
    keep their ordinary priority: under SCHED_FIFO one was seen spinning at 100 % of a core with
    the node never announced (the graph timed out; the same busy loop is reported upstream,
    eProsima/Fast-DDS#5272, ros2/rmw_fastrtps#666). Ordinary, it cannot starve the others.

    Needs the privilege (root, CAP_SYS_NICE or an ``rtprio`` limit in limits.conf); without it
    the threads keep their ordinary priority and a warning says so. Returns whether it was set.
    """
    if priority <= 0:
        return False
    tids = [tid for tid in process_threads() if not thread_name(tid).startswith(ORDINARY_THREADS)] if process else [0]
    try:
        for tid in tids:  # 0: the calling thread (Linux: scheduling is per thread)
            os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(priority))
    except ProcessLookupError:
        pass  # a thread ended meanwhile
    except (PermissionError, OSError, AttributeError) as exc:
        log.warning("%s: no real-time priority (SCHED_FIFO %d: %s); running at the ordinary priority", what, priority, exc)
        return False
    log.info("%s: SCHED_FIFO priority %d%s", what, priority, f" ({len(tids)} threads)" if process else "")
    return True


def _close(node: Any) -> None:
    """Calls the node's ``close()`` once (a no-op for nodes without one, or the second time)."""
    close = getattr(node, "close", None)
    if close is not None and not getattr(node, "_wm_closed", False):
        node._wm_closed = True
        close()


def exit_with(status: int) -> None:
    """``sys.exit`` for console scripts (kept separate so tests can call ``run_node``)."""
    sys.exit(status)
