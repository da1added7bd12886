"""The MPC controller: solver + warm starts + a bounded fallback.

Every call returns a torque that is finite and inside the limits:

1. solve (SQP_RTI: one iteration, warm-started by shifting the last solution);
2. on a failure (status != 0 or any NaN): the previous successful plan,
   shifted by the number of steps since it was made;
3. after ``fallback_gravity_after`` consecutive failures, or when no plan is
   left: nominal gravity compensation plus joint damping (the safe hold).

Failures are counted per kind; after a failure the solver's iterate is reset
so a NaN cannot poison the next warm start.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from whatmatters.control.hold import HoldController
from whatmatters.dynamics.rigid_body import RigidBodyDynamics
from whatmatters.mpc.solver import AcadosMpcSolver, SolveResult

__all__ = ["ControlStep", "FallbackStats", "MpcController"]

log = logging.getLogger(__name__)

SOLVED, SHIFTED_PLAN, GRAVITY_HOLD = "solved", "shifted_plan", "gravity_hold"


@dataclass
class FallbackStats:
    """Counts of the controller's outcomes.

    Attributes:
        failures: Solver calls that failed.
        shifted_plan: Steps served from a previous plan.
        gravity_hold: Steps served by the safe command (the arm's gravity
            compensation; the car's braking with straight wheels).
        statuses: Failing acados status -> count.
    """

    failures: int = 0
    shifted_plan: int = 0
    gravity_hold: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def fallbacks(self) -> int:
        """Steps whose torque did not come from a fresh solution."""
        return self.shifted_plan + self.gravity_hold


@dataclass(frozen=True)
class ControlStep:
    """One controller output.

    Attributes:
        tau: Torque to apply, Nm, finite, inside the limits, shape (nu,).
        source: ``solved``, ``shifted_plan`` or ``gravity_hold``.
        status: acados status of this step's solve.
        solve_ms: acados' solve time, ms.
        wall_ms: Wall time of the whole call (data transfer included), ms.
        prediction: Predicted states of this solve, (N + 1, nx).
    """

    tau: np.ndarray
    source: str
    status: int
    solve_ms: float
    wall_ms: float
    prediction: np.ndarray


class MpcController:
    """Receding-horizon torque controller.

    Args:
        solver: A compiled solver.
        hold_model: Model for the gravity-compensation fallback (the nominal model).
    """

    def __init__(self, solver: AcadosMpcSolver, hold_model: RigidBodyDynamics) -> None:
        self.solver = solver
        self.hold = HoldController(hold_model, None, solver.torque_limits)
        self.stats = FallbackStats()
        self.tracker = solver.model.context_tracker()
        self._plan: SolveResult | None = None
        self._plan_age = 0
        self._consecutive = 0
        self._last: tuple[np.ndarray, np.ndarray | None] | None = None  # (x, tau) of the previous step

    def reset(self, x0: np.ndarray, x_ref: np.ndarray | None = None) -> None:
        """Starts a new episode: cold start at ``x0`` (or along ``x_ref``), zero statistics."""
        n, nu = self.solver.n, self.solver.nu
        x_init = np.tile(x0, (n + 1, 1)) if x_ref is None else np.asarray(x_ref, dtype=float)
        u_init = np.tile(self.hold.gravity(x0[:nu]), (n, 1))
        self.solver.initialize(x_init, u_init)
        self.stats = FallbackStats()
        self._plan, self._plan_age, self._consecutive = None, 0, 0
        self._last = None
        if self.tracker is not None:
            self.tracker.reset(x0)

    def restart_history(self, x: np.ndarray, tau: np.ndarray | None) -> None:
        """Starts the context history at ``x`` (at rest, as at an episode's start), the next
        transition from ``x`` under ``tau`` (replaced by :meth:`applied` if called before the
        next step); the solver's iterate and the statistics are kept (real time: the task starts)."""
        if self.tracker is not None:
            self.tracker.reset(x)
        self._last = (np.asarray(x, dtype=float).copy(), None if tau is None else np.asarray(tau, dtype=float).copy())

    def __call__(
        self, x: np.ndarray, x_ref: np.ndarray, predict: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    ) -> ControlStep:
        """Computes the torque for the measured state.

        Args:
            x: Measured state ``[q, qd]``, shape (nx,): the context history observes it.
            x_ref: Reference along the horizon, shape (N + 1, nx).
            predict: Delay compensation: ``predict(x, params) -> x0``, the state the OCP is
                solved from, given the runtime parameters with this step's context (n_params,);
                None solves from ``x``.
        """
        start = time.perf_counter()
        limits = self.solver.torque_limits
        status, solve_ms, prediction = -1, 0.0, np.full((self.solver.n + 1, self.solver.nx), np.nan)
        finite = bool(np.all(np.isfinite(x)) and np.all(np.isfinite(x_ref)))
        if finite and self.tracker is not None:
            if self._last is not None and self._last[1] is not None:
                self.tracker.observe(x, self._last[1], self._last[0])
            start_idx, z = self.tracker.context()
            finite = bool(np.all(np.isfinite(z)))
            if finite:
                self.solver.set_parameter_slice(start_idx, z)
        x0 = x
        if finite and predict is not None:
            x0 = predict(x, self.solver.parameters)
            finite = bool(np.all(np.isfinite(x0)))
        if finite:
            self.solver.set_reference(x_ref)
            res = self.solver.solve(x0)
            status, solve_ms, prediction = res.status, 1e3 * res.time_s, res.x
            if res.ok and np.all(np.abs(res.u0) <= limits + 1e-6):
                self._plan, self._plan_age, self._consecutive = res, 0, 0
                self.solver.shift(res)
                tau = np.clip(res.u0, -limits, limits)
                return self._done(x, tau, SOLVED, status, solve_ms, start, prediction)
        self._fail(status)
        tau, source = self._fallback(x)
        self._reinitialize(x)
        return self._done(x, tau, source, status, solve_ms, start, prediction)

    def _done(
        self, x: np.ndarray, tau: np.ndarray, source: str, status: int, solve_ms: float, start: float, prediction: np.ndarray
    ) -> ControlStep:
        self._last = (x.copy(), tau.copy()) if np.all(np.isfinite(x)) else None
        return ControlStep(tau, source, status, solve_ms, 1e3 * (time.perf_counter() - start), prediction)

    def applied(self, tau: np.ndarray) -> None:
        """Tells the controller the torque actually applied (if it differs from its output,
        e.g. with exploration noise), for the context history."""
        if self._last is not None:
            self._last = (self._last[0], np.asarray(tau, dtype=float).copy())

    def _fail(self, status: int) -> None:
        self.stats.failures += 1
        self.stats.statuses[status] = self.stats.statuses.get(status, 0) + 1
        self._consecutive += 1
        self._plan_age += 1
        log.debug("MPC failure (status %d), %d in a row", status, self._consecutive)

    def _fallback(self, x: np.ndarray) -> tuple[np.ndarray, str]:
        limits, nu = self.solver.torque_limits, self.solver.nu
        plan = self._plan
        if plan is not None and self._consecutive < self.solver.cfg.fallback_gravity_after and self._plan_age < len(plan.u):
            self.stats.shifted_plan += 1
            return np.clip(plan.u[self._plan_age], -limits, limits), SHIFTED_PLAN
        self.stats.gravity_hold += 1
        q, qd = x[:nu], x[nu:]
        if not (np.all(np.isfinite(q)) and np.all(np.isfinite(qd))):
            return np.zeros(nu), GRAVITY_HOLD  # nothing is known: apply no torque
        return self.hold(q, qd), GRAVITY_HOLD

    def _reinitialize(self, x: np.ndarray) -> None:
        n, nu = self.solver.n, self.solver.nu
        if not np.all(np.isfinite(x)):
            return
        if self._plan is not None and self._plan_age < len(self._plan.u):
            u = np.vstack([self._plan.u[self._plan_age :], np.repeat(self._plan.u[-1:], self._plan_age, axis=0)])
        else:
            u = np.tile(np.clip(self.hold.gravity(x[:nu]), -self.solver.torque_limits, self.solver.torque_limits), (n, 1))
        self.solver.initialize(np.tile(x, (n + 1, 1)), u)
