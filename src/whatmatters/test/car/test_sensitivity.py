"""The car's S_hat by the project's sensitivity code, verified like the arm's: implicit
differentiation against finite differences of IPOPT re-solves (whatmatters.sensitivity.check)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from whatmatters.car import (
    CarControlConfig, CarController, CarPlant, load_car_params, make_car_environment, run_car_episode, start_state,
)  # fmt: skip
from whatmatters.config import config_dir
from whatmatters.mpc.solver import AcadosMpcSolver
from whatmatters.sensitivity.check import ReferenceOcp, check_sensitivities
from whatmatters.sensitivity.compute import SensitivityComputer, SensitivityConfig
from whatmatters.sensitivity.point import SensitivityError


#: The training environment with the least friction among seeds 0-9 (0.56 of the nominal): the nominal
#: model's MPC lets the car slide beyond the track bound in the second corner.
SLIPPERY = 9


@pytest.fixture(scope="module")
def states(car_model, car_mpc_config, car_controls, car_line, car_track):
    """Closed-loop states of a low-friction environment, s unwrapped, (T, 8)."""
    cfg, cons = car_controls
    ctrl = CarController(AcadosMpcSolver(car_model, car_mpc_config, cons), car_line, car_track.length, cfg)
    ep = run_car_episode(ctrl, CarPlant(make_car_environment(SLIPPERY).params(load_car_params())), car_track, 2.6, start_state(car_track, ctrl))
    return ep.x


@pytest.fixture(scope="module")
def sensitivity_config():
    return SensitivityConfig.from_yaml(config_dir() / "car" / "sensitivity.yaml")


def _room(car_track) -> float:
    return car_track.half_width - 0.5 * load_car_params().width - CarControlConfig.from_yaml().margin


def _steps(states, car_track) -> dict[str, int]:
    """A state well inside the track and the first one beyond the soft track bound."""
    beyond = np.nonzero(np.abs(states[:, 1]) > _room(car_track) + 0.01)[0]
    assert beyond.size, "no state beyond the soft track bound: the check would not cover the penalty"
    return {"inside": 20, "beyond": int(beyond[0])}


@pytest.mark.parametrize("where", ["inside", "beyond"])
def test_car_sensitivities_match_finite_differences(where, states, car_model, car_mpc_config, car_controls, car_line, car_track, sensitivity_config):
    _, cons = car_controls
    computer = SensitivityComputer(car_model, car_mpc_config, cons, sensitivity_config)
    step = _steps(states, car_track)[where]
    x0 = states[step]
    x_ref = car_line.horizon(float(x0[0]), car_mpc_config.dt, car_mpc_config.horizon)
    rng = np.random.default_rng(step)
    n = car_mpc_config.horizon
    picks = [(0, j) for j in range(8)] + [(int(k), int(j)) for k, j in zip(rng.integers(1, n, 12), rng.integers(0, 8, 12))]
    check = check_sensitivities(computer, ReferenceOcp(car_model, car_mpc_config, cons), x0, x_ref, picks)
    assert check.u_error <= 1e-6 * np.max(cons.u_upper - cons.u_lower)  # beyond the bound u0* moves 245x faster than e
    assert check.du0_de_scale > 1.0
    assert check.du0_de_error <= 1e-6
    assert check.gradient_error <= 1e-5

    if where == "inside":
        assert abs(x0[1]) < _room(car_track)


def test_the_exact_hessian_fallback_converges_where_gauss_newton_stalls(states, car_model, car_mpc_config, car_controls, car_line, sensitivity_config):
    """Beyond the bound, cold-started: Gauss-Newton's SQP stalls (200 iterations); the fallback converges."""
    _, cons = car_controls
    x0 = states[-2]  # the last control step (states[-1] is the state after it)
    x_ref = car_line.horizon(float(x0[0]), car_mpc_config.dt, car_mpc_config.horizon)
    without = SensitivityComputer(car_model, car_mpc_config, cons, replace(sensitivity_config, fallback="none"))
    with pytest.raises(SensitivityError, match="did not converge"):
        without.compute(x0, x_ref)
    computer = SensitivityComputer(car_model, car_mpc_config, cons, sensitivity_config)
    sample = computer.compute(x0, x_ref)
    assert np.all(np.isfinite(sample.s_hat)) and sample.sqp_iter > sensitivity_config.sqp_max_iter
    # the fallback's point and its sensitivities are the same KKT point's: checked against IPOPT
    n = car_mpc_config.horizon
    picks = [(0, j) for j in range(8)] + [(n // 2, 1), (n // 2, 2), (n - 1, 1)]
    check = check_sensitivities(computer, ReferenceOcp(car_model, car_mpc_config, cons), x0, x_ref, picks)
    assert check.u_error <= 1e-6 * np.max(cons.u_upper - cons.u_lower)
    assert check.du0_de_error <= 1e-6 and check.gradient_error <= 1e-5
