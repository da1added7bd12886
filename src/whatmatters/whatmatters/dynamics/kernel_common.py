"""What the residual's C kernels share: their C helpers and the networks' layout in the parameter vector.

The kernels (:mod:`whatmatters.dynamics.residual_kernels`,
:mod:`whatmatters.dynamics.residual_hessian_kernel`) keep a unit's 7
q-tangents and its value (or a directional derivative) in one 8-lane vector
``wm_v8`` (GCC's vector extension: one AVX-512 register, two AVX2 ones
elsewhere), so a layer's value and its Jacobian are one fused multiply-add
per weight. The helpers are ``static inline`` C, guarded, so several
kernels' sources can share a file. They use ``casadi_real``, which the
including file defines.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

__all__ = ["COMMON_C", "DIRECTIONS_C", "TAG", "TRIL_DIAGONAL", "Net", "layouts", "tagged"]

#: Stands in a kernel's symbols for its source's hash while the source is written (:func:`tagged`).
TAG = "@WM_TAG@"

#: Whether each of L's 28 entries (numpy's ``tril_indices(7)`` order) is on the diagonal, as a C initialiser.
TRIL_DIAGONAL = ", ".join("1" if r == c else "0" for r, c in zip(*np.tril_indices(7)))


def tagged(source: str, symbols: dict[str, str]) -> tuple[dict[str, str], str]:
    """``symbols`` and ``source`` with :data:`TAG` replaced by the source's hash: other C, other symbols
    (and, where the symbols are in a solver's cache key, another solver)."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:10]
    return {k: v.replace(TAG, digest) for k, v in symbols.items()}, source.replace(TAG, digest)

COMMON_C = r"""
#ifndef WM_KERNELS_COMMON
#define WM_KERNELS_COMMON
#include <math.h>
typedef double wm_v8 __attribute__((vector_size(64)));

/* out[i] = sum_j w[i, j] t[j] for i < m: w (m x n) row-major, t n rows of 8 lanes */
static inline __attribute__((always_inline)) void wm_rows(int m, int n, const casadi_real* w, const wm_v8* t, wm_v8* out) {
  int i, j;
  for (i = 0; i < m; ++i) {
    const casadi_real* wi = w + i * n;
    wm_v8 acc = {0, 0, 0, 0, 0, 0, 0, 0};
    for (j = 0; j < n; ++j) acc += wi[j] * t[j];
    out[i] = acc;
  }
}

/* first layer on phi = [cos q, sin q, z]: lanes 0..6 da/dq, lane 7 a */
static inline __attribute__((always_inline)) void wm_first(int m, int n, const casadi_real* w, const casadi_real* b,
                                                           const casadi_real* cq, const casadi_real* sq, const casadi_real* z, wm_v8* out) {
  int i, k;
  for (i = 0; i < m; ++i) {
    const casadi_real* wi = w + i * n;
    casadi_real a = 0;
    wm_v8 r;
    for (k = 0; k < 7; ++k) a += wi[k] * cq[k];
    for (k = 0; k < 7; ++k) a += wi[7 + k] * sq[k];
    for (k = 0; k < n - 14; ++k) a += wi[14 + k] * z[k];
    for (k = 0; k < 7; ++k) r[k] = wi[k] * (-sq[k]) + wi[7 + k] * cq[k];
    r[7] = a + b[i];
    out[i] = r;
  }
}

/* tanh layer: h, tanh' and the next layer's input rows (lanes 0..6 tanh' da/dq, lane 7 h) */
static inline __attribute__((always_inline)) void wm_tanh(int m, const wm_v8* t, casadi_real* h, casadi_real* s, wm_v8* u) {
  int i;
  for (i = 0; i < m; ++i) {
    casadi_real hi = tanh(t[i][7]), si = 1.0 - hi * hi;
    wm_v8 r = si * t[i];
    r[7] = hi;
    h[i] = hi;
    s[i] = si;
    u[i] = r;
  }
}

/* hess (7 x 7, row k in lanes) += sum_j d[j] P[j]' P[j], P rows in lanes 0..6 */
static inline __attribute__((always_inline)) void wm_outer(int m, const casadi_real* d, const wm_v8* p, wm_v8* hess) {
  int j, k;
  for (j = 0; j < m; ++j)
    for (k = 0; k < 7; ++k) hess[k] += (d[j] * p[j][k]) * p[j];
}

/* g_out[c] = sum_r w[r, c] (s[r] g[r]): w (m x n) row-major, the adjoint of a layer's input */
static inline __attribute__((always_inline)) void wm_back(int m, int n, const casadi_real* w, const casadi_real* s, const casadi_real* g, casadi_real* g_out) {
  int r, c;
  for (c = 0; c < n; ++c) g_out[c] = 0;
  for (r = 0; r < m; ++r) {
    const casadi_real gr = s ? s[r] * g[r] : g[r];
    const casadi_real* wr = w + r * n;
    for (c = 0; c < n; ++c) g_out[c] += wr[c] * gr;
  }
}

/* the cos/sin features' part of the q-Hessian (diagonal) and the q-gradient, from phi's adjoint g */
static inline __attribute__((always_inline)) void wm_features(const casadi_real* cq, const casadi_real* sq, const casadi_real* g, wm_v8* hess, casadi_real* grad) {
  int k;
  for (k = 0; k < 7; ++k) {
    hess[k][k] += -cq[k] * g[k] - sq[k] * g[7 + k];
    if (grad) grad[k] = -sq[k] * g[k] + cq[k] * g[7 + k];
  }
}

static inline __attribute__((always_inline)) void wm_store_rows(int m, const wm_v8* t, casadi_real* out) {
  int i, k;
  if (!out) return;
  for (k = 0; k < 7; ++k)
    for (i = 0; i < m; ++i) out[i + m * k] = t[i][k];  /* column-major m x 7 */
}

static inline __attribute__((always_inline)) void wm_store_hess(const wm_v8* hess, casadi_real* out) {
  int k, l;
  if (!out) return;
  for (l = 0; l < 7; ++l)
    for (k = 0; k < 7; ++k) out[k + 7 * l] = hess[k][l];
}
#endif
"""

#: Helpers of forward and reverse passes along directions (the psi Hessian kernel); need :data:`COMMON_C` first.
DIRECTIONS_C = r"""
#ifndef WM_PSI_COMMON
#define WM_PSI_COMMON
/* first layer on phi = [cos q, sin q, z] along nv directions: t[i] = [da/dq, a] (wm_first), tv[v m + i] = [d(D_v a)/dq, D_v a] */
static inline __attribute__((always_inline)) void wm_first_dirs(int m, int n, const double* w, const double* b, const double* cq, const double* sq,
                                                                const double* z, int nv, const double* dirs, wm_v8* t, wm_v8* tv) {
  int i, k, v;
  wm_first(m, n, w, b, cq, sq, z, t);
  for (i = 0; i < m; ++i) {
    const double* wi = w + i * n;
    for (v = 0; v < nv; ++v) {
      const double* d = dirs + 7 * v;
      double av = 0;
      wm_v8 r;
      for (k = 0; k < 7; ++k) av += wi[k] * (-sq[k] * d[k]) + wi[7 + k] * (cq[k] * d[k]);
      for (k = 0; k < 7; ++k) r[k] = wi[k] * (-cq[k] * d[k]) + wi[7 + k] * (-sq[k] * d[k]);
      r[7] = av;
      tv[v * m + i] = r;
    }
  }
}

/* an elementwise node h = g(a) with g1..g3 given: the next layer's input rows u = [g1 da/dq, h],
   uv = [g2 D_v a da/dq + g1 d(D_v a)/dq, g1 D_v a] */
static inline __attribute__((always_inline)) void wm_node_rows(int i, int m, int nv, double h, const double* g1, const double* g2,
                                                               const wm_v8* t, const wm_v8* tv, wm_v8* u, wm_v8* uv) {
  int v;
  wm_v8 r = g1[i] * t[i];
  r[7] = h;
  u[i] = r;
  for (v = 0; v < nv; ++v) {
    double av = tv[v * m + i][7];
    r = (g2[i] * av) * t[i] + g1[i] * tv[v * m + i];
    r[7] = g1[i] * av;
    uv[v * m + i] = r;
  }
}

static inline __attribute__((always_inline)) void wm_node_tanh(int m, int nv, const wm_v8* t, const wm_v8* tv, double* g1, double* g2, double* g3,
                                                               wm_v8* u, wm_v8* uv) {
  int i;
  for (i = 0; i < m; ++i) {
    double h = tanh(t[i][7]), s1 = 1.0 - h * h;
    g1[i] = s1;
    g2[i] = -2.0 * h * s1;
    g3[i] = s1 * (6.0 * h * h - 2.0);
    wm_node_rows(i, m, nv, h, g1, g2, t, tv, u, uv);
  }
}

/* L's entries: softplus plus the floor on the diagonal, the identity elsewhere */
static inline __attribute__((always_inline)) void wm_node_lower(int m, int nv, const int* diag, double floor_, const wm_v8* t, const wm_v8* tv,
                                                                double* g1, double* g2, double* g3, wm_v8* u, wm_v8* uv) {
  int i;
  for (i = 0; i < m; ++i) {
    double raw = t[i][7], h = raw;
    if (diag[i]) {
      double sig = 1.0 / (1.0 + exp(-raw)), s2 = sig * (1.0 - sig);
      h = (raw > 0 ? raw : 0.0) + log1p(exp(-fabs(raw))) + floor_;
      g1[i] = sig;
      g2[i] = s2;
      g3[i] = s2 * (1.0 - 2.0 * sig);
    } else {
      g1[i] = 1.0;
      g2[i] = 0.0;
      g3[i] = 0.0;
    }
    wm_node_rows(i, m, nv, h, g1, g2, t, tv, u, uv);
  }
}

/* the reverse pass's share of node rows t, tv (nv directions) with adjoints hb (m), hbv (nv x m), updated in place */
static inline __attribute__((always_inline)) void wm_node_back(int m, int nv, const wm_v8* t, const wm_v8* tv, const double* g1, const double* g2,
                                                               const double* g3, double* hb, double* hbv, wm_v8* hess) {
  int j, k, v;
  for (j = 0; j < m; ++j) {
    double avh = 0;
    wm_v8 x = {0, 0, 0, 0, 0, 0, 0, 0};
    for (v = 0; v < nv; ++v) {
      avh += tv[v * m + j][7] * hbv[v * m + j];
      x += (g2[j] * hbv[v * m + j]) * tv[v * m + j];
    }
    double d = g2[j] * hb[j] + g3[j] * avh;
    wm_v8 p = t[j];
    for (k = 0; k < 7; ++k) hess[k] += (d * p[k]) * p + p[k] * x + x[k] * p;
    hb[j] = g1[j] * hb[j] + g2[j] * avh;
    for (v = 0; v < nv; ++v) hbv[v * m + j] *= g1[j];
  }
}

/* the cos/sin features' share: phi's adjoint hb (n0), D_v phi's hbv (nv x n0) */
static inline __attribute__((always_inline)) void wm_features_dirs(int n0, int nv, const double* cq, const double* sq, const double* dirs,
                                                                   const double* hb, const double* hbv, wm_v8* hess) {
  int k, v;
  for (k = 0; k < 7; ++k) {
    double d = -cq[k] * hb[k] - sq[k] * hb[7 + k];
    for (v = 0; v < nv; ++v) d += dirs[7 * v + k] * (sq[k] * hbv[v * n0 + k] - cq[k] * hbv[v * n0 + 7 + k]);
    hess[k][k] += d;
  }
}

/* out_j = sum_i L_ij y_i (L' y) from L's 28 entries e[n * stride] */
static inline __attribute__((always_inline)) void wm_lt(const double* e, int stride, const double* y, double* out) {
  int i, j, n = 0;
  for (j = 0; j < 7; ++j) out[j] = 0;
  for (i = 0; i < 7; ++i)
    for (j = 0; j <= i; ++j, ++n) out[j] += e[n * stride] * y[i];
}

/* out_i = sum_j L_ij y_j (L y) */
static inline __attribute__((always_inline)) void wm_lv(const double* e, int stride, const double* y, double* out) {
  int i, j, n = 0;
  for (i = 0; i < 7; ++i) {
    out[i] = 0;
    for (j = 0; j <= i; ++j, ++n) out[i] += e[n * stride] * y[j];
  }
}

static inline __attribute__((always_inline)) double wm_dot7(const double* x, const double* y) {
  double s = 0;
  int k;
  for (k = 0; k < 7; ++k) s += x[k] * y[k];
  return s;
}

/* the 7 x 7 lower-triangular matrix of 28 entries e[n * stride] */
static inline __attribute__((always_inline)) void wm_tril(const double* e, int stride, double (*out)[7]) {
  int i, j, n = 0;
  for (i = 0; i < 7; ++i)
    for (j = 0; j < 7; ++j) out[i][j] = j <= i ? e[(n++) * stride] : 0.0;
}

/* entries (i, j), j <= i, of a 7 x 7 matrix */
static inline __attribute__((always_inline)) void wm_entries(double (*m)[7], double* e) {
  int i, j, n = 0;
  for (i = 0; i < 7; ++i)
    for (j = 0; j <= i; ++j) e[n++] = m[i][j];
}
#endif
"""


@dataclass(frozen=True)
class Net:
    """One MLP's layout in the flat parameter vector: sizes ``dims`` (input, hidden..., output) and
    (weight, bias) offsets per linear layer (torch's row-major (out, in) weights)."""

    dims: tuple[int, ...]
    offsets: tuple[tuple[int, int], ...]

    @property
    def hidden(self) -> int:
        """Number of hidden (tanh) layers."""
        return len(self.dims) - 2


def layouts(residual: object) -> tuple[Net, Net, int, int]:
    """The networks' layouts in ``residual``'s flat parameter vector.

    Args:
        residual: A :class:`~whatmatters.dynamics.residual.LagrangianResidual`.

    Returns:
        ``(L network, V network, the context's offset = the weights' count, parameters with the context)``.
    """
    offset, found = 0, {}
    for name, shape in residual.parameter_layout():  # type: ignore[attr-defined]
        found[name] = (offset, shape)
        offset += int(np.prod(shape))
    nets = []
    for prefix in ("l_net", "v_net"):
        idx = sorted(int(n.split(".")[1]) for n in found if n.startswith(prefix + ".") and n.endswith(".weight"))
        shapes = [found[f"{prefix}.{i}.weight"][1] for i in idx]
        dims = (shapes[0][1], *(s[0] for s in shapes))
        offs = tuple((found[f"{prefix}.{i}.weight"][0], found[f"{prefix}.{i}.bias"][0]) for i in idx)
        nets.append(Net(tuple(int(d) for d in dims), offs))
    return nets[0], nets[1], found["context"][0], offset
