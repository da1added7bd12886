"""Seeded closed tracks: a circle with a few smooth bumps, checked for drivable corners and no overlap."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from whatmatters.car.track import Track, TrackError

__all__ = ["TrackConfig", "generate_track"]

#: Samples of the polar curve handed to :meth:`Track.from_points` (exact for its few harmonics).
SAMPLES = 64


@dataclass(frozen=True)
class TrackConfig:
    """How :func:`generate_track` draws a track (1:10 race car scale).

    Attributes:
        mean_radius: Radius of the underlying circle, m (length ~2 pi of it).
        harmonics: Bumps of orders 2..harmonics on the radius.
        amplitude: Relative size of the order-2 bump; order k is drawn within amplitude / k^1.5.
        half_width: Centre line to border, m.
        min_corner_radius: Smallest radius of curvature of the centre line allowed, m.
        max_tries: Draws before giving up.
    """

    mean_radius: float = 8.0
    harmonics: int = 5
    amplitude: float = 0.7
    half_width: float = 0.8
    min_corner_radius: float = 2.0
    max_tries: int = 200

    def __post_init__(self) -> None:
        for bad, what in (
            (not self.mean_radius > 0, f"mean_radius must be > 0 m, got {self.mean_radius}"),
            (not 2 <= self.harmonics <= SAMPLES // 2 - 2, f"harmonics must be in 2..{SAMPLES // 2 - 2}, got {self.harmonics}"),
            (not 0 <= self.amplitude < 1, f"amplitude must be in [0, 1), got {self.amplitude}"),
            (not 0 < self.half_width < self.min_corner_radius, f"half_width must be in (0, min_corner_radius), got {self.half_width}"),
            (self.max_tries < 1, f"max_tries must be >= 1, got {self.max_tries}"),
        ):
            if bad:
                raise TrackError(f"TrackConfig: {what}")


def generate_track(seed: int, cfg: TrackConfig | None = None) -> Track:
    """A closed track drawn from ``seed``: ``r(theta) = R (1 + sum_k c_k cos(k theta + phi_k))``, counter-clockwise.

    Draws are repeated (same seed, same sequence) until the centre line's
    corners are no tighter than ``min_corner_radius`` and the track does not
    overlap itself (:meth:`Track.check`).

    Raises:
        TrackError: If no draw within ``max_tries`` qualifies.
    """
    cfg = cfg or TrackConfig()
    rng = np.random.default_rng(seed)
    theta = 2.0 * np.pi * np.arange(SAMPLES) / SAMPLES
    orders = np.arange(2, cfg.harmonics + 1)
    for _ in range(cfg.max_tries):
        c = rng.uniform(-1.0, 1.0, orders.size) * cfg.amplitude / orders**1.5
        phi = rng.uniform(0.0, 2.0 * np.pi, orders.size)
        r = cfg.mean_radius * (1.0 + (c[:, None] * np.cos(orders[:, None] * theta + phi[:, None])).sum(axis=0))
        if r.min() <= cfg.half_width:
            continue
        track = Track.from_points(r * np.cos(theta), r * np.sin(theta), cfg.half_width)
        kappa = track.point(np.linspace(0.0, track.length, 720, endpoint=False))[3]
        if np.abs(kappa).max() * cfg.min_corner_radius > 1.0:
            continue
        try:
            track.check()
        except TrackError:
            continue
        return track
    raise TrackError(f"no track for seed {seed} within {cfg.max_tries} draws: corners tighter than {cfg.min_corner_radius} m or overlaps")
