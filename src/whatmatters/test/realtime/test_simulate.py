"""Tests of the real-time loop on a virtual clock: equivalence with lock-step, the start gate, delay compensation."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from whatmatters.eval.evaluate import Evaluator
from whatmatters.mpc.config import MpcConfig
from whatmatters.realtime.control import RealtimeConfig
from whatmatters.realtime.delay import StatePredictor
from whatmatters.realtime.plant import PlantConfig
from whatmatters.realtime.simulate import RealtimeTrace, simulate_realtime
from whatmatters.sim.environments import make_environment
from whatmatters.sim.simulator import PandaSim, SimConfig
from whatmatters.trajectory.fourier import FourierConfig, sample_fourier_trajectory

ENV = 2000
SECONDS = 2.0


def _evaluator(model: str) -> Evaluator:
    return Evaluator(model, MpcConfig.from_yaml(), SimConfig.from_yaml(), FourierConfig.from_yaml())


@pytest.fixture(scope="module")
def nominal_ev():
    return _evaluator("nominal")


@pytest.fixture(scope="module")
def exact_ev():
    return _evaluator("exact")


def _reference(ev: Evaluator):
    env = make_environment(ENV)
    return env, sample_fourier_trajectory(env.reference_seed, FourierConfig.from_yaml(), ev.sim.params)


def test_without_delay_the_real_time_loop_is_the_lock_step_episode(nominal_ev):
    lockstep = nominal_ev.episode(ENV, SECONDS).j_track
    env, ref = _reference(nominal_ev)
    rt = simulate_realtime(nominal_ev.controller(ENV), env, ref, SECONDS, 0.0, RealtimeConfig(delay_compensation=False))
    assert rt["j_track"] == pytest.approx(lockstep, rel=1e-12)
    assert rt["start_s"] == 0.0 and rt["steps"] == SECONDS / 0.02


def test_no_task_time_passes_before_the_first_command(nominal_ev):
    env, ref = _reference(nominal_ev)
    cfg = RealtimeConfig(delay_compensation=False)
    prompt = simulate_realtime(nominal_ev.controller(ENV), env, ref, SECONDS, 0.003, cfg)
    late = simulate_realtime(nominal_ev.controller(ENV), env, ref, SECONDS, 0.003, cfg, controller_start=0.5)  # the controller starts 0.5 s late
    assert late["start_s"] == pytest.approx(0.504)  # its first command's tick: the task starts there
    assert late["j_track"] == pytest.approx(prompt["j_track"], rel=1e-12)  # the robot stood still meanwhile


def test_the_predicted_state_is_the_state_at_the_end_of_the_delay(exact_ev):
    env, ref = _reference(exact_ev)
    ctrl = exact_ev.controller(ENV)
    trace = RealtimeTrace()
    delay = 0.008
    simulate_realtime(ctrl, env, ref, 0.5, delay, RealtimeConfig(input_delay=delay), predictor=StatePredictor(ctrl.solver.model), trace=trace)
    steps = trace.steps
    started = [s for s in steps if s.started and s.delay_s > 0]
    assert len(started) == 24 and started[0].delay_s == pytest.approx(delay)
    base = SimConfig.from_yaml()
    sim = PandaSim(replace(base, control_period=base.timestep))
    errors = []
    for s in started[:5]:  # MuJoCo from the measured state under the command in force, for the delay
        sim.reset(env, s.x[:7], s.x[7:])
        tau = steps[steps.index(s) - 1].out.tau
        for _ in range(4):
            st = sim.step(tau)
        errors.append(np.abs(np.concatenate([st.q, st.qd]) - s.x0).max())
    assert max(errors) < 2e-3  # the exact model's RK4 against MuJoCo's implicit integrator over 8 ms
    assert min(np.abs(s.x0 - s.x).max() for s in started[:5]) > 10 * max(errors)  # the prediction moved the state


def test_delay_compensation_with_the_exact_model_brings_back_the_lock_step_cost(exact_ev):
    lockstep = exact_ev.episode(ENV, SECONDS).j_track
    env, ref = _reference(exact_ev)
    ctrl = exact_ev.controller(ENV)
    delay = 0.008  # a known delay: 4 physics steps from the state's stamp to its command taking effect
    plain = simulate_realtime(ctrl, env, ref, SECONDS, delay, RealtimeConfig(delay_compensation=False))
    compensated = simulate_realtime(ctrl, env, ref, SECONDS, delay, RealtimeConfig(input_delay=delay), predictor=StatePredictor(ctrl.solver.model))
    assert compensated["mean_delay_s"] == pytest.approx(delay)
    assert abs(compensated["j_track"] / lockstep - 1) < 0.5 * abs(plain["j_track"] / lockstep - 1)


def test_the_rate_limiter_acts_only_past_its_limit(nominal_ev):
    env, ref = _reference(nominal_ev)
    cfg = RealtimeConfig(delay_compensation=False)
    free = simulate_realtime(nominal_ev.controller(ENV), env, ref, 0.5, 0.0, cfg)
    loose = simulate_realtime(nominal_ev.controller(ENV), env, ref, 0.5, 0.0, cfg, plant_config=PlantConfig(rate_limit=True, max_torque_rate=1e9))
    tight = simulate_realtime(nominal_ev.controller(ENV), env, ref, 0.5, 0.0, cfg, plant_config=PlantConfig(rate_limit=True, max_torque_rate=50.0))
    assert loose["rate_limited_steps"] == 0 and loose["j_track"] == pytest.approx(free["j_track"], rel=1e-12)
    assert tight["rate_limited_steps"] > 0 and np.isfinite(tight["j_track"]) and tight["j_track"] != free["j_track"]
