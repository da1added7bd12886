"""MPC settings (``config/mpc.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from whatmatters.codegen import DEFAULT_FLAGS
from whatmatters.config import YamlConfig
from whatmatters.errors import ConfigError

__all__ = ["RK4_JACOBIANS", "MpcConfig"]

_NLP = ("SQP_RTI", "SQP")
_HESS = ("GAUSS_NEWTON", "EXACT")
_INTEGRATORS = ("discrete_rk4", "erk")
RK4_JACOBIANS = ("exact", "first_stage")
_QP = ("PARTIAL_CONDENSING_HPIPM", "FULL_CONDENSING_HPIPM", "FULL_CONDENSING_QPOASES")


@dataclass(frozen=True)
class MpcConfig(YamlConfig):
    """The optimal control problem and solver options.

    Attributes:
        horizon: Number of shooting intervals N.
        dt: Shooting interval = control period, s.
        q_weights: Stage weights on q, shape (7,) (the arm's spelling of Q).
        qd_weights: Stage weights on qd, shape (7,).
        r_weights: Stage weights on tau, shape (7,).
        state_weights: Any system's diag(Q), (nx,); when given, it replaces
            ``q_weights`` and ``qd_weights`` (which are then ignored).
        input_weights: Any system's diag(R), (nu,); when given, it replaces ``r_weights``.
        terminal_scale: Terminal weight is ``terminal_scale * Q``.
        cost_scaling: ``time_step`` (acados' default, the paper's setup):
            every stage cost is multiplied by dt, the terminal cost is not;
            ``none``: a plain sum over the stages.
        nlp_solver: ``SQP_RTI`` or ``SQP``.
        hessian: ``GAUSS_NEWTON`` or ``EXACT``.
        qp_solver: acados QP solver.
        hpipm_mode: HPIPM's mode (``SPEED_ABS``: absolute tolerances only, the
            fastest; ``SPEED``, ``BALANCE``, ``ROBUST``).
        qp_cond_n: Horizon of the partially condensed QP (``PARTIAL_CONDENSING_*``
            only; 0: the full horizon N, i.e. no condensing).
        sqp_max_iter: SQP iteration limit (SQP only).
        sqp_tol: SQP tolerance on all KKT residuals (SQP only).
        qp_max_iter: QP iteration limit.
        fallback_gravity_after: Consecutive failures before gravity compensation.
        compile_flags: C compiler flags for the model functions (the compiled
            solver is cached per machine, so ``-march=native`` is safe).
        integrator: How acados gets the RK4 map and its Jacobian: ``discrete_rk4``
            (DISCRETE dynamics, Jacobian chained over the four stages from
            df/d(x, u); see :mod:`whatmatters.mpc.discrete`) or ``erk`` (acados'
            ERK integrator, 4 stages, 1 step: the same map, forward
            sensitivities in all 21 directions, slower).
        rk4_jacobian: ``first_stage`` (the default; ``discrete_rk4``,
            ``SQP_RTI`` and Gauss-Newton only: the Jacobian from the first RK4
            stage's ``df/d(x, u)`` alone, about half the linearisation time
            with the learned model; the predictions stay exact, the QP's
            linearisation is O(dt^2) off) or ``exact`` (the RK4 map's exact
            Jacobian; needed by ``SQP`` and the exact Hessian). The
            sensitivity computations always build an exact solver.
        stage_hessians: The QP Hessian of stage k is ``blkdiag(Q, R)`` (scaled)
            plus a matrix ``W_k`` (nx + nu, nx + nu) set at run time
            (:meth:`~whatmatters.mpc.solver.AcadosMpcSolver.set_stage_hessians`;
            zero until set): the stage cost becomes acados' EXTERNAL cost
            with a custom Hessian, the reference a stage parameter. The cost
            and its gradient are unchanged, so the converged solution is too;
            with ``W_k`` the exact second-order dynamics terms an SQP
            converges like Newton's method. ``SQP``, Gauss-Newton, exact
            Jacobian and ``discrete_rk4`` only; the weights are compiled in.
    """

    yaml_file: ClassVar[str] = "mpc.yaml"

    horizon: int = 12
    dt: float = 0.02
    q_weights: tuple[float, ...] = (1000.0, 1000.0, 1000.0, 1000.0, 500.0, 500.0, 500.0)
    qd_weights: tuple[float, ...] = (100.0, 100.0, 100.0, 100.0, 50.0, 50.0, 50.0)
    r_weights: tuple[float, ...] = (0.2, 0.2, 0.2, 0.2, 1.0, 1.0, 1.0)
    terminal_scale: float = 1.0
    cost_scaling: str = "time_step"
    nlp_solver: str = "SQP_RTI"
    hessian: str = "GAUSS_NEWTON"
    qp_solver: str = "PARTIAL_CONDENSING_HPIPM"
    hpipm_mode: str = "SPEED_ABS"
    qp_cond_n: int = 4
    sqp_max_iter: int = 50
    sqp_tol: float = 1e-8
    qp_max_iter: int = 50
    fallback_gravity_after: int = 5
    compile_flags: str = DEFAULT_FLAGS
    integrator: str = "discrete_rk4"
    rk4_jacobian: str = "first_stage"
    stage_hessians: bool = field(default=False, repr=False)  # in the solver key only when set (ocp.formulation_key)
    state_weights: tuple[float, ...] = field(default=(), repr=False)  # in the solver key only when set
    input_weights: tuple[float, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if self.horizon < 1 or self.dt <= 0:
            raise ConfigError("mpc: horizon must be >= 1 and dt > 0")
        arm = (() if self.state_weights else ("q_weights", "qd_weights")) + (() if self.input_weights else ("r_weights",))
        for key in arm:
            if len(getattr(self, key)) != 7 or min(getattr(self, key)) < 0:
                raise ConfigError(f"mpc: '{key}' needs 7 values >= 0")
        if self.state_weights and min(self.state_weights) < 0:
            raise ConfigError("mpc: 'state_weights' must be >= 0")
        r_key = "input_weights" if self.input_weights else "r_weights"
        if min(getattr(self, r_key)) <= 0:
            raise ConfigError(f"mpc: '{r_key}' must be > 0 (the QP needs a positive definite input weight)")
        if self.cost_scaling not in ("time_step", "none"):
            raise ConfigError(f"mpc: 'cost_scaling' must be time_step or none, got '{self.cost_scaling}'")
        if self.nlp_solver not in _NLP:
            raise ConfigError(f"mpc: 'nlp_solver' must be one of {_NLP}, got '{self.nlp_solver}'")
        if self.hessian not in _HESS:
            raise ConfigError(f"mpc: 'hessian' must be one of {_HESS}, got '{self.hessian}'")
        if self.integrator not in _INTEGRATORS:
            raise ConfigError(f"mpc: 'integrator' must be one of {_INTEGRATORS}, got '{self.integrator}'")
        if self.rk4_jacobian not in RK4_JACOBIANS:
            raise ConfigError(f"mpc: 'rk4_jacobian' must be one of {RK4_JACOBIANS}, got '{self.rk4_jacobian}'")
        if self.rk4_jacobian != "exact" and (self.integrator != "discrete_rk4" or self.nlp_solver != "SQP_RTI" or self.hessian != "GAUSS_NEWTON"):
            raise ConfigError(
                f"mpc: 'rk4_jacobian: {self.rk4_jacobian}' needs integrator discrete_rk4, nlp_solver SQP_RTI and hessian GAUSS_NEWTON "
                "(a converged SQP or an exact Hessian needs the exact Jacobian: set rk4_jacobian: exact)"
            )
        if self.nlp_solver == "SQP" and self.hpipm_mode == "SPEED_ABS":
            raise ConfigError(
                "mpc: 'nlp_solver: SQP' needs another 'hpipm_mode' than SPEED_ABS (its absolute QP tolerances stop a "
                "converged SQP short of sqp_tol): set hpipm_mode: SPEED (and rk4_jacobian: exact)"
            )
        if self.stage_hessians and (self.nlp_solver != "SQP" or self.hessian != "GAUSS_NEWTON" or self.rk4_jacobian != "exact" or self.integrator != "discrete_rk4"):
            raise ConfigError("mpc: 'stage_hessians' needs nlp_solver SQP, hessian GAUSS_NEWTON, rk4_jacobian exact and integrator discrete_rk4")
        if self.qp_solver not in _QP:
            raise ConfigError(f"mpc: 'qp_solver' must be one of {_QP}, got '{self.qp_solver}'")
        if self.hpipm_mode not in ("SPEED", "SPEED_ABS", "BALANCE", "ROBUST"):
            raise ConfigError(f"mpc: unknown 'hpipm_mode' '{self.hpipm_mode}'")
        if not 0 <= self.qp_cond_n <= self.horizon:
            raise ConfigError(f"mpc: 'qp_cond_n' must be in 0..horizon ({self.horizon}), got {self.qp_cond_n}")
        if self.sqp_max_iter < 1 or self.qp_max_iter < 1 or self.sqp_tol <= 0:
            raise ConfigError("mpc: iteration limits must be >= 1 and sqp_tol > 0")
        if self.fallback_gravity_after < 1:
            raise ConfigError("mpc: 'fallback_gravity_after' must be >= 1")

    @property
    def state_weight(self) -> np.ndarray:
        """Q = diag(state_weights) or diag(q_weights, qd_weights), (nx, nx)."""
        return np.diag(np.asarray(self.state_weights or tuple(self.q_weights) + tuple(self.qd_weights), dtype=float))

    @property
    def input_weight(self) -> np.ndarray:
        """R = diag(input_weights) or diag(r_weights), (nu, nu)."""
        return np.diag(np.asarray(self.input_weights or self.r_weights, dtype=float))

    @property
    def stage_scale(self) -> float:
        """Factor on every stage cost: dt for ``time_step`` scaling, else 1."""
        return self.dt if self.cost_scaling == "time_step" else 1.0

