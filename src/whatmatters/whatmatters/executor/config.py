"""Which engine runs the parallel jobs (``config/executor.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from whatmatters.config import YamlConfig
from whatmatters.errors import ConfigError
from whatmatters.executor.base import Executor

__all__ = ["ENGINES", "ExecutorConfig", "make_executor"]

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class ExecutorConfig(YamlConfig):
    """Executor settings.

    Attributes:
        engine: ``local`` (worker processes on this machine) or ``ray``.
        address: Ray only: ``""`` starts a local instance, ``auto`` joins the
            cluster ``ray start`` made on this machine, ``HOST:PORT`` a head node.
        workers: Local worker processes, or the CPUs of a local Ray instance
            (0: one per CPU).
        max_retries: How often a task whose worker process (or node) died is run again.
    """

    yaml_file: ClassVar[str] = "executor.yaml"

    engine: str = "local"
    address: str = ""
    workers: int = 0
    max_retries: int = 3

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(f"executor.engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.workers < 0 or self.max_retries < 0:
            raise ConfigError(f"executor: workers and max_retries must be >= 0, got {self.workers} and {self.max_retries}")
        if self.address and self.engine != "ray":
            raise ConfigError(f"executor.address ({self.address!r}) is for the ray engine, but engine is {self.engine!r}")


def make_executor(cfg: ExecutorConfig | None = None) -> Executor:
    """The executor ``cfg`` describes (``config/executor.yaml`` if None); use it as a context manager.

    Raises:
        ConfigError: If the engine is unknown, or Ray is asked for and not installed.
    """
    cfg = cfg or ExecutorConfig.from_yaml()
    if cfg.engine == "ray":
        from whatmatters.executor.ray_engine import RayExecutor

        return RayExecutor(cfg.address or None, cfg.workers or None, cfg.max_retries)
    from whatmatters.executor.local import LocalExecutor

    return LocalExecutor(cfg.workers or None, cfg.max_retries)
