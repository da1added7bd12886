"""The compiled stage loops (StageIO's bulk calls) equal acados' per-stage calls from Python."""

from __future__ import annotations

import numpy as np
import pytest
from whatmatters.dynamics.registry import resolve_model
from whatmatters.mpc.solver import AcadosMpcSolver
from whatmatters.mpc.stage_io import StageIO

Q_HOME = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])


@pytest.fixture(scope="module")
def solver(mpc_config, params):
    return AcadosMpcSolver(resolve_model("base"), mpc_config, params.torque_limits)


def _episode(solver: AcadosMpcSolver, bulk: bool, rng: np.random.Generator) -> list[np.ndarray]:
    solver._io = StageIO(solver.acados, bulk=bulk)
    n, nx = solver.n, solver.nx
    x0 = np.concatenate([Q_HOME + 0.03, np.zeros(7)])
    solver.set_parameters(solver.model.parameter_values())
    solver.initialize(np.tile(x0, (n + 1, 1)), np.zeros((n, solver.nu)))
    out = []
    for _ in range(4):
        solver.set_parameter_slice(solver.n_params - 10, rng.normal(size=10))  # the context
        solver.set_reference(np.tile(np.concatenate([Q_HOME, np.zeros(7)]), (n + 1, 1)) + 0.01 * rng.normal(size=(n + 1, nx)))
        res = solver.solve(x0)
        assert res.ok
        solver.shift(res)
        out += [res.x, res.u]
    return out


def test_bulk_stage_calls_equal_per_stage_calls(solver):
    assert StageIO(solver.acados)._bulk is not None  # gcc is there: the compiled loops are in use
    fast = _episode(solver, True, np.random.default_rng(0))
    slow = _episode(solver, False, np.random.default_rng(0))
    for a, b in zip(fast, slow):
        np.testing.assert_array_equal(a, b)


def test_bulk_iterate_round_trip(solver, rng):
    x = rng.normal(size=(solver.n + 1, solver.nx))
    u = rng.normal(size=(solver.n, solver.nu))
    for bulk in (True, False):
        io = StageIO(solver.acados, bulk=bulk)
        io.set_xu(x, u)
        x_back, u_back = np.empty_like(x), np.empty_like(u)
        io.get_xu(x_back, u_back)
        np.testing.assert_array_equal(x_back, x)
        np.testing.assert_array_equal(u_back, u)
