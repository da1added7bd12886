"""Compiled CasADi functions called through ctypes equal CasADi's own evaluation."""

from __future__ import annotations

import casadi as ca
import numpy as np
import pytest
from whatmatters.codegen import CompiledFunction, compile_library


def _function() -> ca.Function:
    a = ca.MX.sym("a", 3, 2)  # a matrix input: column-major layout matters
    v = ca.MX.sym("v", 2)
    return ca.Function("wm_test_fn", [a, v], [ca.mtimes(a, v) + ca.sin(a[:, 0]), ca.mtimes(a.T, a)])


def test_compiled_function_equals_casadi(tmp_path, rng):
    fn = _function()
    compiled = CompiledFunction(fn, cache_dir=tmp_path)
    a, v = rng.normal(size=(3, 2)), rng.normal(size=2)
    out, gram = compiled(a, v)
    ref_out, ref_gram = (np.asarray(r) for r in fn(a, v))
    assert out.shape == (3,) and gram.shape == (2, 2)
    np.testing.assert_allclose(out, ref_out.ravel(), rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(gram, ref_gram, rtol=1e-14, atol=1e-14)
    out[:] = 0.0  # results are copies, not views of the shared buffers
    np.testing.assert_allclose(compiled(a, v)[0], ref_out.ravel(), rtol=1e-14)


def test_compiled_function_rejects_wrong_sizes(tmp_path):
    compiled = CompiledFunction(_function(), cache_dir=tmp_path)
    with pytest.raises(ValueError, match="input 1 needs"):
        compiled(np.zeros((3, 2)), np.zeros(3))
    with pytest.raises(ValueError, match="takes 2 inputs"):
        compiled(np.zeros((3, 2)))


def test_library_is_compiled_once(tmp_path):
    fn = _function()
    lib = compile_library([fn], "wm_test", "-O1", "functions", tmp_path)
    stamp = lib.stat().st_mtime_ns
    assert compile_library([fn], "wm_test", "-O1", "functions", tmp_path) == lib and lib.stat().st_mtime_ns == stamp
    assert compile_library([fn], "wm_test", "-O2", "functions", tmp_path) != lib  # flags are part of the key
