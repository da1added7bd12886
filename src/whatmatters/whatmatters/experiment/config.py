"""Settings of the paper's comparison (``config/experiment.yaml``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from whatmatters.config import dataclass_from_mapping, load_yaml
from whatmatters.errors import ConfigError
from whatmatters.executor.config import ExecutorConfig
from whatmatters.mpc.config import MpcConfig
from whatmatters.sim.environments import environment_seeds
from whatmatters.train.finetune import FinetuneConfig
from whatmatters.train.weighting import WEIGHTINGS

__all__ = ["ExperimentConfig", "load_experiment_config"]


@dataclass(frozen=True)
class ExperimentConfig:
    """One sweep: data, the grid of runs, the evaluation and the fine-tuning settings.

    Attributes:
        base: The checkpoint every run starts from (``base``: the packaged one).
        data_envs: Training environments (the first ones of the ``train`` set)
            whose closed-loop episodes with the base model form the data.
        data_seconds: Episode length of the data, s.
        weightings: Weightings compared.
        rollouts: Rollout lengths p.
        seeds: Seeds (data order and initialisation of each run).
        eval_set: Environment set of the reported evaluation (``eval`` for
            the reported numbers, ``validation`` for choosing settings).
        eval_envs: Environments of that set on which each run's selected
            checkpoint is evaluated (its first ones).
        eval_seconds: Episode length of every evaluation, s.
        select_envs: Validation environments (the first ones of the
            ``validation`` set) on which each run's checkpoint is chosen after
            every epoch: the epoch with the lowest geometric mean of J_e
            (:func:`whatmatters.experiment.selection.select_epoch`).
        epoch_eval_envs: The first evaluation environments also evaluated after
            every epoch (the paper's best5, selection on the evaluation set,
            and the paper-sized table); 0: none.
        workers: Worker processes (0: one per CPU).
        finetune: Trainer settings (``config/finetune.yaml`` overridden by the
            ``finetune:`` section).
        mpc: Overrides of ``config/mpc.yaml`` for every controller of the
            sweep (data collection, sensitivities, evaluations), e.g.
            ``{"rk4_jacobian": "exact"}``; see :meth:`mpc_config`.
        executor: Overrides of ``config/executor.yaml`` (where the sweep
            runs: ``{"engine": "ray", "address": "auto"}``); see
            :meth:`executor_config`. Not part of any result's signature: the
            numbers do not depend on the engine.
    """

    base: str = "base"
    data_envs: int = 10
    data_seconds: float = 10.0
    weightings: tuple[str, ...] = WEIGHTINGS
    rollouts: tuple[int, ...] = (1, 4, 12)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    eval_set: str = "eval"
    eval_envs: int = 100
    eval_seconds: float = 10.0
    select_envs: int = 20
    epoch_eval_envs: int = 20
    workers: int = 0
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    mpc: dict[str, Any] = field(default_factory=dict)
    executor: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.mpc_config()  # a ConfigError naming an unknown or ill-typed key
        self.executor_config()
        bad = [w for w in self.weightings if w not in WEIGHTINGS]
        if bad or not self.weightings:
            raise ConfigError(f"experiment.weightings: unknown {bad} (known: {', '.join(WEIGHTINGS)})")
        if "stand" not in self.weightings:
            raise ConfigError("experiment.weightings must include 'stand' (the normalisation baseline)")
        if not self.rollouts or any(p < 1 for p in self.rollouts):
            raise ConfigError(f"experiment.rollouts must be positive integers, got {self.rollouts}")
        if not self.seeds:
            raise ConfigError("experiment.seeds must not be empty")
        if self.eval_set not in ("eval", "validation"):
            raise ConfigError(f"experiment.eval_set must be eval or validation, got {self.eval_set!r}")
        if self.data_envs < 1 or self.eval_envs < 1 or self.select_envs < 1 or self.data_seconds <= 0 or self.eval_seconds <= 0:
            raise ConfigError("experiment: data_envs, eval_envs, select_envs, data_seconds and eval_seconds must be positive")
        if not 0 <= self.epoch_eval_envs <= self.eval_envs:
            raise ConfigError(f"experiment.epoch_eval_envs must be in 0..eval_envs ({self.eval_envs}), got {self.epoch_eval_envs}")
        for name, set_name, n in (("data_envs", "train", self.data_envs), ("eval_envs", self.eval_set, self.eval_envs), ("select_envs", "validation", self.select_envs)):
            available = len(environment_seeds(set_name))
            if n > available:
                raise ConfigError(f"experiment.{name}: {n} asked, the {set_name} set of config/environments.yaml has {available}")

    def eval_seeds(self) -> list[int]:
        """The evaluation environments of the selected checkpoints (the first ``eval_envs`` of ``eval_set``)."""
        return environment_seeds(self.eval_set)[: self.eval_envs]

    def select_seeds(self) -> list[int]:
        """The validation environments on which each run's checkpoint is chosen."""
        return environment_seeds("validation")[: self.select_envs]

    def mpc_config(self) -> MpcConfig:
        """``config/mpc.yaml`` with this experiment's ``mpc:`` overrides.

        Raises:
            ConfigError: Naming the key for an unknown key or a bad value.
        """
        if not self.mpc:
            return MpcConfig.from_yaml()
        return dataclass_from_mapping(MpcConfig, {**asdict(MpcConfig.from_yaml()), **self.mpc}, "experiment (mpc)")

    def executor_config(self, workers: int | None = None) -> ExecutorConfig:
        """``config/executor.yaml`` with this experiment's ``executor:`` overrides and its worker count.

        Args:
            workers: Overrides ``workers`` (then this experiment's own ``workers``, if not 0).

        Raises:
            ConfigError: Naming the key for an unknown key or a bad value.
        """
        merged = {**asdict(ExecutorConfig.from_yaml()), **self.executor}
        if workers or self.workers:
            merged["workers"] = workers or self.workers
        return dataclass_from_mapping(ExecutorConfig, merged, "experiment (executor)")

    def runs(self) -> list[tuple[str, int, int]]:
        """(weighting, p, seed) of every run, seeds outermost (complete comparisons finish first)."""
        return [(w, p, s) for s in self.seeds for p in self.rollouts for w in self.weightings]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (stored beside the results)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("finetune", "mpc", "executor")}
        out["finetune"] = {f.name: getattr(self.finetune, f.name) for f in fields(self.finetune)}
        out["mpc"] = dict(self.mpc)
        out["executor"] = dict(self.executor)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def _from_mapping(mapping: dict[str, Any], source: str, base: ExperimentConfig) -> ExperimentConfig:
    mapping = dict(mapping)
    ft = mapping.pop("finetune", None) or {}
    if not isinstance(ft, dict):
        raise ConfigError(f"{source}: 'finetune' must be a mapping")
    mpc = mapping.pop("mpc", None) or {}
    if not isinstance(mpc, dict):
        raise ConfigError(f"{source}: 'mpc' must be a mapping of config/mpc.yaml keys")
    mpc = {**base.mpc, **mpc}
    executor = mapping.pop("executor", None) or {}
    if not isinstance(executor, dict):
        raise ConfigError(f"{source}: 'executor' must be a mapping of config/executor.yaml keys")
    executor = {**base.executor, **executor}
    try:
        ExperimentConfig(mpc=mpc, executor=executor)  # checks the overrides
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    ft_cfg = replace(base.finetune, **{f.name: getattr(dataclass_from_mapping(FinetuneConfig, ft, f"{source} (finetune)"), f.name) for f in fields(FinetuneConfig) if f.name in ft})
    known = {f.name for f in fields(ExperimentConfig)} - {"finetune", "mpc", "executor"}
    unknown = sorted(set(mapping) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown} (known: {', '.join(sorted(known | {'finetune', 'mpc', 'executor', 'quick'}))})")
    values: dict[str, Any] = {}
    for key, value in mapping.items():
        if key in ("weightings",):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{source}: '{key}' must be a list of names")
            values[key] = tuple(value)
        elif key in ("rollouts", "seeds"):
            if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise ConfigError(f"{source}: '{key}' must be a list of integers")
            values[key] = tuple(value)
        elif key in ("base", "eval_set"):
            if not isinstance(value, str):
                raise ConfigError(f"{source}: '{key}' must be a string")
            values[key] = value
        elif key in ("data_envs", "eval_envs", "select_envs", "epoch_eval_envs", "workers"):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{source}: '{key}' must be an integer")
            values[key] = value
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{source}: '{key}' must be a number")
            values[key] = float(value)
    return replace(base, finetune=ft_cfg, mpc=mpc, executor=executor, **values)


def load_experiment_config(path: str | Path | None = None, quick: bool = False) -> ExperimentConfig:
    """Reads an experiment YAML (default ``config/experiment.yaml``); ``quick`` applies its ``quick:`` section.

    Raises:
        ConfigError: Naming the file and key for an unknown key or a bad value.
    """
    source = str(path or "experiment.yaml")
    data = load_yaml(path or "experiment.yaml")
    quick_section = data.pop("quick", None) or {}
    if not isinstance(quick_section, dict):
        raise ConfigError(f"{source}: 'quick' must be a mapping")
    cfg = _from_mapping(data, source, ExperimentConfig(finetune=FinetuneConfig.from_yaml()))
    if quick:
        cfg = _from_mapping(quick_section, f"{source} (quick)", cfg)
    return cfg
