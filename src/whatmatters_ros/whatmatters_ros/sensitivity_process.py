"""The sensitivity computer in a child process: the logger's heavy work shares no GIL and no priority with recording.

In a thread of the logger's process, S_hat's Python glue (torch autograd,
acados calls) held the GIL for milliseconds at a time at the lowest
priority; the recorder then waited for it and stamped commands late (the
logger's latency figures showed tens of ms that the robot never saw).
:class:`ProcessComputer` runs a :class:`whatmatters.sensitivity.compute.SensitivityComputer`
in a spawned child process at niceness ``nice`` with ``torch_threads``
intra-op threads, and offers its three methods (``operating_point``,
``finish``, ``compute``) with the same arguments and results, so the
:class:`~whatmatters_ros.sensitivity_worker.SensitivityWorker` does not know
the difference; exceptions come back as they were raised. No ROS here.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any

__all__ = ["ProcessComputer"]

log = logging.getLogger(__name__)

_COMPUTER: Any = None


def _init(nice: int, torch_threads: int) -> None:
    """Child process: lowest priority, bounded threads."""
    os.nice(nice)
    import torch

    torch.set_num_threads(torch_threads)


def _build(spec: str, parallel: bool | None, system: str) -> bool:
    """Child process: the model's sensitivity computer (an error goes back to the caller as raised)."""
    global _COMPUTER
    from dataclasses import replace

    from whatmatters.sensitivity.compute import SensitivityComputer, SensitivityConfig

    if system == "car":
        from whatmatters.car.experiment import CarExperimentConfig, CarSystem

        car = CarSystem(CarExperimentConfig.from_yaml())
        cfg = car.sensitivity if parallel is None else replace(car.sensitivity, parallel=parallel)
        _COMPUTER = SensitivityComputer(car.model(spec), car.mpc, car.constraints, cfg)
        return True
    from whatmatters.dynamics.registry import resolve_model
    from whatmatters.mpc.config import MpcConfig
    from whatmatters.robot.params import load_panda_params

    cfg = SensitivityConfig.from_yaml()
    cfg = cfg if parallel is None else replace(cfg, parallel=parallel)
    _COMPUTER = SensitivityComputer(resolve_model(spec), MpcConfig.from_yaml(), load_panda_params().torque_limits, cfg)
    return True


def _call(method: str, args: tuple[Any, ...]) -> Any:
    return getattr(_COMPUTER, method)(*args)


class ProcessComputer:
    """A SensitivityComputer for model ``spec`` in its own process.

    Args:
        spec: Model (``nominal``, ``base`` or a checkpoint path).
        nice: Niceness of the child process (19: lowest priority).
        torch_threads: Its torch intra-op threads.
        parallel: ``SensitivityConfig.parallel`` of its computer (None: ``config/sensitivity.yaml``'s).
        system: ``arm`` (the Panda's MPC, ``config/``) or ``car`` (the race car's, ``config/car/``).

    Raises:
        Exception: Whatever building the computer raised (e.g. a missing checkpoint), here.
    """

    def __init__(self, spec: str, nice: int = 19, torch_threads: int = 1, parallel: bool | None = None, system: str = "arm") -> None:
        if system not in ("arm", "car"):
            raise ValueError(f"system must be arm or car, got {system!r}")
        self.spec = spec
        self._pool = ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"), initializer=_init, initargs=(nice, torch_threads))
        try:
            self._pool.submit(_build, spec, parallel, system).result()
        except BaseException:
            self._pool.shutdown(wait=False, cancel_futures=True)
            raise

    def operating_point(self, *args: Any) -> Any:
        """:meth:`SensitivityComputer.operating_point` in the child."""
        return self._pool.submit(_call, "operating_point", args).result()

    def finish(self, *args: Any) -> Any:
        """:meth:`SensitivityComputer.finish` in the child."""
        return self._pool.submit(_call, "finish", args).result()

    def compute(self, *args: Any) -> Any:
        """:meth:`SensitivityComputer.compute` in the child."""
        return self._pool.submit(_call, "compute", args).result()

    def close(self) -> None:
        """Stops the child process."""
        self._pool.shutdown(wait=False, cancel_futures=True)
