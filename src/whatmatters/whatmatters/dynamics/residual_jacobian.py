"""The deep Lagrangian residual and its exact derivatives, structured by hand (CasADi).

The MPC's RK4 Jacobian needs ``d tau_res / d(q, qd)``, which holds second
derivatives of the networks w.r.t. q (``c_res`` is built from dH/dq, ``g_res``
is dV/dq). CasADi's generic AD of :meth:`LagrangianResidual.casadi_terms`
gets them with ~167k instructions per evaluation; the same quantities from
the networks' layer structure take a fraction of that:

* first derivatives ``dL/dq`` by forward mode in 7 directions (``P_l = da_l/dq``);
* the mixed second derivative ``d/dq (dL/dq . qd)`` by forward-over-forward
  along qd (one extra direction per q);
* Hessians of scalar network outputs ``w . o(q)`` (for ``V`` and for
  ``qd' H qd``) as ``sum_l P_l' diag(g_l tanh''(a_l)) P_l + diag(phi'' g_0)``,
  ``g_l`` the back-propagated output weights (the only nonlinearities are the
  tanh layers and the cos/sin features).

With ``H = L L'``, ``a = L' qd``, ``Ldot = sum_k dL/dq_k qd_k`` and
``K = qd' H qd = |a|^2``::

    c_res        = Ldot a + L Ldot' qd - 1/2 dK/dq
    dc/dqd[:, m] = Hdot[:, m] + (dH/dq_m qd) - (dH/dq_. qd)_m        (Christoffel form)
    dc/dq[:, l]  = d/dq_l (Ldot a + L Ldot' qd) - 1/2 d2K/dq dq_l
    d2K/dq2      = 2 (E' E + hess(qd' L(q) a)),  E[:, k] = dL/dq_k' qd (a held fixed)

The networks' passes are two functions called from the expression (never
inlined): the L network's (its forward pass with ``dL/dq``, the mixed
derivative along ``qd`` and the Hessian of ``w . L(q)``) and the V
network's. They run as the vectorised C kernels of
:mod:`whatmatters.dynamics.residual_kernels`, ~2x faster than CasADi's scalar
code of the same passes, which stays as the reference (``kernels=False``)
and as the fallback without gcc. In that SX form the L passes are three
nested functions, so the generated C holds functions of ~20,000 lines
instead of one of ~90,000 (GCC's register allocation, most of a build, grows
faster than linearly with a function's size).

Tested against CasADi's AD of ``casadi_terms`` and against finite differences
(``test/dynamics/test_residual_jacobian.py``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import casadi as ca
import numpy as np

from whatmatters.codegen import CompileError
from whatmatters.dynamics.residual_kernels import residual_kernels

__all__ = ["ResidualDerivatives", "residual_derivatives"]

log = logging.getLogger(__name__)

NQ = 7


@dataclass
class _Forward:
    """A tanh MLP's forward pass with its first derivatives w.r.t. q.

    Attributes:
        out: Output o, (m, 1).
        d_out: do/dq, (m, 7).
        h: Hidden activations per layer, (width, 1) each.
        slope: tanh'(a_l) = 1 - h_l^2 per layer.
        p: da_l/dq per layer, (width, 7).
    """

    out: ca.SX
    d_out: ca.SX
    h: list[ca.SX]
    slope: list[ca.SX]
    p: list[ca.SX]


def _cols(v: ca.SX, n: int = NQ) -> ca.SX:
    return ca.repmat(v, 1, n)


def _forward(layers: list[tuple[ca.SX, ca.SX]], phi: ca.SX, cos: ca.SX, sin: ca.SX) -> _Forward:
    """Forward pass of an MLP on ``phi = [cos q, sin q, z]`` with do/dq."""
    w1 = layers[0][0]
    p_l = ca.mtimes(w1[:, :NQ], ca.diag(-sin)) + ca.mtimes(w1[:, NQ : 2 * NQ], ca.diag(cos))
    a = ca.mtimes(w1, phi) + layers[0][1]
    hs, slopes, ps = [], [], []
    for weight, bias in layers[1:]:
        h = ca.tanh(a)
        slope = 1.0 - h * h
        hs.append(h)
        slopes.append(slope)
        ps.append(p_l)
        p_l = ca.mtimes(weight, _cols(slope) * p_l)
        a = ca.mtimes(weight, h) + bias
    return _Forward(a, p_l, hs, slopes, ps)


def _mixed(fw: _Forward, layers: list[tuple[ca.SX, ca.SX]], v: ca.SX, cos: ca.SX, sin: ca.SX) -> ca.SX:
    """``d/dq (do/dq . v)`` for a fixed direction v: (m, 7), forward over forward."""
    w1 = layers[0][0]
    a_v = ca.mtimes(fw.p[0], v)
    a_qv = ca.mtimes(w1[:, :NQ], ca.diag(-cos * v)) + ca.mtimes(w1[:, NQ : 2 * NQ], ca.diag(-sin * v))
    for (weight, _), h, slope, p_l in zip(layers[1:], fw.h, fw.slope, fw.p):
        curv = -2.0 * h * slope  # tanh''(a)
        h_qv = _cols(curv * a_v) * p_l + _cols(slope) * a_qv
        a_v = ca.mtimes(weight, slope * a_v)
        a_qv = ca.mtimes(weight, h_qv)
    return a_qv


def _hessian(fw: _Forward, layers: list[tuple[ca.SX, ca.SX]], w: ca.SX, cos: ca.SX, sin: ca.SX) -> tuple[ca.SX, ca.SX]:
    """Gradient (7, 1) and Hessian (7, 7) w.r.t. q of the scalar ``w . o(q)``."""
    g = ca.mtimes(layers[-1][0].T, w)  # adjoint of the last hidden layer's output
    hess = ca.SX.zeros(NQ, NQ)
    for i in reversed(range(len(fw.h))):
        curv = -2.0 * fw.h[i] * fw.slope[i]  # tanh''(a_i)
        hess += ca.mtimes(fw.p[i].T, _cols(g * curv) * fw.p[i])
        g = ca.mtimes(layers[i][0].T, fw.slope[i] * g)  # adjoint of layer i's input
    # g: adjoint of phi = [cos q, sin q, z]
    hess += ca.diag(-cos * g[:NQ] - sin * g[NQ : 2 * NQ])
    return -sin * g[:NQ] + cos * g[NQ : 2 * NQ], hess


@dataclass
class ResidualDerivatives:
    """The residual terms at (q, qd) and their exact derivatives, as SX.

    Attributes:
        low: L, (7, 7) lower triangular; ``h_res = L L'``.
        d_low: dL/dq_l for l = 0..6, (7, 7) each.
        h_res: Residual inertia, (7, 7).
        torque: ``c_res + g_res + d_res qd``, Nm, (7, 1).
        d_torque_dq: (7, 7).
        d_torque_dqd: (7, 7).
    """

    low: ca.SX
    d_low: list[ca.SX]
    h_res: ca.SX
    torque: ca.SX
    d_torque_dq: ca.SX
    d_torque_dqd: ca.SX

    def d_h_times(self, w: ca.SX) -> ca.SX:
        """``[dH/dq_0 w, ..., dH/dq_6 w]``, (7, 7): the derivative of ``h_res w`` at fixed w."""
        lw = ca.mtimes(self.low.T, w)
        return ca.horzcat(*[ca.mtimes(dl, lw) + ca.mtimes(self.low, ca.mtimes(dl.T, w)) for dl in self.d_low])


def _tril(vals: ca.SX, rows: np.ndarray, cols: np.ndarray) -> ca.SX:
    out = ca.SX(ca.Sparsity.lower(NQ))
    for n, (i, j) in enumerate(zip(rows, cols)):
        out[i, j] = vals[n]
    return out


def _fields(fw: _Forward) -> list[ca.SX]:
    return [fw.out, fw.d_out, *fw.h, *fw.slope, *fw.p]


def _from_fields(vals: list[ca.SX], layers: int) -> _Forward:
    n = layers
    return _Forward(vals[0], vals[1], list(vals[2 : 2 + n]), list(vals[2 + n : 2 + 2 * n]), list(vals[2 + 2 * n : 2 + 3 * n]))


def _symbols_like(fw: _Forward) -> _Forward:
    """Fresh symbols with the shapes of a forward pass's fields (the inputs of a called function)."""
    return _from_fields([ca.SX.sym(f"fw{i}", *v.shape) for i, v in enumerate(_fields(fw))], len(fw.h))


