"""Direct access to acados' per-stage data from Python: bound once, and in bulk.

``AcadosOcpSolver.set/get`` re-declare ctypes signatures and query dimensions
on every call (~15 us each). :class:`StageIO` binds the same C functions once
and writes from / reads into float64 buffers (sizes are checked by the
callers). A control step still needs ~75 of those calls (reading the plan,
shifting it, the reference and the context on every stage), ~4 us each from
Python; the loops over the stages therefore run in a small C helper
(:data:`BULK_SOURCE`, compiled once and cached like the model functions) that
calls acados' own setters and getters, so each takes one call from Python.
Without a C compiler the loops run in Python (same calls, same values).
"""

from __future__ import annotations

import ctypes
import logging
from typing import Any

import numpy as np

from whatmatters.codegen import DEFAULT_FLAGS, CompileError, compile_source

__all__ = ["BULK_SOURCE", "StageIO"]

log = logging.getLogger(__name__)

#: The stage loops in C. acados 0.2.x's signatures (ocp_nlp_interface.h), with
#: its structs as opaque pointers; the symbols resolve to the preloaded libacados.
BULK_SOURCE = r"""
void ocp_nlp_out_get(void *config, void *dims, void *out, int stage, const char *field, void *value);
void ocp_nlp_out_set(void *config, void *dims, void *out, int stage, const char *field, void *value);
int ocp_nlp_cost_model_set(void *config, void *dims, void *in, int stage, const char *field, void *value);
typedef int (*params_sparse_fn)(void *capsule, int stage, int *idx, double *p, int n);

/* x: (n + 1) x nx, u: n x nu, row-major */
void wm_get_xu(void *config, void *dims, void *out, int n, int nx, int nu, double *x, double *u) {
    for (int k = 0; k < n; k++) {
        ocp_nlp_out_get(config, dims, out, k, "x", x + k * nx);
        ocp_nlp_out_get(config, dims, out, k, "u", u + k * nu);
    }
    ocp_nlp_out_get(config, dims, out, n, "x", x + n * nx);
}

void wm_set_xu(void *config, void *dims, void *out, int n, int nx, int nu, double *x, double *u) {
    for (int k = 0; k < n; k++) {
        ocp_nlp_out_set(config, dims, out, k, "x", x + k * nx);
        ocp_nlp_out_set(config, dims, out, k, "u", u + k * nu);
    }
    ocp_nlp_out_set(config, dims, out, n, "x", x + n * nx);
}

/* yref: n x ny (stages 0..n-1), yref_n: the terminal one */
void wm_set_yref(void *config, void *dims, void *in, int n, int ny, double *yref, double *yref_n) {
    for (int k = 0; k < n; k++)
        ocp_nlp_cost_model_set(config, dims, in, k, "yref", yref + k * ny);
    ocp_nlp_cost_model_set(config, dims, in, n, "yref", yref_n);
}

/* the same parameter entries on stages 0..n; 0 or the first failing stage + 1 */
int wm_set_params_sparse(params_sparse_fn fn, void *capsule, int n, int *idx, double *p, int count) {
    for (int k = 0; k <= n; k++)
        if (fn(capsule, k, idx, p, count) != 0)
            return k + 1;
    return 0;
}
"""


def _bulk_library() -> ctypes.CDLL | None:
    try:
        lib = ctypes.CDLL(str(compile_source(BULK_SOURCE, "wm_stage_io", DEFAULT_FLAGS, "functions")))
    except (CompileError, OSError) as exc:
        log.warning("acados stage loops run in Python: %s", exc)
        return None
    ptr = ctypes.c_void_p
    for name in ("wm_get_xu", "wm_set_xu"):
        getattr(lib, name).argtypes = [ptr, ptr, ptr, ctypes.c_int, ctypes.c_int, ctypes.c_int, ptr, ptr]
    lib.wm_set_yref.argtypes = [ptr, ptr, ptr, ctypes.c_int, ctypes.c_int, ptr, ptr]
    lib.wm_set_params_sparse.argtypes = [ptr, ptr, ctypes.c_int, ptr, ptr, ctypes.c_int]
    lib.wm_set_params_sparse.restype = ctypes.c_int
    return lib


_BULK: list[ctypes.CDLL | None] = []


