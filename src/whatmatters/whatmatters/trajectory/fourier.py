"""Seeded 5th-order Fourier joint excitation trajectories.

For joint j with fundamental ``w = 2 pi / T``::

    qd_j(t)  = sum_k a_jk cos(k w t) + b_jk sin(k w t)
    q_j(t)   = q0_j + sum_k (a_jk sin(k w t) - b_jk cos(k w t)) / (k w)
    qdd_j(t) = sum_k k w (b_jk cos(k w t) - a_jk sin(k w t))

Coefficients are drawn uniformly in ``[-amplitude_j, amplitude_j]`` and then
projected (smallest Euclidean change) onto ``sum_k a_jk = 0`` and
``sum_k k b_jk = 0``, i.e. ``qd(0) = 0`` and ``qdd(0) = 0`` (the trajectory
starts at rest), and ``q0`` so that ``q(0)`` is the drawn start
``q_home + U[-spread, spread]``. Draws that leave the joint limits (minus a
margin) or exceed the velocity bound anywhere on a fine grid are rejected. The
trajectory is T-periodic, so times past ``duration`` continue it smoothly (the
MPC's horizon looks past the end of an episode).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from whatmatters.config import YamlConfig
from whatmatters.errors import ConfigError, TrajectoryError
from whatmatters.robot.params import PandaParams, load_panda_params

__all__ = ["FourierConfig", "FourierTrajectory", "sample_fourier_trajectory"]


@dataclass(frozen=True)
class FourierConfig(YamlConfig):
    """Settings of the reference generator (``config/reference.yaml``).

    Attributes:
        duration: Period of the fundamental (and episode length), s.
        harmonics: Number of harmonics (5).
        q_home: Nominal start, rad, shape (7,).
        start_spread: Half-width of the uniform start offset, rad.
        amplitude: Coefficient bound per joint, rad/s, shape (7,).
        max_velocity: Bound on |qd|, rad/s (each joint's own limit applies too).
        limit_margin: Clearance kept from the joint limits, rad.
        max_attempts: Rejection-sampling attempts before :class:`TrajectoryError`.
        check_dt: Grid spacing for the limit checks, s.
    """

    yaml_file: ClassVar[str] = "reference.yaml"

    duration: float = 10.0
    harmonics: int = 5
    q_home: tuple[float, ...] = (0.0, -0.4, 0.0, -2.4, 0.0, 2.2, -0.785)
    start_spread: float = 0.1
    amplitude: tuple[float, ...] = (0.25, 0.25, 0.25, 0.25, 0.35, 0.35, 0.35)
    max_velocity: float = 2.0
    limit_margin: float = 0.1
    max_attempts: int = 1000
    check_dt: float = 0.002

    def __post_init__(self) -> None:
        if self.duration <= 0 or self.harmonics < 1 or self.check_dt <= 0:
            raise ConfigError("reference: duration, harmonics and check_dt must be positive")
        if len(self.q_home) != 7 or len(self.amplitude) != 7:
            raise ConfigError("reference: q_home and amplitude need 7 values")
        if self.start_spread < 0 or min(self.amplitude) < 0 or self.max_velocity <= 0:
            raise ConfigError("reference: start_spread, amplitude must be >= 0 and max_velocity > 0")



@dataclass(frozen=True)
class FourierTrajectory:
    """A Fourier joint trajectory, evaluable at any time.

    Attributes:
        q0: Offset, rad, shape (7,).
        a: Cosine coefficients of qd, rad/s, shape (7, K).
        b: Sine coefficients of qd, rad/s, shape (7, K).
        period: Fundamental period, s.
        seed: The seed it was drawn from (None if built by hand).
    """

    q0: np.ndarray
    a: np.ndarray
    b: np.ndarray
    period: float
    seed: int | None = None

    def _phases(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        k = np.arange(1, self.a.shape[1] + 1)
        kw = k * (2.0 * np.pi / self.period)  # (K,)
        arg = np.multiply.outer(np.asarray(t, dtype=float), kw)  # (T, K)
        return kw, np.cos(arg), np.sin(arg)

    def evaluate(self, t: float | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Position, velocity and acceleration.

        Args:
            t: Time(s), s: scalar or shape (T,).

        Returns:
            (q, qd, qdd), each (7,) for a scalar time or (T, 7).
        """
        scalar = np.ndim(t) == 0
        kw, c, s = self._phases(np.atleast_1d(t))
        q = self.q0 + (s / kw) @ self.a.T - (c / kw) @ self.b.T
        qd = c @ self.a.T + s @ self.b.T
        qdd = (c * kw) @ self.b.T - (s * kw) @ self.a.T
        if scalar:
            return q[0], qd[0], qdd[0]
        return q, qd, qdd

    def state(self, t: float | np.ndarray) -> np.ndarray:
        """``x_ref = [q, qd]``: (14,) for a scalar time or (T, 14)."""
        q, qd, _ = self.evaluate(t)
        return np.concatenate([q, qd], axis=-1)


def sample_fourier_trajectory(
    seed: int,
    config: FourierConfig | None = None,
    params: PandaParams | None = None,
) -> FourierTrajectory:
    """Draws a reference by rejection sampling (deterministic in ``seed``).

    Args:
        seed: Trajectory seed.
        config: Generator settings (the dataclass defaults if None).
        params: Robot parameters for the limits (the packaged Panda if None).

    Raises:
        TrajectoryError: If no draw satisfies the limits within ``max_attempts``.
    """
    cfg = config or FourierConfig()
    params = params or load_panda_params()
    rng = np.random.default_rng(seed)
    amp = np.asarray(cfg.amplitude, dtype=float)[:, None]
    kk = np.arange(1, cfg.harmonics + 1, dtype=float)
    lower = params.lower + cfg.limit_margin
    upper = params.upper - cfg.limit_margin
    vmax = np.minimum(cfg.max_velocity, params.velocity_limits)
    grid = np.arange(0.0, cfg.duration, cfg.check_dt)
    w = 2.0 * np.pi / cfg.duration
    for _ in range(cfg.max_attempts):
        start = np.asarray(cfg.q_home) + rng.uniform(-cfg.start_spread, cfg.start_spread, size=7)
        a = rng.uniform(-1.0, 1.0, size=(7, cfg.harmonics)) * amp
        b = rng.uniform(-1.0, 1.0, size=(7, cfg.harmonics)) * amp
        # Smallest change of the draw that starts at rest: project a onto
        # sum_k a_k = 0 (qd(0) = 0) and b onto sum_k k b_k = 0 (qdd(0) = 0).
        a -= a.mean(axis=1, keepdims=True)
        b -= np.outer(b @ kk, kk) / (kk @ kk)
        q0 = start + (b / (kk * w)).sum(axis=1)  # q(0) = start
        traj = FourierTrajectory(q0, a, b, cfg.duration, seed)
        q, qd, _ = traj.evaluate(grid)
        if np.all(q >= lower) and np.all(q <= upper) and np.all(np.abs(qd) <= vmax):
            return traj
    raise TrajectoryError(
        f"no reference within limits after {cfg.max_attempts} attempts (seed {seed}); "
        "lower reference.yaml 'amplitude' or raise 'max_attempts'"
    )
