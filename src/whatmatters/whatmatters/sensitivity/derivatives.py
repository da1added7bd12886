"""Compiled stage derivatives of a model's discrete dynamics (RK4 over dt).

For the KKT-based sensitivities every stage k needs, at the converged
solution, ``A_k = dF/dx``, ``B_k = dF/du`` and the second-order term
``W_k = d^2 (lambda_{k+1}' F) / d(x, u)^2`` ((nx + nu) x (nx + nu)), for all N
stages. They are mapped over the horizon, compiled to C once (cached by a hash
of the functions, like the acados solvers) and called through ctypes
(:class:`whatmatters.codegen.CompiledFunction`). Without a C compiler the same
functions run in CasADi's virtual machine (slower, identical numbers).

**Chained form** (models whose state derivative is small, e.g. the nominal
one). In the RK4 map everything but the four calls of ``f`` is affine::

    s_1 = x,  s_{i+1} = x + c_i dt k_i  (c = 1/2, 1/2, 1),  k_i = f(s_i, u)
    F = x + dt (k_1 + 2 k_2 + 2 k_3 + k_4) / 6

so the Hessian of ``lambda' F`` is a sum over the calls::

    W = sum_i D_i' [d^2 (kbar_i' f) / d(s, u)^2 at (s_i, u)] D_i,   D_i = d(s_i, u) / d(x, u)

with the adjoints ``kbar_4 = dt lambda / 6``,
``kbar_i = dt w_i lambda + c_i dt J_x(s_{i+1})' kbar_{i+1}`` (w = 1/6, 1/3, 1/3)
and ``D_i`` from the forward chain of the Jacobians ``J = df/d(s, u)`` (as in
:mod:`whatmatters.mpc.discrete`). The weighted Hessian of ``f`` itself is the
model's :meth:`~whatmatters.dynamics.base.DynamicsModel.state_derivative_hessian`
(one SX expression; the rigid-body model's goes through its inverse dynamics).
Per sample (N = 12, nominal model) 0.83 ms against 3.4 ms for CasADi's
forward-over-reverse through the whole map.

**Direct form** (large models, e.g. the learned one in CasADi's VM): CasADi's
MX Hessian of ``lambda' F`` with ``f`` as one SX function. Both forms agree to
rounding (tested).
"""

from __future__ import annotations

import logging
from pathlib import Path

import casadi as ca
import numpy as np

from whatmatters.codegen import DEFAULT_FLAGS, CompileError, CompiledFunction, evaluate
from whatmatters.dynamics.base import DynamicsModel

__all__ = ["StageDerivatives", "model_instructions", "rk4_adjoints", "rk4_nodes"]

#: Models whose state derivative has fewer CasADi instructions get compiled stage derivatives.
COMPILE_LIMIT = 10000

#: RK4's weights of the four calls of f, and the fractions of dt at which calls 2-4 are made.
RK4_WEIGHTS = (1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 6.0)
RK4_SHIFTS = (0.5, 0.5, 1.0)


def model_instructions(model: DynamicsModel) -> int:
    """Number of CasADi SX instructions of the model's state derivative (its size)."""
    xs, us, ps = ca.SX.sym("x", model.nx), ca.SX.sym("u", model.nu), ca.SX.sym("p", model.n_params)
    return int(ca.Function("wm_f", [xs, us, ps], [model.state_derivative(xs, us, ps)]).n_instructions())

log = logging.getLogger(__name__)


