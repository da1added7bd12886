"""Tests of the residual networks' passes as C kernels, against the SX functions they replace."""

from __future__ import annotations

import logging

import casadi as ca
import numpy as np
import pytest
import torch
import whatmatters.dynamics.learned as learned
import whatmatters.dynamics.residual_jacobian as rj
from whatmatters.codegen import CompileError, CompiledFunction, link_kernels
from whatmatters.dynamics.learned import LearnedConfig, LearnedDynamics
from whatmatters.dynamics.residual import ResidualConfig
from whatmatters.dynamics.residual_kernels import KERNEL_NAMES, kernel_source, residual_kernels


def _perturbed(cfg: LearnedConfig | None = None, seed: int = 11, scale: float = 0.5) -> LearnedDynamics:
    torch.manual_seed(seed)
    m = LearnedDynamics(cfg)
    with torch.no_grad():  # far from the initialisation: every layer's curvature matters
        for p in m.residual.parameters():
            p.add_(scale * torch.randn_like(p))
    return m


def _sx_passes(model: LearnedDynamics) -> dict[str, ca.Function]:
    """The SX functions of the four passes, as ``residual_derivatives(kernels=False)`` builds them."""
    found: dict[str, ca.Function] = {}

    class Recorder(rj._Passes):
        def __call__(self, name, inputs, outputs, args):  # type: ignore[no-untyped-def]
            found[name] = ca.Function(name, inputs, outputs)
            return super().__call__(name, inputs, outputs, args)

    q, qd, p = ca.SX.sym("q", 7), ca.SX.sym("qd", 7), ca.SX.sym("p", model.n_params)
    original = rj._Passes
    rj._Passes = Recorder  # type: ignore[misc]
    try:
        rj.residual_derivatives(model.residual, q, qd, p, kernels=False)
    finally:
        rj._Passes = original  # type: ignore[misc]
    return found


def _params(model: LearnedDynamics, rng: np.random.Generator) -> np.ndarray:
    return np.concatenate([model.residual.flat_parameters(), rng.normal(size=model.context_dim)])


def _assert_passes_equal(model: LearnedDynamics, rng: np.random.Generator, points: int = 4) -> None:
    sx = _sx_passes(model)
    kernels = residual_kernels(model.residual).functions
    assert set(sx) == set(kernels) == set(KERNEL_NAMES)
    for _ in range(points):
        q, qd, p = rng.uniform(-2.5, 2.5, 7), rng.normal(0, 1.5, 7), _params(model, rng)
        trig = (np.cos(q), np.sin(q))
        args = {"res_l": (*trig, qd, p), "res_v": (*trig, p)}
        for name, a in args.items():
            for i, (ref, got) in enumerate(zip(sx[name].call(list(a)), kernels[name].call(list(a)))):
                ref, got = np.array(ref), np.array(got)
                assert np.abs(ref).max() > 1e-6, (name, i)  # not trivially zero
                np.testing.assert_allclose(got, ref, rtol=0, atol=1e-13 * np.abs(ref).max(), err_msg=f"{name} output {i}")


def test_kernels_equal_the_sx_passes(rng):
    _assert_passes_equal(_perturbed(), rng)


@pytest.mark.parametrize("hidden", [(12,), (9, 8, 7)])
def test_kernels_of_other_architectures_equal_the_sx_passes(hidden, rng):
    """Depth, widths and the context's length come from the config."""
    _assert_passes_equal(_perturbed(LearnedConfig(ResidualConfig(hidden=hidden, context_dim=4, damping=False)), seed=3), rng, points=2)


def test_compiled_jacobian_with_kernels_equals_the_sx_one(monkeypatch, rng):
    """The generated C of ``f`` and its Jacobian holds the kernels' definitions (no library to load)."""
    model = _perturbed()
    x, u, p = ca.SX.sym("x", 14), ca.SX.sym("u", 7), ca.SX.sym("p", model.n_params)
    compiled = CompiledFunction(ca.Function("wm_test_fj_kernels", [x, u, p], [ca.densify(o) for o in model.state_derivative_jacobian(x, u, p)]))
    source = compiled.lib_path.with_suffix(".c").read_text()
    assert all(f"WM_KERNEL int {sym}(" in source for sym in kernel_source(model.residual)[0].values())
    sx_only = rj.residual_derivatives
    monkeypatch.setattr(learned, "residual_derivatives", lambda *a, **k: sx_only(*a, **{**k, "kernels": False}))
    reference = ca.Function("wm_test_fj_sx", [x, u, p], [ca.densify(o) for o in model.state_derivative_jacobian(x, u, p)])
    for _ in range(3):
        xv, uv, pv = np.concatenate([rng.uniform(-2, 2, 7), rng.normal(size=7)]), rng.normal(0, 10, 7), _params(model, rng)
        for ref, got in zip(reference(xv, uv, pv), compiled(xv, uv, pv)):
            ref = np.array(ref)
            np.testing.assert_allclose(np.asarray(got).reshape(ref.shape), ref, rtol=0, atol=1e-12 * np.abs(ref).max())


def test_without_a_compiler_the_sx_passes_serve(monkeypatch, caplog, rng):
    model = _perturbed()

    def no_gcc(residual, flags=None):  # type: ignore[no-untyped-def]
        raise CompileError("gcc is not installed")

    monkeypatch.setattr(rj, "residual_kernels", no_gcc)
    q, qd, p = ca.SX.sym("q", 7), ca.SX.sym("qd", 7), ca.SX.sym("p", model.n_params)
    with caplog.at_level(logging.WARNING):
        rd = rj.residual_derivatives(model.residual, q, qd, p)
    assert "run as CasADi SX code" in caplog.text and "gcc is not installed" in caplog.text
    fn = ca.Function("f", [q, qd, p], [rd.torque, rd.d_torque_dq])
    cg = ca.CodeGenerator("f")
    cg.add(fn)
    assert "wm_res_" not in cg.dump()  # no kernel is called
    qv, qdv, pv = rng.uniform(-2, 2, 7), rng.normal(size=7), _params(model, rng)
    ref = ca.Function("r", [q, qd, p], [model.residual.casadi_terms(q, qd, p)[1]])(qv, qdv, pv)
    np.testing.assert_allclose(np.array(fn(qv, qdv, pv)[0]), np.array(ref), rtol=1e-12, atol=1e-12)


def test_link_kernels_names_a_file_it_cannot_place_them_in(tmp_path):
    model = _perturbed()
    sym = kernel_source(model.residual)[0]["res_v"]
    residual_kernels(model.residual)  # registers the definitions
    plain = tmp_path / "plain.c"
    plain.write_text("int main(void) { return 0; }\n")
    assert link_kernels(plain) == []
    odd = tmp_path / "odd.c"
    odd.write_text(f"int f(void) {{ return {sym}(0, 0, 0, 0, 0); }}\n")
    with pytest.raises(CompileError, match="odd.c"):
        link_kernels(odd)


def test_other_c_gives_other_symbols(monkeypatch):
    """The symbols carry a hash of the source, so a solver built with other kernel code is never loaded for new code."""
    import whatmatters.dynamics.residual_kernels as rk

    model = _perturbed()
    before, _ = kernel_source(model.residual)
    assert kernel_source(model.residual)[0] == before  # deterministic
    monkeypatch.setattr(rk, "COMMON_C", rk.COMMON_C + "/* another version */\n")
    after, source = kernel_source(model.residual)
    assert set(after) == set(before) and all(after[k] != before[k] for k in before)
    assert all(f"int {sym}(" in source for sym in after.values())
