"""Tests of the OCP builder and the solver wrapper (real acados solves)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import replace

import casadi as ca
import numpy as np
import pytest
import torch
from whatmatters.dynamics.base import JointSpaceModel
from whatmatters.dynamics.rigid_body import RigidBodyDynamics
from whatmatters.mpc.ocp import formulation_key
from whatmatters.mpc.solver import AcadosMpcSolver

Q_HOME = np.array([0.0, -0.4, 0.0, -2.4, 0.0, 2.2, -0.785])


class LinearResidualModel(JointSpaceModel):
    """Nominal model plus a parametric residual torque ``A [q; qd] + b`` (A: 7x14, b: 7).

    A stand-in for a learned model: its 105 parameters are runtime parameters.
    """

    def __init__(self, base: RigidBodyDynamics, values: np.ndarray) -> None:
        self.base, self.nq, self.values = base, base.nq, np.asarray(values, dtype=float)

    @property
    def n_params(self) -> int:
        return 7 * 14 + 7

    def parameter_values(self) -> np.ndarray:
        return self.values

    def forward_dynamics(self, q, qd, tau, params=None):
        if isinstance(q, torch.Tensor):
            p = torch.as_tensor(self.values if params is None else params, dtype=q.dtype)
            a, b = p[:98].reshape(7, 14), p[98:]
            res = torch.cat([q, qd], -1) @ a.T + b
        else:
            a, b = ca.reshape(params[:98], 14, 7).T, params[98:]
            res = ca.mtimes(a, ca.vertcat(q, qd)) + b
        return self.base.forward_dynamics(q, qd, tau - res)


def _reference(n: int) -> np.ndarray:
    x_ref = np.tile(np.concatenate([Q_HOME, np.zeros(7)]), (n + 1, 1))
    x_ref[:, 0] += np.linspace(0.0, 0.05, n + 1)
    return x_ref


def _rk4_numeric(model: JointSpaceModel, x: np.ndarray, u: np.ndarray, p: np.ndarray | None = None) -> np.ndarray:
    xs, us = ca.SX.sym("x", 14), ca.SX.sym("u", 7)
    ps = ca.SX.sym("p", model.n_params)
    f = ca.Function("F", [xs, us, ps], [model.rk4_step(xs, us, 0.02, ps)])
    return np.array(f(x, u, model.parameter_values() if p is None else p)).ravel()


def test_predictions_are_the_models_rk4_map(nominal, nominal_solver):
    """acados' predictions (the default chained DISCRETE RK4) are exactly DynamicsModel.rk4_step."""
    x0 = np.concatenate([Q_HOME + 0.02, 0.1 * np.ones(7)])
    nominal_solver.set_reference(_reference(nominal_solver.n))
    for _ in range(10):  # RTI: each call is one SQP iteration; iterate to a feasible point
        res = nominal_solver.solve(x0)
    assert res.ok
    np.testing.assert_allclose(res.x[0], x0, atol=1e-12)
    for k in range(nominal_solver.n):
        np.testing.assert_allclose(res.x[k + 1], _rk4_numeric(nominal, res.x[k], res.u[k]), rtol=1e-9, atol=1e-9)


def _start_at_rest_guess(x0: np.ndarray, solvers: tuple) -> np.ndarray:
    """Sets the test reference and the same constant initial guess (x0 everywhere, zero torque) on each solver."""
    for solver in solvers:
        solver.set_reference(_reference(solver.n))
        solver.initialize(np.tile(x0, (solver.n + 1, 1)), np.zeros((solver.n, 7)))
    return x0


def test_chained_discrete_and_erk_give_the_same_iterates(nominal, mpc_config, params):
    """Two implementations of the same RK4 map and Jacobian: identical SQP_RTI iterates to round-off."""
    assert mpc_config.integrator == "discrete_rk4"
    exact = replace(mpc_config, rk4_jacobian="exact")  # ERK has the exact Jacobian only
    disc = AcadosMpcSolver(nominal, exact, params.torque_limits)
    erk = AcadosMpcSolver(nominal, replace(exact, integrator="erk"), params.torque_limits)
    assert erk.key != disc.key
    x0 = _start_at_rest_guess(x0=np.concatenate([Q_HOME + 0.05, 0.2 * np.ones(7)]), solvers=(erk, disc))
    for _ in range(5):
        a, b = erk.solve(x0), disc.solve(x0)
        assert a.ok and b.ok
        np.testing.assert_allclose(b.u, a.u, rtol=0, atol=1e-9 * np.abs(a.u).max())
        np.testing.assert_allclose(b.x, a.x, rtol=0, atol=1e-11)


