"""The car's experiment, set-up half: the system, its data and the base model.

``whatmatters experiment --system car`` (:mod:`whatmatters.car.sweep`) runs:

1. **Data for the base model**: laps of the nominal model's MPC on the
   training environments (``pretrain_envs``).
2. **Base model**: the learned model fitted to them (residual and context
   encoder, the ``stand``-weighted multi-step loss, :func:`~whatmatters.train.finetune.finetune`).
3. **Data for fine-tuning**: laps of the base model's MPC on the training
   environments (``data_envs``) and S_hat of every step with the base model
   (the project's sensitivity code; sidecars beside the episodes).
4. The sweep (:mod:`whatmatters.car.sweep`).

Every step keeps its files and is skipped when they exist, so a killed run
continues where it stopped.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from whatmatters.car.control import CarControlConfig, CarController, car_constraints
from whatmatters.car.data import car_windows, compute_sidecar, load_episodes, save_episode, sidecar_path
from whatmatters.car.environments import make_car_environment
from whatmatters.car.episode import run_car_episode, start_state
from whatmatters.car.generate import generate_track
from whatmatters.car.learned import CarLearnedConfig, CarLearnedModel
from whatmatters.car.model import CarModel, nominal_car_model
from whatmatters.car.params import load_car_params
from whatmatters.car.plant import CarPlant
from whatmatters.car.raceline import RacingLine, racing_line
from whatmatters.car.track import Track
from whatmatters.config import YamlConfig, config_dir
from whatmatters.dynamics.learned import CheckpointError
from whatmatters.errors import ConfigError
from whatmatters.mpc.config import MpcConfig
from whatmatters.mpc.solver import AcadosMpcSolver
from whatmatters.sensitivity.compute import SensitivityComputer, SensitivityConfig
from whatmatters.sim.environments import environment_seeds
from whatmatters.train.finetune import FinetuneConfig, finetune
from whatmatters.train.weighting import WEIGHTINGS, weights

__all__ = ["CAR_MODELS", "CarExperimentConfig", "CarSystem", "car_base_checkpoint", "prepare"]

CAR_MODELS = ("nominal", "base")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CarExperimentConfig(YamlConfig):
    """The car experiment (``config/car/experiment.yaml``).

    Attributes:
        track_seed: The generated track.
        pretrain_envs: Training environments of the base model's data (first N of the train set).
        data_envs: Training environments of the fine-tuning data (the N after those).
        eval_envs: Evaluation environments (first N of the eval set).
        collect_seconds: s per data episode.
        eval_seconds: s per evaluation episode.
        weightings: The compared weightings.
        rollout_lengths: p values.
        seeds: Fine-tuning seeds.
        pretrain_epochs: Epochs of the base model.
        pretrain_p: Its rollout length.
        finetune: Fine-tuning settings (the arm's, with these overrides).
        workers: Worker processes (0: one per CPU).
    """

    yaml_file: ClassVar[str] = "car/experiment.yaml"

    track_seed: int = 0
    pretrain_envs: int = 6
    data_envs: int = 6
    eval_envs: int = 10
    collect_seconds: float = 10.0
    eval_seconds: float = 10.0
    weightings: tuple[str, ...] = WEIGHTINGS
    rollout_lengths: tuple[int, ...] = (1, 4, 12)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    pretrain_epochs: int = 30
    pretrain_p: int = 4
    finetune_epochs: int = 10
    finetune_lr: float = 1e-3
    finetune_batch: int = 256
    objective: str = "position"
    workers: int = 0

    def __post_init__(self) -> None:
        for name in ("pretrain_envs", "data_envs", "eval_envs", "pretrain_epochs", "pretrain_p", "finetune_epochs", "finetune_batch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"car experiment: '{name}' must be >= 1, got {getattr(self, name)}")
        if not self.collect_seconds > 0 or not self.eval_seconds > 0:
            raise ConfigError("car experiment: 'collect_seconds' and 'eval_seconds' must be > 0")
        if unknown := set(self.weightings) - set(WEIGHTINGS):
            raise ConfigError(f"car experiment: unknown weightings {sorted(unknown)} (known: {', '.join(WEIGHTINGS)})")
        if "stand" not in self.weightings:
            raise ConfigError("car experiment: 'weightings' must include stand (the results are normalised to it)")
        if min(self.rollout_lengths) < 1 or not self.seeds:
            raise ConfigError("car experiment: 'rollout_lengths' must be >= 1 and 'seeds' non-empty")

    def finetune_config(self, **overrides: Any) -> FinetuneConfig:
        """The arm's fine-tuning settings with this experiment's epochs, rate, batch and objective."""
        base = replace(FinetuneConfig.from_yaml(), epochs=self.finetune_epochs, lr=self.finetune_lr, batch_size=self.finetune_batch)
        return replace(base, objective=self.objective, **overrides)

    def seeds_of(self, which: str) -> list[int]:
        """Environment seeds: ``pretrain``, ``data`` (train set, disjoint) or ``eval``."""
        if which == "eval":
            return environment_seeds(f"eval:{self.eval_envs}")
        train = environment_seeds("train")
        return train[: self.pretrain_envs] if which == "pretrain" else train[self.pretrain_envs : self.pretrain_envs + self.data_envs]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings."""
        return asdict(self)


def car_base_checkpoint() -> Path:
    """The packaged base model of the car (``base``): step 2 of :func:`prepare` for the default
    ``config/car/experiment.yaml`` (pretrained on the nominal controller's laps of environments 0-5)."""
    return Path(str(resources.files("whatmatters.car").joinpath("checkpoints/base.pt")))


class CarSystem:
    """The car's pieces built once per process: track, line, nominal model, OCP settings, constraints."""

    def __init__(self, cfg: CarExperimentConfig) -> None:
        self.track: Track = generate_track(cfg.track_seed)
        self.params = load_car_params()
        self.nominal: CarModel = nominal_car_model(self.track, self.params)
        self.line: RacingLine = racing_line(self.track, self.params)
        self.mpc = MpcConfig.from_yaml(config_dir() / "car" / "mpc.yaml")
        self.control = CarControlConfig.from_yaml()
        self.constraints = car_constraints(self.nominal, self.track, self.control)
        self.sensitivity = SensitivityConfig.from_yaml(config_dir() / "car" / "sensitivity.yaml")
        self._controllers: dict[str, CarController] = {}

    def load(self, path: str | Path) -> CarLearnedModel:
        """A learned checkpoint on this system's nominal model."""
        return CarLearnedModel.load(path, self.nominal)

    def model(self, spec: str) -> CarModel:
        """The model named by ``spec``: ``nominal``, ``base`` (:func:`car_base_checkpoint`) or a checkpoint path.

        Raises:
            ConfigError: For an unknown name, or a checkpoint that is missing, corrupt or of another car (naming it).
        """
        if spec == "nominal":
            return self.nominal
        path = car_base_checkpoint() if spec == "base" else Path(spec)
        if spec != "base" and path.suffix != ".pt" and not path.is_file():
            raise ConfigError(f"unknown car model '{spec}': expected one of {', '.join(CAR_MODELS)} or a checkpoint path")
        try:
            return self.load(path)
        except CheckpointError as exc:
            raise ConfigError(str(exc)) from exc

    def controller(self, model: CarModel) -> CarController:
        """A controller of ``model`` (one compiled solver per formulation; a learned checkpoint is swapped in)."""
        kind = "learned" if isinstance(model, CarLearnedModel) else "nominal"
        ctrl = self._controllers.get(kind)
        if ctrl is None:
            ctrl = CarController(AcadosMpcSolver(model, self.mpc, self.constraints), self.line, self.track.length, self.control)
            self._controllers[kind] = ctrl
        else:
            ctrl.solver.swap_model(model)
            ctrl.tracker = model.context_tracker()
        return ctrl

    def episode(self, model: CarModel, env_seed: int, seconds: float) -> Any:
        """One closed-loop run of ``model``'s MPC in an environment."""
        ctrl = self.controller(model)
        plant = CarPlant(make_car_environment(env_seed).params(self.params))
        return run_car_episode(ctrl, plant, self.track, seconds, start_state(self.track, ctrl))


def _collect(system: CarSystem, model: CarModel, seeds: list[int], seconds: float, folder: Path) -> None:
    """Episodes of ``model``'s MPC in the environments (existing files kept)."""
    folder.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        path = folder / f"env_{seed:04d}.npz"
        if not path.is_file():
            save_episode(system.episode(model, seed, seconds), path, seed)


def _pretrain(system: CarSystem, cfg: CarExperimentConfig, folder: Path, out: Path) -> Path:
    """The base model: a fresh learned model fitted to the nominal controller's laps."""
    if out.is_file():
        return out
    model = CarLearnedModel(system.nominal, CarLearnedConfig())
    records = load_episodes(folder)
    win = car_windows(records, model, cfg.pretrain_p)
    hist = win.history.reshape(-1, win.history.shape[-1])
    model.encoder.set_normalization(hist.mean(0), hist.std(0))
    init = out.with_name("init.pt")
    model.save(init, kind="init")
    s = weights("stand", win, "both", groups=system.nominal.objective_groups)
    ft = cfg.finetune_config(epochs=cfg.pretrain_epochs, train_encoder=True)
    finetune(init, win, s, out.parent / "pretrain", ft, seed=0, dt=system.mpc.dt, load=system.load, dtype=torch.float64)
    trained = system.load(out.parent / "pretrain" / "model.pt")
    trained.save(out, kind="base", pretrain_envs=cfg.seeds_of("pretrain"), epochs=cfg.pretrain_epochs, p=cfg.pretrain_p)
    return out


def prepare(cfg: CarExperimentConfig, out: Path) -> tuple[CarSystem, Path, Path]:
    """Steps 1-3 of the module docstring (each skipped when its files exist).

    Returns:
        The system, the base checkpoint and the fine-tuning data folder.
    """
    system = CarSystem(cfg)
    system.track.save(out / "track.csv")
    system.line.save(out / "racing_line.csv")
    _collect(system, system.nominal, cfg.seeds_of("pretrain"), cfg.collect_seconds, out / "pretrain_data")
    base = _pretrain(system, cfg, out / "pretrain_data", out / "base.pt")
    data = out / "data"
    model = system.load(base)
    _collect(system, model, cfg.seeds_of("data"), cfg.collect_seconds, data)
    computer = SensitivityComputer(model, system.mpc, system.constraints, replace(system.sensitivity, parallel=False))
    for rec in load_episodes(data):
        if not sidecar_path(rec.path).is_file():
            compute_sidecar(computer, rec)
    missing = [r.path.name for r in load_episodes(data) if r.s_hat is None]
    if missing:
        raise ConfigError(f"car experiment: no sensitivities for {', '.join(missing)} in {data}")
    log.info("car data: %d of %d S_hat converged", *_converged(data))
    return system, base, data


def _converged(data: Path) -> tuple[int, int]:
    recs = load_episodes(data)
    ok = sum(int(np.all(np.isfinite(r.s_hat), axis=(1, 2)).sum()) for r in recs if r.s_hat is not None)
    return ok, sum(r.u.shape[0] for r in recs)
