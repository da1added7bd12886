"""Compiled stage derivatives of a model's discrete dynamics (RK4 over dt).

For the KKT-based sensitivities every stage k needs, at the converged
solution, ``A_k = dF/dx``, ``B_k = dF/du`` and the second-order term
``W_k = d^2 (lambda_{k+1}' F) / d(x, u)^2`` ((nx + nu) x (nx + nu)), for all N
stages. They are built from the model's CasADi form with the RK4 map at the
MX level (the continuous dynamics stay one SX function, so the generated code
stays compact), mapped over the horizon, compiled to C once (cached by a hash
of the function, like the acados solvers) and loaded with ``casadi.external``.
Without a C compiler the same functions run in CasADi's virtual machine
(slower, identical numbers).
"""

from __future__ import annotations

import logging
from pathlib import Path

import casadi as ca
import numpy as np

from whatmatters.codegen import DEFAULT_FLAGS, CompileError, compile_library
from whatmatters.dynamics.base import DynamicsModel

__all__ = ["StageDerivatives", "model_instructions"]

#: Models whose state derivative has fewer CasADi instructions get compiled stage derivatives.
COMPILE_LIMIT = 5000


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
            derivative is small enough to compile in about a minute (< 5,000
            CasADi instructions, e.g. the nominal model) and uses CasADi's VM
            otherwise (the learned model's exact Hessian generates several
            hundred MB of C); True / False force either.
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
        self.n, self.nx, self.nu = horizon, nx, nu
        mapped = [jac.map("wm_jac", "serial", horizon, [], []), hess.map("wm_hess", "serial", horizon, [], [])]
        if compile == "auto":
            compile = f.n_instructions() < COMPILE_LIMIT
            if not compile:
                log.info("stage derivatives of a large model (%d instructions): evaluated in CasADi's VM", f.n_instructions())
        self._jac, self._hess = mapped
        if compile:
            flags = DEFAULT_FLAGS if flags is None else flags
            try:
                lib = str(compile_library(mapped, "wm_deriv", flags, "derivatives", cache_dir))
                self._jac, self._hess = ca.external("wm_jac", lib), ca.external("wm_hess", lib)
            except CompileError as exc:
                log.warning("stage derivatives evaluated in CasADi's VM: %s", exc)

    def _params(self, p: np.ndarray) -> np.ndarray:
        return np.repeat(np.asarray(p, dtype=float).reshape(-1, 1), self.n, axis=1)

    def jacobians(self, x: np.ndarray, u: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``F`` (N, nx), ``A`` (N, nx, nx), ``B`` (N, nx, nu) at x_0..x_{N-1} (N, nx), u (N, nu)."""
        n, nx, nu = self.n, self.nx, self.nu
        f, jac = self._jac(x.T, u.T, self._params(p))
        # the map concatenates the stages' (nx, nz) blocks horizontally: column k * nz + j
        jac = np.asarray(jac).reshape(nx, nx + nu, n, order="F").transpose(2, 0, 1)
        return np.asarray(f).T, jac[:, :, :nx], jac[:, :, nx:]

    def hessians(self, x: np.ndarray, u: np.ndarray, p: np.ndarray, lam: np.ndarray) -> np.ndarray:
        """``W`` (N, nx + nu, nx + nu) with lambda_1..lambda_N (N, nx)."""
        n, nz = self.n, self.nx + self.nu
        hess = self._hess(x.T, u.T, self._params(p), lam.T)
        return np.asarray(hess).reshape(nz, nz, n, order="F").transpose(2, 0, 1)

    def jacobians_many(self, x: np.ndarray, u: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`jacobians` for S samples: x (S, N, nx), u (S, N, nu), p (S, n_params) ->
        F (S, N, nx), A (S, N, nx, nx), B (S, N, nx, nu)."""
        parts = [self.jacobians(x[i], u[i], p[i]) for i in range(x.shape[0])]
        return tuple(np.stack([part[j] for part in parts]) for j in range(3))  # type: ignore[return-value]

    def hessians_many(self, x: np.ndarray, u: np.ndarray, p: np.ndarray, lam: np.ndarray) -> np.ndarray:
        """:meth:`hessians` for S samples, lam (S, N, nx) -> W (S, N, nz, nz)."""
        return np.stack([self.hessians(x[i], u[i], p[i], lam[i]) for i in range(x.shape[0])])
