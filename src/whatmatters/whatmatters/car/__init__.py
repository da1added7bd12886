"""The race car system: everything that is the car's and not the core's.

Track and curvature, parameters, plant, environments, the nominal and learned
models with their context, the racing line, the controller and its closed loop.
"""

from whatmatters.car.context import CarContextTracker, car_history_features, car_history_windows
from whatmatters.car.control import CarControlConfig, CarController, CarStep, car_constraints
from whatmatters.car.curvature import CurvatureSeries
from whatmatters.car.environments import CarEnvironment, CarEnvironmentConfig, make_car_environment
from whatmatters.car.episode import CarEpisode, run_car_episode, start_state
from whatmatters.car.learned import CarLearnedConfig, CarLearnedModel
from whatmatters.car.model import CarModel, frenet_state, nominal_car_model, plant_pose
from whatmatters.car.params import CarParams, load_car_params
from whatmatters.car.plant import CarPlant, magic_formula
from whatmatters.car.raceline import RacingLine, RacingLineConfig, racing_line
from whatmatters.car.residual import CarResidualConfig, TyreResidual
from whatmatters.car.track import Track, TrackError, wrap_angle

__all__ = [
    "CarContextTracker", "CarControlConfig", "CarController", "CarEnvironment", "CarEnvironmentConfig", "CarEpisode",
    "CarLearnedConfig", "CarLearnedModel", "CarModel", "CarParams", "CarPlant", "CarResidualConfig", "CarStep",
    "CurvatureSeries", "RacingLine", "RacingLineConfig", "Track", "TrackError", "TyreResidual", "car_constraints",
    "car_history_features", "car_history_windows", "frenet_state", "load_car_params", "magic_formula",
    "make_car_environment", "nominal_car_model", "plant_pose", "racing_line", "run_car_episode", "start_state",
    "wrap_angle",
]  # fmt: skip
