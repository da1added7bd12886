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


def known_model_episodes(params: PandaParams, seed: int, episodes: int, steps: int) -> list:
    """Episodes of a known model (2 kg payload, armature 0.1, damping 1.0) under PD-like random torques.

    Returns:
        ``EpisodeRecord`` list (no bags behind them), each with ``steps`` transitions at 50 Hz.
    """
    from pathlib import Path

    from whatmatters.data.bags import EpisodeRecord
    from whatmatters.dynamics.nominal import exact_model
    from whatmatters.robot.payload import Payload

    rng = np.random.default_rng(seed)
    truth = exact_model(Payload(2.0, (0.05, 0.0, 0.1)), 0.1, 1.0, params)
    out = []
    for e in range(episodes):
        x = np.zeros((steps + 1, 14))
        x[0, :7] = np.array([0.0, -0.4, 0.0, -2.4, 0.0, 2.2, -0.785]) + rng.uniform(-0.2, 0.2, 7)
        tau = np.empty((steps, 7))
        for t in range(steps):
            g = truth.gravity(torch.tensor(x[t : t + 1, :7])).numpy()[0]
            tau[t] = g - 5.0 * x[t, 7:] + rng.normal(0, 2.0, 7)
            x[t + 1] = truth.rk4_step(torch.tensor(x[t : t + 1]), torch.tensor(tau[t : t + 1]), 0.02).numpy()[0]
        out.append(EpisodeRecord(Path(f"ep{e}"), 0.02 * np.arange(steps + 1), x, tau, np.zeros((steps + 1, 14))))
    return out
