"""A closed race track: centre line as a periodic Fourier curve, arc length, Frenet coordinates.

The centre line is ``r(theta) = (x(theta), y(theta))``, ``theta`` in [0, 2 pi),
each coordinate a finite Fourier series, so position, heading and curvature
are exact at any point (no spline, no numerical differentiation). The arc
length ``s(theta)`` is the integral of ``|r'(theta)|``, taken term by term
from the Fourier series of ``|r'|`` on a dense grid (spectrally accurate for
a smooth closed curve); ``theta(s)`` inverts it by interpolation plus Newton
steps.

Frenet coordinates of a pose ``(x, y, psi)``: ``s`` of the nearest centre-line
point, the signed lateral offset ``n`` (m, positive to the left of the
driving direction) and the relative heading ``mu = psi - psi_c(s)`` (rad,
wrapped to (-pi, pi]).

For a model of the car in these coordinates, :meth:`Track.curvature_series`
gives the curvature as a Fourier series in ``s`` (closed form, CasADi-ready).

A track is stored as a plain CSV (:meth:`Track.save`: ``s_m, x_m, y_m,
psi_rad, kappa_1pm, half_width_m`` every ``ds``); :meth:`Track.load` fits the
Fourier curve back to its points.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from whatmatters.car.curvature import CurvatureSeries
from whatmatters.errors import WhatmattersError
from whatmatters.io import atomic_write_text

__all__ = ["Track", "TrackError", "wrap_angle"]

#: Points of the dense grid behind the arc-length table.
GRID = 4096

#: Curvature samples per harmonic kept by :meth:`Track.curvature_series` (at least ``GRID // 4``).
CURVATURE_OVERSAMPLING = 16


class TrackError(WhatmattersError, ValueError):
    """A track is malformed (too few points, self-overlapping, a bad file); the message names it."""


def wrap_angle(a: np.ndarray | float) -> np.ndarray:
    """Angles wrapped to (-pi, pi], rad."""
    return np.pi - np.mod(np.pi - np.asarray(a, dtype=float), 2.0 * np.pi)


@dataclass(frozen=True, eq=False)
class Track:
    """A closed centre line with a constant half width.

    Attributes:
        coef_x, coef_y: Fourier coefficients of x and y, m, (K + 1, 2): row k is
            ``(a_k, b_k)`` of ``a_k cos(k theta) + b_k sin(k theta)`` (``b_0`` unused).
        half_width: Distance from the centre line to either border, m.
        length: Length of the centre line, m (computed).

    Raises:
        TrackError: For malformed coefficients, a half width <= 0 or a cusp.
    """

    coef_x: np.ndarray
    coef_y: np.ndarray
    half_width: float
    length: float = field(init=False)
    _theta: np.ndarray = field(init=False, repr=False)  # the dense grid of theta, (GRID,)
    _s: np.ndarray = field(init=False, repr=False)  # s at the grid, m, (GRID,)
    _grid_xy: tuple[np.ndarray, np.ndarray] = field(init=False, repr=False)  # the centre line at the grid, m, 2 x (GRID,)

    def __post_init__(self) -> None:
        cx, cy = np.asarray(self.coef_x, dtype=float), np.asarray(self.coef_y, dtype=float)
        if cx.ndim != 2 or cx.shape[1] != 2 or cx.shape != cy.shape or cx.shape[0] < 2:
            raise TrackError(f"Fourier coefficients must be (K + 1, 2) with K >= 1, got {cx.shape} and {cy.shape}")
        if not self.half_width > 0:
            raise TrackError(f"half_width must be > 0 m, got {self.half_width}")
        object.__setattr__(self, "coef_x", cx)
        object.__setattr__(self, "coef_y", cy)
        theta = 2.0 * np.pi * np.arange(GRID) / GRID
        speed = np.hypot(*self._derivative(theta, 1))
        if speed.min() <= 1e-9 * speed.max():
            raise TrackError("the centre line has a cusp (|r'(theta)| = 0)")
        spec = np.fft.rfft(speed) / GRID  # |r'| = c0 + sum_k 2 Re(c_k e^{ik theta})
        k = np.arange(1, spec.size)
        antider = np.concatenate([[0.0], spec[1:] / (1j * k)])  # of the oscillating part, term by term
        antider[-1] = 0.0  # the Nyquist term (negligible for a smooth curve)
        wave = np.fft.irfft(antider * GRID, n=GRID)
        integral = spec[0].real * theta + wave - wave[0]
        object.__setattr__(self, "_theta", theta)
        object.__setattr__(self, "_s", integral)
        object.__setattr__(self, "_grid_xy", self._derivative(theta, 0))  # to_frenet's first guess, once
        object.__setattr__(self, "length", float(2.0 * np.pi * spec[0].real))

    # ------------------------------------------------------------- the curve
    def _curve(self, theta: np.ndarray, orders: tuple[int, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
        """The theta-derivatives of (x, y) of the given orders at ``theta`` (any shape), from one cos/sin evaluation."""
        theta = np.asarray(theta, dtype=float)
        k = np.arange(self.coef_x.shape[0]).reshape((-1,) + (1,) * theta.ndim)
        cos, sin = np.cos(k * theta[None]), np.sin(k * theta[None])
        # d^n/dtheta^n of (cos, sin)(k theta) = k^n (cos, sin)(k theta + n pi / 2): a quarter turn per order
        turns = {0: (cos, sin), 1: (-sin, cos), 2: (-cos, -sin), 3: (sin, -cos)}
        ax, bx, ay, by = (c.reshape(k.shape) for c in (*self.coef_x.T, *self.coef_y.T))
        out = []
        for order in orders:
            c, s = turns[order % 4]
            scale = k.astype(float) ** order
            out.append(((scale * (ax * c + bx * s)).sum(axis=0), (scale * (ay * c + by * s)).sum(axis=0)))
        return out

    def _derivative(self, theta: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``order``-th theta-derivative of (x, y) at ``theta`` (any shape)."""
        return self._curve(theta, (order,))[0]

    def theta(self, s: np.ndarray | float) -> np.ndarray:
        """The curve parameter at arc length ``s`` (m, any shape; taken modulo the length)."""
        s = np.mod(np.asarray(s, dtype=float), self.length)
        grid_s = np.append(self._s, self.length)
        grid_t = np.append(self._theta, 2.0 * np.pi)
        th = np.interp(s, grid_s, grid_t)
        for _ in range(3):  # Newton on s(theta) = s
            th = th - (self._arc(th) - s) / np.hypot(*self._derivative(th, 1))
        return th

    def _arc(self, theta: np.ndarray) -> np.ndarray:
        """s(theta) for theta in [0, 2 pi]: the dense table plus Simpson's rule from its grid point
        (error ~1e-15 m per piece, so s is smooth across the grid points)."""
        grid_t, grid_s = self._theta, self._s
        i = np.clip((theta / (2.0 * np.pi) * GRID).astype(int), 0, GRID - 1)
        t0 = grid_t[i]
        speeds = [np.hypot(*self._derivative(t, 1)) for t in (t0, 0.5 * (t0 + theta), theta)]
        return grid_s[i] + (theta - t0) / 6.0 * (speeds[0] + 4.0 * speeds[1] + speeds[2])

    def arc_length(self, theta: np.ndarray | float) -> np.ndarray:
        """Arc length s(theta), m, theta taken modulo 2 pi."""
        return self._arc(np.mod(np.asarray(theta, dtype=float), 2.0 * np.pi))

    def point(self, s: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Centre line at arc length ``s``: x, y (m), heading psi (rad), curvature kappa (1/m), each of s's shape."""
        (x, y), (dx, dy), (ddx, ddy) = self._curve(self.theta(s), (0, 1, 2))
        return x, y, np.arctan2(dy, dx), (dx * ddy - dy * ddx) / np.hypot(dx, dy) ** 3

    def curvature_series(self, harmonics: int = 128) -> CurvatureSeries:
        """The curvature as a Fourier series in arc length, ``kappa(s)`` on [0, length), periodic.

        Fitted by FFT of the exact curvature at ``max(GRID // 4, CURVATURE_OVERSAMPLING
        * harmonics)`` evenly spaced ``s`` (aliasing far below the truncation error).
        ``kappa(s)`` is smooth but not band-limited (``theta(s)`` is not linear): the
        error falls exponentially with ``harmonics`` at a rate set by the track's
        shape. On the default generated tracks, relative to max |kappa|: 64
        harmonics 1e-7 to 3e-4, 96 up to 4e-6, 128 (the default) up to 6e-8.

        Args:
            harmonics: ``K``, the harmonics kept, >= 1.

        Raises:
            TrackError: For ``harmonics`` < 1.
        """
        if harmonics < 1:
            raise TrackError(f"harmonics must be >= 1, got {harmonics}")
        count = max(GRID // 4, CURVATURE_OVERSAMPLING * harmonics)
        kappa = self.point(self.length * np.arange(count) / count)[3]
        return CurvatureSeries.from_samples(kappa, self.length, harmonics)

    # ------------------------------------------------------------- Frenet
    def from_frenet(self, s: np.ndarray, n: np.ndarray, mu: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cartesian pose (x, y m, psi rad) of Frenet coordinates (s m, n m, mu rad), any equal shapes."""
        x, y, psi, _ = self.point(s)
        return x - n * np.sin(psi), y + n * np.cos(psi), wrap_angle(psi + mu)

    def to_frenet(self, x: np.ndarray, y: np.ndarray, psi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Frenet coordinates (s m, n m, mu rad) of Cartesian poses (any equal shapes): the nearest centre-line point.

        Valid within the curvature radius of the centre line (``|n| kappa < 1``), i.e. on the track.
        """
        x, y, psi = (np.asarray(v, dtype=float) for v in (x, y, psi))
        gx, gy = self._grid_xy
        d2 = (x[..., None] - gx) ** 2 + (y[..., None] - gy) ** 2
        th = self._theta[np.argmin(d2, axis=-1)]
        for _ in range(4):  # Newton on (r(theta) - p) . r'(theta) = 0
            (rx, ry), (dx, dy), (ddx, ddy) = self._curve(th, (0, 1, 2))
            f = (rx - x) * dx + (ry - y) * dy
            th = th - f / (dx * dx + dy * dy + (rx - x) * ddx + (ry - y) * ddy)
        (rx, ry), (dx, dy) = self._curve(th, (0, 1))
        heading = np.arctan2(dy, dx)
        n = (y - ry) * np.cos(heading) - (x - rx) * np.sin(heading)
        return self.arc_length(th), n, wrap_angle(psi - heading)

    # ------------------------------------------------------------- checks, files
    def check(self) -> None:
        """Raises :class:`TrackError` unless both borders are regular (``half_width * |kappa| < 1``)
        and parts of the track farther apart along it than a half turn at radius ``half_width``
        are more than ``2 half_width`` apart (the borders do not overlap)."""
        s = np.linspace(0.0, self.length, 720, endpoint=False)
        x, y, _, kappa = self.point(s)
        if np.abs(kappa).max() * self.half_width >= 1.0:
            raise TrackError(f"a border folds: max |kappa| {np.abs(kappa).max():.3f} 1/m with half width {self.half_width} m")
        dist = np.hypot(x[:, None] - x[None], y[:, None] - y[None])
        along = np.abs(s[:, None] - s[None])
        along = np.minimum(along, self.length - along)
        far = along > np.pi * self.half_width
        if far.any() and dist[far].min() <= 2.0 * self.half_width:
            raise TrackError(f"the track overlaps itself: {dist[far].min():.2f} m between parts far apart along it")

    def save(self, path: str | Path, ds: float = 0.05) -> Path:
        """Writes the centre line every ``ds`` m as CSV (``s_m, x_m, y_m, psi_rad, kappa_1pm, half_width_m``)."""
        count = max(int(np.ceil(self.length / ds)), 8)
        s = self.length * np.arange(count) / count
        x, y, psi, kappa = self.point(s)
        table = np.column_stack([s, x, y, psi, kappa, np.full(count, self.half_width)])
        text = io.StringIO()
        np.savetxt(text, table, delimiter=",", header="s_m,x_m,y_m,psi_rad,kappa_1pm,half_width_m", comments="", fmt="%.17g")
        path = Path(path)
        atomic_write_text(text.getvalue(), path)
        return path

    @classmethod
    def from_points(cls, x: np.ndarray, y: np.ndarray, half_width: float, harmonics: int | None = None) -> Track:
        """The closed curve through points sampled evenly along it (the last one not repeating the first).

        Args:
            x, y: m, (M,), M >= 8, in driving order.
            half_width: m.
            harmonics: Fourier terms kept (default: M // 2 - 1, all the points resolve).
        """
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        m = x.size
        if x.shape != (m,) or y.shape != (m,) or m < 8:
            raise TrackError(f"a closed centre line needs >= 8 points as two (M,) arrays, got {x.shape} and {y.shape}")
        k_max = m // 2 - 1 if harmonics is None else harmonics
        if not 1 <= k_max <= m // 2 - 1:
            raise TrackError(f"harmonics must be in 1..{m // 2 - 1} for {m} points, got {harmonics}")
        coefs = []
        for v in (x, y):
            spec = np.fft.rfft(v) / m
            a = 2.0 * spec.real[: k_max + 1]
            b = -2.0 * spec.imag[: k_max + 1]
            a[0], b[0] = spec.real[0], 0.0
            coefs.append(np.column_stack([a, b]))
        return cls(coefs[0], coefs[1], float(half_width))

    @classmethod
    def load(cls, path: str | Path, harmonics: int | None = None) -> Track:
        """A track from :meth:`save`'s CSV (``harmonics`` as :meth:`from_points`: fewer smooth a noisy line).

        Raises:
            TrackError: Naming the file, if it is missing, has other columns or fewer than 8 rows.
        """
        path = Path(path)
        table = read_table(path, ("s_m", "x_m", "y_m", "psi_rad", "kappa_1pm", "half_width_m"), "a closed centre line")
        return cls.from_points(table[:, 1], table[:, 2], float(table[0, 5]), harmonics)


def read_table(path: Path, columns: tuple[str, ...], what: str) -> np.ndarray:
    """A CSV table with this header and at least 8 rows, (rows, len(columns)).

    Raises:
        TrackError: Naming the file, if it is missing, has other columns or fewer than 8 rows.
    """
    try:
        with path.open() as fh:
            header = fh.readline().strip().split(",")
        table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    except (OSError, ValueError) as exc:
        raise TrackError(f"{path}: cannot read {what} ({exc})") from exc
    if header != list(columns) or table.shape[1] != len(columns):
        raise TrackError(f"{path}: columns must be {','.join(columns)}, got {','.join(header)}")
    if table.shape[0] < 8:
        raise TrackError(f"{path}: {table.shape[0]} rows, {what} needs >= 8")
    return table
