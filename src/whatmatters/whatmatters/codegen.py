"""CasADi functions compiled to C once (cached per content, flags and CPU) and loaded.

Two ways to call the compiled code:

* :func:`compile_library` + ``casadi.external``: CasADi's own call (any
  sparsity, DM or numpy arguments); its per-call overhead is tens of
  microseconds plus the conversion of every argument.
* :class:`CompiledFunction`: the generated C entry point called through
  ctypes with preallocated buffers (dense inputs and outputs only), a few
  microseconds per call: for small functions evaluated every control step.

:func:`compile_source` compiles hand-written C the same way (e.g. the acados
stage loops of :mod:`whatmatters.mpc.stage_io`).

Without ``gcc`` both raise :class:`CompileError`; callers fall back to
CasADi's virtual machine or to numpy.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import casadi as ca
import numpy as np

from whatmatters.errors import WhatmattersError
from whatmatters.io import cache_root, file_lock, machine_id

__all__ = [
    "DEFAULT_FLAGS", "CompileError", "CompiledFunction", "compile_library", "compile_source", "evaluate", "link_kernels", "register_kernel",
    "shared_compiled",
]  # fmt: skip

log = logging.getLogger(__name__)

#: Part of every cache key: bump when the generation options change.
_CODEGEN_VERSION = "1"

#: CasADi's generated files declare the external functions they call after this line.
_EXTERNAL_MARK = "/* External functions */"

#: C compiler flags of compiled functions when none are given (also ``MpcConfig.compile_flags``' default).
DEFAULT_FLAGS = "-O2 -march=native -ffp-contract=fast"


class CompileError(WhatmattersError, RuntimeError):
    """The C code could not be compiled (no gcc, or gcc failed)."""


_KERNELS: dict[str, str] = {}  # C symbol -> the C source that defines it
_KERNELS_LOCK = threading.Lock()


def register_kernel(symbol: str, source: str) -> None:
    """Makes :func:`link_kernels` insert ``source`` into generated files that call ``symbol``.

    For hand-written C functions that CasADi graphs call as ``casadi.external``:
    the generated code only declares them. ``source`` defines them with
    internal linkage (several symbols may share one source, inserted once).
    """
    with _KERNELS_LOCK:
        _KERNELS[symbol] = source


def link_kernels(c_file: Path) -> list[str]:
    """Inserts the registered kernels that ``c_file`` (CasADi-generated C) calls, before their use.

    Returns:
        The symbols inserted (none if it calls none).

    Raises:
        CompileError: If a called kernel's source cannot be placed (no CasADi prologue found).
    """
    text = c_file.read_text()
    with _KERNELS_LOCK:
        used = [sym for sym in _KERNELS if f"{sym}(" in text]
        sources = list(dict.fromkeys(_KERNELS[sym] for sym in used))
    if not used:
        return []
    anchor = text.find(_EXTERNAL_MARK)
    if anchor < 0:
        raise CompileError(f"{c_file}: calls {', '.join(used)} but has no '{_EXTERNAL_MARK}' to place them before")
    c_file.write_text(text[:anchor] + "".join(sources) + "\n" + text[anchor:])
    return used


def compile_library(functions: list[ca.Function], prefix: str, flags: str, folder: str, cache_dir: Path | None = None) -> Path:
    """Generates and compiles ``functions`` into one shared library, or finds it in the cache.

    Args:
        functions: CasADi functions (their names become the C symbols).
        prefix: Start of the library's file name.
        flags: C compiler flags (part of the cache key with the CPU model).
        folder: Cache sub-folder.
        cache_dir: Cache root (default :func:`whatmatters.io.cache_root`).

    Returns:
        The path of the ``.so``.

    Raises:
        CompileError: Without gcc, or naming the library if gcc fails.
    """
    ident = "".join(fn.serialize() for fn in functions)

    def generate(out: Path, name: str) -> None:
        cg = ca.CodeGenerator(f"{name}.c", {"with_header": False})  # casadi_int: long long, as casadi.external expects
        for fn in functions:
            cg.add(fn)
        cg.generate(str(out) + "/")
        link_kernels(out / f"{name}.c")

    return _compile(ident, generate, prefix, flags, folder, cache_dir)


def compile_source(code: str, prefix: str, flags: str, folder: str, cache_dir: Path | None = None) -> Path:
    """Compiles C source into a shared library, or finds it in the cache (as :func:`compile_library`).

    Undefined symbols are allowed: they resolve when the library is loaded
    (e.g. acados' functions, which :mod:`whatmatters.mpc.acados_env` preloads globally).
    """

    def generate(out: Path, name: str) -> None:
        (out / f"{name}.c").write_text(code)

    return _compile(code, generate, prefix, flags, folder, cache_dir)


def _compile(ident: str, generate: Callable[[Path, str], None], prefix: str, flags: str, folder: str, cache_dir: Path | None) -> Path:
    key = hashlib.sha256(f"{ident} {flags} {machine_id()} {_CODEGEN_VERSION}".encode()).hexdigest()[:16]
    name = f"{prefix}_{key}"
    out = (cache_dir or cache_root()) / folder
    lib = out / f"{name}.so"
    with file_lock(out / f"{name}.lock"):
        if not lib.is_file():
            if shutil.which("gcc") is None:  # a cached library serves without it
                raise CompileError(f"host {socket.gethostname()}: gcc is not installed, needed to compile {name} (first use on this machine)")
            log.info("compiling %s (first use; cached afterwards)", name)
            start = time.perf_counter()
            generate(out, name)
            tmp = out / f"{name}.so.tmp"
            proc = subprocess.run(["gcc", *flags.split(), "-fPIC", "-shared", str(out / f"{name}.c"), "-o", str(tmp)], capture_output=True, text=True)
            if proc.returncode != 0:
                raise CompileError(f"gcc failed on {out / name}.c: {proc.stderr.strip()[-500:]}")
            tmp.replace(lib)
            log.info("compiled %s in %.1f s", name, time.perf_counter() - start)
    return lib


class CompiledFunction:
    """A dense CasADi function, compiled, called through ctypes.

    Inputs are copied into preallocated buffers in CasADi's column-major
    order (a numpy (r, c) array is read as the r x c input); outputs are returned as
    new arrays, 1-D for column vectors. Calls are serialised by a lock (the
    buffers are shared).

    Args:
        fn: The function; every input and output must be dense.
        flags: C compiler flags.
        cache_dir: Cache root.

    Raises:
        ValueError: For a sparse input or output.
        CompileError: If it cannot be compiled.
    """

    def __init__(self, fn: ca.Function, flags: str = DEFAULT_FLAGS, cache_dir: Path | None = None) -> None:
        for i in range(fn.n_in()):
            if not fn.sparsity_in(i).is_dense():
                raise ValueError(f"{fn.name()}: input {i} is sparse")
        for i in range(fn.n_out()):
            if not fn.sparsity_out(i).is_dense():
                raise ValueError(f"{fn.name()}: output {i} is sparse")
        self.name = fn.name()
        self.lib_path = compile_library([fn], f"wm_fn_{self.name}", flags, "functions", cache_dir)
        self._lib = ctypes.CDLL(str(self.lib_path))
        self._fn = getattr(self._lib, self.name)
        self._fn.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int]
        self._fn.restype = ctypes.c_int
        sizes = [ctypes.c_longlong() for _ in range(4)]
        work = getattr(self._lib, f"{self.name}_work")
        work.argtypes = [ctypes.POINTER(ctypes.c_longlong)] * 4
        if work(*sizes) != 0:
            raise CompileError(f"{self.name}_work failed")
        n_arg, n_res, n_iw, n_w = (max(s.value, 1) for s in sizes)
        self._in_shapes = [fn.size_in(i) for i in range(fn.n_in())]
        self._out_shapes = [fn.size_out(i) for i in range(fn.n_out())]
        self._inputs = [np.zeros(r * c) for r, c in self._in_shapes]
        self._outputs = [np.zeros(r * c) for r, c in self._out_shapes]
        self._arg = (ctypes.c_void_p * n_arg)(*[a.ctypes.data for a in self._inputs])
        self._res = (ctypes.c_void_p * n_res)(*[a.ctypes.data for a in self._outputs])
        self._iw = np.zeros(n_iw, dtype=np.int64)
        self._w = np.zeros(n_w)
        self._lock = threading.Lock()

    def __call__(self, *args: np.ndarray) -> list[np.ndarray]:
        """Evaluates the function.

        Raises:
            ValueError: For a wrong number of arguments or a wrong size.
        """
        if len(args) != len(self._inputs):
            raise ValueError(f"{self.name} takes {len(self._inputs)} inputs, got {len(args)}")
        with self._lock:
            for i, (buf, a) in enumerate(zip(self._inputs, args)):
                a = np.asarray(a, dtype=float)
                if a.size != buf.size:
                    raise ValueError(f"{self.name}: input {i} needs {self._in_shapes[i]} values, got shape {a.shape}")
                buf[:] = a.ravel(order="F") if a.ndim == 2 else a.ravel()
            if self._fn(self._arg, self._res, self._iw.ctypes.data, self._w.ctypes.data, 0) != 0:
                raise RuntimeError(f"{self.name} failed")
            return [out.reshape(shape, order="F").copy() if shape[1] > 1 else out.copy() for out, shape in zip(self._outputs, self._out_shapes)]


def evaluate(fn: ca.Function | CompiledFunction, *args: np.ndarray) -> list[np.ndarray]:
    """The outputs of a :class:`CompiledFunction` or of a CasADi function (its VM: the fallback) as numpy arrays.

    A compiled function returns column vectors 1-D, CasADi (n, 1): callers ravel where it matters.
    """
    if isinstance(fn, CompiledFunction):
        return fn(*args)
    return [np.asarray(out) for out in fn.call([ca.DM(a) for a in args])]


_SHARED: dict[str, CompiledFunction | None] = {}
_SHARED_LOCK = threading.Lock()


def shared_compiled(key: str, build: Callable[[], ca.Function], flags: str = DEFAULT_FLAGS) -> CompiledFunction | None:
    """One :class:`CompiledFunction` per process and ``key`` (objects that hold it stay picklable).

    Args:
        key: Determines the function completely (e.g. its dimensions, or a hash of its constants).
        build: Makes the function on first use of ``key``.
        flags: C compiler flags.

    Returns:
        The compiled function, or None (logged once per key) if it cannot be
        compiled; the caller then evaluates it another way.
    """
    with _SHARED_LOCK:
        if key not in _SHARED:
            try:
                _SHARED[key] = CompiledFunction(build(), flags)
            except CompileError as exc:
                log.warning("%s is not compiled (%s); using the slower path", key, exc)
                _SHARED[key] = None
        return _SHARED[key]