class _Passes:
    """Calls the networks' passes: the SX functions, or their C kernels (:mod:`whatmatters.dynamics.residual_kernels`)."""

    def __init__(self, residual: object, kernels: bool) -> None:
        self.residual, self.kernels = residual, kernels

    def __call__(self, name: str, inputs: list[ca.SX], outputs: list[ca.SX], args: list[ca.SX]) -> list[ca.SX]:
        """``outputs(inputs)`` as a function called (never inlined) at ``args``: its own C function."""
        fn = ca.Function(name, inputs, outputs)
        if self.kernels:
            shapes = ([fn.size_in(i) for i in range(fn.n_in())], [fn.size_out(i) for i in range(fn.n_out())])
            kernel = self._kernel(name, shapes)
            if kernel is not None:
                fn = kernel
        return fn.call(args, False, True)

    def _kernel(self, name: str, shapes: tuple[list[tuple[int, int]], list[tuple[int, int]]]) -> ca.Function | None:
        try:
            compiled = residual_kernels(self.residual)
        except CompileError as exc:
            log.warning("the residual's network passes run as CasADi SX code (%s)", exc)
            self.kernels = False
            return None
        kernel = compiled.functions[name]
        found = ([kernel.size_in(i) for i in range(kernel.n_in())], [kernel.size_out(i) for i in range(kernel.n_out())])
        if found != shapes:
            raise ValueError(f"the C kernel {kernel.name()} has the shapes {found}, the SX pass {name} {shapes}")
        return kernel


