"""The MPC's reference: a minimum-curvature racing line with a speed profile, in Frenet coordinates.

Line. The centre line is sampled at ``M`` points evenly spaced in its arc
length ``s`` (spacing ``h``); the line is ``r_i = c_i + n_i N_i`` (``N`` the
left normal). With ``' = d/ds`` along the centre line (curvature ``kappa``),
the line's exact curvature is::

    kappa_line = ((1 - n kappa)^2 kappa + (1 - n kappa) n'' + 2 n'^2 kappa + n n' kappa')
                 / ((1 - n kappa)^2 + n'^2)^(3/2)

``n`` minimises ``sum_i kappa_line_i^2`` (periodic central differences for
``n'``, ``n''``) subject to ``|n_i| <= half_width - margin``, ``margin = width / 2
+ safety_distance``: IPOPT (CasADi's, exact sparse Hessian) from the centre
line (``n = 0``). The problem is not convex: this is the local minimum
reached from the centre line.

Decision: the Cartesian form ``sum |r_{i+1} - 2 r_i + r_{i-1}|^2`` (a linear
least-squares problem) is not used: it is ``kappa_line^2`` times the spacing
``(h (1 - n kappa))^4``, which grows toward the outside of a corner, so on a
circle it picks the *innermost* circle, the shortest path, not the least
curvature.

The points are then interpolated by a closed Fourier curve
(:meth:`Track.from_points`, all harmonics: it passes within ``FIT_TOL`` of
them, checked), whose crossing of each centre-line normal gives the line's
exact offset ``n``, heading ``mu`` (line minus centre-line heading) and curvature.

Speed. A point mass on the line, with one friction circle of radius
``a_lat = friction_factor mu g`` (no load transfer, aerodynamics, grade or
drive-train limits beyond the parameters'): ``v_max = min(cap, sqrt(a_lat /
|kappa_line|))`` with ``cap = min(max_speed_cap, max_speed)``; a forward pass
accelerating at ``min(friction_factor max_accel, sqrt(a_lat^2 - a_y^2))``
and a backward pass braking at ``min(friction_factor |min_accel|, sqrt(a_lat^2 -
a_y^2))``, ``a_y = v^2 |kappa_line|`` taken at the segment's known end
(explicit, first order in the spacing), constant acceleration along each
segment; both passes start at the slowest sample and are repeated around the
closed lap until nothing changes. The segment lengths along the line are the
trapezoidal integral of ``d sigma / ds = (1 - n kappa) / cos mu``.

Reference. The car is taken to follow the line without side slip: its body x
axis is the line's tangent, so ``vx = v``, ``vy = 0``, ``r = v kappa_line`` and
the kinematic steering angle ``atan(wheelbase kappa_line)``.

Files: CSV ``s_m, n_m, mu_rad, v_mps, kappa_line_1pm, kappa_centre_1pm`` (the
centre-line curvature is kept for the progress rate ``s_dot``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import casadi as ca
import numpy as np

from whatmatters.car.params import GRAVITY, CarParams, load_car_params
from whatmatters.car.track import Track, TrackError, read_table, wrap_angle
from whatmatters.errors import ConfigError
from whatmatters.io import atomic_write_text

__all__ = ["RacingLine", "RacingLineConfig", "racing_line"]

COLUMNS = ("s_m", "n_m", "mu_rad", "v_mps", "kappa_line_1pm", "kappa_centre_1pm")
FIELDS = ("s", "n", "mu", "v", "kappa", "kappa_centre")  # RacingLine's, in the order of COLUMNS
OPT_TOL = 1e-10  # IPOPT's tolerance on the line's optimality conditions
MAX_ITERATIONS = 500  # its iterations
FIT_TOL = 1e-4  # m: largest allowed miss of the fitted line at its points


@dataclass(frozen=True)
class RacingLineConfig:
    """How :func:`racing_line` builds the line.

    Attributes:
        spacing: Largest sample spacing along the centre line, m.
        safety_distance: Margin beyond half the car width to each border, m.
        friction_factor: Fraction of the friction (and of the acceleration limits) used, in (0, 1]:
            0.5 leaves the environment with the least friction (0.55 of the nominal)
            ~10 % below its limit.
        max_speed_cap: Top speed of the profile, m/s (also capped by the car's max_speed).
    """

    spacing: float = 0.1
    safety_distance: float = 0.1
    friction_factor: float = 0.5
    max_speed_cap: float = 7.0

    def __post_init__(self) -> None:
        for bad, name, want in (
            (not self.spacing > 0, "spacing", "> 0 m"),
            (not self.safety_distance >= 0, "safety_distance", ">= 0 m"),
            (not 0 < self.friction_factor <= 1, "friction_factor", "in (0, 1]"),
            (not self.max_speed_cap > 0, "max_speed_cap", "> 0 m/s"),
        ):
            if bad:
                raise ConfigError(f"RacingLineConfig.{name} must be {want}, got {getattr(self, name)}")


@dataclass(frozen=True, eq=False)
class RacingLine:
    """A racing line sampled at ``M`` evenly spaced centre-line positions; periodic in ``s``.

    Attributes:
        length: Centre-line length, m: the period.
        s: Centre-line arc length of the samples, ``i length / M``, m, (M,).
        n: Lateral offset of the line, m (positive left), (M,).
        mu: Line heading minus centre-line heading, rad, (M,), within (-pi/2, pi/2).
        v: Speed along the line, m/s, (M,), > 0.
        kappa: Curvature of the line, 1/m, (M,).
        kappa_centre: Curvature of the centre line, 1/m, (M,).
        wheelbase: Of the car, for the kinematic steering angle, m.
        arc: Length along the line of segment i -> i + 1, m, (M,) (computed).
        accel: Constant acceleration on that segment, m/s^2, (M,) (computed).

    Raises:
        TrackError: Naming the column at fault, for malformed samples.
    """

    length: float
    s: np.ndarray
    n: np.ndarray
    mu: np.ndarray
    v: np.ndarray
    kappa: np.ndarray
    kappa_centre: np.ndarray
    wheelbase: float
    arc: np.ndarray = field(init=False, repr=False)
    accel: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        cols = [np.asarray(getattr(self, key), dtype=float) for key in FIELDS]
        m = cols[0].size
        for name, col in zip(COLUMNS, cols):
            if col.shape != (m,) or m < 8 or not np.isfinite(col).all():
                raise TrackError(f"{name} must be M >= 8 finite samples, (M,), got shape {col.shape} (M = {m})")
        s, n, mu, v, _, kc = cols
        even = self.length * np.arange(m) / m
        for bad, name, want in (
            (not self.length > 0, "length", "> 0 m"),
            (not np.allclose(s, even, rtol=0.0, atol=1e-9 * abs(self.length)), "s_m", "evenly spaced from 0"),
            (not (np.abs(mu) < np.pi / 2).all(), "mu_rad", "within (-pi/2, pi/2)"),
            (not (v > 0).all(), "v_mps", "> 0"),
            (not (n * kc < 1).all(), "n_m", "inside the centre line's radius of curvature (n kappa_centre < 1)"),
            (not self.wheelbase > 0, "wheelbase", "> 0 m"),
        ):
            if bad:
                raise TrackError(f"{name} must be {want}")
        for key, col in zip(FIELDS, cols):
            object.__setattr__(self, key, col)
        arc = _segment_lengths(n, mu, kc, self.length / m)
        object.__setattr__(self, "arc", arc)
        object.__setattr__(self, "accel", (np.roll(v, -1) ** 2 - v**2) / (2.0 * arc))

    # ------------------------------------------------------------- periodic functions of s
    def _interp(self, s: np.ndarray | float, values: np.ndarray) -> np.ndarray:
        return np.interp(np.asarray(s, dtype=float), self.s, values, period=self.length)

    def offset(self, s: np.ndarray | float) -> np.ndarray:
        """``n_ref``, m, at centre-line positions ``s`` (m, any shape)."""
        return self._interp(s, self.n)

    def heading(self, s: np.ndarray | float) -> np.ndarray:
        """``mu_ref``, rad: line heading minus centre-line heading, at ``s`` (m, any shape)."""
        return self._interp(s, self.mu)

    def speed(self, s: np.ndarray | float) -> np.ndarray:
        """``v_ref`` along the body x axis (no side slip: the line speed), m/s, at ``s`` (m, any shape).

        ``v^2`` is interpolated linearly (constant acceleration between the samples).
        """
        return np.sqrt(self._interp(s, self.v**2))

    def curvature(self, s: np.ndarray | float) -> np.ndarray:
        """The line's curvature, 1/m, at ``s`` (m, any shape)."""
        return self._interp(s, self.kappa)

    def acceleration(self, s: np.ndarray | float) -> np.ndarray:
        """The profile's ``dv/dt``, m/s^2, at ``s`` (m, any shape): constant on each segment."""
        i = np.floor(np.mod(np.asarray(s, dtype=float), self.length) / self.length * self.s.size).astype(int)
        return self.accel[np.clip(i, 0, self.s.size - 1)]

    def lap_time(self) -> float:
        """Time of one lap of the profile, s (constant acceleration on each segment)."""
        return float(np.sum(2.0 * self.arc / (self.v + np.roll(self.v, -1))))

    def horizon(self, s0: float, dt: float, steps: int) -> np.ndarray:
        """Reference states of a car following the line from ``s0`` at the profile's speed.

        ``s`` advances by ``s_dot = v cos(mu_ref) / (1 - n_ref kappa_centre)``, this rate taken
        at the samples and interpolated linearly in ``s`` between them; that ODE is integrated
        exactly (per segment ``ds/dt = a + b (s - s_i)``: closed-form time and position). The
        rest follows from ``s``: ``vx = v``, ``vy = 0``, ``r = v kappa_line``,
        ``delta = atan(wheelbase kappa_line)``, ``a = dv/dt``.

        Args:
            s0: Start on the centre line, m.
            dt: Time step, s, > 0.
            steps: Steps, >= 0.

        Returns:
            ``(s, n, mu, vx, vy, r, delta, a)``, (steps + 1, 8); ``s`` not wrapped (it keeps increasing).

        Raises:
            ConfigError: For ``dt <= 0`` or ``steps < 0``.
        """
        if not dt > 0 or steps < 0:
            raise ConfigError(f"horizon needs dt > 0 s and steps >= 0, got dt={dt}, steps={steps}")
        m, h = self.s.size, self.length / self.s.size
        rate = self.v * np.cos(self.mu) / (1.0 - self.n * self.kappa_centre)  # s_dot at the samples, m/s
        slope = (np.roll(rate, -1) - rate) / h  # 1/s
        cum = np.concatenate([[0.0], np.cumsum(h / rate * _log1p_ratio(slope * h / rate))])  # time at the samples, s
        lap, start = divmod(float(s0), self.length)
        i = min(int(start / h), m - 1)
        t0 = lap * cum[-1] + cum[i] + (start - self.s[i]) / rate[i] * _log1p_ratio(slope[i] * (start - self.s[i]) / rate[i])
        laps, t = np.divmod(t0 + dt * np.arange(steps + 1), cum[-1])
        i = np.clip(np.searchsorted(cum, t, side="right") - 1, 0, m - 1)
        tau = t - cum[i]
        s = laps * self.length + self.s[i] + rate[i] * tau * _expm1_ratio(slope[i] * tau)
        s[0] = s0
        return self.states(s)

    def states(self, s: np.ndarray) -> np.ndarray:
        """Reference states at centre-line positions ``s`` (m, (K,), not wrapped), (K, 8).

        ``(s, n_ref, mu_ref, v, 0, v kappa_line, atan(wheelbase kappa_line), dv/dt)``: the line
        followed without side slip (module docstring).
        """
        s = np.asarray(s, dtype=float)
        v, kappa = self.speed(s), self.curvature(s)
        zero = np.zeros_like(s)
        steer = np.arctan(self.wheelbase * kappa)
        return np.column_stack([s, self.offset(s), self.heading(s), v, zero, v * kappa, steer, self.acceleration(s)])

    # ------------------------------------------------------------- files
    def save(self, path: str | Path) -> Path:
        """Writes the samples as CSV (:data:`COLUMNS`); the wheelbase is the loader's."""
        text = io.StringIO()
        table = np.column_stack([self.s, self.n, self.mu, self.v, self.kappa, self.kappa_centre])
        np.savetxt(text, table, delimiter=",", header=",".join(COLUMNS), comments="", fmt="%.17g")
        path = Path(path)
        atomic_write_text(text.getvalue(), path)
        return path

    @classmethod
    def load(cls, path: str | Path, params: CarParams | None = None) -> RacingLine:
        """A line from :meth:`save`'s CSV, for the car ``params`` (the shipped one if None).

        Raises:
            TrackError: Naming the file (and the column), if it is missing or malformed.
        """
        path = Path(path)
        table = read_table(path, tuple(COLUMNS), "a racing line")
        m = table.shape[0]
        try:
            wheelbase = (params or load_car_params()).wheelbase
            return cls(float(table[-1, 0] * m / (m - 1)), *table.T, wheelbase=wheelbase)
        except TrackError as exc:
            raise TrackError(f"{path}: {exc}") from exc


def _log1p_ratio(x: np.ndarray | float) -> np.ndarray:
    """``log(1 + x) / x`` (1 at 0), elementwise, x > -1."""
    x = np.asarray(x, dtype=float)
    return np.divide(np.log1p(x), x, out=np.ones_like(x), where=np.abs(x) > 1e-12)


def _expm1_ratio(x: np.ndarray) -> np.ndarray:
    """``(exp(x) - 1) / x`` (1 at 0), elementwise."""
    return np.divide(np.expm1(x), x, out=np.ones_like(x), where=np.abs(x) > 1e-12)


def _segment_lengths(n: np.ndarray, mu: np.ndarray, kappa_centre: np.ndarray, h: float) -> np.ndarray:
    """Lengths along the line of the segments i -> i + 1, m, (M,): trapezoids of ``(1 - n kappa) / cos mu`` (m/m)."""
    rate = (1.0 - n * kappa_centre) / np.cos(mu)
    return 0.5 * h * (rate + np.roll(rate, -1))


def _line_curvature(n: ca.SX, n1: ca.SX, n2: ca.SX, kappa: np.ndarray, dkappa: np.ndarray) -> ca.SX:
    """The line's curvature (module docstring), 1/m, (M,): offsets (m), their first (m/m) and second (1/m)
    s-derivatives (M,) each, and the centre line's curvature (1/m) and its s-derivative (1/m^2)."""
    a = 1.0 - n * kappa
    return (a * a * kappa + a * n2 + 2.0 * n1**2 * kappa + n * n1 * dkappa) / (a * a + n1**2) ** 1.5


def _min_curvature_offsets(kappa: np.ndarray, h: float, bound: float) -> np.ndarray:
    """Offsets, m, (M,), minimising ``sum kappa_line^2`` within ``|n| <= bound`` (centre-line curvature (M,), spacing h).

    IPOPT (CasADi's, exact Hessian) from the centre line, to ``OPT_TOL``: the local
    minimum reached from ``n = 0``.

    Raises:
        TrackError: If IPOPT does not converge.
    """
    m = kappa.size
    dkappa = (np.roll(kappa, -1) - np.roll(kappa, 1)) / (2.0 * h)
    n = ca.SX.sym("n", m)
    ahead, behind = ca.vertcat(n[1:], n[0]), ca.vertcat(n[-1], n[:-1])  # periodic neighbours
    f = _line_curvature(n, (ahead - behind) / (2.0 * h), (ahead - 2.0 * n + behind) / h**2, kappa, dkappa)
    opts = {"ipopt.tol": OPT_TOL, "ipopt.print_level": 0, "ipopt.sb": "yes", "print_time": 0, "ipopt.max_iter": MAX_ITERATIONS}
    solver = ca.nlpsol("min_curvature", "ipopt", {"x": n, "f": ca.sumsqr(f)}, opts)
    sol = solver(x0=np.zeros(m), lbx=-bound, ubx=bound)
    status = solver.stats()["return_status"]
    if status not in ("Solve_Succeeded", "Solved_To_Acceptable_Level"):
        raise TrackError(f"racing line: the minimum-curvature problem did not converge (IPOPT: {status})")
    return np.clip(np.asarray(sol["x"]).ravel(), -bound, bound)


def _speed_profile(kappa: np.ndarray, arc: np.ndarray, a_lat: float, a_acc: float, a_brake: float, cap: float) -> np.ndarray:
    """Speeds (M,), m/s, of a point mass on a closed line (curvature and segment lengths (M,)); see the module docstring."""
    curv = np.abs(kappa)
    v = np.minimum(cap, np.sqrt(a_lat / np.maximum(curv, a_lat / cap**2)))
    m, start = v.size, int(np.argmin(v))

    def along(i: int, j: int, limit: float) -> None:  # v[j] from v[i] over segment min(i, j)
        a = min(limit, np.sqrt(max(a_lat**2 - (v[i] ** 2 * curv[i]) ** 2, 0.0)))
        v[j] = min(v[j], np.sqrt(v[i] ** 2 + 2.0 * a * arc[i if j == (i + 1) % m else j]))

    for _ in range(100):
        old = v.copy()
        for k in range(m):
            i = (start + k) % m
            along(i, (i + 1) % m, a_acc)
        for k in range(m):
            i = (start - 1 - k) % m
            along((i + 1) % m, i, a_brake)
        if np.abs(v - old).max() <= 1e-12 * cap:
            break
    return v


def racing_line(track: Track, params: CarParams | None = None, cfg: RacingLineConfig | None = None) -> RacingLine:
    """The minimum-curvature line of ``track`` and its speed profile (module docstring).

    Args:
        track: The track.
        params: The car (:func:`load_car_params` if None): width, friction, acceleration limits, wheelbase.
        cfg: The line's settings.

    Raises:
        ConfigError: If the car and its safety distance do not fit within the track's half width.
        TrackError: If the fitted line misses its points by more than ``FIT_TOL``.
    """
    params, cfg = params or load_car_params(), cfg or RacingLineConfig()
    bound = track.half_width - 0.5 * params.width - cfg.safety_distance
    if not bound > 0:
        raise ConfigError(
            f"RacingLineConfig.safety_distance {cfg.safety_distance} m plus half the car width "
            f"{0.5 * params.width} m leaves no room within the half width {track.half_width} m"
        )
    m = max(int(np.ceil(track.length / cfg.spacing)), 8)
    s = track.length * np.arange(m) / m
    cx, cy, psi, kappa_c = track.point(s)
    n = _min_curvature_offsets(kappa_c, track.length / m, bound)
    line = Track.from_points(cx - n * np.sin(psi), cy + n * np.cos(psi), track.half_width)
    sigma = line.arc_length(2.0 * np.pi * np.arange(m) / m)
    for _ in range(4):  # Newton: where the fitted line crosses each centre-line normal
        lx, ly, lpsi, lkappa = line.point(sigma)
        sigma = sigma - ((lx - cx) * np.cos(psi) + (ly - cy) * np.sin(psi)) / np.cos(lpsi - psi)
    lx, ly, lpsi, lkappa = line.point(sigma)
    n_fit = (ly - cy) * np.cos(psi) - (lx - cx) * np.sin(psi)
    if np.abs(n_fit - n).max() > FIT_TOL:
        raise TrackError(f"the fitted racing line misses its points by {np.abs(n_fit - n).max():.2e} m")
    mu = wrap_angle(lpsi - psi)
    f = cfg.friction_factor
    arc = _segment_lengths(n_fit, mu, kappa_c, track.length / m)
    cap = min(cfg.max_speed_cap, params.max_speed)
    v = _speed_profile(lkappa, arc, f * params.mu * GRAVITY, f * params.max_accel, f * abs(params.min_accel), cap)
    return RacingLine(track.length, s, n_fit, mu, v, lkappa, kappa_c, params.wheelbase)
