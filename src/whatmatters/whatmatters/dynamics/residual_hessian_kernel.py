"""The residual's psi Hessian blocks (:mod:`whatmatters.dynamics.residual_hessian`) as one C kernel.

The numpy form batches the nodes but spends ~40 us a node in many small
array operations. The same algebra written for the networks' shapes, node
by node, with the 7 q-tangents and the value of a unit in one 8-lane vector
(as in :mod:`whatmatters.dynamics.residual_kernels`):

1. both networks' forward passes along the directions (``qd`` and ``w`` for
   L, ``w`` for V), keeping each unit's ``da/dq``, ``D_v a``, ``d(D_v a)/dq``
   and the nonlinearity's first three derivatives;
2. the q-Hessians of the adjoint-weighted outputs by the reverse pass
   (``ResidualHessian``'s ``_q_hessian``), two for L and one for V;
3. the products of first derivatives (7 x 7 algebra on L's entries).

The weights come from the parameter vector at run time (no rebuild per
checkpoint). Compiled once per architecture (cached); the numpy form is the
fallback without gcc and the reference it is tested against
(``test/dynamics/test_residual_hessian.py``).
"""

from __future__ import annotations

import ctypes

import numpy as np

from whatmatters.codegen import DEFAULT_FLAGS, compile_source
from whatmatters.dynamics.kernel_common import COMMON_C, DIRECTIONS_C, TAG, TRIL_DIAGONAL, Net, layouts, tagged

__all__ = ["PsiKernel"]

NQ = 7


def _forward(net: Net, tag: str, nv: int, dirs: str, last: str | None) -> list[str]:
    """C statements of a forward pass with ``nv`` directions: per linear layer l the rows ``{tag}T{l}``,
    ``{tag}TV{l}`` (nv x width) and, for each node after it, ``{tag}g1_{l}`` ... and the next rows ``{tag}U{l}``."""
    d, o = net.dims, net.offsets
    out = [
        f"wm_v8 {tag}T0[{d[1]}], {tag}TV0[{nv * d[1]}];",
        f"wm_first_dirs({d[1]}, {d[0]}, p + {o[0][0]}, p + {o[0][1]}, cq, sq, z, {nv}, {dirs}, {tag}T0, {tag}TV0);",
    ]
    layers = len(o)
    for layer in range(layers):
        m = d[layer + 1]
        node = "tanh" if layer < layers - 1 else last
        if node is None:
            break
        out.append(f"double {tag}g1_{layer}[{m}], {tag}g2_{layer}[{m}], {tag}g3_{layer}[{m}];")
        out.append(f"wm_v8 {tag}U{layer}[{m}], {tag}UV{layer}[{nv * m}];")
        args = f"{tag}T{layer}, {tag}TV{layer}, {tag}g1_{layer}, {tag}g2_{layer}, {tag}g3_{layer}, {tag}U{layer}, {tag}UV{layer}"
        out.append(f"wm_node_tanh({m}, {nv}, {args});" if node == "tanh" else f"wm_node_lower({m}, {nv}, diag, FLOOR, {args});")
        if layer + 1 < layers:
            n_out = d[layer + 2]
            w, b = o[layer + 1]
            out += [
                f"wm_v8 {tag}T{layer + 1}[{n_out}], {tag}TV{layer + 1}[{nv * n_out}];",
                f"wm_rows({n_out}, {m}, p + {w}, {tag}U{layer}, {tag}T{layer + 1});",
                f"for (i = 0; i < {n_out}; ++i) {tag}T{layer + 1}[i][7] += p[{b} + i];",
                *(f"wm_rows({n_out}, {m}, p + {w}, {tag}UV{layer} + {v * m}, {tag}TV{layer + 1} + {v * n_out});" for v in range(nv)),
            ]
    return out


