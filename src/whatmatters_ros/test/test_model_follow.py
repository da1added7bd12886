"""The loggers' model following: newer versions loaded once, in a thread, taken between steps; failures keep the running model."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

from whatmatters_ros.model_follow import ModelFollower


def _status(name: str, version: int, model: str) -> Any:
    kv = [SimpleNamespace(key="model_version", value=str(version)), SimpleNamespace(key="model", value=model)]
    return SimpleNamespace(name=name, values=kv)


def _take(follower: ModelFollower, timeout: float = 5.0) -> Any:
    """The first thing the follower hands over within ``timeout`` s (None if nothing)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if (loaded := follower.take()) is not None:
            return loaded
        time.sleep(0.005)
    return None


def _wait(cond: Any, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.005)
    return False


def test_a_newer_version_is_loaded_once_and_taken_once() -> None:
    loads: list[str] = []
    follower = ModelFollower("car_mpc", lambda spec: loads.append(spec) or f"model {spec}", lambda msg: None)
    follower.on_statuses([_status("other", 5, "x.pt"), _status("car_mpc", 1, "base")])  # another node; the version in use
    assert follower.take() is None and loads == []
    for _ in range(3):  # the heartbeat repeats the report while it loads
        follower.on_statuses([_status("car_mpc", 2, "a.pt")])
    assert _take(follower) == (2, "model a.pt")
    assert loads == ["a.pt"] and follower.version == 2 and follower.take() is None
    follower.on_statuses([_status("car_mpc", 2, "a.pt")])
    assert follower.take() is None and loads == ["a.pt"]


def test_a_model_that_fails_to_load_is_reported_and_the_running_one_stays() -> None:
    errors: list[str] = []

    def load(spec: str) -> Any:
        raise FileNotFoundError(spec)

    follower = ModelFollower("mpc_controller", load, errors.append)
    follower.on_statuses([_status("mpc_controller", 3, "gone.pt")])
    assert _wait(lambda: bool(errors))
    assert "version 3" in errors[0] and "gone.pt" in errors[0]
    assert follower.take() is None and follower.version == 1


def test_an_older_load_finishing_late_does_not_replace_a_newer_one() -> None:
    release = threading.Event()

    def load(spec: str) -> str:
        if spec == "slow.pt":
            release.wait(5.0)
        return spec

    follower = ModelFollower("car_mpc", load, lambda msg: None)
    follower.on_statuses([_status("car_mpc", 2, "slow.pt")])
    follower.on_statuses([_status("car_mpc", 3, "fast.pt")])
    assert _take(follower) == (3, "fast.pt")
    release.set()
    time.sleep(0.05)
    assert follower.take() is None and follower.version == 3
