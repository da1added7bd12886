"""The race car system: track, parameters, plant and environments (more follows: models, MPC set-up)."""

from whatmatters.car.environments import CarEnvironment, CarEnvironmentConfig, make_car_environment
from whatmatters.car.params import CarParams, load_car_params
from whatmatters.car.plant import CarPlant, magic_formula
from whatmatters.car.track import Track, TrackError, wrap_angle

__all__ = [
    "CarEnvironment", "CarEnvironmentConfig", "CarParams", "CarPlant", "Track", "TrackError",
    "load_car_params", "magic_formula", "make_car_environment", "wrap_angle",
]  # fmt: skip
