"""Payload environments: ``seed -> payload draw``, and the fixed seed sets.

An :class:`Environment` is one payload drawn from a seeded generator plus the
seed of its own reference trajectory. The train, validation and eval sets are
read from ``config/environments.yaml``; they must not overlap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from whatmatters.config import load_yaml, require
from whatmatters.errors import ConfigError
from whatmatters.robot.payload import Payload

__all__ = ["Environment", "PayloadDistribution", "environment_seeds", "make_environment"]

SET_NAMES = ("train", "validation", "eval")
_SOURCE = "environments.yaml"


@dataclass(frozen=True)
class PayloadDistribution:
    """Uniform payload distribution.

    Attributes:
        mass_range: (low, high) kg.
        offset_range: (low, high) m, per axis of the flange frame.
        inertia_diag: Fixed principal inertia, kg m^2, shape (3,).
    """

    mass_range: tuple[float, float] = (0.0, 4.0)
    offset_range: tuple[float, float] = (-0.3, 0.3)
    inertia_diag: tuple[float, float, float] = (0.001, 0.001, 0.001)

    @classmethod
    def from_config(cls, data: dict[str, Any] | None = None) -> PayloadDistribution:
        """Reads the ``payload`` section of ``environments.yaml``."""
        data = load_yaml(_SOURCE) if data is None else data
        sec = require(data, "payload", _SOURCE)
        try:
            dist = cls(
                tuple(float(v) for v in require(sec, "mass_range", f"{_SOURCE}: payload")),  # type: ignore[arg-type]
                tuple(float(v) for v in require(sec, "offset_range", f"{_SOURCE}: payload")),  # type: ignore[arg-type]
                tuple(float(v) for v in require(sec, "inertia_diag", f"{_SOURCE}: payload")),  # type: ignore[arg-type]
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{_SOURCE}: payload: {exc}") from exc
        if len(dist.mass_range) != 2 or dist.mass_range[0] < 0 or dist.mass_range[1] < dist.mass_range[0]:
            raise ConfigError(f"{_SOURCE}: payload.mass_range must be [low >= 0, high >= low]")
        if len(dist.offset_range) != 2 or dist.offset_range[1] < dist.offset_range[0]:
            raise ConfigError(f"{_SOURCE}: payload.offset_range must be [low, high >= low]")
        return dist


@dataclass(frozen=True)
class Environment:
    """One payload environment.

    Attributes:
        seed: The environment seed.
        payload: The payload drawn from the seed.
        reference_seed: Seed of this environment's reference trajectory.
    """

    seed: int
    payload: Payload
    reference_seed: int


def make_environment(seed: int, dist: PayloadDistribution | None = None) -> Environment:
    """Draws the environment of a seed (deterministic).

    Args:
        seed: Environment seed, >= 0.
        dist: Payload distribution; read from ``environments.yaml`` if None.
    """
    if int(seed) != seed or seed < 0:
        raise ConfigError(f"environment seed must be a non-negative integer, got {seed!r}")
    dist = dist or PayloadDistribution.from_config()
    payload_seq, reference_seq = np.random.SeedSequence([int(seed), 0x5EED]).spawn(2)
    rng = np.random.default_rng(payload_seq)
    mass = float(rng.uniform(*dist.mass_range))
    offset = tuple(float(v) for v in rng.uniform(*dist.offset_range, size=3))
    reference_seed = int(reference_seq.generate_state(1)[0])
    return Environment(int(seed), Payload(mass, offset, dist.inertia_diag), reference_seed)  # type: ignore[arg-type]


def environment_seeds(spec: str, data: dict[str, Any] | None = None) -> list[int]:
    """Seeds of a named set (``train``, ``validation``, ``eval``), its first N (``eval:20``) or a list ``"3,7,9"``.

    Raises:
        ConfigError: For an unknown set name, a malformed list, a count beyond
            the set's size, or a sets section that is missing keys.
    """
    spec = spec.strip()
    name, sep, first = spec.partition(":")
    if sep and name.strip() in SET_NAMES:
        seeds = environment_seeds(name.strip(), data)
        try:
            n = int(first)
        except ValueError as exc:
            raise ConfigError(f"--envs '{spec}': the count after ':' must be an integer") from exc
        if not 0 < n <= len(seeds):
            raise ConfigError(f"--envs '{spec}': the {name.strip()} set has {len(seeds)} environments, asked for the first {n}")
        return seeds[:n]
    if spec in SET_NAMES:
        data = load_yaml(_SOURCE) if data is None else data
        sets = require(data, "sets", _SOURCE)
        sec = require(sets, spec, f"{_SOURCE}: sets")
        start = int(require(sec, "start", f"{_SOURCE}: sets.{spec}"))
        count = int(require(sec, "count", f"{_SOURCE}: sets.{spec}"))
        if start < 0 or count <= 0:
            raise ConfigError(f"{_SOURCE}: sets.{spec} needs start >= 0 and count > 0")
        return list(range(start, start + count))
    try:
        seeds = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError as exc:
        raise ConfigError(
            f"--envs must be one of {', '.join(SET_NAMES)} or comma-separated seeds, got '{spec}'"
        ) from exc
    if not seeds or min(seeds) < 0:
        raise ConfigError(f"--envs '{spec}' names no non-negative seed")
    return seeds
