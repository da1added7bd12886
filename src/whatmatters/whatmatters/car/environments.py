"""The car's environments: ``seed -> (tyre friction, payload and where it sits)``, one seeded draw each.

The seed sets are the arm's (``config/environments.yaml``: train, validation,
eval, never overlapping): a seed names an environment of either system.
A payload of mass ``m_p`` placed ``x_p`` ahead of the car's centre of gravity
moves the centre of gravity by ``x_c = m_p x_p / (m + m_p)``, so the axle
distances become ``l_f - x_c`` and ``l_r + x_c``, and the yaw inertia grows by
``m x_c^2 + m_p (x_p - x_c)^2`` (parallel axes; the payload is a point mass).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from whatmatters.car.params import CarParams
from whatmatters.errors import ConfigError

__all__ = ["CarEnvironment", "CarEnvironmentConfig", "make_car_environment"]


@dataclass(frozen=True)
class CarEnvironmentConfig:
    """Uniform ranges of the draws.

    Attributes:
        mu_scale: (low, high) factor on the nominal friction (wet to dry asphalt-like surfaces).
        payload_mass: (low, high) kg.
        payload_x: (low, high) m, ahead of the centre of gravity.
    """

    mu_scale: tuple[float, float] = (0.55, 1.05)
    payload_mass: tuple[float, float] = (0.0, 1.0)
    payload_x: tuple[float, float] = (-0.12, 0.12)

    def __post_init__(self) -> None:
        for name in ("mu_scale", "payload_mass", "payload_x"):
            low, high = getattr(self, name)
            if not low <= high:
                raise ConfigError(f"CarEnvironmentConfig.{name}: low {low} > high {high}")
        if self.mu_scale[0] <= 0 or self.payload_mass[0] < 0:
            raise ConfigError("CarEnvironmentConfig: mu_scale must be > 0 and payload_mass >= 0")


@dataclass(frozen=True)
class CarEnvironment:
    """One environment.

    Attributes:
        seed: Its seed.
        mu_scale: Factor on the nominal friction coefficient.
        payload_mass: kg.
        payload_x: m ahead of the unloaded car's centre of gravity.
    """

    seed: int
    mu_scale: float
    payload_mass: float
    payload_x: float

    def params(self, base: CarParams) -> CarParams:
        """``base`` with this environment's friction, mass, axle distances and yaw inertia."""
        total = base.mass + self.payload_mass
        shift = self.payload_mass * self.payload_x / total
        if not -base.lr < shift < base.lf:
            raise ConfigError(f"environment {self.seed}: the centre of gravity leaves the wheelbase ({shift:.3f} m)")
        inertia = base.yaw_inertia + base.mass * shift**2 + self.payload_mass * (self.payload_x - shift) ** 2
        return base.with_values(mu=base.mu * self.mu_scale, mass=total, lf=base.lf - shift, lr=base.lr + shift, yaw_inertia=inertia)


def make_car_environment(seed: int, cfg: CarEnvironmentConfig | None = None) -> CarEnvironment:
    """The environment of ``seed`` (the same draw on every machine)."""
    cfg = cfg or CarEnvironmentConfig()
    rng = np.random.default_rng([seed, 0xCA7])  # a stream of its own: not the arm's payload draw of the same seed
    mu, mass, x = (float(rng.uniform(*r)) for r in (cfg.mu_scale, cfg.payload_mass, cfg.payload_x))
    return CarEnvironment(seed, mu, mass, x)
