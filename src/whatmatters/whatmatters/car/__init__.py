"""The race car system: its track (more follows: plant, models, MPC set-up)."""

from whatmatters.car.track import Track, TrackError, wrap_angle

__all__ = ["Track", "TrackError", "wrap_angle"]
