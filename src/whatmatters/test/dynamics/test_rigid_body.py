"""Tests of the rigid-body model against MuJoCo's own quantities and across backends."""

from __future__ import annotations

import casadi as ca
import mujoco
import numpy as np
import pytest
import torch
from whatmatters.dynamics.chain import ChainParams
from whatmatters.dynamics.nominal import exact_model
from whatmatters.dynamics.rigid_body import RigidBodyDynamics
from whatmatters.robot.payload import Payload
from whatmatters.sim.simulator import PandaSim, SimConfig

from ..conftest import make_sim, random_states

N_STATES = 100


def mujoco_terms(sim, q, qd):
    """MuJoCo's mass matrix (armature included) and bias force at one state."""
    sim.data.qpos[:] = q
    sim.data.qvel[:] = qd
    mujoco.mj_forward(sim.model, sim.data)
    mass = np.zeros((7, 7))
    mujoco.mj_fullM(sim.model, sim.data, mass)
    return mass, sim.data.qfrc_bias.copy(), sim.data.qfrc_passive.copy()


def rel_err(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


@pytest.fixture(scope="module")
def bare_sim():
    sim = make_sim(armature=0.1, damping=1.0)
    sim.set_payload(Payload(0.0, (0, 0, 0), (0.0, 0.0, 0.0)))
    return sim


def test_nominal_matches_mujoco_without_payload(params, nominal, bare_sim, rng):
    """M + armature, c + g agree with MuJoCo's qM and qfrc_bias to 1e-8 relative."""
    q, qd, _ = random_states(params, rng, N_STATES)
    q_t, qd_t = torch.tensor(q), torch.tensor(qd)
    mass = nominal.mass_matrix(q_t).numpy()
    bias = nominal.bias(q_t, qd_t).numpy()
    for i in range(N_STATES):
        m_mj, b_mj, _ = mujoco_terms(bare_sim, q[i], qd[i])
        # the nominal model has no armature: MuJoCo's qM carries 0.1 on the diagonal
        assert rel_err(mass[i] + 0.1 * np.eye(7), m_mj) < 1e-8
        assert rel_err(bias[i], b_mj) < 1e-8


def test_gravity_and_coriolis_split_matches_mujoco(params, nominal, bare_sim, rng):
    q, qd, _ = random_states(params, rng, 20)
    for i in range(20):
        _, g_mj, _ = mujoco_terms(bare_sim, q[i], np.zeros(7))
        _, b_mj, _ = mujoco_terms(bare_sim, q[i], qd[i])
        g = nominal.gravity(torch.tensor(q[i : i + 1])).numpy()[0]
        c = nominal.coriolis(torch.tensor(q[i : i + 1]), torch.tensor(qd[i : i + 1])).numpy()[0]
        assert rel_err(g, g_mj) < 1e-8
        assert rel_err(c, b_mj - g_mj) < 1e-8


def test_exact_model_matches_mujoco_forward_dynamics_with_payload(params, rng):
    """With payload, armature and damping known, qdd equals MuJoCo's smooth acceleration."""
    sim = make_sim(armature=0.1, damping=1.0)
    payload = Payload(2.5, (0.1, -0.2, 0.15))
    sim.set_payload(payload)
    model = exact_model(payload, armature=0.1, damping=1.0, params=params)
    q, qd, tau = random_states(params, rng, N_STATES)
    qdd = model.forward_dynamics(torch.tensor(q), torch.tensor(qd), torch.tensor(tau)).numpy()
    for i in range(N_STATES):
        sim.data.qpos[:], sim.data.qvel[:], sim.data.ctrl[:] = q[i], qd[i], tau[i]
        mujoco.mj_forward(sim.model, sim.data)
        m_mj = np.zeros((7, 7))
        mujoco.mj_fullM(sim.model, sim.data, m_mj)
        assert rel_err(model.mass_matrix(torch.tensor(q[i : i + 1])).numpy()[0], m_mj) < 1e-8
        assert rel_err(qdd[i], sim.data.qacc_smooth) < 1e-8


def test_torch_agrees_with_casadi(params, nominal, rng):
    q, qd, tau = random_states(params, rng, 25)
    fns = nominal.casadi_functions()
    qs, qds = ca.SX.sym("q", 7), ca.SX.sym("qd", 7)
    m_fn = ca.Function("M", [qs], [nominal.mass_matrix(qs)])
    b_fn = ca.Function("b", [qs, qds], [nominal.bias(qs, qds)])
    t = [torch.tensor(a) for a in (q, qd, tau)]
    qdd_t = nominal.forward_dynamics(*t).numpy()
    m_t, b_t = nominal.mass_matrix(t[0]).numpy(), nominal.bias(t[0], t[1]).numpy()
    x = np.concatenate([q, qd], axis=1)
    x_next_t = nominal.rk4_step(torch.tensor(x), t[2], 0.02).numpy()
    for i in range(25):
        assert rel_err(m_t[i], np.array(m_fn(q[i]))) < 1e-10
        assert rel_err(b_t[i], np.array(b_fn(q[i], qd[i])).ravel()) < 1e-10
        assert rel_err(qdd_t[i], np.array(fns["fd"](q[i], qd[i], tau[i], [])).ravel()) < 1e-10
        assert rel_err(x_next_t[i], np.array(fns["rk4"](x[i], tau[i], 0.02, [])).ravel()) < 1e-10


def test_torch_autograd_agrees_with_casadi_jacobian(params, nominal, rng):
    """Two independent AD systems give the same d qdd / d(q, qd, tau)."""
    q, qd, tau = (a[0] for a in random_states(params, rng, 1))
    qs, qds, ts = ca.SX.sym("q", 7), ca.SX.sym("qd", 7), ca.SX.sym("t", 7)
    z = ca.vertcat(qs, qds, ts)
    jac = ca.Function("J", [z], [ca.jacobian(nominal.forward_dynamics(qs, qds, ts), z)])
    z0 = np.concatenate([q, qd, tau])

    def f(zz: torch.Tensor) -> torch.Tensor:
        return nominal.forward_dynamics(zz[None, :7], zz[None, 7:14], zz[None, 14:])[0]

    jac_t = torch.autograd.functional.jacobian(f, torch.tensor(z0)).numpy()
    assert rel_err(jac_t, np.array(jac(z0))) < 1e-10


def test_mass_matrix_is_symmetric_positive_definite(params, nominal, rng):
    q, _, _ = random_states(params, rng, N_STATES)
    mass = nominal.mass_matrix(torch.tensor(q)).numpy()
    np.testing.assert_allclose(mass, np.swapaxes(mass, 1, 2), atol=1e-14)
    assert np.linalg.eigvalsh(mass).min() > 0.0


def test_inverse_dynamics_inverts_forward_dynamics(params, rng):
    model = exact_model(Payload(1.0, (0.05, 0.0, 0.1)), armature=0.1, damping=1.0, params=params)
    q, qd, tau = (torch.tensor(a) for a in random_states(params, rng, 50))
    qdd = model.forward_dynamics(q, qd, tau)
    np.testing.assert_allclose(model.inverse_dynamics(q, qd, qdd).numpy(), tau.numpy(), rtol=1e-10, atol=1e-9)


def test_float32_batches_run(params, nominal, rng):
    q, qd, tau = (torch.tensor(a, dtype=torch.float32) for a in random_states(params, rng, 8))
    out = nominal.forward_dynamics(q, qd, tau)
    assert out.dtype == torch.float32 and out.shape == (8, 7) and torch.isfinite(out).all()


def test_casadi_form_has_no_symbolic_inverse(nominal):
    """Forward dynamics stays a small expression graph (factorization, shared terms)."""
    fd = nominal.casadi_functions()["fd"]
    assert fd.n_instructions() < 4000


def _step_cases(params, rng, n: int = 20):
    q, qd, tau = random_states(params, rng, n)
    return q, 0.5 * qd, 0.2 * tau


def _mujoco_step(params, integrator: str, timestep: float, q, qd, tau) -> np.ndarray:
    """MuJoCo's state after 20 ms (payload 0, no armature, no damping, no limits), (n, 14)."""
    sim = PandaSim(SimConfig(timestep=timestep, integrator=integrator, armature=0.0, damping=0.0, joint_limits=False))
    sim.set_payload(Payload(0.0, (0, 0, 0), (0.0, 0.0, 0.0)))
    out = []
    for i in range(len(q)):
        sim.reset(None, q[i], qd[i])
        st = sim.step(tau[i])
        out.append(np.concatenate([st.q, st.qd]))
    return np.array(out)


def _rk4(nominal, x, tau, dt: float, steps: int) -> np.ndarray:
    xt, ut = torch.tensor(x), torch.tensor(tau)
    for _ in range(steps):
        xt = nominal.rk4_step(xt, ut, dt)
    return xt.numpy()


def test_rk4_in_2ms_substeps_reproduces_mujoco_rk4(params, nominal, rng):
    """Same scheme, same step, same dynamics: only round-off may differ."""
    q, qd, tau = _step_cases(params, rng)
    x = np.concatenate([q, qd], 1)
    gap = np.abs(_rk4(nominal, x, tau, 0.002, 10) - _mujoco_step(params, "RK4", 0.002, q, qd, tau)).max()
    assert gap < 1e-9


def test_one_20ms_rk4_step_matches_mujoco_to_its_truncation_error(params, nominal, rng):
    """The MPC's single 20 ms RK4 step against MuJoCo (RK4 at 2 ms, ~exact here).

    The gap must be the RK4 truncation error of the 20 ms step and nothing else.
    Richardson's estimate of that error, (x_20 - x_2x10) * 16/15, bounds it; on
    these deliberately fast states (light wrist links without armature, qdd up
    to ~500 rad/s^2) it is ~7e-5 rad and ~1e-2 rad/s, at realistic MPC states far
    smaller. A modelling error would not follow the estimate.
    """
    q, qd, tau = _step_cases(params, rng)
    x = np.concatenate([q, qd], 1)
    one = _rk4(nominal, x, tau, 0.02, 1)
    two = _rk4(nominal, x, tau, 0.01, 2)
    truth = _mujoco_step(params, "RK4", 0.002, q, qd, tau)
    estimate = np.abs(one - two) * 16.0 / 15.0
    gap = np.abs(one - truth)
    # per state (inf-norm over q and qd separately): the estimate is first-order accurate
    for sl in (slice(0, 7), slice(7, 14)):
        assert np.all(gap[:, sl].max(1) <= 1.5 * estimate[:, sl].max(1) + 1e-9)
    assert gap[:, :7].max() < 2e-4 and gap[:, 7:].max() < 5e-2


def test_simulator_integrator_converges_to_the_model_at_first_order(params, nominal, rng):
    """implicitfast is first order: halving MuJoCo's step halves its gap to the model's flow."""
    q, qd, tau = _step_cases(params, rng, 10)
    x = np.concatenate([q, qd], 1)
    exact = _rk4(nominal, x, tau, 0.0002, 100)  # converged flow of the nominal model
    gaps = [np.abs(_mujoco_step(params, "implicitfast", h, q, qd, tau) - exact).max() for h in (0.002, 0.001, 0.0005)]
    ratios = [gaps[0] / gaps[1], gaps[1] / gaps[2]]
    assert all(1.6 < r < 2.5 for r in ratios), (gaps, ratios)


def test_chain_from_panda_lumps_payload_into_last_link(params):
    bare = ChainParams.from_panda(params)
    heavy = ChainParams.from_panda(params, Payload(2.0, (0.0, 0.0, 0.0)))
    assert heavy.mass[-1] == pytest.approx(bare.mass[-1] + 2.0)
    np.testing.assert_allclose(heavy.mass[:-1], bare.mass[:-1])
    assert isinstance(RigidBodyDynamics(heavy).nq, int)


def test_mass_matrix_and_bias_together_equal_them_apart(nominal, rng):
    q = torch.as_tensor(rng.normal(size=(5, 7)))
    qd = torch.as_tensor(rng.normal(size=(5, 7)))
    mass, bias = nominal.mass_matrix_and_bias(q, qd)
    torch.testing.assert_close(mass, nominal.mass_matrix(q), rtol=0, atol=0)
    torch.testing.assert_close(bias, nominal.bias(q, qd), rtol=0, atol=0)


def test_weighted_hessian_through_inverse_dynamics_matches_autograd(params, rng):
    """The inverse-dynamics form of d^2 (mu' xdot) / d(x, u)^2 against torch's Hessian of the
    forward dynamics (payload model: armature, damping and a loaded last link all enter)."""
    model = exact_model(Payload(mass=1.5, offset=(0.02, 0.0, 0.08)), armature=0.1, damping=1.0, params=params)
    x, u, mu = ca.SX.sym("x", 14), ca.SX.sym("u", 7), ca.SX.sym("mu", 14)
    fn = ca.Function("h", [x, u, mu], [model.state_derivative_hessian(x, u, mu)])
    q, qd, tau = random_states(params, rng, 3)
    for i in range(3):
        mu0 = rng.normal(size=14)
        z0 = np.concatenate([q[i], qd[i], tau[i]])

        def weighted(z):
            xdot = model.state_derivative(z[None, :14], z[None, 14:])[0]
            return (torch.tensor(mu0) * xdot).sum()

        ref = torch.autograd.functional.hessian(weighted, torch.tensor(z0)).numpy()
        got = np.asarray(fn(z0[:14], z0[14:], mu0))
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-11 * np.abs(ref).max())
        assert np.abs(ref).max() > 1.0  # non-trivial curvature
