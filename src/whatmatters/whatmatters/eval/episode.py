"""One closed-loop episode: simulator + MPC at 50 Hz, and its tracking cost.

The tracking cost is eq. (7) of the paper, computed from the realised
trajectory::

    J_track = 1/(T+1) sum_{t=0..T} (q_t - q_ref,t)' Q_q (q_t - q_ref,t)
                                  + (qd_t - qd_ref,t)' Q_qd (qd_t - qd_ref,t)

over the T+1 measured states x_0 .. x_T of an episode of T control steps, with
the MPC's stage weights Q_q and Q_qd.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from whatmatters.mpc.controller import SOLVED, ControlStep, MpcController
from whatmatters.sim.environments import Environment
from whatmatters.sim.simulator import PandaSim
from whatmatters.trajectory.fourier import FourierTrajectory

__all__ = ["EpisodeResult", "run_episode", "tracking_cost"]

log = logging.getLogger(__name__)


def tracking_cost(x: np.ndarray, x_ref: np.ndarray, q_weights: np.ndarray, qd_weights: np.ndarray) -> float:
    """Eq. (7): mean weighted squared tracking error.

    Args:
        x: Realised states, shape (T + 1, 14).
        x_ref: Reference states at the same times, shape (T + 1, 14).
        q_weights: Q on q, shape (7,).
        qd_weights: Q on qd, shape (7,).
    """
    err = x - x_ref
    w = np.concatenate([q_weights, qd_weights])
    return float(np.mean(np.sum(w * err**2, axis=1)))


@dataclass(frozen=True)
class EpisodeResult:
    """Trajectories and statistics of one episode.

    Attributes:
        env_seed: The environment.
        t: Times of the states, s, shape (T + 1,).
        x: Measured states, shape (T + 1, 14).
        x_ref: Reference states, shape (T + 1, 14).
        tau: Applied torques, Nm, shape (T, 7).
        sources: Per step: ``solved``, ``shifted_plan`` or ``gravity_hold``.
        status: acados status per step, shape (T,).
        solve_ms: acados solve time per step, ms, shape (T,).
        wall_ms: Controller wall time per step, ms, shape (T,).
        predictions: The MPC's predicted states per step, shape (T, N + 1, 14).
        j_track: Eq. (7).
        tau_limits: The joint torque limits, Nm, shape (7,).
    """

    env_seed: int
    t: np.ndarray
    x: np.ndarray
    x_ref: np.ndarray
    tau: np.ndarray
    sources: tuple[str, ...]
    status: np.ndarray
    solve_ms: np.ndarray
    wall_ms: np.ndarray
    predictions: np.ndarray
    j_track: float
    tau_limits: np.ndarray

    #: A torque within this fraction of its limit counts as at the bound.
    BOUND_TOLERANCE = 1e-3

    @property
    def at_bound(self) -> np.ndarray:
        """Per step and joint: the applied torque at its limit (within :attr:`BOUND_TOLERANCE`), shape (T, 7)."""
        return np.abs(self.tau) >= (1.0 - self.BOUND_TOLERANCE) * self.tau_limits

    @property
    def bound_share(self) -> float:
        """Share of the steps with a torque at its bound (any joint), in [0, 1]."""
        return float(self.at_bound.any(axis=1).mean()) if len(self.tau) else 0.0

    @property
    def fallbacks(self) -> int:
        """Steps whose torque did not come from a fresh solution."""
        return sum(s != SOLVED for s in self.sources)

    def summary(self) -> dict[str, float | int]:
        """The figures the CLI prints."""
        err = self.x - self.x_ref
        return {
            "env_seed": self.env_seed,
            "j_track": self.j_track,
            "rms_q": float(np.sqrt(np.mean(err[:, :7] ** 2))),
            "rms_dq": float(np.sqrt(np.mean(err[:, 7:] ** 2))),
            "solve_ms_median": float(np.median(self.solve_ms)),
            "solve_ms_p99": float(np.percentile(self.solve_ms, 99)),
            "step_ms_median": float(np.median(self.wall_ms)),
            "step_ms_p99": float(np.percentile(self.wall_ms, 99)),
            "fallbacks": self.fallbacks,
            "bound_share": self.bound_share,
            "steps": int(len(self.tau)),
        }


def run_episode(
    controller: MpcController,
    sim: PandaSim,
    env: Environment,
    reference: FourierTrajectory,
    seconds: float = 10.0,
    noise_std: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
    on_step: Callable[[int, np.ndarray, np.ndarray, np.ndarray, ControlStep], None] | None = None,
) -> EpisodeResult:
    """Runs the closed loop from rest at the reference's start.

    Args:
        controller: The MPC controller (reset here).
        sim: The simulator (reset here to ``env``).
        env: The payload environment.
        reference: The trajectory to track.
        seconds: Episode length, s.
        noise_std: Optional exploration noise on the torque, Nm, shape (7,):
            Gaussian, added to the controller's output and clamped to the limits.
        rng: Generator for the noise (required with ``noise_std``).
        on_step: Called as ``on_step(i, x_i, x_ref_horizon, tau_applied, out)``
            after each control decision (e.g. to record a bag).

    Returns:
        The episode; ``tau`` holds the applied (noisy, clamped) torques.
    """
    if noise_std is not None and rng is None:
        raise ValueError("noise_std needs an rng")
    dt = sim.config.control_period
    n = controller.solver.n
    steps = int(round(seconds / dt))
    horizon = dt * np.arange(n + 1)
    x_start = reference.state(0.0)
    st = sim.reset(env, x_start[:7], x_start[7:])
    controller.reset(x_start, reference.state(horizon))
    x = np.empty((steps + 1, 14))
    x[0] = x_start
    tau = np.empty((steps, 7))
    status = np.empty(steps, dtype=int)
    solve_ms, wall_ms = np.empty(steps), np.empty(steps)
    preds = np.empty((steps, n + 1, 14))
    sources: list[str] = []
    for i in range(steps):
        x_ref_h = reference.state(i * dt + horizon)
        out = controller(x[i], x_ref_h)
        applied = out.tau
        if noise_std is not None:
            applied = np.clip(out.tau + rng.normal(0.0, noise_std), -sim.torque_limits, sim.torque_limits)  # type: ignore[union-attr]
            controller.applied(applied)
        tau[i], status[i], solve_ms[i], wall_ms[i], preds[i] = applied, out.status, out.solve_ms, out.wall_ms, out.prediction
        sources.append(out.source)
        if on_step is not None:
            on_step(i, x[i], x_ref_h, applied, out)
        st = sim.step(applied)
        x[i + 1, :7], x[i + 1, 7:] = st.q, st.qd
    t = dt * np.arange(steps + 1)
    x_ref = reference.state(t)
    cfg = controller.solver.cfg
    j = tracking_cost(x, x_ref, np.asarray(cfg.q_weights), np.asarray(cfg.qd_weights))
    return EpisodeResult(env.seed, t, x, x_ref, tau, tuple(sources), status, solve_ms, wall_ms, preds, j, np.asarray(sim.torque_limits, dtype=float))
