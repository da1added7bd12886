"""A box payload rigidly attached at the Panda's flange."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from whatmatters.errors import ConfigError
from whatmatters.robot.params import Inertial, PandaParams

__all__ = ["Payload"]


@dataclass(frozen=True)
class Payload:
    """Mass properties of the payload, in the flange (panda_link8) frame.

    Attributes:
        mass: kg, >= 0.
        offset: Centre of mass relative to the flange origin, m, shape (3,).
        inertia_diag: Principal inertia about the centre of mass, kg m^2, shape (3,).
    """

    mass: float = 0.0
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)
    inertia_diag: tuple[float, float, float] = (0.001, 0.001, 0.001)

    def __post_init__(self) -> None:
        if not np.isfinite(self.mass) or self.mass < 0.0:
            raise ConfigError(f"payload mass must be finite and >= 0, got {self.mass}")
        if len(self.offset) != 3 or not np.all(np.isfinite(self.offset)):
            raise ConfigError(f"payload offset must be 3 finite values, got {self.offset}")
        if len(self.inertia_diag) != 3 or min(self.inertia_diag) < 0.0:
            raise ConfigError(f"payload inertia_diag must be 3 values >= 0, got {self.inertia_diag}")

    def inertial_in_link7(self, params: PandaParams) -> Inertial:
        """The payload's mass properties expressed in the link 7 frame."""
        local = Inertial(float(self.mass), np.asarray(self.offset, float), np.diag(self.inertia_diag))
        return local.transformed(params.flange_rot, params.flange_pos)