def test_first_stage_jacobian_keeps_exact_predictions_and_close_iterates(nominal, mpc_config, params):
    """``rk4_jacobian: first_stage`` (the default): another build than ``exact``; the predictions
    are still the exact RK4 map; only the QP's linearisation differs, so the RTI iterates stay close."""
    assert mpc_config.rk4_jacobian == "first_stage"
    fast = AcadosMpcSolver(nominal, replace(mpc_config, rk4_jacobian="first_stage"), params.torque_limits)
    exact_solver = AcadosMpcSolver(nominal, replace(mpc_config, rk4_jacobian="exact"), params.torque_limits)
    assert fast.key != exact_solver.key
    x0 = _start_at_rest_guess(x0=np.concatenate([Q_HOME + 0.05, 0.2 * np.ones(7)]), solvers=(exact_solver, fast))
    for solver in (exact_solver, fast):
        for _ in range(10):
            res = solver.solve(x0)
        assert res.ok
        for k in range(solver.n):
            np.testing.assert_allclose(res.x[k + 1], _rk4_numeric(nominal, res.x[k], res.u[k]), rtol=1e-9, atol=1e-9)
    exact, approx = exact_solver.solve(x0), fast.solve(x0)
    gap = np.abs(approx.u - exact.u).max() / np.abs(exact.u).max()
    assert 0.0 < gap < 1e-2, gap


def test_fixed_first_input_is_respected(nominal_solver, params):
    x0 = np.concatenate([Q_HOME, np.zeros(7)])
    u_fix = np.array([1.0, 20.0, -2.0, -10.0, 0.5, 0.3, -0.1])
    nominal_solver.set_reference(_reference(nominal_solver.n))
    nominal_solver.set_input_bounds(0, u_fix, u_fix)
    try:
        res = nominal_solver.solve(x0)
    finally:
        nominal_solver.reset_input_bounds()
    np.testing.assert_allclose(res.u0, u_fix, atol=1e-8)
    free = nominal_solver.solve(x0)
    assert np.abs(free.u0 - u_fix).max() > 1e-3


def test_one_build_serves_two_parameter_sets(nominal, mpc_config, params, rng):
    """Swapping the runtime parameters changes the predictions as each set implies, no rebuild."""
    p1 = np.zeros(105)
    p2 = rng.normal(scale=2.0, size=105)
    model = LinearResidualModel(nominal, p1)
    solver = AcadosMpcSolver(model, mpc_config, params.torque_limits)
    x0 = np.concatenate([Q_HOME + 0.03, np.zeros(7)])
    solver.set_reference(_reference(solver.n))
    preds = []
    for p in (p1, p2):
        solver.set_parameters(p)
        # converge the RTI iterations so the prediction belongs to this parameter set
        for _ in range(10):
            res = solver.solve(x0)
        for k in range(solver.n):
            np.testing.assert_allclose(res.x[k + 1], _rk4_numeric(model, res.x[k], res.u[k], p), rtol=1e-9, atol=1e-9)
        preds.append(res.x)
    assert np.abs(preds[0] - preds[1]).max() > 1e-3
    # the same formulation key for any parameter values: the compiled solver is shared
    assert formulation_key(LinearResidualModel(nominal, p2), mpc_config, params.torque_limits) == solver.key


def test_formulation_key_changes_with_model_and_options(nominal, mpc_config, params):
    from dataclasses import replace

    from whatmatters.dynamics.nominal import exact_model
    from whatmatters.robot.payload import Payload

    key = formulation_key(nominal, mpc_config, params.torque_limits)
    assert key == formulation_key(nominal, mpc_config, params.torque_limits)
    assert key != formulation_key(exact_model(Payload(1.0), 0.1, 1.0), mpc_config, params.torque_limits)
    assert key != formulation_key(nominal, replace(mpc_config, horizon=10), params.torque_limits)
    assert key == formulation_key(nominal, mpc_config, 0.5 * params.torque_limits)  # limits are run-time data


