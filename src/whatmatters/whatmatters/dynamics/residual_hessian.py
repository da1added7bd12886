"""Second derivatives of the deep Lagrangian residual's inverse dynamics (numpy; a C kernel by default).

The exact S_hat needs, at every RK4 node of every stage, the multiplier-weighted
Hessian of the learned model's vector field. Through the inverse dynamics
(:meth:`whatmatters.dynamics.rigid_body.RigidBodyDynamics.state_derivative_hessian`)
it is linear in the Hessian of the scalar ``psi(q, qd, a) = w' ID(q, qd, a)``
at fixed ``w``, and the learned model's ``ID`` is the nominal one plus

    psi_res = w' H_res(q) a + w' c_res(q, qd) + w' g_res(q) + w' (d_res * qd)

with ``H_res = L L'``, ``w' c_res = w' H_qd qd - 1/2 qd' H_w qd`` (``H_v`` is the
derivative of H along ``v``: ``sum_m v_m dH/dq_m``) and ``w' g_res = D_w V``.
Its Hessian blocks need the networks' derivatives w.r.t. q up to the third
order, the third only along ``qd`` and ``w``. Every block is a sum of

* products of first derivatives (``L``, ``dL/dq_k``, ``D_v L``, ``d D_v L / dq_k``
  from one forward pass with the directions ``v = qd, w``), and
* q-Hessians of scalars ``c0 . o + sum_v c_v . D_v o`` of a network's output ``o``
  at fixed adjoints, by forward-over-reverse: a reverse pass through the
  stored forward pass, each elementwise node adding
  ``P' diag(.) P`` terms (``P = da/dq``; never a third-order array).

Written here as batched numpy over all nodes at once (no autograd graph),
the weights read from the CasADi form's parameter vector: a new checkpoint
needs nothing rebuilt. :meth:`ResidualHessian.blocks_with` runs the same
algebra as a C kernel (:mod:`whatmatters.dynamics.residual_hessian_kernel`,
~3x faster); this numpy form is its reference and its fallback without gcc.

The damping term is linear in qd and the armature linear in a: neither has a
second derivative. Tested against torch's Hessian of the residual and finite
differences (``test/dynamics/test_residual_hessian.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from whatmatters.codegen import CompileError
from whatmatters.dynamics.residual import LagrangianResidual
from whatmatters.dynamics.residual_hessian_kernel import PsiKernel

__all__ = ["ResidualHessian"]

log = logging.getLogger(__name__)

NQ = 7


Elementwise = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]


@dataclass
class _Node:
    """An elementwise node ``h = g(a)`` of a forward pass, with what the reverse pass needs.

    Attributes:
        p: da/dq_k, (B, 7(k), m).
        av: Directional derivatives D_v a, (B, V, m).
        pv: Their q-derivatives, (B, V, 7(k), m).
        g1: g' at a, (B, m).
        g2: g'' at a, (B, m).
        g3: Third derivative of g at a, (B, m).
    """

    p: np.ndarray
    av: np.ndarray
    pv: np.ndarray
    g1: np.ndarray
    g2: np.ndarray
    g3: np.ndarray


@dataclass
class _Pass:
    """A network's forward pass at B nodes (directions held fixed).

    Attributes:
        out: Output o, (B, m).
        d_out: do/dq_k, (B, 7(k), m).
        out_v: D_v o, (B, V, m).
        d_out_v: d(D_v o)/dq_k, (B, V, 7(k), m).
        weights: The linear layers' weights, in order.
        nodes: The elementwise nodes; node i follows linear layer i.
    """

    out: np.ndarray
    d_out: np.ndarray
    out_v: np.ndarray
    d_out_v: np.ndarray
    weights: list[np.ndarray]
    nodes: list[_Node]


def _tanh(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """tanh and its first three derivatives, elementwise."""
    h = np.tanh(a)
    s1 = 1.0 - h * h
    return h, s1, -2.0 * h * s1, s1 * (6.0 * h * h - 2.0)


def _forward(layers: list[tuple[np.ndarray, np.ndarray]], q: np.ndarray, z: np.ndarray, dirs: np.ndarray, last: Elementwise | None) -> _Pass:
    """Forward pass on ``phi = [cos q, sin q, z]`` with do/dq and the directional derivatives along ``dirs``.

    Args:
        layers: (weight (m_out, m_in), bias (m_out,)) per linear layer; tanh between them.
        q: rad, (B, 7).  z: Contexts, (B, context_dim).  dirs: Directions, (B, V, 7).
        last: Elementwise map after the last layer (value and three derivatives), or None.
    """
    b, v = q.shape[0], dirs.shape[1]
    cos, sin = np.cos(q), np.sin(q)
    h = np.concatenate([cos, sin, z], axis=1)  # (B, m0)
    idx = np.arange(NQ)
    dh = np.zeros((b, NQ, h.shape[1]))
    dh[:, idx, idx], dh[:, idx, NQ + idx] = -sin, cos
    hv = np.zeros((b, v, h.shape[1]))
    hv[:, :, :NQ], hv[:, :, NQ : 2 * NQ] = -sin[:, None] * dirs, cos[:, None] * dirs
    dhv = np.zeros((b, v, NQ, h.shape[1]))
    dhv[:, :, idx, idx], dhv[:, :, idx, NQ + idx] = -cos[:, None] * dirs, -sin[:, None] * dirs
    nodes, weights = [], []
    for i, (weight, bias) in enumerate(layers):
        weights.append(weight)
        a, p, av, pv = h @ weight.T + bias, _right(dh, weight.T), _right(hv, weight.T), _right(dhv, weight.T)
        fn = _tanh if i < len(layers) - 1 else last
        if fn is None:
            return _Pass(a, p, av, pv, weights, nodes)
        h, g1, g2, g3 = fn(a)
        nodes.append(_Node(p, av, pv, g1, g2, g3))
        dh = g1[:, None] * p
        hv = g1[:, None] * av
        dhv = (g2[:, None] * av)[:, :, None] * p[:, None] + g1[:, None, None] * pv
    return _Pass(h, dh, hv, dhv, weights, nodes)


def _q_hessian(fw: _Pass, q: np.ndarray, dirs: np.ndarray, c0: np.ndarray, cv: np.ndarray) -> np.ndarray:
    """d2/dq2 (B, 7, 7) of ``c0 . o + sum_v cv_v . D_v o`` at fixed adjoints c0 (B, m), cv (B, V, m).

    Forward-over-reverse through the stored pass: each elementwise node
    ``h = g(a)``, ``D_v h = g'(a) D_v a`` adds
    ``P' diag(hbar g'' + sum_v hbar_v g''' D_v a) P + sum_v (P' diag(hbar_v g'') P_v + transpose)``
    with the back-propagated adjoints ``hbar``, ``hbar_v``; the cos/sin
    features add to the diagonal; linear layers add nothing.
    """
    hess = np.zeros((q.shape[0], NQ, NQ))
    hbar, hbar_v = c0, cv
    for i in reversed(range(len(fw.weights))):
        if i < len(fw.nodes):
            nd = fw.nodes[i]
            av_hbar = (nd.av * hbar_v).sum(axis=1)
            d = nd.g2 * hbar + nd.g3 * av_hbar
            cross = nd.p @ ((nd.g2[:, None] * hbar_v)[:, :, None] * nd.pv).sum(axis=1).transpose(0, 2, 1)
            hess += nd.p @ (d[:, None] * nd.p).transpose(0, 2, 1) + cross + cross.transpose(0, 2, 1)
            hbar, hbar_v = nd.g1 * hbar + nd.g2 * av_hbar, nd.g1[:, None] * hbar_v
        hbar, hbar_v = hbar @ fw.weights[i], hbar_v @ fw.weights[i]
    cos, sin = np.cos(q), np.sin(q)
    diag = -cos * hbar[:, :NQ] - sin * hbar[:, NQ : 2 * NQ]
    diag += (dirs * (sin[:, None] * hbar_v[:, :, :NQ] - cos[:, None] * hbar_v[:, :, NQ : 2 * NQ])).sum(axis=1)
    idx = np.arange(NQ)
    hess[:, idx, idx] += diag
    return hess


def _right(x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``x @ m`` over the last axis of x (..., n) with m (n, k), as one matrix product."""
    return (x.reshape(-1, x.shape[-1]) @ m).reshape(x.shape[:-1] + (m.shape[1],))


def _apply(entries: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """Entries (B, ..., 28) through per-node maps (B, 28, 7): (B, ..., 7)."""
    flat = entries.reshape(entries.shape[0], -1, entries.shape[-1])
    return (flat @ maps).reshape(entries.shape[:-1] + (NQ,))


class ResidualHessian:
    """Hessian blocks of ``psi_res`` for one residual architecture, weights from the parameter vector.

    Args:
        residual: The residual module (its layout and sizes; the weights are taken from ``p``).
        compiled: Evaluate :meth:`blocks_with` with the C kernel
            (:mod:`whatmatters.dynamics.residual_hessian_kernel`, compiled on
            first use; without gcc, logged, numpy); False: numpy (the reference).
    """

    def __init__(self, residual: LagrangianResidual, compiled: bool = True) -> None:
        self.cfg = residual.cfg
        self._residual = residual
        self._kernel: PsiKernel | None = None
        self.compiled = compiled
        self.layout = residual.parameter_layout()
        rows, cols = np.tril_indices(NQ)
        self.rows, self.cols, self.diag = rows, cols, rows == cols
        eye = np.eye(NQ)
        self._row_hot, self._col_hot = eye[rows], eye[cols]  # (28, 7) one-hot
        self._split: tuple[np.ndarray, dict[str, np.ndarray]] | None = None  # (weights, named views into them)

    def _layers(self, p: np.ndarray, prefix: str) -> list[tuple[np.ndarray, np.ndarray]]:
        """(weight, bias) of each linear layer of ``l_net`` or ``v_net`` from the flat vector (torch's row-major shapes).

        The split of the last weight vector is kept (a copy): a sample's two
        calls and the next samples of the same model reuse it, one comparison
        instead of ~0.2 ms of slicing.
        """
        nw = p.shape[-1] - self.cfg.context_dim
        if self._split is None or not np.array_equal(self._split[0], p[:nw]):
            weights, values, offset = np.array(p[:nw], dtype=float), {}, 0
            for name, shape in self.layout:
                size = int(np.prod(shape))
                if name != "context":
                    values[name] = weights[offset : offset + size].reshape(shape)
                offset += size
            self._split = (weights, values)
        values = self._split[1]
        return [(values[n], values[n[: -len("weight")] + "bias"]) for n, _ in self.layout if n.startswith(prefix + ".") and n.endswith(".weight")]

    def _compiled_kernel(self) -> PsiKernel | None:
        """The C kernel of this architecture (built on first use), or None (numpy)."""
        if self.compiled and self._kernel is None:
            try:
                self._kernel = PsiKernel(self._residual)
            except CompileError as exc:
                log.warning("the residual's psi Hessian runs in numpy (%s)", exc)
                self.compiled = False
        return self._kernel if self.compiled else None

    def _layers_vector(self, p: np.ndarray) -> np.ndarray:
        """The weights of ``p`` as one contiguous vector (kept between calls, as :meth:`_layers`' split)."""
        self._layers(p, "l_net")
        assert self._split is not None
        return self._split[0]

    def _lower_map(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """L's entries from the L network's output (B, 28): softplus + floor on the diagonal, identity elsewhere."""
        sig = 1.0 / (1.0 + np.exp(-raw))
        s2 = sig * (1.0 - sig)
        sp = np.maximum(raw, 0.0) + np.log1p(np.exp(-np.abs(raw)))
        d = self.diag
        return np.where(d, sp + self.cfg.diag_floor, raw), np.where(d, sig, 1.0), np.where(d, s2, 0.0), np.where(d, s2 * (1.0 - 2.0 * sig), 0.0)

    def _tril(self, flat: np.ndarray) -> np.ndarray:
        """Entries (..., 28) to lower-triangular matrices (..., 7, 7)."""
        out = np.zeros(flat.shape[:-1] + (NQ, NQ))
        out[..., self.rows, self.cols] = flat
        return out

    def _transposed(self, y: np.ndarray) -> np.ndarray:
        """(B, 28, 7) maps of L's entries to ``L' y``: entry (i, j) adds ``L_ij y_i`` to component j."""
        return y[:, self.rows, None] * self._col_hot

    def _straight(self, y: np.ndarray) -> np.ndarray:
        """(B, 28, 7) maps of L's entries to ``L y``: entry (i, j) adds ``L_ij y_j`` to component i."""
        return y[:, self.cols, None] * self._row_hot

    def blocks(self, p: np.ndarray, q: np.ndarray, qd: np.ndarray, a: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The nonzero Hessian blocks of ``psi_res`` at B nodes.

        Args:
            p: Parameter vectors (weights then context), (B, n_params) or (n_params,).
            q, qd: Joint positions rad and velocities rad/s, (B, 7).
            a: Joint accelerations rad/s^2 (where ``psi`` is evaluated), (B, 7).
            w: The weight vector, (B, 7).

        Returns:
            ``psi_qq`` (B, 7, 7), ``psi_q_qd`` (B, 7, 7) (``[k, j] = d2 psi / dq_k dqd_j``),
            ``psi_qd_qd`` (B, 7, 7), ``psi_q_a`` (B, 7, 7) (``[k, j] = d2 psi / dq_k da_j``);
            ``psi_qd_a``, ``psi_aa`` and every ``tau`` block are zero.
        """
        p = np.asarray(p, dtype=float)
        p = np.broadcast_to(p, (q.shape[0], p.shape[-1])) if p.ndim == 1 else p
        nw = p.shape[1] - self.cfg.context_dim
        out = [np.empty((q.shape[0], NQ, NQ)) for _ in range(4)]
        rest = np.ones(q.shape[0], dtype=bool)
        while rest.any():  # one pass per distinct weight vector (one in practice: the model's own)
            first = int(np.argmax(rest))
            group = rest & np.all(p[:, :nw] == p[first, :nw], axis=1)
            part = self.blocks_with(p[first], p[group, nw:], q[group], qd[group], a[group], w[group])
            for o, blk in zip(out, part):
                o[group] = blk
            rest &= ~group
        return out[0], out[1], out[2], out[3]

    def blocks_with(
        self, p: np.ndarray, z: np.ndarray, q: np.ndarray, qd: np.ndarray, a: np.ndarray, w: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`blocks` for nodes that share one weight vector: p (n_params,; its context part unused)
        and the nodes' contexts z (B, context_dim); other arguments and results as :meth:`blocks`."""
        kernel = self._compiled_kernel()
        if kernel is not None:
            return kernel.blocks(self._layers_vector(p), z, q, qd, a, w)
        dirs = np.stack([qd, w], axis=1)  # direction 0: qd, 1: w
        fw = _forward(self._layers(p, "l_net"), q, z, dirs, self._lower_map)
        # L's entries (B, 28), dL/dq_k (B, 7(k), 28), D_v L (B, V, 28), d D_v L / dq_k (B, V, 7(k), 28)
        ent, ent_k, ent_v, ent_vk = fw.out, fw.d_out, fw.out_v, fw.d_out_v
        low, low_v = self._tril(ent), self._tril(ent_v)  # L (B, 7, 7), D_v L (B, V, 7, 7)
        mats = {name: (self._transposed(y), self._straight(y)) for name, y in (("w", w), ("qd", qd), ("a", a))}

        def t(e: np.ndarray, y: str) -> np.ndarray:
            return _apply(e, mats[y][0])  # L' y from entries

        def mv(e: np.ndarray, y: np.ndarray) -> np.ndarray:
            return _apply(e, self._straight(y))  # L y from entries

        pair = lambda x, y: x @ y.transpose(0, 2, 1)  # noqa: E731  [k, l] = x_k . y_l
        outer = lambda x, y: x[:, :, None] * y[:, None, :]  # noqa: E731
        lw, lq, la = t(ent, "w"), t(ent, "qd"), t(ent, "a")  # L' w (B, 7)
        kw, kq, ka = t(ent_k, "w"), t(ent_k, "qd"), t(ent_k, "a")  # [k] = L_k' w (B, 7, 7)
        vw, vq = t(ent_v, "w"), t(ent_v, "qd")  # [v] = L_v' w (B, V, 7)
        vkw, vkq = t(ent_vk, "w"), t(ent_vk, "qd")  # [v, k] = L_vk' w (B, V, 7, 7)

        def hess_l(c0: np.ndarray, cv: np.ndarray) -> np.ndarray:
            """q-Hessian of sum_ij c0_ij L_ij + sum_v cv_v,ij (D_v L)_ij, adjoints as (B, [V,] 7, 7) matrices."""
            return _q_hessian(fw, q, dirs, c0[:, self.rows, self.cols], cv[:, :, self.rows, self.cols])

        # psi_qq = d2/dq2 [ w' L L' a + w' H_qd qd - 1/2 qd' H_w qd + D_w V ]: second derivatives of the
        # networks through the adjoints, products of first derivatives as pairs
        c0 = outer(w, la) + outer(a, lw) + outer(w, vq[:, 0]) + outer(qd, vw[:, 0]) - outer(qd, vq[:, 1])
        cv = np.stack([outer(w, lq) + outer(qd, lw), -outer(qd, lq)], axis=1)
        pairs = pair(kw, ka) + pair(vkw[:, 0], kq) + pair(kw, vkq[:, 0]) - pair(vkq[:, 1], kq)
        psi_qq = hess_l(c0, cv) + pairs + pairs.transpose(0, 2, 1)
        fv = _forward(self._layers(p, "v_net"), q, z, w[:, None], None)
        psi_qq += _q_hessian(fv, q, w[:, None], np.zeros((q.shape[0], 1)), np.ones((q.shape[0], 1, 1)))

        # H_k w = L_k (L' w) + L (L_k' w), [k, j]
        hkw = mv(ent_k, lw) + pair(kw, low)

        def hv_k(v: int, y0: np.ndarray, yk: np.ndarray, yv: np.ndarray, yvk: np.ndarray) -> np.ndarray:
            """(d H_v / dq_k) y, [k, j]: H_v,k = L_vk L' + L_v L_k' + L_k L_v' + L L_vk'."""
            return (
                mv(ent_vk[:, v], y0) + pair(yk, low_v[:, v]) + mv(ent_k, yv[:, v]) + pair(yvk[:, v], low)
            )  # fmt: skip

        # [k, j] = w' H_jk qd + (H_qd,k w)_j - (H_w,k qd)_j
        s_jk = hess_l(outer(w, lq) + outer(qd, lw), np.zeros((q.shape[0], 2, NQ, NQ))) + pair(kw, kq) + pair(kq, kw)
        psi_q_qd = s_jk + hv_k(0, lw, kw, vw, vkw) - hv_k(1, lq, kq, vq, vkq)
        h_w = low_v[:, 1] @ low.transpose(0, 2, 1)  # L_w L'
        psi_qd_qd = hkw + hkw.transpose(0, 2, 1) - (h_w + h_w.transpose(0, 2, 1))
        return psi_qq, psi_q_qd, psi_qd_qd, hkw
