"""Tests of whatmatters.realtime.steps: the logger rebuilds the MPC's steps and context exactly."""

from __future__ import annotations

import numpy as np
import pytest
from whatmatters.eval.evaluate import Evaluator
from whatmatters.mpc.config import MpcConfig
from whatmatters.realtime.control import RealtimeConfig
from whatmatters.realtime.simulate import RealtimeTrace, simulate_realtime
from whatmatters.realtime.steps import StepAssembler
from whatmatters.sim.environments import make_environment
from whatmatters.sim.simulator import SimConfig
from whatmatters.trajectory.fourier import FourierConfig, sample_fourier_trajectory


@pytest.fixture(scope="module")
def base_run():
    ev = Evaluator("base", MpcConfig.from_yaml(), SimConfig.from_yaml(), FourierConfig.from_yaml())
    env = make_environment(2003)
    ref = sample_fourier_trajectory(env.reference_seed, FourierConfig.from_yaml(), ev.sim.params)
    ctrl = ev.controller(2003)
    contexts: list[np.ndarray] = []
    solve = ctrl.solver.solve
    start, size = ctrl.tracker.param_start, ctrl.tracker.encoder.head.out_features

    def spy(x0: np.ndarray):  # the context the MPC solved with, read off its parameters
        contexts.append(ctrl.solver.parameters[start : start + size].copy())
        return solve(x0)

    ctrl.solver.solve = spy  # type: ignore[method-assign]
    trace = RealtimeTrace()
    simulate_realtime(ctrl, env, ref, 0.6, 0.005, RealtimeConfig(delay_compensation=False), trace=trace)
    ctrl.solver.solve = solve  # type: ignore[method-assign]
    return ev, trace, contexts


def test_the_logger_rebuilds_the_context_the_mpc_used(base_run):
    ev, trace, contexts = base_run
    assembler = StepAssembler(ev.controller(2003).solver.model.context_tracker())
    assembler.on_start(trace.start_ns)
    steps = {s.instant_ns: (s, c) for s, c in zip(trace.steps, contexts)}
    released = []
    for stamp, x, effort in trace.samples:  # the messages in the order a logger gets them
        assembler.on_state(stamp, x, effort)
        if stamp in steps:
            step = steps[stamp][0]
            assembler.on_step(stamp, step.x, step.out.tau)
            assembler.on_solve(stamp, x0=step.x0)
            assembler.on_solve(stamp, x_ref=step.x_ref)
        released += assembler.ready()
    task = [s for s in trace.steps if s.instant_ns > trace.start_ns]
    assert len(released) == len(task) >= 25
    for r in released:
        step, context = steps[r.instant_ns]
        np.testing.assert_array_equal(r.x0, step.x0)
        np.testing.assert_array_equal(r.x_ref, step.x_ref)
        np.testing.assert_allclose(r.context[1], context, rtol=0, atol=1e-12)


def test_steps_before_the_task_are_not_released(base_run):
    _, trace, _ = base_run
    assembler = StepAssembler(None)
    pre = [s for s in trace.steps if s.instant_ns <= trace.start_ns]
    assert pre  # the command that started the task
    for stamp, x, effort in trace.samples[:40]:
        assembler.on_state(stamp, x, effort)
    for s in pre:
        assembler.on_step(s.instant_ns, s.x, s.out.tau)
        assembler.on_solve(s.instant_ns, x0=s.x0, x_ref=s.x_ref)
    assembler.on_start(trace.start_ns)
    assert assembler.ready() == []
