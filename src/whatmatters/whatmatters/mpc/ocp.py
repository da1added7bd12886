"""OCP builder: any :class:`~whatmatters.dynamics.DynamicsModel` -> an acados OCP.

The problem (``x = [q, qd]`` (14), ``u = tau`` (7), N stages of ``dt``)::

    min  sum_{k<N} |x_k - x_ref,k|_Q^2 + |u_k|_R^2  +  |x_N - x_ref,N|_{Q_N}^2
    s.t. x_{k+1} = RK4(x_k, u_k; p),  x_0 = measured state,  u_lower <= u_k <= u_upper

plus, for a system that has them, soft state bounds and soft linear
constraints priced by a quadratic penalty on their violation
(:class:`~whatmatters.mpc.constraints.OcpConstraints`; the arm has none). The
arm's symbols are the default (``x = [q, qd]``, ``u = tau``); any
:class:`~whatmatters.dynamics.DynamicsModel` works the same way.

* Dynamics: the classical RK4 map of :meth:`DynamicsModel.rk4_step` (one
  step per interval; checked in the tests), by default as acados DISCRETE
  dynamics whose Jacobian is chained over the four stages from df/d(x, u)
  (:mod:`whatmatters.mpc.discrete`), or (``integrator: erk``) through acados'
  ERK integrator with 4 stages and 1 step, which propagates forward
  sensitivities of f in all 21 directions (the same map, slower).
* Runtime, not rebuild: the model parameters ``p`` (learned weights, context)
  are acados stage parameters; the reference ``yref`` and the weights ``W``
  are set per stage at run time; so are the input bounds (the soft
  constraints are compiled in).
* ``stage_hessians``: the stage cost is acados' EXTERNAL cost (the same
  value) whose QP Hessian is ``blkdiag(Q, R) + W_k``; the stage parameters
  are then ``[p, x_ref,k (nx), W_k (nz * nz, column-major, divided by the
  stage scale)]`` (:func:`stage_parameter_layout`).

:func:`formulation_key` hashes everything that shapes the generated code, so
the solver wrapper can reuse a compiled solver across processes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from typing import Any

import casadi as ca
import numpy as np

from whatmatters.dynamics.base import DynamicsModel, rk4
from whatmatters.errors import ConfigError
from whatmatters.io import machine_id
from whatmatters.mpc.acados_env import configure_acados_environment, import_acados_template
from whatmatters.mpc.config import MpcConfig
from whatmatters.mpc.constraints import OcpConstraints, as_constraints
from whatmatters.mpc.discrete import UnsupportedAcados, acados_solver_module

__all__ = ["build_ocp", "discrete_rk4", "formulation_key", "model_expressions"]

log = logging.getLogger(__name__)

_BUILDER_VERSION = "4"


def model_expressions(model: DynamicsModel) -> tuple[ca.SX, ca.SX, ca.SX, ca.SX]:
    """Symbols and the explicit ODE of a model.

    Returns:
        ``(x (nx), u (nu), p (n_params), f_expl (nx))`` as CasADi SX.
    """
    x = ca.SX.sym("x", model.nx)
    u = ca.SX.sym("u", model.nu)
    p = ca.SX.sym("p", model.n_params)
    return x, u, p, model.state_derivative(x, u, p)


@functools.lru_cache(maxsize=1)
def _acados_id() -> str:
    """Content hash of the acados library in use: the same acados in another
    checkout or venv shares compiled solvers, a different build does not."""
    lib = configure_acados_environment().lib_dir / "libacados.so"
    return hashlib.sha256(lib.read_bytes()).hexdigest()


def discrete_rk4(cfg: MpcConfig) -> bool:
    """Whether the OCP uses the chained DISCRETE RK4 (config, and this acados supports it)."""
    if cfg.integrator != "discrete_rk4":
        return False
    try:
        acados_solver_module()
    except UnsupportedAcados as exc:
        log.warning("integrator discrete_rk4 unavailable (%s); using acados' ERK (the same RK4 map, slower)", exc)
        return False
    return True


def formulation_key(model: DynamicsModel, cfg: MpcConfig, limits: np.ndarray | OcpConstraints) -> str:
    """A hash of everything that determines the generated solver code.

    Two processes that build the same model with the same options get the
    same key and can share one compiled solver. Run-time data (model
    parameters, reference, weights, input bounds) is not part of it; soft
    constraints are.
    """
    x, u, p, f = model_expressions(model)
    fun = ca.Function("f", [x, u, p], [f])
    parts: dict[str, Any] = {
        "builder": _BUILDER_VERSION,
        "acados": _acados_id(),
        "casadi": ca.__version__,
        "model": fun.serialize(),
        "cfg": repr(cfg),
        "machine": machine_id(),
    }
    if model.code_identity():  # the kernels its generated code calls: only such a model has them in its key
        parts["kernels"] = model.code_identity()
    if cfg.stage_hessians:  # not in repr(cfg): the keys of solvers without it stay what they were
        parts["stage_hessians"] = "classical Riccati"  # its QP options (build_ocp)
    if cfg.state_weights or cfg.input_weights:
        parts["weights"] = [list(cfg.state_weights), list(cfg.input_weights)]
    soft = as_constraints(limits).key()
    if soft is not None:  # likewise: only a formulation with soft constraints has them in its key
        parts["soft_constraints"] = soft
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def stage_parameter_layout(model: DynamicsModel, cfg: MpcConfig) -> tuple[int, int, int]:
    """Offsets of the stage parameters: model ``p`` at 0, the reference at ``ref``, ``W_k`` at ``hess``; total length.

    Returns:
        ``(ref, hess, total)``; without ``stage_hessians`` ``ref = hess = total = n_params``.
    """
    n = model.n_params
    if not cfg.stage_hessians:
        return n, n, n
    nz = model.nx + model.nu
    return n, n + model.nx, n + model.nx + nz * nz


def _soft_constraints(ocp: Any, cons: OcpConstraints) -> None:
    """Soft state bounds (stages 1..N) and soft linear constraints (stages 0..N-1), purely quadratic slack costs."""
    mx, mg = cons.n_soft_x, cons.n_soft_g
    c = ocp.constraints
    if mx:
        c.idxbx = c.idxbx_e = np.asarray(cons.x_index)
        c.lbx = c.lbx_e = cons.x_lower
        c.ubx = c.ubx_e = cons.x_upper
        c.idxsbx = c.idxsbx_e = np.arange(mx)
        ocp.cost.Zl_e = ocp.cost.Zu_e = np.full(mx, cons.penalty)
        ocp.cost.zl_e = ocp.cost.zu_e = np.zeros(mx)
    if mg:
        c.C, c.D, c.lg, c.ug = cons.g_c, cons.g_d, cons.g_lower, cons.g_upper
        c.idxsg = np.arange(mg)
    # stage 0 drops the state slacks and keeps the first entries of these: all equal
    ocp.cost.Zl = ocp.cost.Zu = np.full(mx + mg, cons.penalty)
    ocp.cost.zl = ocp.cost.zu = np.zeros(mx + mg)


def build_ocp(
    model: DynamicsModel,
    cfg: MpcConfig,
    limits: np.ndarray | OcpConstraints,
    name: str,
    x0: np.ndarray | None = None,
) -> Any:
    """Builds the acados OCP description (no code generated yet).

    Args:
        model: Dynamics model with a CasADi form.
        cfg: Problem and solver settings.
        limits: The constraints, or an array of symmetric input bounds (nu,)
            (the arm's torque limits, Nm).
        name: acados model name (a C identifier; names the generated library).
        x0: Initial state placeholder, shape (nx,); zeros if None.

    Returns:
        An ``AcadosOcp``.
    """
    at = import_acados_template()
    x, u, p, f_expl = model_expressions(model)
    xdot = ca.SX.sym("xdot", model.nx)

    nx, nu, n = model.nx, model.nu, cfg.horizon
    if cfg.state_weight.shape != (nx, nx) or cfg.input_weight.shape != (nu, nu):
        raise ConfigError(f"mpc: the weights are for {len(cfg.state_weight)} states and {len(cfg.input_weight)} inputs; the model has {nx} and {nu}")
    ref_at, hess_at, n_stage = stage_parameter_layout(model, cfg)
    p_stage = ca.SX.sym("p", n_stage) if cfg.stage_hessians else p
    if cfg.stage_hessians:  # the model sees the first n_params entries
        f_expl = ca.substitute(f_expl, p, p_stage[: model.n_params])

    acm = at.AcadosModel()
    acm.name = name
    acm.x, acm.u, acm.xdot = x, u, xdot
    acm.p = p_stage
    acm.f_expl_expr = f_expl
    acm.f_impl_expr = xdot - f_expl

    ocp = at.AcadosOcp()
    ocp.model = acm
    ocp.dims.N = n
    q_w, r_w = cfg.state_weight, cfg.input_weight
    if cfg.stage_hessians:
        nz = nx + nu
        err = x - p_stage[ref_at:hess_at]
        w_xu = ca.reshape(p_stage[hess_at:], nz, nz)
        perm = list(range(nx, nz)) + list(range(nx))  # acados orders the Hessian (u, x)
        ocp.cost.cost_type = ocp.cost.cost_type_e = "EXTERNAL"
        acm.cost_expr_ext_cost = 0.5 * ca.mtimes([err.T, q_w, err]) + 0.5 * ca.mtimes([u.T, r_w, u])
        acm.cost_expr_ext_cost_custom_hess = ca.diagcat(ca.DM(r_w), ca.DM(q_w)) + w_xu[perm, perm]
        acm.cost_expr_ext_cost_e = 0.5 * cfg.terminal_scale * ca.mtimes([err.T, q_w, err])
        acm.cost_expr_ext_cost_custom_hess_e = ca.SX(cfg.terminal_scale * q_w)
    else:
        ocp.cost.cost_type = "LINEAR_LS"
        ocp.cost.cost_type_e = "LINEAR_LS"
        ocp.cost.Vx = np.vstack([np.eye(nx), np.zeros((nu, nx))])
        ocp.cost.Vu = np.vstack([np.zeros((nx, nu)), np.eye(nu)])
        ocp.cost.W = np.block([[q_w, np.zeros((nx, nu))], [np.zeros((nu, nx)), r_w]])
        ocp.cost.yref = np.zeros(nx + nu)
        ocp.cost.Vx_e = np.eye(nx)
        ocp.cost.W_e = cfg.terminal_scale * q_w
        ocp.cost.yref_e = np.zeros(nx)

    cons = as_constraints(limits)
    cons.check_dims(nx, nu)
    ocp.constraints.idxbu = np.arange(nu)
    ocp.constraints.lbu = cons.u_lower
    ocp.constraints.ubu = cons.u_upper
    if cons.has_soft:
        _soft_constraints(ocp, cons)
    ocp.constraints.x0 = np.zeros(nx) if x0 is None else np.asarray(x0, dtype=float)
    ocp.parameter_values = np.concatenate([model.parameter_values(), np.zeros(n_stage - model.n_params)])

    opts = ocp.solver_options
    opts.tf = n * cfg.dt
    if discrete_rk4(cfg):
        opts.integrator_type = "DISCRETE"  # phi and its Jacobian: mpc.discrete
        f_fun = ca.Function("f", [x, u, p_stage], [f_expl])  # a call: the model's CasADi form needs symbolic inputs
        acm.disc_dyn_expr = rk4(lambda s: f_fun(s, u, p_stage), x, cfg.dt)
    else:
        opts.integrator_type = "ERK"
        opts.sim_method_num_stages = 4  # classical RK4 ...
        opts.sim_method_num_steps = 1  # ... one step per interval
    opts.nlp_solver_type = cfg.nlp_solver
    opts.hessian_approx = cfg.hessian
    opts.qp_solver = cfg.qp_solver
    opts.hpipm_mode = cfg.hpipm_mode
    if cfg.qp_solver.startswith("PARTIAL_CONDENSING"):
        opts.qp_solver_cond_N = cfg.qp_cond_n or cfg.horizon
    opts.qp_solver_iter_max = cfg.qp_max_iter
    opts.nlp_solver_max_iter = cfg.sqp_max_iter
    opts.tol = cfg.sqp_tol
    opts.qp_solver_warm_start = 1
    opts.print_level = 0
    opts.ext_fun_compile_flags = cfg.compile_flags
    if cfg.stage_hessians:  # HPIPM's square-root Riccati needs positive definite cost-to-go matrices; the
        # classical one only needs Quu + B' P B > 0, which holds near a strict local minimum (W_k may be indefinite)
        opts.qp_solver_ric_alg = 0
        opts.qp_solver_cond_ric_alg = 0
    if cfg.hessian == "EXACT":
        opts.exact_hess_constr = 1
        opts.exact_hess_cost = 1
        opts.exact_hess_dyn = 1
        opts.regularize_method = "MIRROR"
    return ocp
