"""The deep Lagrangian residual's network passes as vectorised C kernels.

:func:`~whatmatters.dynamics.residual_jacobian.residual_derivatives` needs
passes through the residual's two networks: the L network's forward pass
with ``dL/dq``, its mixed derivative along ``qd`` and the q-Hessian of
``w . L(q)``, and the V network's gradient and Hessian. As CasADi SX they
are straight-line scalar code, ~77k instructions per call of ``f`` and its
Jacobian, where the MPC's and the sensitivities' RK4 linearisations spent
most of their time.

Here they are two kernels, ``res_l`` (the L network's three passes) and
``res_v``, C written for the networks' shapes with a unit's 7 q-tangents
and its value in one 8-lane vector (:mod:`whatmatters.dynamics.kernel_common`):
a layer's value and Jacobian are one fused multiply-add per weight. The
weights are read from the parameter vector at run time, as before: a new
checkpoint needs no rebuild.

Each kernel has CasADi's external calling convention and the inputs and
outputs of the SX function it replaces. :func:`residual_kernels` compiles
them into a shared library (``casadi.external`` loads it, for CasADi's own
evaluation) and registers their C definitions with
:func:`whatmatters.codegen.register_kernel`, which inserts them into any
generated file that calls them (acados' model functions, compiled
functions): no library to ship with a solver.

Tested against the SX functions (``test/dynamics/test_residual_kernels.py``)
and, through ``f``'s Jacobian, against CasADi's AD and finite differences
(``test/dynamics/test_residual_jacobian.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import casadi as ca

from whatmatters.codegen import DEFAULT_FLAGS, compile_source, register_kernel
from whatmatters.dynamics.kernel_common import COMMON_C, TAG, TRIL_DIAGONAL, Net, layouts, tagged

__all__ = ["KERNEL_NAMES", "ResidualKernels", "kernel_source", "residual_kernels"]

NQ = 7

#: The passes, in :func:`~whatmatters.dynamics.residual_jacobian.residual_derivatives`' names.
KERNEL_NAMES = ("res_l", "res_v")




def _forward_c(net: Net, tag: str) -> str:
    """C statements: the forward pass of ``net`` into rows ``{tag}t{l}`` (a layer's input's tangents
    and value), hidden values ``{tag}h{l}`` and slopes ``{tag}s{l}``."""
    d, o = net.dims, net.offsets
    lines = [f"wm_v8 {tag}t0[{d[1]}];", f"wm_first({d[1]}, {d[0]}, p + {o[0][0]}, p + {o[0][1]}, cq, sq, p + CTX, {tag}t0);"]
    for layer in range(net.hidden):
        m, n_out = d[layer + 1], d[layer + 2]
        w, b = o[layer + 1]
        lines += [
            f"casadi_real {tag}h{layer}[{m}], {tag}s{layer}[{m}];",
            f"wm_v8 {tag}u{layer}[{m}], {tag}t{layer + 1}[{n_out}];",
            f"wm_tanh({m}, {tag}t{layer}, {tag}h{layer}, {tag}s{layer}, {tag}u{layer});",
            f"wm_rows({n_out}, {m}, p + {w}, {tag}u{layer}, {tag}t{layer + 1});",
            f"for (i = 0; i < {n_out}; ++i) {tag}t{layer + 1}[i][7] += p[{b} + i];",
        ]
    return "\n  ".join(lines)


def _reverse_c(net: Net, tag: str, c: str, grad: str) -> str:
    """C statements: the q-Hessian of ``c . o(q)`` (adjoint ``c`` of the output) into ``hess``, by
    the reverse pass through ``{tag}t{l}`` (tangents), ``{tag}h{l}``, ``{tag}s{l}``; the gradient into ``grad``."""
    d, o = net.dims, net.offsets
    top = net.hidden
    lines = [f"casadi_real g{top}[{d[top]}];", f"wm_back({d[-1]}, {d[top]}, p + {o[top][0]}, 0, {c}, g{top});"]
    for layer in reversed(range(top)):
        m, n_in = d[layer + 1], d[layer]
        lines += [
            f"casadi_real dd{layer}[{m}], g{layer}[{n_in}];",
            f"for (i = 0; i < {m}; ++i) dd{layer}[i] = g{layer + 1}[i] * (-2.0 * {tag}h{layer}[i] * {tag}s{layer}[i]);",
            f"wm_outer({m}, dd{layer}, {tag}t{layer}, hess);",
            f"wm_back({m}, {n_in}, p + {o[layer][0]}, {tag}s{layer}, g{layer + 1}, g{layer});",
        ]
    lines.append(f"wm_features(cq, sq, g0, hess, {grad});")
    return "\n  ".join(lines)


def _function(name: str, n_in: int, body: str, zeros: str) -> str:
    """A kernel with CasADi's calling convention; a null input (CasADi's all-zero argument) reads ``zeros``."""
    inputs = "\n  ".join(f"const casadi_real* in{i} = arg[{i}] ? arg[{i}] : {zeros};" for i in range(n_in))
    return f"""
