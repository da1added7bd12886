"""Resolving a ``--model`` argument to a dynamics model."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from whatmatters.dynamics.base import DynamicsModel
from whatmatters.dynamics.learned import CheckpointError, LearnedDynamics
from whatmatters.dynamics.nominal import exact_model, nominal_model
from whatmatters.errors import ConfigError
from whatmatters.sim.environments import Environment
from whatmatters.sim.simulator import SimConfig

__all__ = ["MODEL_NAMES", "absolute_model_spec", "resolve_model"]

MODEL_NAMES = ("nominal", "exact", "base")


def base_checkpoint() -> Path:
    """The packaged pretrained checkpoint (``--model base``; see docs/models.md)."""
    return Path(str(resources.files("whatmatters.dynamics").joinpath("checkpoints/base.pt")))


def resolve_model(spec: str, env: Environment | None = None, sim: SimConfig | None = None) -> DynamicsModel:
    """The model named by ``spec``.

    Args:
        spec: ``nominal`` (rigid body without payload, armature, damping),
            ``base`` (the packaged pretrained model), a checkpoint path, or
            ``exact`` (the simulator's own model of ``env``: payload, armature
            and damping known; one compiled solver per environment).
        env: The environment, required for ``exact``.
        sim: Simulator settings (armature, damping) for ``exact``.

    Raises:
        ConfigError: For an unknown name or ``exact`` without an environment.
    """
    if spec == "nominal":
        return nominal_model()
    if spec == "exact":
        if env is None:
            raise ConfigError("--model exact needs an environment (its payload)")
        sim = sim or SimConfig()
        return exact_model(env.payload, sim.armature, sim.damping)
    path = base_checkpoint() if spec == "base" else Path(spec)
    if spec == "base" or path.suffix == ".pt" or path.is_file():
        if not path.is_file():
            raise ConfigError(f"checkpoint {path} does not exist" + (" (run the commands in docs/models.md)" if spec == "base" else ""))
        try:
            return LearnedDynamics.load(path)
        except CheckpointError as exc:
            raise ConfigError(str(exc)) from exc
    raise ConfigError(f"unknown model '{spec}': expected one of {', '.join(MODEL_NAMES)} or a checkpoint path")


def absolute_model_spec(spec: str) -> str:
    """``spec`` with a checkpoint path made absolute, so that a worker in another folder (or on another node
    that mounts the same path) finds the same file; model names are returned as they are."""
    if spec in MODEL_NAMES:
        return spec
    path = Path(spec)
    return str(path.resolve()) if path.suffix == ".pt" or path.is_file() else spec
