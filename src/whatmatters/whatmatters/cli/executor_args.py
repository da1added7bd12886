"""The executor flags shared by the parallel commands (collect, evaluate, sensitivities, experiment)."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from whatmatters.config import dataclass_from_mapping
from whatmatters.errors import ConfigError
from whatmatters.executor import ENGINES, Executor, ExecutorConfig, make_executor

__all__ = ["add_executor_args", "executor_config", "executor_from_args"]


def add_executor_args(p: argparse.ArgumentParser) -> None:
    """Adds ``--workers``, ``--executor`` and ``--ray-address`` (defaults: ``config/executor.yaml``)."""
    p.add_argument("--workers", type=int, default=0, help="worker processes, or a local Ray instance's CPUs (0: config/executor.yaml, then one per CPU)")
    p.add_argument("--executor", choices=ENGINES, default=None, help="where the tasks run: local processes or Ray (default: config/executor.yaml)")
    p.add_argument("--ray-address", default=None, help="with --executor ray: auto or HOST:PORT of a running cluster (default: start a local Ray instance)")


def executor_config(args: argparse.Namespace, base: ExecutorConfig | None = None) -> ExecutorConfig:
    """``base`` (default ``config/executor.yaml``) with the command line's flags applied.

    Raises:
        ConfigError: For a negative ``--workers``, or ``--ray-address`` with the local engine.
    """
    if args.workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {args.workers}")
    merged: dict[str, Any] = asdict(base or ExecutorConfig.from_yaml())
    if args.executor is not None:
        merged["engine"] = args.executor
    if args.ray_address is not None:
        if merged["engine"] != "ray":
            raise ConfigError("--ray-address needs --executor ray (or engine: ray in config/executor.yaml)")
        merged["address"] = args.ray_address
    if args.workers:
        merged["workers"] = args.workers
    return dataclass_from_mapping(ExecutorConfig, merged, "command line (executor)")


def executor_from_args(args: argparse.Namespace) -> Executor:
    """The executor the flags describe; use it as a context manager."""
    return make_executor(executor_config(args))
