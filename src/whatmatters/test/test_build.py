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
