"""Locate acados and make it usable from the current Python process.

acados' Python interface (``acados_template``) renders C code with the tera
renderer, compiles it with ``make`` against ``libacados`` and loads the result
with :mod:`ctypes`. It finds everything through three environment variables,
read when an ``AcadosOcp`` is constructed (not at import time):

* ``ACADOS_SOURCE_DIR``: a folder holding ``include/`` and ``lib/``.
* ``ACADOS_PYTHON_INTERFACE_PATH``: the ``acados_template`` package folder
  (``acados_layout.json`` is read from there).
* ``TERA_PATH``: the ``t_renderer`` executable. If it is missing,
  ``acados_template`` asks on stdin whether to download it, which hangs or
  fails without a terminal, so it is checked here first.

Two layouts are supported:

1. A user's own acados build, when ``ACADOS_SOURCE_DIR`` is already exported
   and holds ``lib/libacados.so`` and ``include/acados_c``. Its Python
   interface is imported as ``acados_template``.
2. The PyPI wheel ``comma-deps-acados`` (acados 0.2.x), which ships
   ``acados/install/{include,lib,bin/t_renderer}`` and the interface as
   ``acados.acados_template``. It also vendors a trimmed casadi, so install
   PyPI ``casadi`` *after* it (``pip install --force-reinstall --no-deps casadi``
   if it was installed first, since the wheel overwrites casadi's files).

``libacados.so`` and the generated solver libraries carry no RPATH, and the
dynamic loader reads ``LD_LIBRARY_PATH`` only when a process starts. Changing
it afterwards is useless for the current process, so the libraries are
preloaded here with ``ctypes.CDLL(..., RTLD_GLOBAL)``, dependencies first. The
loader then resolves the generated solver's ``libacados.so`` dependency by
SONAME to the copy already loaded. ``LD_LIBRARY_PATH`` is still prepended so
child processes (for example generated test executables) find the libraries.

Example:
    >>> from whatmatters.mpc.acados_env import import_acados_template
    >>> at = import_acados_template()
    >>> ocp = at.AcadosOcp()  # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import logging
import os
import shutil
import stat
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from whatmatters.errors import WhatmattersError

__all__ = [
    "AcadosNotFoundError",
    "AcadosPaths",
    "configure_acados_environment",
    "import_acados_template",
]

_LOG = logging.getLogger(__name__)

_WHEEL_PACKAGE = "acados"
_WHEEL_TEMPLATE_MODULE = "acados.acados_template"
_USER_TEMPLATE_MODULE = "acados_template"

# Load order matters: each library's DT_NEEDED entries must already be loaded.
# Libraries that a given build may lack (other QP solvers) are optional.
_OPTIONAL_DEPENDENCIES: tuple[str, ...] = ("blasfeo", "hpipm", "qpOASES_e", "daqp", "osqp", "qore")
_MAIN_LIBRARY = "acados"

_lock = threading.Lock()
_configured: AcadosPaths | None = None
# Keep the handles alive for the life of the process; acados must never be unloaded.
_preloaded: list[ctypes.CDLL] = []


class AcadosNotFoundError(WhatmattersError, RuntimeError):
    """No usable acados installation was found, or its libraries failed to load.

    The message lists every location that was searched and why each was rejected.
    """


@dataclass(frozen=True)
class AcadosPaths:
    """Where the acados installation in use lives.

    Attributes:
        source_dir: Value of ``ACADOS_SOURCE_DIR``; holds ``include/`` and ``lib/``.
        interface_path: Value of ``ACADOS_PYTHON_INTERFACE_PATH``; the
            ``acados_template`` package folder.
        tera_path: Value of ``TERA_PATH``; the ``t_renderer`` executable.
        lib_dir: Folder holding ``libacados`` and its dependencies.
        template_module: Importable name of the Python interface,
            ``"acados.acados_template"`` for the wheel, ``"acados_template"``
            for a user's build.
    """

    source_dir: Path
    interface_path: Path
    tera_path: Path
    lib_dir: Path
    template_module: str = _WHEEL_TEMPLATE_MODULE


def _lib_name(stem: str) -> str:
    """File name of a shared library on this platform, e.g. ``libacados.so``."""
    ext = ".dylib" if sys.platform == "darwin" else ".so"
    return f"lib{stem}{ext}"


def _ensure_executable(path: Path) -> bool:
    """Whether ``path`` is an executable file, setting its execute bits if we may."""
    if not path.is_file():
        return False
    if os.access(path, os.X_OK):
        return True
    try:
        mode = path.stat().st_mode
        path.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    except OSError as exc:
        _LOG.warning("tera renderer %s is not executable and chmod failed: %s", path, exc)
        return False
    _LOG.info("set execute permission on tera renderer %s", path)
    return os.access(path, os.X_OK)


def _check_layout(source_dir: Path, interface_path: Path, tera_path: Path) -> list[str]:
    """Problems with a candidate installation; an empty list means it is usable."""
    problems: list[str] = []
    lib = source_dir / "lib" / _lib_name(_MAIN_LIBRARY)
    if not lib.is_file():
        problems.append(f"missing {lib}")
    header = source_dir / "include" / "acados_c" / "ocp_nlp_interface.h"
    if not header.is_file():
        problems.append(f"missing {header}")
    layout = interface_path / "acados_layout.json"
    if not layout.is_file():
        problems.append(f"missing {layout}")
    if not _ensure_executable(tera_path):
        problems.append(f"tera renderer missing or not executable: {tera_path}")
    return problems


def _user_build_candidate() -> tuple[AcadosPaths | None, str]:
    """A user's build named by an exported ``ACADOS_SOURCE_DIR``, if valid.

    Returns:
        The paths, or ``None``, and a line describing what was searched.
    """
    exported = os.environ.get("ACADOS_SOURCE_DIR", "").strip()
    if not exported:
        return None, "ACADOS_SOURCE_DIR: not set"
    source_dir = Path(exported).expanduser().resolve()
    # A variable inherited from a parent process that used the wheel points into the wheel.
    wheel_root = _wheel_root()
    in_wheel = wheel_root is not None and source_dir == (wheel_root / "install").resolve()
    interface_env = os.environ.get("ACADOS_PYTHON_INTERFACE_PATH", "").strip()
    if interface_env:
        interface_path = Path(interface_env).expanduser().resolve()
    elif in_wheel and wheel_root is not None:
        interface_path = wheel_root / "acados_template"
    else:
        interface_path = source_dir / "interfaces" / "acados_template" / "acados_template"
    tera_env = os.environ.get("TERA_PATH", "").strip()
    tera_path = Path(tera_env).expanduser().resolve() if tera_env else source_dir / "bin" / "t_renderer"
    problems = _check_layout(source_dir, interface_path, tera_path)
    if problems:
        return None, f"ACADOS_SOURCE_DIR={source_dir}: " + "; ".join(problems)
    module = _WHEEL_TEMPLATE_MODULE if in_wheel else _USER_TEMPLATE_MODULE
    paths = AcadosPaths(source_dir, interface_path, tera_path, source_dir / "lib", module)
    return paths, f"ACADOS_SOURCE_DIR={source_dir}: usable"


def _wheel_root() -> Path | None:
    """Folder of the ``acados`` package installed by ``comma-deps-acados``, if any."""
    try:
        spec = importlib.util.find_spec(_WHEEL_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        root = Path(location)
        if (root / "install").is_dir():
            return root.resolve()
    return None


def _wheel_candidate() -> tuple[AcadosPaths | None, str]:
    """The ``comma-deps-acados`` wheel's files, located through importlib.

    Returns:
        The paths, or ``None``, and a line describing what was searched.
    """
    root = _wheel_root()
    if root is None:
        return None, f"package {_WHEEL_PACKAGE!r} with an install/ folder (pip install comma-deps-acados): not found"
    source_dir = root / "install"
    interface_path = root / "acados_template"
    tera_path = source_dir / "bin" / "t_renderer"
    problems = _check_layout(source_dir, interface_path, tera_path)
    if problems:
        return None, f"package {_WHEEL_PACKAGE!r} at {root}: " + "; ".join(problems)
    paths = AcadosPaths(source_dir, interface_path, tera_path, source_dir / "lib", _WHEEL_TEMPLATE_MODULE)
    return paths, f"package {_WHEEL_PACKAGE!r} at {root}: usable"


def _prepend_env_path(name: str, entry: Path) -> None:
    """Put ``entry`` first in the ``os.pathsep``-separated variable ``name``, once."""
    current = [p for p in os.environ.get(name, "").split(os.pathsep) if p]
    value = str(entry)
    if current and current[0] == value:
        return
    os.environ[name] = os.pathsep.join([value, *[p for p in current if p != value]])


def _preload_libraries(lib_dir: Path) -> None:
    """Load acados' shared libraries into the process with ``RTLD_GLOBAL``.

    Raises:
        AcadosNotFoundError: ``libacados`` or one of its dependencies failed to load.
    """
    mode = getattr(ctypes, "RTLD_GLOBAL", 0)
    for stem in (*_OPTIONAL_DEPENDENCIES, _MAIN_LIBRARY):
        path = lib_dir / _lib_name(stem)
        if not path.is_file():
            if stem == _MAIN_LIBRARY:
                raise AcadosNotFoundError(f"acados library not found: {path}")
            continue
        try:
            _preloaded.append(ctypes.CDLL(str(path), mode=mode))
        except OSError as exc:
            raise AcadosNotFoundError(f"failed to load {path}: {exc}") from exc
        _LOG.debug("preloaded %s", path)


def _check_build_tools() -> None:
    """Warn when the tools needed to compile a new solver are missing."""
    for tool in ("make", "cc"):
        if shutil.which(tool) is None:
            _LOG.warning(
                "%r not found on PATH: new acados solvers cannot be compiled "
                "(solvers compiled earlier can still be loaded with build=False, generate=False)",
                tool,
            )


def configure_acados_environment() -> AcadosPaths:
    """Find acados and prepare this process to generate, build and load solvers.

    A user's build named by an exported ``ACADOS_SOURCE_DIR`` wins when it is
    valid; otherwise the ``comma-deps-acados`` wheel is used. This sets
    ``ACADOS_SOURCE_DIR``, ``ACADOS_PYTHON_INTERFACE_PATH`` and ``TERA_PATH``
    in :data:`os.environ`, prepends the library folder to ``LD_LIBRARY_PATH``
    (``DYLD_LIBRARY_PATH`` on macOS) for child processes, and preloads the
    shared libraries so generated solvers load in this process. Safe to call
    many times: later calls return the first result and change nothing.

    Returns:
        The paths in use.

    Raises:
        AcadosNotFoundError: No usable installation was found (the message
            names each location searched), or its libraries failed to load.
    """
    global _configured
    with _lock:
        if _configured is not None:
            return _configured

        searched: list[str] = []
        paths, note = _user_build_candidate()
        searched.append(note)
        if paths is None and os.environ.get("ACADOS_SOURCE_DIR", "").strip():
            _LOG.warning("ignoring exported acados build: %s", note)
        if paths is None:
            paths, note = _wheel_candidate()
            searched.append(note)
        if paths is None:
            raise AcadosNotFoundError("no usable acados installation found; searched:\n  " + "\n  ".join(searched))

        os.environ["ACADOS_SOURCE_DIR"] = str(paths.source_dir)
        os.environ["ACADOS_PYTHON_INTERFACE_PATH"] = str(paths.interface_path)
        os.environ["TERA_PATH"] = str(paths.tera_path)
        loader_var = "DYLD_LIBRARY_PATH" if sys.platform == "darwin" else "LD_LIBRARY_PATH"
        _prepend_env_path(loader_var, paths.lib_dir)
        _preload_libraries(paths.lib_dir)
        _check_build_tools()

        _LOG.info(
            "acados configured from %s (interface %s, tera %s, python module %s)",
            paths.source_dir,
            paths.interface_path,
            paths.tera_path,
            paths.template_module,
        )
        _configured = paths
        return paths


def import_acados_template() -> ModuleType:
    """Configure the environment, then import acados' Python interface.

    Returns:
        ``acados.acados_template`` for the wheel, or ``acados_template`` for a
        user's build. For a user's build whose interface is not installed, the
        folder above ``ACADOS_PYTHON_INTERFACE_PATH`` is appended to
        :data:`sys.path` first.

    Raises:
        AcadosNotFoundError: acados was not found or its interface cannot be imported.
    """
    paths = configure_acados_environment()
    name = paths.template_module
    if name == _USER_TEMPLATE_MODULE and importlib.util.find_spec(name) is None:
        parent = str(paths.interface_path.parent)
        if (paths.interface_path / "__init__.py").is_file() and parent not in sys.path:
            _LOG.info("adding %s to sys.path to import %s", parent, name)
            sys.path.append(parent)
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise AcadosNotFoundError(
            f"acados found at {paths.source_dir} but its Python interface {name!r} "
            f"failed to import (searched {paths.interface_path}): {exc}"
        ) from exc