def _hessian(net: Net, tag: str, nv: int, dirs: str, has_last: bool, c0: str, cv: str, hess: str, uid: str) -> list[str]:
    """C statements: ``hess`` += the q-Hessian of ``c0 . o + sum_v cv_v . D_v o`` by the reverse pass."""
    d, o = net.dims, net.offsets
    layers = len(o)
    m = d[-1]
    out = [
        f"double hb{uid}[{max(d)}], hbv{uid}[{max(nv, 1) * max(d)}], nb{uid}[{max(nv, 1) * max(d)}];",
        f"for (i = 0; i < {m}; ++i) hb{uid}[i] = {c0}[i];",
        f"for (i = 0; i < {nv * m}; ++i) hbv{uid}[i] = {cv}[i];",
    ]
    for layer in reversed(range(layers)):
        m, n_in = d[layer + 1], d[layer]
        if layer < layers - 1 or has_last:
            g = f"{tag}g1_{layer}, {tag}g2_{layer}, {tag}g3_{layer}"
            out.append(f"wm_node_back({m}, {nv}, {tag}T{layer}, {tag}TV{layer}, {g}, hb{uid}, hbv{uid}, {hess});")
        out.append(f"wm_back({m}, {n_in}, p + {o[layer][0]}, 0, hb{uid}, nb{uid}); for (i = 0; i < {n_in}; ++i) hb{uid}[i] = nb{uid}[i];")
        out += [f"wm_back({m}, {n_in}, p + {o[layer][0]}, 0, hbv{uid} + {v * m}, nb{uid} + {v * n_in});" for v in range(nv)]
        out.append(f"for (i = 0; i < {nv * n_in}; ++i) hbv{uid}[i] = nb{uid}[i];")
    out.append(f"wm_features_dirs({d[0]}, {nv}, cq, sq, {dirs}, hb{uid}, hbv{uid}, {hess});")
    return out


