"""Shared fixtures: robot parameters, models and a seeded generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from whatmatters.dynamics.nominal import nominal_model
from whatmatters.robot.params import PandaParams, load_panda_params
from whatmatters.sim.simulator import PandaSim, SimConfig

torch.set_num_threads(1)  # the tests' tensors are small: threads only add overhead


@pytest.fixture(scope="session")
def params() -> PandaParams:
    return load_panda_params()


@pytest.fixture(scope="session")
def nominal(params):
    return nominal_model(params)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def random_states(params: PandaParams, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n random (q, qd, tau) inside the joint and torque limits, each (n, 7)."""
    q = rng.uniform(params.lower, params.upper, size=(n, 7))
    qd = rng.uniform(-params.velocity_limits, params.velocity_limits, size=(n, 7))
    tau = rng.uniform(-params.torque_limits, params.torque_limits, size=(n, 7))
    return q, qd, tau


def make_sim(armature: float = 0.1, damping: float = 1.0, integrator: str = "implicitfast", limits: bool = True) -> PandaSim:
    """A simulator with chosen joint properties (the MuJoCo truth for the model tests)."""
    return PandaSim(SimConfig(armature=armature, damping=damping, integrator=integrator, joint_limits=limits))


@pytest.fixture(scope="session")
def mpc_config():
    from whatmatters.mpc.config import MpcConfig

    return MpcConfig.from_yaml()


@pytest.fixture(scope="session")
def nominal_solver(nominal, params, mpc_config):
    """The compiled nominal-model solver (built once per machine, then cached)."""
    from whatmatters.mpc.solver import AcadosMpcSolver

    return AcadosMpcSolver(nominal, mpc_config, params.torque_limits)
