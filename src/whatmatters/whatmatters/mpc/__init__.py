"""acados MPC: model factory -> OCP builder -> solver wrapper -> controller."""

from whatmatters.mpc.config import MpcConfig
from whatmatters.mpc.controller import ControlStep, FallbackStats, MpcController
from whatmatters.mpc.ocp import build_ocp, formulation_key
from whatmatters.mpc.solver import AcadosMpcSolver, MpcBuildError, SolveResult, cache_root

__all__ = [
    "AcadosMpcSolver",
    "ControlStep",
    "FallbackStats",
    "MpcBuildError",
    "MpcConfig",
    "MpcController",
    "SolveResult",
    "build_ocp",
    "cache_root",
    "formulation_key",
]
