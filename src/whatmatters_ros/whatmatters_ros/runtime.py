"""Running a node: init, parameter errors as a clean stop, spin until done or shutdown, close."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from whatmatters.errors import WhatmattersError

__all__ = ["EXIT_CONFIG", "run_node"]

EXIT_CONFIG = 2  # exit status of a node stopped by a bad parameter or configuration


def run_node(factory: Callable[[], Node], args: Sequence[str] | None = None) -> int:
    """Creates the node, spins it and shuts down cleanly.

    The node may set ``done = True`` to end the spin (e.g. the simulator at the
    end of an episode) and may define ``close()``, called once on any exit
    (SIGINT, SIGTERM, end of episode, error) before ``rclpy`` shuts down.

    Args:
        factory: Builds the node (after ``rclpy.init``).
        args: Command line (ROS arguments included); ``sys.argv`` if None.

    Returns:
        The exit status: 0, or :data:`EXIT_CONFIG` for a configuration error.
    """
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [%(name)s]: %(message)s", stream=sys.stderr)
    rclpy.init(args=list(args) if args is not None else sys.argv)
    node: Any = None
    status = 0
    try:
        try:
            node = factory()
        except WhatmattersError as exc:
            rclpy.logging.get_logger("whatmatters_ros").fatal(f"{exc}")
            return EXIT_CONFIG
        # Single-threaded on purpose: rclpy's MultiThreadedExecutor was seen to delay
        # callbacks of a mutually exclusive group by over a second (lock-step stalls).
        # Slow work (loading a checkpoint, sensitivities) runs in plain threads.
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        try:
            while rclpy.ok() and not getattr(node, "done", False):
                executor.spin_once(timeout_sec=0.1)
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        finally:
            _close(node)  # first: files (bags) are closed before any ROS teardown can fail
            executor.shutdown(timeout_sec=1.0)
    finally:
        if node is not None:
            _close(node)
            node.destroy_node()
        rclpy.try_shutdown()
    return status


def _close(node: Any) -> None:
    """Calls the node's ``close()`` once (a no-op for nodes without one, or the second time)."""
    close = getattr(node, "close", None)
    if close is not None and not getattr(node, "_wm_closed", False):
        node._wm_closed = True
        close()


def exit_with(status: int) -> None:
    """``sys.exit`` for console scripts (kept separate so tests can call ``run_node``)."""
    sys.exit(status)
