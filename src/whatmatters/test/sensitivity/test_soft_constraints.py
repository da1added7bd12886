"""Sensitivities of an OCP that is not the arm's: any model, asymmetric input bounds, soft constraints.

The truth is :class:`whatmatters.sensitivity.check.ReferenceOcp`: IPOPT on the
same problem written independently (prediction errors as parameters, explicit
slacks for the soft constraints), solved to 1e-12 and differenced.
"""

from __future__ import annotations

import casadi as ca
import numpy as np
import pytest
from whatmatters.dynamics.base import DynamicsModel
from whatmatters.mpc.config import MpcConfig
from whatmatters.mpc.constraints import OcpConstraints
from whatmatters.sensitivity.check import ReferenceOcp, check_sensitivities
from whatmatters.sensitivity.compute import SensitivityComputer, SensitivityConfig


class Unicycle(DynamicsModel):
    """A unicycle with a lagged speed: x = [px, py, heading, speed], u = [speed command, turn rate]."""

    nx, nu = 4, 2
    state_labels = ("px", "py", "heading", "speed")
    input_labels = ("speed_cmd", "turn_rate")

    def state_derivative(self, x, u, params=None):
        if isinstance(x, ca.SX):
            cos, sin = ca.cos, ca.sin
            return ca.vertcat(x[3] * cos(x[2]), x[3] * sin(x[2]), u[1] * (1 + 0.2 * x[3]), 2.0 * (u[0] - x[3]))
        import torch

        return torch.stack([x[:, 3] * torch.cos(x[:, 2]), x[:, 3] * torch.sin(x[:, 2]), u[:, 1] * (1 + 0.2 * x[:, 3]), 2.0 * (u[:, 0] - x[:, 3])], 1)


MPC = MpcConfig(horizon=10, dt=0.1, state_weights=(0.0, 40.0, 5.0, 2.0), input_weights=(0.5, 0.3), terminal_scale=2.0)
#: y <= 0.3 (soft), a speed command at most 0.6 above the speed (soft), asymmetric input bounds.
CONSTRAINTS = OcpConstraints(
    u_lower=np.array([-0.5, -1.5]),
    u_upper=np.array([2.0, 2.5]),
    x_index=(1,),
    x_lower=np.array([-1.0]),
    x_upper=np.array([0.3]),
    g_c=np.array([[0.0, 0.0, 0.0, -1.0]]),
    g_d=np.array([[1.0, 0.0]]),
    g_lower=np.array([-5.0]),
    g_upper=np.array([0.6]),
    penalty=200.0,
)
X0 = np.array([0.0, 0.0, 0.4, 0.5])


def _reference() -> np.ndarray:
    """Drive along y = 0.5 at speed 1.5 (above the soft bound on y: it binds)."""
    t = MPC.dt * np.arange(MPC.horizon + 1)
    return np.stack([1.5 * t, np.full_like(t, 0.5), np.zeros_like(t), np.full_like(t, 1.5)], 1)


@pytest.fixture(scope="module")
def computer():
    return SensitivityComputer(Unicycle(), MPC, CONSTRAINTS, SensitivityConfig(eps=0.05, parallel=False))


@pytest.fixture(scope="module")
def sample(computer):
    return computer.compute(X0, _reference())


@pytest.fixture(scope="module")
def check(computer):
    return check_sensitivities(computer, ReferenceOcp(Unicycle(), MPC, CONSTRAINTS), X0, _reference())


def test_both_soft_constraints_bind_and_no_input_bound(sample):
    """The case is the one meant: y above 0.3 and the speed command above speed + 0.6 somewhere."""
    assert sample.x[1:, 1].max() > 0.3 + 1e-3
    assert (sample.u[:, 0] - sample.x[:-1, 3]).max() > 0.6 + 1e-3
    assert np.all(sample.u > CONSTRAINTS.u_lower + 1e-3) and np.all(sample.u < CONSTRAINTS.u_upper - 1e-3)


def test_operating_point_matches_ipopt(check):
    assert check.u_error <= 1e-7


def test_du0_de_matches_finite_differences(check):
    assert check.du0_de_scale > 0.1  # not trivial
    assert check.du0_de_error <= 1e-5


def test_cost_gradient_matches_finite_differences(check):
    assert check.gradient_error <= 1e-5


def test_an_upper_input_bound_gives_a_zero_row():
    """Asymmetric bounds: a low ceiling on the speed command makes u_0[0] sit at it."""
    cons = OcpConstraints(np.array([-0.5, -4.0]), np.array([0.7, 4.0]), penalty=200.0)
    s = SensitivityComputer(Unicycle(), MPC, cons, SensitivityConfig(eps=0.05, parallel=False)).compute(X0, _reference())
    assert s.active0.tolist() == [True, False]
    assert s.u[0, 0] == pytest.approx(0.7, abs=1e-8)
    np.testing.assert_array_equal(s.du0_de[0], 0.0)
