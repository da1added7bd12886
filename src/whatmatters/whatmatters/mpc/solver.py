"""Solver wrapper: compile once (cached across processes), then solve many times.

The generated code and the compiled library live in a cache folder outside
git, ``$WHATMATTERS_CACHE`` or ``~/.cache/whatmatters``, under
``acados/<formulation key>/``. A second process with the same formulation
loads the compiled library without generating or compiling anything; a file
lock serialises concurrent first builds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from whatmatters.dynamics.base import DynamicsModel
from whatmatters.errors import ConfigError, WhatmattersError
from whatmatters.io import cache_root, file_lock
from whatmatters.mpc.acados_env import import_acados_template
from whatmatters.mpc.config import MpcConfig
from whatmatters.mpc.constraints import OcpConstraints, as_constraints
from whatmatters.mpc.discrete import chained_discrete_codegen, rk4_functions
from whatmatters.mpc.ocp import build_ocp, formulation_key, stage_parameter_layout
from whatmatters.mpc.stage_io import StageIO

__all__ = ["AcadosMpcSolver", "MpcBuildError", "SolveResult", "cache_root"]

log = logging.getLogger(__name__)


class MpcBuildError(WhatmattersError, RuntimeError):
    """The acados solver could not be generated, compiled or loaded."""


def check_build_tools(folder: Path) -> None:
    """Raises :class:`MpcBuildError` naming this host and the missing tools if a solver cannot be built here.

    Building runs ``make`` on acados' generated Makefile, which compiles with
    ``$CC`` (make's default: ``cc``).

    Args:
        folder: The cache folder the solver would be built into (named in the message).
    """
    missing = [tool for tool in (os.environ.get("CC") or "cc", "make") if shutil.which(tool) is None]
    if missing:
        raise MpcBuildError(
            f"host {socket.gethostname()}: {' and '.join(missing)} not found, needed to build the acados solver {folder.name} "
            f"(first use of this formulation on this machine); install a C toolchain, or fill {folder.parent} from a machine with the same CPU"
        )


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """acados prints notices (and make its output) to stdout; keep stdout for results."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


@contextlib.contextmanager
def _parallel_make() -> Iterator[None]:
    """acados compiles its generated files with ``make``, one at a time; run one job per CPU.

    A user's own ``MAKEFLAGS`` is left as it is.
    """
    if "MAKEFLAGS" in os.environ:
        yield
        return
    os.environ["MAKEFLAGS"] = f"-j{max(1, os.cpu_count() or 1)}"
    try:
        yield
    finally:
        os.environ.pop("MAKEFLAGS", None)


@dataclass(frozen=True)
class SolveResult:
    """One solver call.

    Attributes:
        status: acados status (0 = success).
        u0: First input, Nm, shape (nu,).
        x: Predicted states, shape (N + 1, nx).
        u: Planned inputs, shape (N, nu).
        time_s: acados' own solve time (``time_tot``), s.
        sqp_iter: SQP iterations.
    """

    status: int
    u0: np.ndarray
    x: np.ndarray
    u: np.ndarray
    time_s: float
    sqp_iter: int

    @property
    def ok(self) -> bool:
        """Success and a finite solution."""
        return self.status == 0 and bool(np.all(np.isfinite(self.x)) and np.all(np.isfinite(self.u)))


def _cache_entry(key: str, cache_dir: Path | None) -> tuple[str, Path]:
    """The solver's name and cache folder for a formulation key."""
    name = f"wm_{key[:16]}"
    return name, (cache_dir or cache_root()) / "acados" / name


def _cache_files(name: str, folder: Path) -> tuple[Path, Path]:
    """A cached solver's acados JSON and compiled library."""
    return folder / f"{name}.json", folder / "c_generated_code" / f"libacados_ocp_solver_{name}.so"


class AcadosMpcSolver:
    """A compiled acados OCP solver for one model formulation.

    Args:
        model: Dynamics model (CasADi form used for code generation).
        cfg: Problem and solver settings.
        limits: The constraints, or symmetric input bounds (nu,) (the arm's torque limits, Nm).
        cache_dir: Cache folder; :func:`cache_root` if None.

    Attributes:
        build_seconds: Time spent generating and compiling in this process
            (0 when the cached library was loaded).
        key: The formulation key (names the cache entry).
        parameters: The runtime parameters set now (weights and context), (n_params,).
    """

    def __init__(
        self,
        model: DynamicsModel,
        cfg: MpcConfig,
        limits: np.ndarray | OcpConstraints,
        cache_dir: Path | None = None,
    ) -> None:
        self.model = model
        self.cfg = cfg
        self.nx, self.nu, self.n = model.nx, model.nu, cfg.horizon
        self.n_params = model.n_params  # fixed by the formulation (a learned model counts its weights on every call)
        self.constraints = as_constraints(limits)
        self.constraints.check_dims(self.nx, self.nu)
        self.key = formulation_key(model, cfg, self.constraints)
        self._ref_at, self._hess_at, n_stage = stage_parameter_layout(model, cfg)
        # stage_hessians: every stage's parameter vector kept here, sent to acados once per solve
        self._stage_p = np.zeros((self.n + 1, n_stage)) if cfg.stage_hessians else None
        self._stage_dirty = True
        name, folder = _cache_entry(self.key, cache_dir)
        self.build_seconds = 0.0
        self._solver = self._load_or_build(name, folder)
        self._io = StageIO(self._solver)
        self._yref = np.zeros((self.n, self.nx + self.nu))
        # acados multiplies every stage cost by a "scaling" (its time step by
        # default); set it explicitly from the config (a run-time field; the
        # terminal cost has none), so the OCP is exactly the documented one.
        scale = np.array([cfg.stage_scale])
        for k in range(self.n):
            self._io.set_cost(k, b"scaling", scale)
        self.set_parameters(model.parameter_values())
        self.set_weights(cfg.state_weight, cfg.input_weight)
        self.reset_input_bounds()  # the bounds are run-time data: one build serves any limits

    @property
    def torque_limits(self) -> np.ndarray:
        """The symmetric input bounds ``|u| <= torque_limits``, (nu,) (the arm's torque limits, Nm).

        Raises:
            ConfigError: If the input bounds are not symmetric.
        """
        if not np.array_equal(-self.constraints.u_lower, self.constraints.u_upper):
            raise ConfigError("this solver's input bounds are not symmetric: use solver.constraints")
        return self.constraints.u_upper

    @staticmethod
    def is_cached(model: DynamicsModel, cfg: MpcConfig, limits: np.ndarray | OcpConstraints, cache_dir: Path | None = None) -> bool:
        """Whether the compiled solver of this formulation is in the cache (then building one only loads it)."""
        return all(f.is_file() for f in _cache_files(*_cache_entry(formulation_key(model, cfg, limits), cache_dir)))

    def _load_or_build(self, name: str, folder: Path) -> Any:
        at = import_acados_template()
        json_file, lib = _cache_files(name, folder)
        with file_lock(folder.parent / f"{name}.lock"), _stdout_to_stderr():
            if lib.is_file() and json_file.is_file():
                log.debug("loading cached acados solver %s", folder)
                try:
                    return at.AcadosOcpSolver(None, json_file=str(json_file), build=False, generate=False, verbose=False)
                except Exception as exc:  # noqa: BLE001 - a stale cache entry is rebuilt below
                    log.warning("cached solver %s failed to load (%s); rebuilding", folder, exc)
            log.info("building acados solver %s (first use of this formulation; cached afterwards)", name)
            check_build_tools(folder)
            folder.mkdir(parents=True, exist_ok=True)
            ocp = build_ocp(self.model, self.cfg, self.constraints, name)
            ocp.code_export_directory = str(folder / "c_generated_code")
            start = time.perf_counter()
            discrete = ocp.solver_options.integrator_type == "DISCRETE"
            try:
                extra = stage_parameter_layout(self.model, self.cfg)[2] - self.model.n_params
                functions = rk4_functions(self.model, self.cfg.dt, name, self.cfg.rk4_jacobian, extra)
                codegen = chained_discrete_codegen(functions) if discrete else contextlib.nullcontext()
                with codegen, _parallel_make():
                    solver = at.AcadosOcpSolver(ocp, json_file=str(json_file), verbose=False)
            except Exception as exc:  # acados raises bare Exceptions and OSErrors
                raise MpcBuildError(f"building acados solver in {folder} failed: {exc}") from exc
            self.build_seconds = time.perf_counter() - start
            log.info("built %s in %.1f s", name, self.build_seconds)
            return solver

    # ----------------------------------------------------------- run-time data
    def check_model(self, model: DynamicsModel) -> None:
        """Checks that ``model`` runs on this compiled solver (its formulation key is this solver's).

        A learned model of the same architecture passes whatever its weights
        (they are run-time parameters); a rigid-body model passes only with
        the same numbers (they are in the generated code). Builds the model's
        CasADi form: call it off the control thread.

        Raises:
            MpcBuildError: If ``model`` would need a different compiled solver.
        """
        key = formulation_key(model, self.cfg, self.constraints)
        if key != self.key:
            raise MpcBuildError(f"{type(model).__name__} has another formulation than this solver's (key {key[:16]} != {self.key[:16]}); build a new solver")

    def swap_model(self, model: DynamicsModel) -> None:
        """Replaces the model by one of the same formulation (e.g. a new checkpoint): no rebuild.

        Its weights (and current context) become the runtime parameters.

        Raises:
            MpcBuildError: If ``model`` would need a different compiled solver (:meth:`check_model`).
        """
        self.check_model(model)
        self.model = model
        self.set_parameters(model.parameter_values())

    def set_parameters(self, values: np.ndarray) -> None:
        """Sets the model's runtime parameters on every stage, shape (n_params,)."""
        values = np.ascontiguousarray(values, dtype=float)
        if values.shape != (self.n_params,):
            raise ValueError(f"parameters must have shape ({self.n_params},), got {values.shape}")
        self.parameters = values.copy()
        if self._stage_p is not None:  # the stage vector holds the cost's data after them
            self._stage_p[:, : self.n_params] = values
            self._stage_dirty = True
        elif values.size:
            for k in range(self.n + 1):
                self._io.set_params(k, values)

    def set_parameter_slice(self, start: int, values: np.ndarray) -> None:
        """Overwrites ``p[start : start + len(values)]`` on every stage (e.g. the context)."""
        values = np.ascontiguousarray(values, dtype=float)
        if start < 0 or start + values.size > self.n_params:
            raise ValueError(f"parameter slice [{start}, {start + values.size}) outside 0..{self.n_params}")
        self.parameters[start : start + values.size] = values
        if self._stage_p is not None:
            self._stage_p[:, start : start + values.size] = values
            self._stage_dirty = True
            return
        idx = np.arange(start, start + values.size, dtype=np.intc)
        self._io.set_params_sparse_all(self.n, idx, values)

    def set_weights(self, q_weight: np.ndarray, r_weight: np.ndarray) -> None:
        """Sets Q (nx, nx) and R (nu, nu) on every stage (terminal: scaled Q).

        Raises:
            ValueError: With ``stage_hessians`` (weights compiled in), for other weights than the config's.
        """
        if self.cfg.stage_hessians:
            if not (np.array_equal(q_weight, self.cfg.state_weight) and np.array_equal(r_weight, self.cfg.input_weight)):
                raise ValueError("this solver's weights are compiled in (stage_hessians); build one with the new weights")
            return
        w = np.zeros((self.nx + self.nu, self.nx + self.nu))
        w[: self.nx, : self.nx], w[self.nx :, self.nx :] = q_weight, r_weight
        for k in range(self.n):
            self._solver.cost_set(k, "W", w)
        self._solver.cost_set(self.n, "W", self.cfg.terminal_scale * np.asarray(q_weight))

    def set_reference(self, x_ref: np.ndarray) -> None:
        """Sets the state reference along the horizon, shape (N + 1, nx); torque reference 0."""
        if x_ref.shape != (self.n + 1, self.nx):
            raise ValueError(f"reference must have shape ({self.n + 1}, {self.nx}), got {x_ref.shape}")
        if self._stage_p is not None:  # a stage parameter
            self._stage_p[:, self._ref_at : self._hess_at] = x_ref
            self._stage_dirty = True
            return
        self._yref[:, : self.nx] = x_ref[: self.n]
        self._io.set_yref(self._yref, np.ascontiguousarray(x_ref[self.n], dtype=float))

    def set_max_iter(self, iterations: int) -> None:
        """Changes the SQP iteration limit (``cfg.sqp_max_iter`` at the start)."""
        if iterations < 1:
            raise ValueError(f"the SQP iteration limit must be >= 1, got {iterations}")
        self._io.set_max_iter(int(iterations))

    def set_stage_hessians(self, w: np.ndarray | None) -> None:
        """Adds ``W_k`` (N, nx + nu, nx + nu) to the QP Hessian of every stage (``stage_hessians`` solvers); None: zero.

        In the units of the scaled OCP (what the stage cost's Hessian ``stage_scale * blkdiag(Q, R)`` is in).

        Raises:
            ValueError: For a solver without ``stage_hessians`` or a wrong shape.
        """
        nz = self.nx + self.nu
        if not self.cfg.stage_hessians:
            raise ValueError("set_stage_hessians needs a solver built with stage_hessians")
        w = np.zeros((self.n, nz, nz)) if w is None else np.asarray(w, dtype=float)
        if w.shape != (self.n, nz, nz):
            raise ValueError(f"stage Hessians must have shape ({self.n}, {nz}, {nz}), got {w.shape}")
        assert self._stage_p is not None
        self._stage_p[: self.n, self._hess_at :] = (w / self.cfg.stage_scale).transpose(0, 2, 1).reshape(self.n, nz * nz)  # column-major
        self._stage_dirty = True

    def set_input_bounds(self, stage: int, lower: np.ndarray, upper: np.ndarray) -> None:
        """Overrides the input bounds of one stage (e.g. u0 fixed for sensitivities), (nu,) each."""
        lower = np.ascontiguousarray(lower, dtype=float)
        upper = np.ascontiguousarray(upper, dtype=float)
        if not 0 <= stage < self.n or lower.shape != (self.nu,) or upper.shape != (self.nu,):
            raise ValueError(f"input bounds need a stage in 0..{self.n - 1} and shape ({self.nu},), got {stage}, {lower.shape}, {upper.shape}")
        self._io.set_constraint(stage, b"lbu", lower)
        self._io.set_constraint(stage, b"ubu", upper)

    def reset_input_bounds(self) -> None:
        """Restores the input bounds of :attr:`constraints` on every stage."""
        for k in range(self.n):
            self.set_input_bounds(k, self.constraints.u_lower, self.constraints.u_upper)

    # ------------------------------------------------------------ warm starts
    def initialize(self, x: np.ndarray, u: np.ndarray) -> None:
        """Sets the primal iterate: x (N + 1, nx), u (N, nu)."""
        x = np.ascontiguousarray(x, dtype=float)
        u = np.ascontiguousarray(u, dtype=float)
        if x.shape != (self.n + 1, self.nx) or u.shape != (self.n, self.nu):
            raise ValueError(f"iterate must be x ({self.n + 1}, {self.nx}) and u ({self.n}, {self.nu})")
        self._io.set_xu(x, u)

    def shift(self, last: SolveResult) -> None:
        """Warm start by shifting a previous solution one stage forward."""
        x = np.vstack([last.x[1:], last.x[-1:]])
        u = np.vstack([last.u[1:], last.u[-1:]])
        self.initialize(x, u)

    # ---------------------------------------------------------------- solving
    def solve(self, x0: np.ndarray) -> SolveResult:
        """Solves from the measured state ``x0`` (nx,) with the current data."""
        s = self._solver
        x0 = np.ascontiguousarray(x0, dtype=float)
        if x0.shape != (self.nx,):
            raise ValueError(f"x0 must have shape ({self.nx},), got {x0.shape}")
        self._io.set_constraint(0, b"lbx", x0)
        self._io.set_constraint(0, b"ubx", x0)
        if self._stage_p is not None and self._stage_dirty:
            for k in range(self.n + 1):
                self._io.set_params(k, self._stage_p[k])
            self._stage_dirty = False
        status = int(s.solve())
        x = np.empty((self.n + 1, self.nx))
        u = np.empty((self.n, self.nu))
        self._io.get_xu(x, u)
        return SolveResult(
            status=status,
            u0=u[0].copy(),
            x=x,
            u=u,
            time_s=float(np.ravel(s.get_stats("time_tot"))[0]),
            sqp_iter=int(np.ravel(s.get_stats("sqp_iter"))[0]),
        )

    def dynamics_jacobians(self) -> tuple[np.ndarray, np.ndarray]:
        """``A_k = dF/dx`` and ``B_k = dF/du`` of the last QP's linearisation, k = 0..N-1.

        acados' SQP linearises at the start of every iteration, the last one
        included (the one that finds the KKT residuals below tolerance), so
        after a converged SQP solve these are the Jacobians of the RK4 map at
        the returned iterate (tested against
        :class:`whatmatters.sensitivity.derivatives.StageDerivatives`); after an
        RTI step they are the ones of the iterate it started from. With
        ``rk4_jacobian: first_stage`` they are that option's approximation.

        Returns:
            ``A`` (N, nx, nx) and ``B`` (N, nx, nu).
        """
        a = np.empty((self.n, self.nx, self.nx))
        b = np.empty((self.n, self.nx, self.nu))
        a_k = np.empty((self.nx, self.nx), order="F")
        b_k = np.empty((self.nx, self.nu), order="F")
        for k in range(self.n):
            self._io.get_qp_in(k, b"A", a_k)
            self._io.get_qp_in(k, b"B", b_k)
            a[k], b[k] = a_k, b_k
        return a, b

    def cost(self) -> float:
        """Cost of the last solution: 1/2 of the weighted squares, stage costs times ``cfg.stage_scale``."""
        return float(self._solver.get_cost())

    @property
    def acados(self) -> Any:
        """The underlying ``AcadosOcpSolver`` (for multipliers and advanced use)."""
        return self._solver