class StageDerivatives:
    """``F``, ``A``, ``B`` and the multiplier-weighted Hessian for all stages at once.

    Args:
        model: Dynamics model with a CasADi form.
        dt: Step of the RK4 map, s.
        horizon: Number of stages N.
        compile: ``"auto"`` compiles to C (cached) when the model's state
            derivative is small enough to compile in under a minute (<
            :data:`COMPILE_LIMIT` CasADi instructions: the nominal models, ~1,900
            and ~1,600; the race car's learned model, ~5,900, in ~20 s) and uses
            CasADi's VM otherwise (the arm's learned model, ~22,000: its exact
            Hessian generates several hundred MB of C); True / False force either.
        cache_dir: Cache folder (default :func:`whatmatters.io.cache_root`).
        flags: C compiler flags (the library is cached per flags and CPU, so
            ``-march=native`` is safe); None: :data:`whatmatters.codegen.DEFAULT_FLAGS`
            (also ``MpcConfig.compile_flags``' default).
    """

    def __init__(
        self,
        model: DynamicsModel,
        dt: float,
        horizon: int,
        compile: bool | str = "auto",
        cache_dir: Path | None = None,
        flags: str | None = None,
    ) -> None:
        xs, us, ps = ca.SX.sym("x", model.nx), ca.SX.sym("u", model.nu), ca.SX.sym("p", model.n_params)
        f = ca.Function("wm_f", [xs, us, ps], [model.state_derivative(xs, us, ps)])
        small = f.n_instructions() < COMPILE_LIMIT
        jac, hess = (_chained_stage if small else _direct_stage)(model, dt)
        nx, nu = model.nx, model.nu
        self.n, self.nx, self.nu = horizon, nx, nu
        self.form = "chained" if small else "direct"  # see the module docstring
        mapped = [jac.map("wm_jac", "serial", horizon, [], []), hess.map("wm_hess", "serial", horizon, [], [])]
        if compile == "auto":
            compile = small
            if not compile:
                log.info("stage derivatives of a large model (%d instructions): evaluated in CasADi's VM", f.n_instructions())
        self._jac: ca.Function | CompiledFunction = mapped[0]
        self._hess: ca.Function | CompiledFunction = mapped[1]
        if compile:
            flags = DEFAULT_FLAGS if flags is None else flags
            try:  # called through ctypes: no DM conversions (~0.25 ms a call), and the GIL is released
                self._jac, self._hess = (CompiledFunction(fn, flags, cache_dir) for fn in mapped)
            except CompileError as exc:
                log.warning("stage derivatives evaluated in CasADi's VM: %s", exc)

    def _params(self, p: np.ndarray) -> np.ndarray:
        return np.repeat(np.asarray(p, dtype=float).reshape(-1, 1), self.n, axis=1)

    def jacobians(self, x: np.ndarray, u: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``F`` (N, nx), ``A`` (N, nx, nx), ``B`` (N, nx, nu) at x_0..x_{N-1} (N, nx), u (N, nu)."""
        n, nx, nu = self.n, self.nx, self.nu
        f, jac = evaluate(self._jac, x.T, u.T, self._params(p))
        # the map concatenates the stages' (nx, nz) blocks horizontally: column k * nz + j
        jac = np.asarray(jac).reshape(nx, nx + nu, n, order="F").transpose(2, 0, 1)
        return np.asarray(f).T, jac[:, :, :nx], jac[:, :, nx:]

    def hessians(self, x: np.ndarray, u: np.ndarray, p: np.ndarray, lam: np.ndarray) -> np.ndarray:
        """``W`` (N, nx + nu, nx + nu) with lambda_1..lambda_N (N, nx)."""
        n, nz = self.n, self.nx + self.nu
        (hess,) = evaluate(self._hess, x.T, u.T, self._params(p), lam.T)
        return np.asarray(hess).reshape(nz, nz, n, order="F").transpose(2, 0, 1)

    def jacobians_many(self, x: np.ndarray, u: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`jacobians` for S samples: x (S, N, nx), u (S, N, nu), p (S, n_params) ->
        F (S, N, nx), A (S, N, nx, nx), B (S, N, nx, nu)."""
        parts = [self.jacobians(x[i], u[i], p[i]) for i in range(x.shape[0])]
        return tuple(np.stack([part[j] for part in parts]) for j in range(3))  # type: ignore[return-value]

    def hessians_many(self, x: np.ndarray, u: np.ndarray, p: np.ndarray, lam: np.ndarray) -> np.ndarray:
        """:meth:`hessians` for S samples, lam (S, N, nx) -> W (S, N, nz, nz)."""
        return np.stack([self.hessians(x[i], u[i], p[i], lam[i]) for i in range(x.shape[0])])


def _direct_stage(model: DynamicsModel, dt: float) -> tuple[ca.Function, ca.Function]:
    """``(x, u, p) -> (F, dF/d(x, u))`` and ``(x, u, p, lam) -> W`` by CasADi's MX AD of the RK4 map."""
    nx, nu, npar = model.nx, model.nu, model.n_params
    xs, us, ps = ca.SX.sym("x", nx), ca.SX.sym("u", nu), ca.SX.sym("p", npar)
    f = ca.Function("wm_f", [xs, us, ps], [model.state_derivative(xs, us, ps)])
    x, u, p, lam = ca.MX.sym("x", nx), ca.MX.sym("u", nu), ca.MX.sym("p", npar), ca.MX.sym("lam", nx)
    k1 = f(x, u, p)
    k2 = f(x + 0.5 * dt * k1, u, p)
    k3 = f(x + 0.5 * dt * k2, u, p)
    k4 = f(x + dt * k3, u, p)
    big_f = x + (dt / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
    z = ca.vertcat(x, u)
    jac = ca.Function("wm_jac_stage", [x, u, p], [big_f, ca.jacobian(big_f, z)])
    hess = ca.Function("wm_hess_stage", [x, u, p, lam], [ca.hessian(ca.dot(lam, big_f), z)[0]])
    return jac, hess


def rk4_nodes(fj: ca.Function, x: ca.MX, u: ca.MX, p: ca.MX, dt: float) -> tuple[list[tuple[ca.MX, ca.MX, ca.MX, ca.MX]], ca.MX, ca.MX]:
    """The four calls of ``f`` in the RK4 map, chained forward (the module docstring's form).

    Args:
        fj: ``(x, u, p) -> (f (nx), J = df/d(x, u) (nx, nx + nu))``.
        x, u, p: The stage's state, input and parameters.
        dt: Step, s.

    Returns:
        ``[(s_i, d s_i / d(x, u), k_i, J(s_i))]`` for i = 1..4, ``F`` and ``dF/d(x, u)``.
    """
    nx, nu = x.shape[0], u.shape[0]
    dx = ca.horzcat(ca.MX.eye(nx), ca.MX(nx, nu))  # d x / d(x, u)
    s, ds = x, dx
    big_f, d_big_f = x, dx
    nodes: list[tuple[ca.MX, ca.MX, ca.MX, ca.MX]] = []
    for i in range(4):
        k, j = fj(s, u, p)
        dk = ca.mtimes(j[:, :nx], ds) + ca.horzcat(ca.MX(nx, nx), j[:, nx:])  # d k_i / d(x, u)
        nodes.append((s, ds, k, j))
        big_f, d_big_f = big_f + (dt * RK4_WEIGHTS[i]) * k, d_big_f + (dt * RK4_WEIGHTS[i]) * dk
        if i < 3:
            s, ds = x + (RK4_SHIFTS[i] * dt) * k, dx + (RK4_SHIFTS[i] * dt) * dk
    return nodes, big_f, d_big_f


def rk4_adjoints(nodes: list[tuple[ca.MX, ca.MX, ca.MX, ca.MX]], lam: ca.MX, dt: float) -> list[ca.MX]:
    """``kbar_i`` (i = 1..4): the weight of ``f``'s i-th call in ``lambda' F``."""
    nx = lam.shape[0]
    kbar = [ca.MX()] * 4
    kbar[3] = (dt * RK4_WEIGHTS[3]) * lam
    for i in reversed(range(1, 4)):
        kbar[i - 1] = (dt * RK4_WEIGHTS[i - 1]) * lam + (RK4_SHIFTS[i - 1] * dt) * ca.mtimes(nodes[i][3][:, :nx].T, kbar[i])
    return kbar


def _chained_stage(model: DynamicsModel, dt: float) -> tuple[ca.Function, ca.Function]:
    """The same two functions by the chained form of the module docstring."""
    nx, nu, npar = model.nx, model.nu, model.n_params
    xs, us, ps, mus = ca.SX.sym("x", nx), ca.SX.sym("u", nu), ca.SX.sym("p", npar), ca.SX.sym("mu", nx)
    fs, js = ca.SX.sym("f", nx), ca.SX.sym("j", nx, nx + nu)
    fj = ca.Function("wm_fj", [xs, us, ps], [*model.state_derivative_jacobian(xs, us, ps)])  # f (nx), J (nx, nx + nu)
    weighted = model.state_derivative_hessian(xs, us, mus, ps, fs, js)  # (nx + nu, nx + nu)
    hf = ca.Function("wm_hf", [xs, us, ps, mus, fs, js], [weighted])

    x, u, p, lam = ca.MX.sym("x", nx), ca.MX.sym("u", nu), ca.MX.sym("p", npar), ca.MX.sym("lam", nx)
    du = ca.horzcat(ca.MX(nu, nx), ca.MX.eye(nu))  # d u / d(x, u)
    nodes, big_f, d_big_f = rk4_nodes(fj, x, u, p, dt)
    hess = ca.MX(nx + nu, nx + nu)
    for (s_i, ds_i, k_i, j_i), kbar in zip(nodes, rk4_adjoints(nodes, lam, dt)):
        d_i = ca.vertcat(ds_i, du)
        hess = hess + ca.mtimes([d_i.T, hf(s_i, u, p, kbar, k_i, ca.densify(j_i)), d_i])
    jac = ca.Function("wm_jac_stage", [x, u, p], [big_f, ca.densify(d_big_f)])
    return jac, ca.Function("wm_hess_stage", [x, u, p, lam], [ca.densify(hess)])
