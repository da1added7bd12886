"""The RK4 step as acados DISCRETE dynamics, with a chained Jacobian.

acados' ERK integrator propagates forward sensitivities through ``f`` in all
``nx + nu`` (21) directions at each of the 4 stages, with symbolic seeds: every
direction runs through the whole expression (for the learned model: through
the residual's first and second MLP derivatives). The same RK4 map and its
exact Jacobian are much cheaper by the chain rule over the stages, with the
sparse Jacobian ``J_f = df/d(x, u)`` computed once per stage::

    k_i = f(s_i, u),  s_1 = x,  s_{i+1} = x + c_i dt k_i          (c = 1/2, 1/2, 1)
    dk_i/d(x, u) = J_f(s_i, u) [ds_i/d(x, u); 0 I]
    phi = x + dt/6 (k_1 + 2 k_2 + 2 k_3 + k_4),  dphi/d(x, u) likewise

Measured instruction counts (CasADi, per interval): learned model 1.76 M for
ERK's four VDE calls vs 0.70 M chained; nominal 0.25 M vs 0.11 M. ``f`` and
``J_f`` are generated once as functions the stage loop calls (MX), so the C
code holds them once, not four times.

acados 0.2.x derives the DISCRETE Jacobian itself from ``disc_dyn_expr``; the
builder replaces that generator while the code is generated
(:func:`chained_discrete_codegen`). An acados without that generator raises
:class:`UnsupportedAcados`; the builder then uses ERK (same map, slower).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import casadi as ca

from whatmatters.codegen import link_kernels
from whatmatters.dynamics.base import DynamicsModel
from whatmatters.errors import WhatmattersError
from whatmatters.mpc.acados_env import import_acados_template
from whatmatters.mpc.config import RK4_JACOBIANS

__all__ = ["UnsupportedAcados", "acados_solver_module", "chained_discrete_codegen", "rk4_functions"]

log = logging.getLogger(__name__)

_CODEGEN_OPTS = {"mex": False, "casadi_int": "int", "casadi_real": "double"}
_GENERATOR = "generate_c_code_discrete_dynamics"


class UnsupportedAcados(WhatmattersError, RuntimeError):
    """This acados_template has no DISCRETE generator to replace."""


def acados_solver_module() -> ModuleType:
    """``acados_template.acados_ocp_solver``, the module whose DISCRETE generator is replaced.

    Raises:
        UnsupportedAcados: If it is missing or has no such generator (another acados version).
    """
    at = import_acados_template()
    try:
        module = importlib.import_module(f"{at.__name__}.acados_ocp_solver")
    except ImportError as exc:
        raise UnsupportedAcados(f"{at.__name__}.acados_ocp_solver cannot be imported ({exc})") from exc
    if not callable(getattr(module, _GENERATOR, None)):
        raise UnsupportedAcados(f"{module.__name__} has no {_GENERATOR}")
    return module


def rk4_functions(model: DynamicsModel, dt: float, name: str, jacobian: str = "exact", extra_params: int = 0) -> tuple[ca.Function, ca.Function]:
    """The RK4 map and its chained Jacobian in acados' DISCRETE layout.

    Args:
        model: Dynamics model with a CasADi form.
        dt: Step, s.
        name: acados model name (prefix of the function names).
        jacobian: ``exact``: ``J_f`` at every stage (the exact Jacobian of the
            RK4 map); ``first_stage``: ``J_f`` of the first stage used for all
            four (``phi`` itself stays exact; the Jacobian is then accurate to
            O(dt^2) relative, an inexact-Jacobian RTI; see ``docs/mpc.md``).
        extra_params: Stage parameters after the model's (the cost's; unused here).

    Returns:
        ``phi_fun(x, u, p) -> phi`` (nx) and
        ``phi_fun_jac(x, u, p) -> (phi, jac^T)`` with ``jac = dphi/d(u, x)``,
        (nu + nx, nx): the names and layout acados' DISCRETE solver loads.

    Raises:
        ValueError: For an unknown ``jacobian``.
    """
    if jacobian not in RK4_JACOBIANS:
        raise ValueError(f"rk4 jacobian must be one of {RK4_JACOBIANS}, got '{jacobian}'")
    nx, nu, npar = model.nx, model.nu, model.n_params
    xs, us, ps = ca.SX.sym("x", nx), ca.SX.sym("u", nu), ca.SX.sym("p", npar)
    f_fun = ca.Function(f"{name}_ode", [xs, us, ps], [model.state_derivative(xs, us, ps)])
    fj_fun = ca.Function(f"{name}_ode_jac", [xs, us, ps], [*model.state_derivative_jacobian(xs, us, ps)])  # (nx,), (nx, nx + nu)
    chain = _chain_function(fj_fun.sparsity_out(1), nx, nu, name)

    x, u, p_stage = ca.MX.sym("x", nx), ca.MX.sym("u", nu), ca.MX.sym("p", npar + extra_params)
    p = p_stage[:npar]
    dx = ca.horzcat(ca.MX.eye(nx), ca.MX.zeros(nx, nu))  # d x / d(x, u)
    def step(with_jacobian: bool) -> tuple[ca.MX, ca.MX | None]:
        s, ds = x, dx
        phi, dphi = x, dx
        jf = None
        for c, w in ((0.5, 1.0), (0.5, 2.0), (1.0, 2.0), (None, 1.0)):
            if not with_jacobian:
                k = f_fun(s, u, p)
            elif jf is None:  # stage 1: d(s, u)/d(x, u) = I
                k, jf = fj_fun(s, u, p)
                dk = jf
            else:
                if jacobian == "exact":
                    k, jf = fj_fun(s, u, p)
                else:
                    k = f_fun(s, u, p)
                dk = chain(jf, ds)
            if with_jacobian:
                dphi = dphi + (dt * w / 6.0) * dk
            phi = phi + (dt * w / 6.0) * k
            if c is not None:
                s = x + (c * dt) * k
                if with_jacobian:
                    ds = dx + (c * dt) * dk
        return phi, dphi if with_jacobian else None

    phi, dphi = step(True)
    jac_ux = ca.horzcat(dphi[:, nx:], dphi[:, :nx])  # acados orders (u, x)
    phi_fun = ca.Function(f"{name}_dyn_disc_phi_fun", [x, u, p_stage], [step(False)[0]])
    phi_fun_jac = ca.Function(f"{name}_dyn_disc_phi_fun_jac", [x, u, p_stage], [phi, jac_ux.T])
    return phi_fun, phi_fun_jac


def _chain_function(jf_sparsity: ca.Sparsity, nx: int, nu: int, name: str) -> ca.Function:
    """``(J_f, ds) -> dk = J_f [ds; 0 I]``: a stage's derivative by the chain rule.

    SX with ``J_f``'s sparsity, so the generated code is straight-line and
    skips its structural zeros (the ``d qd / d(x, u)`` block is one entry per row).

    Args:
        jf_sparsity: Sparsity of ``J_f`` (nx, nx + nu).
        nx: State dimension.
        nu: Input dimension.
        name: Prefix of the function name.
    """
    jf = ca.SX.sym("jf", jf_sparsity)
    ds = ca.SX.sym("ds", nx, nx + nu)
    dk = ca.mtimes(jf[:, :nx], ds)
    dk = ca.horzcat(dk[:, :nx], dk[:, nx:] + jf[:, nx:])
    return ca.Function(f"{name}_rk4_chain", [jf, ds], [ca.densify(dk)])


@contextlib.contextmanager
def chained_discrete_codegen(functions: tuple[ca.Function, ca.Function]) -> Iterator[None]:
    """While active, acados generates ``functions`` for DISCRETE dynamics instead of its own.

    With an exact Hessian, acados' own generator still writes the Hessian
    function (from ``disc_dyn_expr``); ``phi_fun`` and ``phi_fun_jac`` are then
    replaced by the chained ones.

    Args:
        functions: :func:`rk4_functions`' result.

    Raises:
        UnsupportedAcados: If acados has no such generator.
    """
    solver_module = acados_solver_module()
    original = getattr(solver_module, _GENERATOR)

    def generate(model: Any, opts: dict[str, Any]) -> None:
        if opts.get("generate_hess"):
            original(model, opts)
        model_dir = os.path.join(opts["code_export_directory"], f"{model.name}_model")
        os.makedirs(model_dir, exist_ok=True)
        with contextlib.chdir(model_dir):
            for fun in functions:
                fun.generate(f"{fun.name()}.c", _CODEGEN_OPTS)
                link_kernels(Path(model_dir) / f"{fun.name()}.c")  # hand-written C the functions call
        log.debug("generated chained RK4 dynamics in %s", model_dir)

    setattr(solver_module, _GENERATOR, generate)
    try:
        yield
    finally:
        setattr(solver_module, _GENERATOR, original)