WM_KERNEL int {name}(const casadi_real** arg, casadi_real** res, casadi_int* iw, casadi_real* w, int mem) {{
  int i, j, k, n;
  {inputs}
  (void)iw; (void)w; (void)mem; (void)i; (void)j; (void)k; (void)n;
  {body}
  return 0;
}}
"""


def kernel_source(residual: object) -> tuple[dict[str, str], str]:
    """The kernels' C for ``residual``'s architecture.

    Returns:
        ``({pass name: C symbol}, C definitions)``; the definitions use
        ``casadi_real`` and ``casadi_int``, which the including file defines.
    """
    l_net, v_net, ctx, n_params = layouts(residual)
    floor = float(residual.cfg.diag_floor)  # type: ignore[attr-defined]
    tag = TAG  # the source's hash, at the end
    names = {k: f"wm_{k}_{tag}" for k in KERNEL_NAMES}
    nl, dims, top = l_net.dims[-1], l_net.dims, l_net.hidden
    zeros = f"wm_zeros_{tag}"

    # res_l: (cos q, sin q, qd, p) -> (o, do/dq, d/dq (do/dq . qd), q-Hessian of sum_n w_n L_n) for the L network,
    # w_n = qd_i (L' qd)_j at L's entry n = (i, j)
    lines = [
        "const casadi_real *cq = in0, *sq = in1, *v = in2, *p = in3;",
        _forward_c(l_net, "L"),
        f"if (res[0]) for (i = 0; i < {nl}; ++i) res[0][i] = Lt{top}[i][7];",
        f"wm_store_rows({nl}, Lt{top}, res[1]);",
        "/* the mixed derivative, forward over forward along qd: rows [d/dq (da/dq . qd), da/dq . qd] */",
        f"wm_v8 r0[{dims[1]}];",
        f"for (i = 0; i < {dims[1]}; ++i) {{",
        f"  const casadi_real* wi = p + {l_net.offsets[0][0]} + i * {dims[0]};",
        "  casadi_real av = 0;",
        "  for (k = 0; k < 7; ++k) av += Lt0[i][k] * v[k];",
        "  for (k = 0; k < 7; ++k) r0[i][k] = wi[k] * (-cq[k] * v[k]) + wi[7 + k] * (-sq[k] * v[k]);",
        "  r0[i][7] = av;",
        "}",
    ]
    for layer in range(top):
        m, n_out = dims[layer + 1], dims[layer + 2]
        lines += [
            f"wm_v8 u{layer}[{m}], r{layer + 1}[{n_out}];",
            f"for (i = 0; i < {m}; ++i) {{",
            f"  casadi_real cav = (-2.0 * Lh{layer}[i] * Ls{layer}[i]) * r{layer}[i][7];",
            f"  u{layer}[i] = cav * Lt{layer}[i] + Ls{layer}[i] * r{layer}[i];",
            f"  u{layer}[i][7] = Ls{layer}[i] * r{layer}[i][7];",
            "}",
            f"wm_rows({n_out}, {m}, p + {l_net.offsets[layer + 1][0]}, u{layer}, r{layer + 1});",
        ]
    lines += [
        f"wm_store_rows({nl}, r{top}, res[2]);",
        "/* L's entries (softplus plus the floor on the diagonal), a = L' qd and the weights w */",
        f"static const int diag[{nl}] = {{{TRIL_DIAGONAL}}};",
        f"casadi_real lv[{nl}], la[7], c[{nl}], d2[{nl}];",
        f"for (i = 0; i < {nl}; ++i) {{",
        f"  casadi_real raw = Lt{top}[i][7];",
        f"  lv[i] = diag[i] ? (raw > 0 ? raw : 0.0) + log1p(exp(-fabs(raw))) + {floor!r} : raw;",
        "}",
        "for (k = 0; k < 7; ++k) la[k] = 0;",
        "for (i = 0, n = 0; i < 7; ++i)",
        "  for (j = 0; j <= i; ++j, ++n) la[j] += lv[n] * v[i];",
        "for (i = 0, n = 0; i < 7; ++i)",
        "  for (j = 0; j <= i; ++j, ++n) {",
        "    casadi_real wn = v[i] * la[j];",
        "    if (diag[n]) {  /* softplus' = sigmoid on the diagonal entries, the identity elsewhere */",
        f"      casadi_real sig = 1.0 / (1.0 + exp(-Lt{top}[n][7]));",
        "      c[n] = sig * wn;",
        "      d2[n] = (sig * (1.0 - sig)) * wn;",
        "    } else {",
        "      c[n] = wn;",
        "      d2[n] = 0.0;",
        "    }",
        "  }",
        "wm_v8 hess[7] = {{0}};",
        _reverse_c(l_net, "L", "c", "0"),
        f"wm_outer({nl}, d2, Lt{top}, hess);",
        "wm_store_hess(hess, res[3]);",
    ]
    fused = _function(names["res_l"], 4, "\n  ".join(lines), zeros)

    # res_v: (cos q, sin q, p) -> (grad, hess) of the V network's scalar output
    body = [
        "const casadi_real *cq = in0, *sq = in1, *p = in2;",
        _forward_c(v_net, "V"),
        "wm_v8 hess[7] = {{0}};",
        "const casadi_real one[1] = {1.0};",
        _reverse_c(v_net, "V", "one", "res[0]"),
        "wm_store_hess(hess, res[1]);",
    ]
    value = _function(names["res_v"], 3, "\n  ".join(body), zeros)

    zeros_c = f"static const casadi_real {zeros}[{n_params}];\n"
    source = f"#ifndef WM_KERNEL\n#define WM_KERNEL static\n#endif\n#define CTX {ctx}\n" + zeros_c + fused + value + "#undef CTX\n"
    return tagged(COMMON_C + source, names)


@dataclass
class ResidualKernels:
    """The compiled kernels of one architecture.

    Attributes:
        functions: ``{pass name: casadi.external}`` with the SX functions' inputs and outputs.
        library: The shared library they are loaded from.
    """

    functions: dict[str, ca.Function]
    library: Path


_LOADED: dict[str, ResidualKernels] = {}


def residual_kernels(residual: object, flags: str = DEFAULT_FLAGS) -> ResidualKernels:
    """Compiles (once per architecture, cached) and loads the kernels of ``residual``.

    Args:
        residual: A :class:`~whatmatters.dynamics.residual.LagrangianResidual`.
        flags: C compiler flags.

    Raises:
        CompileError: Without gcc, or if gcc fails.
    """
    names, source = kernel_source(residual)
    key = " ".join(names.values()) + " " + flags
    if key in _LOADED:
        return _LOADED[key]
    api = ["typedef double casadi_real;", "typedef long long casadi_int;", "#define WM_KERNEL", source]
    shapes = _shapes(residual)
    for kind, sym in names.items():
        ins, outs = shapes[kind]
        api.append(_api(sym, ins, outs))
    lib = compile_source("\n".join(api), "wm_residual_kernels", flags, "kernels")
    for kind, sym in names.items():
        register_kernel(sym, source)
    funcs = {kind: ca.external(sym, str(lib)) for kind, sym in names.items()}
    _LOADED[key] = ResidualKernels(funcs, lib)
    return _LOADED[key]


def _shapes(residual: object) -> dict[str, tuple[list[tuple[int, int]], list[tuple[int, int]]]]:
    """``{pass: (input shapes, output shapes)}``, as the SX functions of ``residual_derivatives`` have them."""
    l_net, _, _, n_params = layouts(residual)
    nl = l_net.dims[-1]
    q, p = (NQ, 1), (n_params, 1)  # cos q, sin q and qd: (7, 1) each
    return {
        "res_l": ([q, q, q, p], [(nl, 1), (nl, NQ), (nl, NQ), (NQ, NQ)]),
        "res_v": ([q, q, p], [(NQ, 1), (NQ, NQ)]),
    }


def _api(sym: str, ins: list[tuple[int, int]], outs: list[tuple[int, int]]) -> str:
    """The functions ``casadi.external`` reads beside the entry point: the counts and (dense) sparsities of the inputs and outputs."""
    sp = lambda shapes, tag: "".join(f"static const casadi_int {sym}_{tag}{i}[3] = {{{r}, {c}, 1}};\n" for i, (r, c) in enumerate(shapes))  # noqa: E731
    case = lambda shapes, tag: " ".join(f"if (i == {i}) return {sym}_{tag}{i};" for i in range(len(shapes)))  # noqa: E731
    return (
        sp(ins, "in") + sp(outs, "out")
        + f"casadi_int {sym}_n_in(void) {{ return {len(ins)}; }}\ncasadi_int {sym}_n_out(void) {{ return {len(outs)}; }}\n"
        + f"const casadi_int* {sym}_sparsity_in(casadi_int i) {{ {case(ins, 'in')} return 0; }}\n"
        + f"const casadi_int* {sym}_sparsity_out(casadi_int i) {{ {case(outs, 'out')} return 0; }}\n"
    )  # fmt: skip
