"""The race car system: track and its curvature series, parameters, plant, nominal model and environments (more follows: MPC set-up)."""

from whatmatters.car.curvature import CurvatureSeries
from whatmatters.car.environments import CarEnvironment, CarEnvironmentConfig, make_car_environment
from whatmatters.car.model import CarModel, frenet_state, nominal_car_model, plant_pose
from whatmatters.car.params import CarParams, load_car_params
from whatmatters.car.plant import CarPlant, magic_formula
from whatmatters.car.track import Track, TrackError, wrap_angle

__all__ = [
    "CarEnvironment", "CarEnvironmentConfig", "CarModel", "CarParams", "CarPlant", "CurvatureSeries", "Track",
    "TrackError", "frenet_state", "load_car_params", "magic_formula", "make_car_environment", "nominal_car_model",
    "plant_pose", "wrap_angle",
]  # fmt: skip