_BODY = r"""
  /* per node: dirs of L = (qd, w), of V = (w) */
  double dl[14], dv[7];
  for (k = 0; k < 7; ++k) { dl[k] = qd[k]; dl[7 + k] = w[k]; dv[k] = w[k]; }
  double cq[7], sq[7];
  for (k = 0; k < 7; ++k) { cq[k] = cos(q[k]); sq[k] = sin(q[k]); }
@FORWARD@
  /* L's entries (rows of the last node): ent = U[n][7], dL/dq_k = U[n][k], D_v L = UV[v][n][7], d(D_v L)/dq_k = UV[v][n][k] */
  const double* ent = (const double*)LU + 7;
  const double* uv0 = (const double*)LUV;
  const double* uv1 = (const double*)(LUV + 28);
  double lw[7], lq[7], la[7], kw[7][7], kq[7][7], ka[7][7], vw[2][7], vq[2][7], vkw[2][7][7], vkq[2][7][7];
  double low[7][7], low_v[2][7][7];
  wm_lt(ent, 8, w, lw); wm_lt(ent, 8, qd, lq); wm_lt(ent, 8, a, la);
  for (k = 0; k < 7; ++k) {
    const double* ek = (const double*)LU + k;
    wm_lt(ek, 8, w, kw[k]); wm_lt(ek, 8, qd, kq[k]); wm_lt(ek, 8, a, ka[k]);
    wm_lt(uv0 + k, 8, w, vkw[0][k]); wm_lt(uv0 + k, 8, qd, vkq[0][k]);
    wm_lt(uv1 + k, 8, w, vkw[1][k]); wm_lt(uv1 + k, 8, qd, vkq[1][k]);
  }
  wm_lt(uv0 + 7, 8, w, vw[0]); wm_lt(uv0 + 7, 8, qd, vq[0]);
  wm_lt(uv1 + 7, 8, w, vw[1]); wm_lt(uv1 + 7, 8, qd, vq[1]);
  wm_tril(ent, 8, low); wm_tril(uv0 + 7, 8, low_v[0]); wm_tril(uv1 + 7, 8, low_v[1]);

  /* psi_qq: the networks' second derivatives through the adjoints, the products of first ones as pairs */
  double m0[7][7], m1[7][7], m2[7][7], c0[28], cv[56];
  for (i = 0; i < 7; ++i)
    for (j = 0; j < 7; ++j) {
      m0[i][j] = w[i] * la[j] + a[i] * lw[j] + w[i] * vq[0][j] + qd[i] * vw[0][j] - qd[i] * vq[1][j];
      m1[i][j] = w[i] * lq[j] + qd[i] * lw[j];
      m2[i][j] = -qd[i] * lq[j];
    }
  wm_entries(m0, c0); wm_entries(m1, cv); wm_entries(m2, cv + 28);
  wm_v8 hq[7] = {{0}};
@HESS_QQ@
@HESS_V@
  double pr[7][7];
  for (k = 0; k < 7; ++k)
    for (l = 0; l < 7; ++l)
      pr[k][l] = wm_dot7(kw[k], ka[l]) + wm_dot7(vkw[0][k], kq[l]) + wm_dot7(kw[k], vkq[0][l]) - wm_dot7(vkq[1][k], kq[l]);
  for (k = 0; k < 7; ++k)
    for (l = 0; l < 7; ++l) o_qq[7 * k + l] = hq[k][l] + pr[k][l] + pr[l][k];

  /* hkw[k][j] = (L_k L' w)_j + (L L_k' w)_j */
  double hkw[7][7], tmp[7];
  for (k = 0; k < 7; ++k) {
    wm_lv((const double*)LU + k, 8, lw, tmp);
    for (j = 0; j < 7; ++j) hkw[k][j] = tmp[j] + wm_dot7(kw[k], low[j]);
  }

  /* psi_q_qd[k][j] = w' H_jk qd + (H_qd,k w)_j - (H_w,k qd)_j */
  wm_entries(m1, c0);
  wm_v8 hs[7] = {{0}};
@HESS_S@
  for (k = 0; k < 7; ++k) {
    double t0[7], t1[7], t2[7], t3[7], t4[7], t5[7];
    wm_lv(uv0 + k, 8, lw, t0);
    wm_lv((const double*)LU + k, 8, vw[0], t1);
    wm_lv(uv1 + k, 8, lq, t2);
    wm_lv((const double*)LU + k, 8, vq[1], t3);
    for (j = 0; j < 7; ++j) {
      t4[j] = wm_dot7(kw[k], low_v[0][j]) + wm_dot7(vkw[0][k], low[j]);
      t5[j] = wm_dot7(kq[k], low_v[1][j]) + wm_dot7(vkq[1][k], low[j]);
    }
    for (j = 0; j < 7; ++j)
      o_qqd[7 * k + j] = hs[k][j] + wm_dot7(kw[k], kq[j]) + wm_dot7(kq[k], kw[j]) + (t0[j] + t4[j] + t1[j]) - (t2[j] + t5[j] + t3[j]);
  }

  /* psi_qd_qd = hkw + hkw' - (L_w L' + L L_w') */
  for (i = 0; i < 7; ++i)
    for (j = 0; j < 7; ++j) {
      double hw = wm_dot7(low_v[1][i], low[j]), hwt = wm_dot7(low_v[1][j], low[i]);
      o_qdqd[7 * i + j] = hkw[i][j] + hkw[j][i] - (hw + hwt);
      o_qa[7 * i + j] = hkw[i][j];
    }
"""


