"""Parameters of the 1:10 race car (``data/f1tenth.yaml``, sources in the file)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from whatmatters.errors import ConfigError

__all__ = ["CarParams", "load_car_params"]

GRAVITY = 9.81  # m/s^2


@dataclass(frozen=True)
class CarParams:
    """Chassis, tyres and actuators of a single-track car (SI units).

    Attributes:
        mass: kg.  yaw_inertia: kg m^2.  lf, lr: centre of gravity to the front / rear axle, m.
        cog_height: m.  width, length: body, m.
        mu: Tyre-road friction coefficient.
        cs_front, cs_rear: Cornering stiffness per unit normal load and friction, 1/rad.
        shape_c, curvature_e: Magic formula C and E (B = cs / C, D = mu F_z).
        max_steer: rad.  max_steer_rate: rad/s.  steer_time_constant: s.
        max_accel, min_accel: m/s^2.  accel_time_constant: s.  max_speed: m/s.
    """

    mass: float
    yaw_inertia: float
    lf: float
    lr: float
    cog_height: float
    width: float
    length: float
    mu: float
    cs_front: float
    cs_rear: float
    shape_c: float
    curvature_e: float
    max_steer: float
    max_steer_rate: float
    steer_time_constant: float
    max_accel: float
    min_accel: float
    accel_time_constant: float
    max_speed: float

    def __post_init__(self) -> None:
        positive = [f.name for f in fields(self) if f.name not in ("curvature_e", "min_accel")]
        bad = [name for name in positive if not getattr(self, name) > 0]
        if bad or not self.min_accel < 0 or not self.curvature_e < 1:
            raise ConfigError(f"car parameters out of range: {', '.join(bad) or 'min_accel must be < 0 and curvature_e < 1'}")

    @property
    def wheelbase(self) -> float:
        """lf + lr, m."""
        return self.lf + self.lr

    def with_values(self, **values: float) -> CarParams:
        """A copy with some values changed (e.g. an environment's friction and mass)."""
        return replace(self, **values)


def load_car_params(path: str | Path | None = None) -> CarParams:
    """The shipped F1TENTH-scale parameters (or those of ``path``, the same YAML layout).

    Raises:
        ConfigError: Naming the file and key, if one is missing, unknown or out of range.
    """
    if path is None:
        text, source = resources.files("whatmatters.car").joinpath("data/f1tenth.yaml").read_text(), "whatmatters/car/data/f1tenth.yaml"
    else:
        try:
            text, source = Path(path).read_text(), str(path)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the car parameters ({exc})") from exc
    data: dict[str, Any] = yaml.safe_load(text) or {}
    flat: dict[str, float] = {}
    for section in ("chassis", "tyres", "actuators"):
        if not isinstance(data.get(section), dict):
            raise ConfigError(f"{source}: section '{section}' missing")
        flat.update(data[section])
    names = {f.name for f in fields(CarParams)}
    unknown, missing = sorted(set(flat) - names), sorted(names - set(flat))
    if unknown or missing:
        raise ConfigError(f"{source}: unknown keys {unknown}, missing keys {missing}")
    try:
        return CarParams(**{k: float(v) for k, v in flat.items()})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {exc}") from exc
