"""Exact stage Hessians of the learned model: compiled nominal part, batched numpy residual part.

``W = d^2 (lambda' F) / d(x, u)^2`` of the RK4 map is the chained sum over
its four calls of ``f`` (:mod:`whatmatters.sensitivity.derivatives`)::

    W = sum_i D_i' Hf_i D_i,   Hf_i = -(psi_yy + psi_ya a_y + a_y' psi_ay)

with ``psi = w' ID(q, qd, a)`` at the node's ``w = M^-1 kbar_i,v`` and
``a = qdd``, ``a_y = d qdd / d(q, qd, tau)``. The learned model's inverse
dynamics is the nominal one plus the residual's, so ``Hf`` (linear in psi)
splits in two:

* **nominal**, with everything per stage that only depends on the model's
  CasADi form (the RK4 nodes, their Jacobians, ``D_i``, ``w_i`` and the RNEA's
  weighted Hessian), one generated function compiled to C with the weights
  as runtime parameters (cached: a new checkpoint needs no rebuild);
* **residual**, from the deep Lagrangian networks' closed-form derivatives
  (:class:`whatmatters.dynamics.residual_hessian.ResidualHessian`, a C kernel),
  over the nodes of many stages and samples;

and the two are added before the products ``D_i' Hf_i D_i``, one batched
numpy product per node.

The same numbers as the torch-autograd path (:mod:`~whatmatters.sensitivity.torch_derivatives`)
to rounding (``test/sensitivity/test_learned_derivatives.py``): ~1.8 against ~110 ms a
sample on one core (``docs/sensitivities.md``, "Speed").
"""

from __future__ import annotations

import logging
from pathlib import Path

import casadi as ca
import numpy as np

from whatmatters.codegen import DEFAULT_FLAGS, CompileError, CompiledFunction, evaluate
from whatmatters.dynamics.learned import LearnedDynamics
from whatmatters.dynamics.residual_hessian import ResidualHessian
from whatmatters.dynamics.rigid_body import weighted_inverse_dynamics_hessian
from whatmatters.sensitivity.derivatives import rk4_adjoints, rk4_nodes

__all__ = ["LearnedStageDerivatives"]

log = logging.getLogger(__name__)

#: Samples whose nodes go through the residual part in one batch.
CHUNK = 16


def _nodes_function(model: LearnedDynamics, dt: float) -> ca.Function:
    """``(x, u, p, lam) -> (Hf_nom, s, acc, w, a_y, ds)`` for one stage.

    Outputs, the four nodes side by side: the nominal part of ``-Hf_i``
    over ``y = (q, qd, tau)`` (nz, 4 nz), the nodes' states ``s`` (nx, 4),
    accelerations (n, 4), weights ``w`` (n, 4), ``a_y`` (n, 4 nz) and
    ``D_i``'s state rows ``ds`` (nx, 4 nz). The products ``D_i' Hf_i D_i``
    are left to the caller, once for the nominal and the residual part together.
    """
    nx, nu, npar, n = model.nx, model.nu, model.n_params, model.nq
    xs, us, ps = ca.SX.sym("x", nx), ca.SX.sym("u", nu), ca.SX.sym("p", npar)
    fj = ca.Function("wm_learned_fj", [xs, us, ps], [*model.state_derivative_jacobian(xs, us, ps)])
    psi_nom = weighted_inverse_dynamics_hessian(model.nominal.chain)  # (q, qd, qdd, w) -> (3n, 3n)

    x, u, p, lam = ca.MX.sym("x", nx), ca.MX.sym("u", nu), ca.MX.sym("p", npar), ca.MX.sym("lam", nx)
    nodes = rk4_nodes(fj, x, u, p, dt)[0]
    outs: list[list[ca.MX]] = [[], [], [], [], [], []]
    for (s_i, ds_i, k_i, j_i), kbar in zip(nodes, rk4_adjoints(nodes, lam, dt)):
        acc, a_y = k_i[n:], ca.densify(j_i[n:, :])
        w = ca.mtimes(j_i[n:, 2 * n :].T, kbar[n:])  # M^-1 kbar_v (d qdd / d tau = M^-1)
        psi = psi_nom(s_i[:n], s_i[n:], acc, w)  # over (q, qd, a)
        psi_yy = ca.diagcat(psi[: 2 * n, : 2 * n], ca.MX(n, n))
        cross = ca.mtimes(ca.vertcat(psi[: 2 * n, 2 * n :], ca.MX(n, n)), a_y)
        for lst, val in zip(outs, (ca.densify(psi_yy + cross + cross.T), s_i, acc, w, a_y, ca.densify(ds_i))):
            lst.append(val)
    return ca.Function("wm_learned_nodes", [x, u, p, lam], [ca.horzcat(*lst) for lst in outs])