def kernel_source(residual: object) -> tuple[str, str]:
    """``(C symbol, C source)`` of the psi Hessian blocks of ``residual``'s architecture."""
    l_net, v_net, ctx, n_params = layouts(residual)
    floor = float(residual.cfg.diag_floor)  # type: ignore[attr-defined]
    sym = f"wm_psi_blocks_{TAG}"  # the source's hash, at the end
    body = _BODY.replace("@FORWARD@", "  " + "\n  ".join(_forward(l_net, "L", 2, "dl", "lower") + _forward(v_net, "V", 1, "dv", None)))
    top = len(l_net.offsets) - 1
    body = body.replace("const double* ent = (const double*)LU + 7;", f"const wm_v8* LU = LU{top};\n  const wm_v8* LUV = LUV{top};\n  const double* ent = (const double*)LU + 7;")
    body = body.replace("@HESS_QQ@", "  " + "\n  ".join(_hessian(l_net, "L", 2, "dl", True, "c0", "cv", "hq", "a")))
    one = "const double one[1] = {1.0}, zero[1] = {0.0};"
    body = body.replace("@HESS_V@", "  " + one + "\n  " + "\n  ".join(_hessian(v_net, "V", 1, "dv", False, "zero", "one", "hq", "b")))
    # the s_jk Hessian has no directional adjoints (cv = 0): the directions' share of the reverse pass is zero
    body = body.replace("@HESS_S@", "  " + "\n  ".join(_hessian(l_net, "L", 0, "dl", True, "c0", "cv", "hs", "c")))
    source = f"""typedef double casadi_real;
{COMMON_C}{DIRECTIONS_C}
static const int diag[28] = {{{TRIL_DIAGONAL}}};
#define FLOOR {floor!r}
int {sym}(int count, const double* p, const double* zs, const double* qs, const double* qds, const double* as, const double* ws,
          double* out_qq, double* out_qqd, double* out_qdqd, double* out_qa) {{
  int b, i, j, k, l;
  for (b = 0; b < count; ++b) {{
    const double *z = zs + {n_params - ctx} * b, *q = qs + 7 * b, *qd = qds + 7 * b, *a = as + 7 * b, *w = ws + 7 * b;
    double *o_qq = out_qq + 49 * b, *o_qqd = out_qqd + 49 * b, *o_qdqd = out_qdqd + 49 * b, *o_qa = out_qa + 49 * b;
{body}
  }}
  return 0;
}}
#undef FLOOR
"""
    symbols, source = tagged(source, {"psi": sym})
    return symbols["psi"], source


class PsiKernel:
    """The compiled psi Hessian blocks of one residual architecture.

    Args:
        residual: A :class:`~whatmatters.dynamics.residual.LagrangianResidual` (its shapes; weights come with each call).
        flags: C compiler flags.

    Raises:
        CompileError: Without gcc, or if gcc fails.
    """

    def __init__(self, residual: object, flags: str = DEFAULT_FLAGS) -> None:
        sym, source = kernel_source(residual)
        self._lib = ctypes.CDLL(str(compile_source(source, "wm_psi_blocks", flags, "kernels")))
        self._fn = getattr(self._lib, sym)
        self._fn.argtypes = [ctypes.c_int] + [ctypes.c_void_p] * 10
        self._fn.restype = ctypes.c_int
        self.context_dim = int(residual.cfg.context_dim)  # type: ignore[attr-defined]
        self.n_weights = layouts(residual)[2]  # the weights precede the context

    def blocks(self, p: np.ndarray, z: np.ndarray, q: np.ndarray, qd: np.ndarray, a: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`~whatmatters.dynamics.residual_hessian.ResidualHessian.blocks_with` (the same arguments and results)."""
        count = q.shape[0]
        args = [np.ascontiguousarray(x, dtype=float) for x in (p, z, q, qd, a, w)]
        if args[0].ndim != 1 or args[0].size < self.n_weights:
            raise ValueError(f"psi blocks: a weight vector of >= {self.n_weights} entries expected, got shape {args[0].shape}")
        if args[1].shape != (count, self.context_dim) or any(x.shape != (count, NQ) for x in args[2:]):
            raise ValueError(f"psi blocks: contexts ({count}, {self.context_dim}) and (q, qd, a, w) ({count}, 7) expected")
        outs = [np.empty((count, NQ, NQ)) for _ in range(4)]
        self._fn(count, *(x.ctypes.data for x in args), *(o.ctypes.data for o in outs))
        return outs[0], outs[1], outs[2], outs[3]
