"""The race car system: its track, parameters and plant (more follows: models, MPC set-up)."""

from whatmatters.car.params import CarParams, load_car_params
from whatmatters.car.plant import CarPlant, magic_formula
from whatmatters.car.track import Track, TrackError, wrap_angle

__all__ = ["CarParams", "CarPlant", "Track", "TrackError", "load_car_params", "magic_formula", "wrap_angle"]