class LearnedStageDerivatives:
    """The multiplier-weighted stage Hessians ``W`` of a learned model (see the module docstring).

    Args:
        model: The learned model (its architecture; weights and context come with ``p``).
        dt: Step of the RK4 map, s.
        horizon: Number of stages N.
        flags: C compiler flags (None: :data:`whatmatters.codegen.DEFAULT_FLAGS`).
        cache_dir: Cache root of the compiled function.
    """

    def __init__(self, model: LearnedDynamics, dt: float, horizon: int, flags: str | None = None, cache_dir: Path | None = None) -> None:
        self.n, self.nx, self.nu, self.nq = horizon, model.nx, model.nu, model.nq
        # every stage in one call (p shared): one C loop instead of N calls from Python
        stages = _nodes_function(model, dt).map("wm_learned_nodes_map", "serial", horizon, [2], [])
        self._nodes: ca.Function | CompiledFunction = stages
        try:  # compiled once per architecture, dt, horizon, flags and CPU (cached)
            self._nodes = CompiledFunction(stages, DEFAULT_FLAGS if flags is None else flags, cache_dir)
        except CompileError as exc:
            log.warning("learned stage derivatives evaluated in CasADi's VM: %s", exc)
        self.residual = ResidualHessian(model.residual)

    def _stage_nodes(self, x: np.ndarray, u: np.ndarray, p: np.ndarray, lam: np.ndarray) -> list[np.ndarray]:
        """One sample: psi_nom (N, 4, nz, nz), s (N, 4, nx), acc (N, 4, n), w (N, 4, n), a_y (N, 4, n, nz), ds (N, 4, nx, nz)."""
        nx, nq, nz = self.nx, self.nq, self.nx + self.nu
        p = np.asarray(p, dtype=float)
        outs = [np.asarray(o) for o in evaluate(self._nodes, x[: self.n].T, u[: self.n].T, p, lam[: self.n].T)]
        psi_nom, s, acc, w, a_y, ds = (o.reshape(o.shape[0], self.n, -1) for o in outs)  # [row, stage, (node, col)]
        n = self.n  # columns: the stages' blocks side by side, in each the four nodes'
        return [
            psi_nom.reshape(nz, n, 4, nz).transpose(1, 2, 0, 3),
            s.reshape(nx, n, 4).transpose(1, 2, 0),
            acc.reshape(nq, n, 4).transpose(1, 2, 0),
            w.reshape(nq, n, 4).transpose(1, 2, 0),
            a_y.reshape(nq, n, 4, nz).transpose(1, 2, 0, 3),
            ds.reshape(nx, n, 4, nz).transpose(1, 2, 0, 3),
        ]

    def hessians(self, x: np.ndarray, u: np.ndarray, p: np.ndarray, lam: np.ndarray) -> np.ndarray:
        """One sample: W (N, nz, nz) at x_0..x_{N-1} (N, nx), u (N, nu), p (n_params,), lambda_1..lambda_N (N, nx)."""
        return self.hessians_many(x[None], u[None], np.asarray(p, dtype=float)[None], lam[None])[0]

    def hessians_many(self, x: np.ndarray, u: np.ndarray, p: np.ndarray, lam: np.ndarray) -> np.ndarray:
        """W (S, N, nz, nz) for S samples: x (S, N, nx), u (S, N, nu), p (S, n_params), lam (S, N, nx)."""
        return np.concatenate([self._chunk(x[i : i + CHUNK], u[i : i + CHUNK], p[i : i + CHUNK], lam[i : i + CHUNK]) for i in range(0, x.shape[0], CHUNK)])

    def _chunk(self, x: np.ndarray, u: np.ndarray, p: np.ndarray, lam: np.ndarray) -> np.ndarray:
        n, nx, nq, nz = self.n, self.nx, self.nq, self.nx + self.nu
        parts = [self._stage_nodes(x[i], u[i], p[i], lam[i]) for i in range(x.shape[0])]
        psi_nom, s, acc, w, a_y, ds = (np.stack([part[j] for part in parts]) for j in range(6))  # (S, N, 4, ...)
        nodes = x.shape[0] * n * 4
        s, acc, w = s.reshape(nodes, nx), acc.reshape(nodes, nq), w.reshape(nodes, nq)
        a_y, ds = a_y.reshape(nodes, nq, nz), ds.reshape(nodes, nx, nz)
        p = np.asarray(p, dtype=float)
        nw = p.shape[1] - self.residual.cfg.context_dim
        if np.all(p[:, :nw] == p[0, :nw]):  # one model's weights (always, in practice): contexts per node only
            z = np.repeat(p[:, nw:], n * 4, axis=0)
            qq, q_qd, qd_qd, q_a = self.residual.blocks_with(p[0], z, s[:, :nq], s[:, nq:], acc, w)
        else:
            qq, q_qd, qd_qd, q_a = self.residual.blocks(np.repeat(p, n * 4, axis=0), s[:, :nq], s[:, nq:], acc, w)
        psi = psi_nom.reshape(nodes, nz, nz).copy()  # over y = (q, qd, tau); the residual's has no tau terms
        psi[:, :nq, :nq] += qq
        psi[:, :nq, nq:nx] += q_qd
        psi[:, nq:nx, :nq] += q_qd.transpose(0, 2, 1)
        psi[:, nq:nx, nq:nx] += qd_qd
        cross = q_a @ a_y  # psi_ya a_y: only the q rows of psi_ya are nonzero
        psi[:, :nq] += cross
        psi[:, :, :nq] += cross.transpose(0, 2, 1)
        d = np.zeros((nodes, nz, nz))
        d[:, :nx], d[:, nx:, nx:] = ds, np.eye(self.nu)
        w_all = -(d.transpose(0, 2, 1) @ psi @ d).reshape(x.shape[0], n, 4, nz, nz).sum(axis=2)
        return 0.5 * (w_all + w_all.transpose(0, 1, 3, 2))