def _sigmoids(raw: ca.SX, diag: ca.DM) -> tuple[ca.SX, ca.SX, ca.SX]:
    """L's entries from the raw outputs (softplus on the diagonal) and their first two derivatives."""
    sig = 1.0 / (1.0 + ca.exp(-raw))  # softplus' on the diagonal entries
    vals = diag * (ca.fmax(raw, 0) + ca.log1p(ca.exp(-ca.fabs(raw)))) + (1.0 - diag) * raw
    return vals, diag * sig + (1.0 - diag), diag * sig * (1.0 - sig)


def _l_passes(residual: object, layers: list[tuple[ca.SX, ca.SX]], phi: ca.SX, cos: ca.SX, sin: ca.SX, qd: ca.SX, p: ca.SX) -> list[ca.SX]:
    """The L network's passes on symbols: ``[o (28), do/dq (28, 7), d/dq (do/dq . qd) (28, 7), hess(w . L(q)) (7, 7)]``,
    ``w_ij = qd_i (L' qd)_j`` at fixed ``L' qd``.

    The forward pass, its mixed derivative and the Hessian are functions of their own,
    called (never inlined) from these expressions (see the module docstring).
    """
    fw_def = _forward(layers, phi, cos, sin)
    fw = _from_fields(ca.Function("res_l_forward", [cos, sin, p], _fields(fw_def)).call([cos, sin, p], False, True), len(fw_def.h))
    fws = _symbols_like(fw_def)
    mixed = ca.Function("res_l_mixed", [cos, sin, qd, p, *_fields(fws)], [_mixed(fws, layers, qd, cos, sin)])
    o_qv = mixed.call([cos, sin, qd, p, *_fields(fw)], False, True)[0]
    rows, cols = np.tril_indices(NQ)
    diag = ca.DM((rows == cols).astype(float))
    vals = _sigmoids(fw.out, diag)[0] + residual.cfg.diag_floor * diag  # type: ignore[attr-defined]
    a = ca.mtimes(_tril(vals, rows, cols).T, qd)
    w = ca.vertcat(*[qd[i] * a[j] for i, j in zip(rows, cols)])
    ws = ca.SX.sym("w", w.shape[0])
    _, dsig_s, d2sig_s = _sigmoids(fws.out, diag)
    hess_def = _hessian(fws, layers, dsig_s * ws, cos, sin)[1] + ca.mtimes(fws.d_out.T, _cols(d2sig_s * ws) * fws.d_out)
    hess = ca.Function("res_l_hessian", [cos, sin, p, ws, *_fields(fws)], [hess_def]).call([cos, sin, p, w, *_fields(fw)], False, True)[0]
    return [fw.out, fw.d_out, o_qv, hess]


