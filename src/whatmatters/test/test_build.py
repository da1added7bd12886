"""``whatmatters build``: parts compiled once into the cache are loaded, not rebuilt, by the next user."""

from __future__ import annotations

from pathlib import Path

import pytest

from whatmatters.build import build_model
from whatmatters.errors import ConfigError
from whatmatters.executor import LocalExecutor


def test_a_built_solver_is_loaded_from_the_cache_by_the_controller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from whatmatters.dynamics.nominal import nominal_model
    from whatmatters.mpc.config import MpcConfig
    from whatmatters.mpc.solver import AcadosMpcSolver
    from whatmatters.robot.params import load_panda_params

    monkeypatch.setenv("WHATMATTERS_CACHE", str(tmp_path / "cache"))
    seconds = build_model("nominal", ["mpc"], executor=LocalExecutor(1))
    assert set(seconds) == {"mpc"} and seconds["mpc"] > 0
    assert list((tmp_path / "cache" / "acados").glob("*/c_generated_code"))  # compiled into the new cache
    solver = AcadosMpcSolver(nominal_model(), MpcConfig.from_yaml(), load_panda_params().torque_limits)
    assert solver.build_seconds == 0.0  # found there: nothing generated or compiled again


def test_unknown_parts_are_named() -> None:
    with pytest.raises(ConfigError, match="'mpc-solver'"):
        build_model("nominal", ["mpc-solver"])
    with pytest.raises(ConfigError, match="expected one or more"):
        build_model("nominal", [])


def test_solvers_cached_tells_a_built_model_from_one_never_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from whatmatters.build import solvers_cached

    monkeypatch.setenv("WHATMATTERS_CACHE", str(tmp_path / "cache"))
    assert not solvers_cached("nominal")
    build_model("nominal", ["mpc"], executor=LocalExecutor(1))
    assert not solvers_cached("nominal")  # the S_hat solver is still missing
    build_model("nominal", ["sensitivity-solver"], executor=LocalExecutor(1))
    assert solvers_cached("nominal")


def test_the_cars_fallback_solver_is_built_ahead_for_its_sensitivity_computer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The race car's S_hat falls back to an exact-Hessian solver: the build makes the one its computer would
    (the same cache key), so a logger finds it instead of compiling at the first stall (300 s for the learned model)."""
    from dataclasses import replace

    import whatmatters.mpc.solver as solver_module
    from whatmatters.build import build_part
    from whatmatters.car.experiment import CarExperimentConfig, CarSystem
    from whatmatters.mpc.ocp import formulation_key
    from whatmatters.sensitivity.compute import SensitivityComputer, exact_twin_config

    car = CarSystem(CarExperimentConfig.from_yaml())
    assert car.sensitivity.fallback == "exact_hessian"
    computer = SensitivityComputer(car.nominal, car.mpc, car.constraints, replace(car.sensitivity, parallel=False))
    built: list[str] = []
    with monkeypatch.context() as patch:  # record what would be compiled instead of compiling it (~70 s)
        patch.setattr(solver_module, "AcadosMpcSolver", lambda model, cfg, limits: built.append(formulation_key(model, cfg, limits)))
        build_part("nominal", "sensitivity-fallback", "car")
        build_part("nominal", "sensitivity-fallback", "arm")  # the arm has no fallback: nothing
    assert built == [formulation_key(car.nominal, exact_twin_config(computer.solver.cfg), car.constraints)]
    with pytest.raises(ConfigError, match="unknown system 'boat'"):
        build_model("nominal", ["mpc"], executor=LocalExecutor(1), system="boat")