class StageIO:
    """acados' stage data of one solver, bound once.

    Args:
        solver: An ``AcadosOcpSolver``.
        bulk: Use the compiled stage loops (when they compile); False: Python loops.
    """

    _SIG = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p]

    def __init__(self, solver: Any, bulk: bool = True) -> None:
        lib = solver.shared_lib
        self._capsule = solver.capsule
        name = solver.model_name
        self._params = getattr(lib, f"{name}_acados_update_params")
        self._params.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
        self._params.restype = ctypes.c_int
        self._params_sparse = getattr(lib, f"{name}_acados_update_params_sparse")
        self._params_sparse.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
        self._params_sparse.restype = ctypes.c_int
        self._params_sparse_ptr = ctypes.cast(self._params_sparse, ctypes.c_void_p)  # for the C loop
        self._ptrs = (solver.nlp_config, solver.nlp_dims)
        self._in, self._out, self._solver = solver.nlp_in, solver.nlp_out, solver.nlp_solver
        self._fns = {}
        for fname in ("ocp_nlp_out_get", "ocp_nlp_out_set", "ocp_nlp_cost_model_set", "ocp_nlp_constraints_model_set", "ocp_nlp_get_at_stage"):
            fn = getattr(lib, fname)
            fn.argtypes = self._SIG
            self._fns[fname] = fn
        self._opts_set = lib.ocp_nlp_solver_opts_set
        self._opts_set.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
        self._nlp_config, self._nlp_opts = solver.nlp_config, solver.nlp_opts
        if bulk and not _BULK:
            _BULK.append(_bulk_library())
        self._bulk = _BULK[0] if bulk else None

    def set_max_iter(self, iterations: int) -> None:
        """The SQP iteration limit (an option acados' Python interface does not expose at run time)."""
        value = ctypes.c_int(iterations)
        self._opts_set(self._nlp_config, self._nlp_opts, b"max_iter", ctypes.byref(value))

    # ------------------------------------------------------------ one stage
    def get(self, stage: int, field: bytes, out: np.ndarray) -> None:
        self._fns["ocp_nlp_out_get"](*self._ptrs, self._out, stage, field, out.ctypes.data)

    def get_qp_in(self, stage: int, field: bytes, out: np.ndarray) -> None:
        """A matrix of the last QP (e.g. ``A``, ``B``) into a Fortran-ordered buffer of its shape."""
        self._fns["ocp_nlp_get_at_stage"](*self._ptrs, self._solver, stage, field, out.ctypes.data)

    def set_out(self, stage: int, field: bytes, value: np.ndarray) -> None:
        self._fns["ocp_nlp_out_set"](*self._ptrs, self._out, stage, field, value.ctypes.data)

    def set_cost(self, stage: int, field: bytes, value: np.ndarray) -> None:
        self._fns["ocp_nlp_cost_model_set"](*self._ptrs, self._in, stage, field, value.ctypes.data)

    def set_constraint(self, stage: int, field: bytes, value: np.ndarray) -> None:
        self._fns["ocp_nlp_constraints_model_set"](*self._ptrs, self._in, stage, field, value.ctypes.data)

    def set_params(self, stage: int, value: np.ndarray) -> None:
        if self._params(self._capsule, stage, value.ctypes.data, value.size) != 0:
            raise RuntimeError(f"acados rejected the parameters of stage {stage}")

    def set_params_sparse(self, stage: int, idx: np.ndarray, value: np.ndarray) -> None:
        if self._params_sparse(self._capsule, stage, idx.ctypes.data, value.ctypes.data, value.size) != 0:
            raise RuntimeError(f"acados rejected the parameter update of stage {stage}")

    # ----------------------------------------------------------- all stages
    def get_xu(self, x: np.ndarray, u: np.ndarray) -> None:
        """The iterate into C-contiguous x (N + 1, nx) and u (N, nu)."""
        self._xu("wm_get_xu", self.get, x, u)

    def set_xu(self, x: np.ndarray, u: np.ndarray) -> None:
        """The iterate from C-contiguous float64 x (N + 1, nx) and u (N, nu)."""
        self._xu("wm_set_xu", self.set_out, x, u)

    def _xu(self, bulk_name: str, one_stage: Any, x: np.ndarray, u: np.ndarray) -> None:
        n, nx, nu = u.shape[0], x.shape[1], u.shape[1]
        if self._bulk is not None:
            getattr(self._bulk, bulk_name)(*self._ptrs, self._out, n, nx, nu, x.ctypes.data, u.ctypes.data)
            return
        for k in range(n):
            one_stage(k, b"x", x[k])
            one_stage(k, b"u", u[k])
        one_stage(n, b"x", x[n])

    def set_yref(self, yref: np.ndarray, yref_n: np.ndarray) -> None:
        """Stage references from C-contiguous float64 yref (N, ny) and the terminal yref_n."""
        n = yref.shape[0]
        if self._bulk is not None:
            self._bulk.wm_set_yref(*self._ptrs, self._in, n, yref.shape[1], yref.ctypes.data, yref_n.ctypes.data)
            return
        for k in range(n):
            self.set_cost(k, b"yref", yref[k])
        self.set_cost(n, b"yref", yref_n)

    def set_params_sparse_all(self, n: int, idx: np.ndarray, value: np.ndarray) -> None:
        """The same parameter entries (intc indices, float64 values) on stages 0..N."""
        if self._bulk is not None:
            failed = self._bulk.wm_set_params_sparse(self._params_sparse_ptr, self._capsule, n, idx.ctypes.data, value.ctypes.data, value.size)
            if failed:
                raise RuntimeError(f"acados rejected the parameter update of stage {failed - 1}")
            return
        for k in range(n + 1):
            self.set_params_sparse(k, idx, value)