def residual_derivatives(residual: object, q: ca.SX, qd: ca.SX, p: ca.SX, kernels: bool = True) -> ResidualDerivatives:
    """The residual's terms and exact Jacobians from the networks' structure.

    Args:
        residual: A :class:`~whatmatters.dynamics.residual.LagrangianResidual`.
        q, qd: 7 x 1 SX, rad and rad/s.
        p: Flat parameters (weights then context), as for ``casadi_terms``.
        kernels: The networks' passes as C kernels (compiled on first use per
            architecture; without gcc, logged, the SX functions); False: as
            SX functions (the reference they are tested against).
    """
    _call = _Passes(residual, kernels)
    p = ca.SX(p)
    # the networks' passes, on their own symbols (cos q and sin q, computed once here, qd, p), called at (q, qd, p)
    cos, sin, qds, ps = ca.SX.sym("cos", NQ), ca.SX.sym("sin", NQ), ca.SX.sym("qd", NQ), ca.SX.sym("p", p.shape[0])
    trig = [ca.cos(q), ca.sin(q)]
    rows, cols = np.tril_indices(NQ)
    diag = ca.DM((rows == cols).astype(float))
    values = residual.casadi_values(ps)
    phi = ca.vertcat(cos, sin, values["context"])
    l_layers = residual.casadi_layers("l_net", values)
    out, d_out, o_qv, hess_s = _call("res_l", [cos, sin, qds, ps], _l_passes(residual, l_layers, phi, cos, sin, qds, ps), [*trig, qd, p])
    v_layers = residual.casadi_layers("v_net", values)
    g_res, hess_v = _call("res_v", [cos, sin, ps], list(_hessian(_forward(v_layers, phi, cos, sin), v_layers, ca.DM.ones(1, 1), cos, sin)), [*trig, p])

    vals, dsig, d2sig = _sigmoids(out, diag)
    vals = vals + residual.cfg.diag_floor * diag
    d_vals = _cols(dsig) * d_out  # (28, 7)
    low = _tril(vals, rows, cols)
    d_low = [_tril(d_vals[:, k], rows, cols) for k in range(NQ)]

    o_v = ca.mtimes(d_out, qd)  # do/dq . qd
    ldot = _tril(dsig * o_v, rows, cols)
    d_ldot_vals = _cols(d2sig * o_v) * d_out + _cols(dsig) * o_qv
    d_ldot = [_tril(d_ldot_vals[:, k], rows, cols) for k in range(NQ)]

    a = ca.mtimes(low.T, qd)
    ad = ca.mtimes(ldot.T, qd)
    e = ca.horzcat(*[ca.mtimes(dl.T, qd) for dl in d_low])  # E[:, k] = dL/dq_k' qd
    grad_k = 2.0 * ca.mtimes(e.T, a)  # dK/dq
    c_res = ca.mtimes(ldot, a) + ca.mtimes(low, ad) - 0.5 * grad_k

    # d2K/dq2 = 2 (E'E + hess(w . L(q))), w_ij = qd_i a_j at fixed a (hess_s, from the L pass)
    hess_k = 2.0 * (ca.mtimes(e.T, e) + hess_s)
    ldot_e = ca.mtimes(ldot, e)
    term = ca.horzcat(
        *[ca.mtimes(dld, a) + ldot_e[:, k] + ca.mtimes(d_low[k], ad) + ca.mtimes(low, ca.mtimes(dld.T, qd)) for k, dld in enumerate(d_ldot)]
    )
    dc_dq = term - 0.5 * hess_k

    h_dot = ca.mtimes(ldot, low.T) + ca.mtimes(low, ldot.T)
    b = ca.horzcat(*[ca.mtimes(d_low[m], a) + ca.mtimes(low, e[:, m]) for m in range(NQ)])  # dH/dq_m qd
    dc_dqd = h_dot + b - b.T

    torque = c_res + g_res
    d_qd = dc_dqd
    if residual.damping_raw is not None:
        damp_raw = residual.casadi_values(p)["damping_raw"]  # at the call's parameters, not the functions' symbols
        damp = ca.fmax(damp_raw, 0) + ca.log1p(ca.exp(-ca.fabs(damp_raw)))
        torque = torque + damp * qd
        d_qd = d_qd + ca.diag(damp)
    return ResidualDerivatives(low, d_low, ca.mtimes(low, low.T), torque, dc_dq + hess_v, d_qd)