def test_compiled_solver_is_reused_by_another_process(nominal_solver, tmp_path):
    """A second process loads the cached library: no generation, no compilation."""
    code = textwrap.dedent(
        """
        import json, time
        from whatmatters.dynamics.nominal import nominal_model
        from whatmatters.mpc.config import MpcConfig
        from whatmatters.mpc.solver import AcadosMpcSolver
        from whatmatters.robot.params import load_panda_params
        t = time.perf_counter()
        s = AcadosMpcSolver(nominal_model(), MpcConfig.from_yaml(), load_panda_params().torque_limits)
        print(json.dumps({"key": s.key, "build": s.build_seconds, "t": time.perf_counter() - t}))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    info = __import__("json").loads(out.stdout.strip().splitlines()[-1])
    assert info["key"] == nominal_solver.key
    assert info["build"] == 0.0
    assert info["t"] < 10.0


def test_reference_shape_is_checked(nominal_solver):
    with pytest.raises(ValueError, match="reference"):
        nominal_solver.set_reference(np.zeros((5, 14)))


def test_full_sqp_option_converges(nominal, mpc_config, params):
    """nlp_solver: SQP iterates to the tolerance (the sensitivities need converged solutions)."""
    from dataclasses import replace

    cfg = replace(mpc_config, nlp_solver="SQP", sqp_tol=1e-8, rk4_jacobian="exact", hpipm_mode="SPEED")
    solver = AcadosMpcSolver(nominal, cfg, params.torque_limits)
    x0 = np.concatenate([Q_HOME + 0.05, 0.3 * np.ones(7)])
    solver.set_reference(_reference(solver.n))
    res = solver.solve(x0)
    assert res.status == 0 and res.sqp_iter > 1
    assert max(np.ravel(solver.acados.get_residuals())) < 1e-7
    for k in range(solver.n):  # converged: the plan satisfies the model's RK4 map
        np.testing.assert_allclose(res.x[k + 1], _rk4_numeric(nominal, res.x[k], res.u[k]), rtol=1e-8, atol=1e-8)


def test_cost_is_the_documented_sum(nominal_solver, mpc_config):
    """J = dt * sum_k 1/2 (|x_k - r_k|_Q^2 + |u_k|_R^2) + 1/2 |x_N - r_N|_Q^2 (acados' time-step scaling)."""
    x0 = np.concatenate([Q_HOME + 0.04, 0.2 * np.ones(7)])
    ref = _reference(nominal_solver.n)
    nominal_solver.set_reference(ref)
    res = nominal_solver.solve(x0)
    q_w, r_w = mpc_config.state_weight, mpc_config.input_weight
    assert mpc_config.cost_scaling == "time_step" and mpc_config.stage_scale == pytest.approx(0.02)
    manual = mpc_config.stage_scale * sum(
        0.5 * (res.x[k] - ref[k]) @ q_w @ (res.x[k] - ref[k]) + 0.5 * res.u[k] @ r_w @ res.u[k] for k in range(nominal_solver.n)
    )
    manual += 0.5 * mpc_config.terminal_scale * (res.x[-1] - ref[-1]) @ q_w @ (res.x[-1] - ref[-1])
    assert nominal_solver.cost() == pytest.approx(manual, rel=1e-10)


def _sqp(mpc_config, **changes):
    return replace(mpc_config, nlp_solver="SQP", sqp_tol=1e-10, sqp_max_iter=100, rk4_jacobian="exact", hpipm_mode="SPEED", **changes)


def test_stage_hessians_keep_the_solution_and_the_cost(nominal, mpc_config, params, rng):
    """The EXTERNAL cost with a custom QP Hessian: same solution and cost, with and without an added W_k."""
    plain = AcadosMpcSolver(nominal, _sqp(mpc_config), params.torque_limits)
    custom = AcadosMpcSolver(nominal, _sqp(mpc_config, stage_hessians=True), params.torque_limits)
    assert custom.key != plain.key
    x0 = np.concatenate([Q_HOME + 0.05, 0.3 * np.ones(7)])
    ref = _reference(plain.n)
    plain.set_reference(ref)
    custom.set_reference(ref)
    want = plain.solve(x0)
    m = rng.normal(0.0, 1e-2, (plain.n, 21, 21))
    for added in (None, m @ m.transpose(0, 2, 1)):  # positive semidefinite: the QPs stay convex
        custom.set_stage_hessians(added)
        custom.initialize(np.tile(x0, (plain.n + 1, 1)), np.zeros((plain.n, 7)))
        got = custom.solve(x0)
        assert got.status == 0
        np.testing.assert_allclose(got.u, want.u, rtol=0, atol=1e-7 * np.abs(want.u).max())
        assert custom.cost() == pytest.approx(plain.cost(), rel=1e-9)


def test_stage_hessians_need_their_option_and_fixed_weights(nominal, mpc_config, params, nominal_solver):
    custom = AcadosMpcSolver(nominal, _sqp(mpc_config, stage_hessians=True), params.torque_limits)
    with pytest.raises(ValueError, match="compiled in"):
        custom.set_weights(2.0 * mpc_config.state_weight, mpc_config.input_weight)
    with pytest.raises(ValueError, match="stage_hessians"):
        nominal_solver.set_stage_hessians(None)


def test_a_machine_without_a_c_compiler_is_named_before_any_build(nominal, mpc_config, params, tmp_path, monkeypatch):
    import socket

    from whatmatters.mpc.solver import MpcBuildError

    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))  # neither cc nor make
    monkeypatch.delenv("CC", raising=False)
    with pytest.raises(MpcBuildError, match=rf"host {socket.gethostname()}: cc and make not found, needed to build the acados solver wm_"):
        AcadosMpcSolver(nominal, mpc_config, params.torque_limits, cache_dir=tmp_path / "cache")
    assert not any((tmp_path / "cache").glob("acados/wm_*/c_generated_code"))  # nothing half-built left
