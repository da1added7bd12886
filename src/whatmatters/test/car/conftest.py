"""The race car's shared fixtures: a generated track, its racing line, the nominal model and its controller."""

from __future__ import annotations

import pytest
from whatmatters.car import CarControlConfig, CarController, car_constraints, load_car_params, nominal_car_model, racing_line
from whatmatters.car.generate import generate_track
from whatmatters.config import config_dir
from whatmatters.mpc.config import MpcConfig
from whatmatters.mpc.solver import AcadosMpcSolver


@pytest.fixture(scope="session")
def car_track():
    return generate_track(0)


@pytest.fixture(scope="session")
def car_line(car_track):
    return racing_line(car_track, load_car_params())


@pytest.fixture(scope="session")
def car_mpc_config():
    return MpcConfig.from_yaml(config_dir() / "car" / "mpc.yaml")


@pytest.fixture(scope="session")
def car_model(car_track):
    return nominal_car_model(car_track)


@pytest.fixture(scope="session")
def car_controls(car_model, car_track):
    cfg = CarControlConfig.from_yaml()
    return cfg, car_constraints(car_model, car_track, cfg)


@pytest.fixture
def car_controller(car_model, car_mpc_config, car_controls, car_line, car_track):
    cfg, cons = car_controls
    return CarController(AcadosMpcSolver(car_model, car_mpc_config, cons), car_line, car_track.length, cfg)
