"""Shared fixtures of the ROS tests: an isolated DDS domain on this host, node processes, an rclpy test node.

The domain id is set before rclpy starts in this process; every node process
gets the same environment (:func:`whatmatters_ros.graph.ros_environment`).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from whatmatters_ros.graph import ros_environment

# ROS 2 safe range 215..232: not 0 (the default), not the runner default 1..100; the demo test also takes the next one
DOMAIN_ID = 215 + os.getpid() % 17
os.environ.update(ros_environment(DOMAIN_ID))


@pytest.fixture(scope="session")
def domain_id() -> int:
    """The isolated ROS_DOMAIN_ID of this test session."""
    return DOMAIN_ID


@pytest.fixture(scope="session")
def rclpy_context() -> Iterator[Any]:
    """rclpy initialised once for the session."""
    rclpy = pytest.importorskip("rclpy")
    rclpy.init()
    yield rclpy
    rclpy.try_shutdown()


@pytest.fixture
def test_node(rclpy_context: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A node in this process plus ``spin_until(condition, timeout)``."""
    from rclpy.executors import SingleThreadedExecutor

    node = rclpy_context.create_node(f"test_{request.node.name[:40]}")
    executor = SingleThreadedExecutor()
    executor.add_node(node)

    def spin_until(cond: Callable[[], bool], timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.01)
            if cond():
                return True
        return False

    node.spin_until = spin_until  # type: ignore[attr-defined]
    node.executor_ = executor  # type: ignore[attr-defined]
    yield node
    executor.shutdown(timeout_sec=1.0)
    node.destroy_node()


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Starts node processes (``start_node("franka_sim", {"lockstep": True})``); stopped with SIGINT after the test."""
    from whatmatters_ros.graph import node_command

    procs: list[tuple[subprocess.Popen[bytes], Any]] = []

    def start(node: str, params: dict[str, Any], extra: list[str] | None = None) -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"{node}.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(node_command(node, params) + (extra or []), stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
        proc.log_path = tmp_path / f"{node}.log"  # type: ignore[attr-defined]
        procs.append((proc, log))
        return proc

    yield start
    for proc, _ in procs:
        if proc.poll() is None:
            proc.send_signal(2)
    for proc, log in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
