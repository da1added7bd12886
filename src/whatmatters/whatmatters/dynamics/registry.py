"""Resolving a ``--model`` argument to a dynamics model."""

from __future__ import annotations

from whatmatters.dynamics.base import DynamicsModel
from whatmatters.dynamics.nominal import exact_model, nominal_model
from whatmatters.errors import ConfigError
from whatmatters.sim.environments import Environment
from whatmatters.sim.simulator import SimConfig

__all__ = ["MODEL_NAMES", "resolve_model"]

MODEL_NAMES = ("nominal", "exact")


def resolve_model(spec: str, env: Environment | None = None, sim: SimConfig | None = None) -> DynamicsModel:
    """The model named by ``spec``.

    Args:
        spec: ``nominal`` (rigid body without payload, armature, damping) or
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
    raise ConfigError(f"unknown model '{spec}': expected one of {', '.join(MODEL_NAMES)}")
