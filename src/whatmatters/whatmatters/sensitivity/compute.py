"""S_hat for one control step: converged operating point, du0/de, effective action sensitivity.

1. **Operating point.** The RTI controller's iterate is not a converged
   solution, so the OCP is re-solved with full SQP (Gauss-Newton, tolerance
   ``sqp_tol`` on all KKT residuals) from that iterate (or from the start
   given). The result is the solution the RTI controller converges to; its
   first input is kept next to S_hat for comparison.
2. **du0/de** (nu, N, nx) by the Riccati pass of :mod:`whatmatters.sensitivity.kkt`
   (compiled: :mod:`whatmatters.sensitivity.riccati`) with the exact
   Lagrangian Hessian (:mod:`whatmatters.sensitivity.derivatives`; for the
   learned model :mod:`whatmatters.sensitivity.learned_derivatives`) and the
   dynamics Jacobians of acados' last linearisation (the converged iterate's:
   the sensitivity solver uses the exact RK4 Jacobian).
3. **|dJ/du0|_eff** (nu,) (eq. 6): u_0 fixed to ``u0* + xi`` for
   ``xi in {-eps, +eps}`` (stage-0 lower = upper bound, clipped to the input
   bounds), re-solved to ``sqp_tol`` from the operating point plus the same
   Riccati pass's tangential predictor (each on its own solver, so
   the two can run side by side), and the gradient of the optimal cost
   w.r.t. u_0 read from the stage-0 bound multipliers (lower minus upper);
   absolute values averaged. The cost is acados' (1/2 of the weighted squares).
4. **S_hat** (N, nx) (eq. 5) = ``|dJ/du0|_eff @ du0/de``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor, wait
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch

from whatmatters.dynamics.base import DynamicsModel
from whatmatters.dynamics.learned import LearnedDynamics
from whatmatters.errors import ConfigError
from whatmatters.mpc.config import MpcConfig
from whatmatters.mpc.constraints import OcpConstraints, as_constraints
from whatmatters.mpc.solver import AcadosMpcSolver
from whatmatters.sensitivity.config import SensitivityConfig
from whatmatters.sensitivity.derivatives import COMPILE_LIMIT, StageDerivatives, model_instructions
from whatmatters.sensitivity.kkt import KktSensitivity, active_set, dynamics_multipliers, released_du0_de
from whatmatters.sensitivity.learned_derivatives import LearnedStageDerivatives
from whatmatters.sensitivity.point import ConvergedPoint, OperatingPoint, SensitivityError, SensitivitySample
from whatmatters.sensitivity.riccati import CompiledRiccati
from whatmatters.sensitivity.torch_derivatives import TorchStageDerivatives

__all__ = ["SensitivityComputer", "SensitivityConfig", "exact_twin_config", "operating_point_config", "stage_derivatives"]

log = logging.getLogger(__name__)

#: SQP iterations allowed with second-order terms in the QP before falling back to Gauss-Newton's.
NEWTON_MAX_ITER = 20


def operating_point_config(mpc: MpcConfig, cfg: SensitivityConfig) -> MpcConfig:
    """The OCP settings of the operating-point and re-solve solvers: full SQP to ``cfg.sqp_tol``, exact RK4 Jacobian."""
    return replace(
        mpc, nlp_solver="SQP", hessian="GAUSS_NEWTON", rk4_jacobian="exact", hpipm_mode="SPEED", qp_cond_n=4,
        sqp_tol=cfg.sqp_tol, sqp_max_iter=cfg.sqp_max_iter, stage_hessians=cfg.resolve_hessian == "exact",
    )  # fmt: skip


def exact_twin_config(solver_cfg: MpcConfig) -> MpcConfig:
    """The OCP settings of the exact-Hessian fallback solver beside a solver of ``solver_cfg`` (``fallback: exact_hessian``)."""
    return replace(solver_cfg, hessian="EXACT", stage_hessians=False)


def stage_derivatives(model: DynamicsModel, mpc: MpcConfig, cfg: SensitivityConfig) -> StageDerivatives | TorchStageDerivatives | LearnedStageDerivatives:
    """The stage Hessians' provider chosen by ``cfg.derivatives`` (compiled on first use).

    Raises:
        ConfigError: ``structured`` for a model that is not the learned one.
    """
    kind = cfg.derivatives
    if kind == "auto" and isinstance(model, LearnedDynamics):
        kind = "structured"
    elif kind == "auto":
        kind = "torch" if isinstance(model, torch.nn.Module) and model_instructions(model) >= COMPILE_LIMIT else "casadi"
    log.debug("stage derivatives from %s", kind)
    if kind == "structured":
        if not isinstance(model, LearnedDynamics):
            raise ConfigError(f"sensitivity.derivatives: structured needs the learned model, got {type(model).__name__}")
        return LearnedStageDerivatives(model, mpc.dt, mpc.horizon, flags=mpc.compile_flags)
    if kind == "torch":
        return TorchStageDerivatives(model, mpc.dt, mpc.horizon)
    return StageDerivatives(model, mpc.dt, mpc.horizon, flags=mpc.compile_flags)


class SensitivityComputer:
    """Computes :class:`SensitivitySample` for control steps of one model.

    Args:
        model: The MPC's dynamics model (CasADi form).
        mpc: The controller's OCP settings (cost, horizon, ...).
        limits: The OCP's constraints, or symmetric input bounds (nu,) (the arm's torque limits, Nm).
        cfg: Sensitivity settings.
    """

    def __init__(self, model: DynamicsModel, mpc: MpcConfig, limits: np.ndarray | OcpConstraints, cfg: SensitivityConfig | None = None) -> None:
        self.cfg = cfg or SensitivityConfig()
        self.model = model
        self.mpc = mpc
        self.constraints = as_constraints(limits)
        self.lower, self.upper = self.constraints.u_lower, self.constraints.u_upper
        sqp = operating_point_config(mpc, self.cfg)
        self.solver = AcadosMpcSolver(model, sqp, self.constraints)
        self.minus_solver = AcadosMpcSolver(model, sqp, self.constraints)  # the u0* - eps re-solve (may run beside the other)
        self.derivatives = stage_derivatives(model, mpc, self.cfg)
        self.riccati = CompiledRiccati(model.nx, model.nu, mpc.horizon, flags=mpc.compile_flags)
        self.q_w, self.r_w = mpc.stage_scale * mpc.state_weight, mpc.stage_scale * mpc.input_weight
        self.qn_w = mpc.terminal_scale * mpc.state_weight
        #: Seconds spent per step (``operating_point``, ``hessians``, ``riccati``, ``resolve``) and SQP
        #: iterations (``operating_point_iter``, ``resolve_iter``), summed over every call: where the time goes.
        self.step_seconds: dict[str, float] = defaultdict(float)
        self._twins: dict[int, AcadosMpcSolver] = {}  # exact-Hessian fallback solvers, one per solver (built on first use)
        self._twin_lock = threading.Lock()
        self._data: tuple[np.ndarray, np.ndarray] | None = None  # (params, x_ref) of the current sample
        self._pool: ThreadPoolExecutor | None = None
        if self.cfg.parallel and (os.cpu_count() or 1) > 1:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="wm-resolve")

    def _solve(
        self, x0: np.ndarray, x_init: np.ndarray, u_init: np.ndarray, solver: AcadosMpcSolver | None = None
    ) -> tuple[np.ndarray, np.ndarray, int]:
        solver = solver or self.solver
        solver.initialize(x_init, u_init)
        res = solver.solve(x0)
        if not res.ok:
            raise SensitivityError(f"SQP did not converge (acados status {res.status}, {res.sqp_iter} iterations)")
        return res.x, res.u, res.sqp_iter

    def _solve_with(
        self,
        solver: AcadosMpcSolver,
        hess: np.ndarray | None,
        x0: np.ndarray,
        x_init: np.ndarray,
        u_init: np.ndarray,
        u0_fixed: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, int, AcadosMpcSolver]:
        """:meth:`_solve` with ``hess`` added to the QP Hessians (a ``stage_hessians`` solver), within
        :data:`NEWTON_MAX_ITER` iterations; if that fails, again from the same start with Gauss-Newton's
        (the bounded fallback), then, with ``fallback: exact_hessian``, with acados' exact Hessian
        (``u0_fixed``: the stage-0 input the solve holds). Returns the solution, the iterations of
        every attempt together and the solver that converged (its QP and multipliers are the solution's)."""
        iters = 0
        try:
            if solver.cfg.stage_hessians:
                solver.set_stage_hessians(hess)  # None: zero, Gauss-Newton's Hessian
            if hess is not None and solver.cfg.stage_hessians:
                solver.set_max_iter(min(NEWTON_MAX_ITER, self.cfg.sqp_max_iter))
                try:
                    return (*self._solve(x0, x_init, u_init, solver), solver)
                except SensitivityError as exc:
                    log.debug("SQP with the second-order terms failed (%s); again with Gauss-Newton's", exc)
                    solver.set_stage_hessians(None)
                    solver.set_max_iter(self.cfg.sqp_max_iter)
                    iters = NEWTON_MAX_ITER
            try:
                x, u, n = self._solve(x0, x_init, u_init, solver)
                return x, u, iters + n, solver
            except SensitivityError as exc:
                if self.cfg.fallback != "exact_hessian":
                    raise
                log.debug("Gauss-Newton SQP failed (%s); again with the exact Hessian", exc)
                iters += self.cfg.sqp_max_iter
        finally:
            solver.set_max_iter(self.cfg.sqp_max_iter)
        twin = self._exact_twin(solver, u0_fixed)
        try:
            x, u, n = self._solve(x0, x_init, u_init, twin)
        finally:
            twin.reset_input_bounds()
        return x, u, iters + n, twin

    def _exact_twin(self, solver: AcadosMpcSolver, u0_fixed: np.ndarray | None) -> AcadosMpcSolver:
        """The exact-Hessian SQP solver beside ``solver`` (built on first use), with this sample's data."""
        with self._twin_lock:
            twin = self._twins.get(id(solver))
            if twin is None:
                twin = self._twins[id(solver)] = AcadosMpcSolver(self.model, exact_twin_config(solver.cfg), self.constraints)
        if self._data is None:
            raise SensitivityError("the exact-Hessian fallback needs the sample's parameters and reference: compute the operating point first")
        twin.set_parameters(self._data[0])
        twin.set_reference(self._data[1])
        if u0_fixed is not None:
            twin.set_input_bounds(0, u0_fixed, u0_fixed)
        return twin

    def cost_gradient_u0(self, x0: np.ndarray, u0: np.ndarray, x_init: np.ndarray, u_init: np.ndarray) -> tuple[np.ndarray, float]:
        """d J*/d u_0 with u_0 fixed (bound multipliers, lower minus upper) and J*.

        The reference and parameters must be set on :attr:`solver` already.
        """
        return self._fixed_u0_solve(x0, u0, x_init, u_init, self.solver)

    def _fixed_u0_solve(
        self, x0: np.ndarray, u0: np.ndarray, x_init: np.ndarray, u_init: np.ndarray, solver: AcadosMpcSolver, hess: np.ndarray | None = None
    ) -> tuple[np.ndarray, float]:
        """:meth:`cost_gradient_u0` on ``solver``, its QP Hessian plus ``hess`` (N, nz, nz) if given."""
        nu, nx = self.model.nu, self.model.nx
        solver.set_input_bounds(0, u0, u0)
        try:
            u_start = u_init.copy()
            u_start[0] = u0
            start = time.perf_counter()
            _, _, iters, solved = self._solve_with(solver, hess, x0, x_init, u_start, u0)
            self.step_seconds["resolve"] += time.perf_counter() - start
            self.step_seconds["resolve_iter"] += iters
            lam = np.asarray(solved.acados.get(0, "lam"))
            cost = solved.cost()
        finally:
            solver.set_input_bounds(0, self.lower, self.upper)
        # stage 0 multipliers: [lbu (nu), lbx (nx: x0), lg (ng), ubu (nu), ubx (nx), ug (ng), slacks' ...]
        upper = nu + nx + self.constraints.n_soft_g
        return lam[:nu] - lam[upper : upper + nu], cost

    def operating_point(
        self,
        x0: np.ndarray,
        x_ref: np.ndarray,
        params: np.ndarray | None = None,
        x_init: np.ndarray | None = None,
        u_init: np.ndarray | None = None,
        w_init: np.ndarray | None = None,
    ) -> OperatingPoint:
        """The solver part of a sample: converged solution and the u0* +- eps cost gradients.

        Args: as :meth:`compute`.

        Raises:
            SensitivityError: If the operating point does not converge.
        """
        point = self._converge(x0, x_ref, params, x_init, u_init, w_init)
        kkt = self._controller_sensitivities([point])[0] if self.cfg.resolve_start == "predictor" else None
        (x_plus, u_plus), (x_minus, u_minus) = self._resolve_starts(point, kkt)
        u_plus0, u_minus0 = self._fixed_inputs(point.u)
        hess = self._resolve_hessian(kkt)
        grad_plus = self._fixed_u0_solve(x0, u_plus0, x_plus, u_plus, self.solver, hess)[0]
        grad_minus = self._fixed_u0_solve(x0, u_minus0, x_minus, u_minus, self.minus_solver, hess)[0]
        return OperatingPoint(**vars(point), grad_plus=grad_plus, grad_minus=grad_minus, kkt=kkt)

    def _converge(
        self,
        x0: np.ndarray,
        x_ref: np.ndarray,
        params: np.ndarray | None,
        x_init: np.ndarray | None,
        u_init: np.ndarray | None,
        w_init: np.ndarray | None = None,
    ) -> ConvergedPoint:
        """Step 1 (arguments as :meth:`compute`)."""
        n, nu = self.mpc.horizon, self.model.nu
        p = self.model.parameter_values() if params is None else np.asarray(params, dtype=float)
        x_init = np.tile(x0, (n + 1, 1)) if x_init is None else x_init
        u_init = np.zeros((n, nu)) if u_init is None else u_init
        for solver in (self.solver, self.minus_solver):
            solver.set_parameters(p)
            solver.set_reference(x_ref)
        self._data = (p, np.asarray(x_ref, dtype=float))
        start = time.perf_counter()
        x, u, iters, solved = self._solve_with(self.solver, w_init, x0, x_init, u_init)
        self.step_seconds["operating_point"] += time.perf_counter() - start
        self.step_seconds["operating_point_iter"] += iters
        a, b = solved.dynamics_jacobians()  # before the re-solves overwrite acados' QP
        return ConvergedPoint(np.asarray(x_ref, dtype=float), p, x, u, iters, a, b)

    def _fixed_inputs(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``u0* + eps`` and ``u0* - eps``, clipped to the input bounds, (nu,) each."""
        return (np.clip(u[0] + self.cfg.eps, self.lower, self.upper), np.clip(u[0] - self.cfg.eps, self.lower, self.upper))

    def _resolve_hessian(self, kkt: KktSensitivity | None) -> np.ndarray | None:
        """The re-solves' added QP Hessian (``resolve_hessian: exact``): the operating point's ``W`` (N, nz, nz)."""
        return kkt.stage_hessians if kkt is not None and self.cfg.resolve_hessian == "exact" else None

    def _resolve_starts(self, point: ConvergedPoint, kkt: KktSensitivity | None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Step 3's starts ``(x (N + 1, nx), u (N, nu))`` for ``u0* + eps`` and ``u0* - eps``:
        the operating point, plus the tangential predictor if ``kkt`` carries it."""
        if kkt is None or kkt.fixed_dx is None or kkt.fixed_du is None:
            return [(point.x, point.u), (point.x, point.u)]
        return [(point.x + kkt.fixed_dx[c], np.clip(point.u + kkt.fixed_du[c], self.lower, self.upper)) for c in range(2)]

    def finish(self, points: list[OperatingPoint]) -> list[SensitivitySample | None]:
        """du0/de and S_hat for operating points (stage derivatives batched over all of them).

        Returns:
            One sample per point; None (logged) where the KKT system is singular.
        """
        if not points:
            return []
        todo = [i for i, pt in enumerate(points) if pt.kkt is None]
        kkts: list[KktSensitivity | None] = [pt.kkt for pt in points]
        for i, kkt in zip(todo, self._controller_sensitivities([points[i] for i in todo]) if todo else []):
            kkts[i] = kkt
        return [None if kkt is None else self._sample(pt, kkt) for pt, kkt in zip(points, kkts)]

    def _controller_sensitivities(self, points: Sequence[ConvergedPoint]) -> list[KktSensitivity | None]:
        """Step 2: du0/de per point (stage Hessians batched); None (logged) where the KKT system is singular.

        With ``resolve_start: predictor`` each result also carries the
        tangential predictor of the two fixed-u_0 re-solves.
        """
        n = self.mpc.horizon
        xs = np.stack([pt.x[:n] for pt in points])
        us = np.stack([pt.u for pt in points])
        ps = np.stack([pt.params for pt in points])
        a, b = np.stack([pt.a for pt in points]), np.stack([pt.b for pt in points])
        pens = [self._penalties(pt) for pt in points]
        lam = np.stack([
            dynamics_multipliers(pt.x, pt.x_ref, a[i], self.q_w, self.qn_w, None if pens[i] is None else pens[i][0]) for i, pt in enumerate(points)
        ])  # fmt: skip
        start = time.perf_counter()
        hess = self.derivatives.hessians_many(xs, us, ps, lam)
        now = time.perf_counter()
        self.step_seconds["hessians"] += now - start
        start = now
        out: list[KktSensitivity | None] = []
        for i, pt in enumerate(points):
            active = active_set(pt.u, self.upper, self.cfg.active_tol, self.lower)
            delta = np.stack(self._fixed_inputs(pt.u)) - pt.u[0] if self.cfg.resolve_start == "predictor" else None
            lagrangian, qn_w = hess[i], self.qn_w
            if pens[i] is not None:  # the dynamics' second-order terms plus the soft constraints' penalties
                lagrangian, qn_w = lagrangian + pens[i][1], qn_w + pens[i][2]
            try:
                kkt = self.riccati(a[i], b[i], lagrangian, self.q_w, self.r_w, qn_w, active, delta)
                relaxed = self._relaxed(a[i], b[i], lagrangian, qn_w, active, kkt.du0_de)
                out.append(replace(kkt, stage_hessians=hess[i], du0_de_relaxed=relaxed))
            except np.linalg.LinAlgError as exc:
                log.warning("sensitivity of point %d: singular KKT system (%s)", i, exc)
                out.append(None)
        self.step_seconds["riccati"] += time.perf_counter() - start
        return out

    def _penalties(self, pt: ConvergedPoint) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The soft constraints' penalty gradient in x (N + 1, nx), stage Hessians (N, nz, nz) and
        terminal Hessian (nx, nx) at a converged point; None without soft constraints (the arm)."""
        if not self.constraints.has_soft:
            return None
        return self.constraints.penalty_terms(pt.x, pt.u, self.mpc.stage_scale)

    def _relaxed(self, a: np.ndarray, b: np.ndarray, hess: np.ndarray, qn_w: np.ndarray, active: np.ndarray, du0_de: np.ndarray) -> np.ndarray:
        """du0/de with u_0's active bounds released (``du0_de`` itself when none is active), (nu, N, nx).

        Where the released pass is singular (the reduced Hessian of u_0 is not
        positive definite without the bound), the bound rows stay zero (logged).
        """
        if not active[0].any():
            return du0_de
        try:
            return released_du0_de(self.riccati, a, b, hess, self.q_w, self.r_w, qn_w, active)
        except np.linalg.LinAlgError as exc:
            log.warning("du0/de with u_0's bounds released: singular (%s); its bound rows stay zero", exc)
            return du0_de

    def _sample(self, pt: OperatingPoint, kkt: KktSensitivity) -> SensitivitySample:
        """Step 4: S_hat from the point's cost gradients and its du0/de."""
        n, nx, nu = self.mpc.horizon, self.model.nx, self.model.nu
        eff = 0.5 * (np.abs(pt.grad_plus) + np.abs(pt.grad_minus))
        s_hat = (eff @ kkt.du0_de.reshape(nu, n * nx)).reshape(n, nx)
        return SensitivitySample(s_hat, kkt.du0_de, eff, pt.grad_plus, pt.grad_minus, pt.x, pt.u, ~kkt.free0, pt.sqp_iter, kkt.stage_hessians, kkt.du0_de_relaxed)

    def compute(
        self,
        x0: np.ndarray,
        x_ref: np.ndarray,
        params: np.ndarray | None = None,
        x_init: np.ndarray | None = None,
        u_init: np.ndarray | None = None,
        w_init: np.ndarray | None = None,
    ) -> SensitivitySample:
        """Sensitivities of the control step at state ``x0``.

        Args:
            x0: Measured state, (nx,).
            x_ref: Reference along the horizon, (N + 1, nx).
            params: Model parameters (weights and context), (n_params,); the
                model's current ones if None.
            x_init, u_init: Start of the SQP (e.g. the RTI iterate), (N + 1, nx)
                and (N, nu); x0 repeated and zero torque if None.
            w_init: Second-order terms added to the SQP's QP Hessians, (N, nz, nz),
                e.g. the previous step's (:func:`~whatmatters.sensitivity.point.warm_start`;
                ``resolve_hessian: exact`` solvers only): fewer iterations, the same solution.

        Raises:
            SensitivityError: If the operating point does not converge.
        """
        if self._pool is None:
            (sample,) = self.finish([self.operating_point(x0, x_ref, params, x_init, u_init, w_init)])
        else:  # two cores busy: the u0* + eps re-solve beside the u0* - eps one
            conv = self._converge(x0, x_ref, params, x_init, u_init, w_init)
            u_plus0, u_minus0 = self._fixed_inputs(conv.u)
            kkt = None
            if self.cfg.resolve_start == "predictor":  # the predictor needs du0/de's Riccati pass first
                (kkt,) = self._controller_sensitivities([conv])
            (x_plus, u_plus), (x_minus, u_minus) = self._resolve_starts(conv, kkt)
            hess = self._resolve_hessian(kkt)
            plus = self._pool.submit(self._fixed_u0_solve, x0, u_plus0, x_plus, u_plus, self.solver, hess)
            try:
                if kkt is None and self.cfg.resolve_start == "point":
                    (kkt,) = self._controller_sensitivities([conv])
                grad_minus = self._fixed_u0_solve(x0, u_minus0, x_minus, u_minus, self.minus_solver, hess)[0]
            finally:
                wait([plus])  # the solver is free again before anything else happens
            point = OperatingPoint(**vars(conv), grad_plus=plus.result()[0], grad_minus=grad_minus, kkt=kkt)
            sample = None if kkt is None else self._sample(point, kkt)
        if sample is None:
            raise SensitivityError("the KKT system at the operating point is singular")
        return sample
