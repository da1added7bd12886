"""Tests of whatmatters.realtime.plant: zero-order hold from arrival, start gate, rate limiter, safe hold, record."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from whatmatters.control.hold import HoldController
from whatmatters.realtime.plant import PlantConfig, RealtimePlant
from whatmatters.sim.environments import make_environment
from whatmatters.sim.simulator import PandaSim, SimConfig

Q_HOME = np.array([0.0, -0.4, 0.0, -2.4, 0.0, 2.2, -0.785])
H = 2_000_000  # ns


def make_plant(nominal, cfg: PlantConfig | None = None) -> RealtimePlant:
    base = SimConfig()
    sim = PandaSim(replace(base, control_period=base.timestep))
    sim.reset(make_environment(2000), Q_HOME)
    hold = HoldController(nominal, None, sim.torque_limits, kp=0.0)
    return RealtimePlant(sim, hold, cfg or PlantConfig(record=True))


def run(plant: RealtimePlant, ticks: int, first: int = 0) -> list[str]:
    modes = []
    for i in range(first, first + ticks):
        plant.measure(i * H)
        modes.append(plant.step(i * H))
    return modes


def test_the_robot_stands_until_the_first_command(nominal):
    plant = make_plant(nominal)
    assert run(plant, 20) == ["held"] * 20
    np.testing.assert_array_equal(plant.sim.data.qpos, Q_HOME)  # not one physics step: no sag under gravity
    assert plant.start_ns is None and plant.counts["steps"] == 0


def test_a_command_takes_effect_at_the_first_tick_after_it_arrives(nominal):
    plant = make_plant(nominal)
    g = plant.hold.gravity(Q_HOME)
    plant.receive(g, 5 * H + 300_000)  # arrives 0.3 ms after tick 5
    run(plant, 10)
    assert plant.start_ns == 6 * H  # the task starts at the tick that applies it
    plant.receive(g + 1.0, 9 * H + 1_900_000)  # just before tick 10
    plant.receive(g + 2.0, 12 * H)  # exactly at tick 12: applied from tick 12
    run(plant, 6, first=10)
    with np.load(_saved(plant)) as rec:
        taus = dict(zip((rec["t_ns"] // H).tolist(), rec["tau"]))
    np.testing.assert_allclose(taus[6], g)
    np.testing.assert_allclose(taus[9], g)
    np.testing.assert_allclose(taus[10], g + 1.0)
    np.testing.assert_allclose(taus[11], g + 1.0)
    np.testing.assert_allclose(taus[12], g + 2.0)


def _saved(plant: RealtimePlant) -> str:
    import tempfile

    path = tempfile.mkdtemp() + "/record.npz"
    plant.save_record(path)
    return path


def test_the_effort_is_the_mean_torque_since_the_last_measurement(nominal):
    plant = make_plant(nominal)
    g = plant.hold.gravity(Q_HOME)
    plant.receive(g, 0)
    plant.measure(0)
    plant.step(0)
    plant.receive(g + 3.0, 1)
    plant.step(H)
    st = plant.measure(2 * H)  # two steps: g, then g + 3
    np.testing.assert_allclose(st.effort, g + 1.5)


def test_malformed_commands_are_rejected_and_counted(nominal):
    plant = make_plant(nominal)
    assert not plant.receive(np.full(7, np.nan), 0)
    assert not plant.receive(np.ones(6), 0)
    assert plant.counts["rejected"] == 2
    assert run(plant, 3) == ["held"] * 3


def test_without_commands_the_safe_hold_takes_over(nominal):
    plant = make_plant(nominal, PlantConfig(command_timeout=0.01))
    plant.receive(plant.hold.gravity(Q_HOME), 0)
    modes = run(plant, 10)
    assert modes[:6] == ["command"] * 6 and modes[6:] == ["safe_hold"] * 4  # 10 ms after the command
    assert plant.counts["hold_steps"] == 4


def test_the_rate_limiter_bounds_each_step_and_counts(nominal):
    limit = 1000.0
    plant = make_plant(nominal, PlantConfig(rate_limit=True, max_torque_rate=limit, record=True))
    g = plant.hold.gravity(Q_HOME)
    plant.receive(g + 6.0, 0)  # a 6 Nm jump above gravity (inside every joint's limit)
    run(plant, 8)
    with np.load(_saved(plant)) as rec:
        tau, q = rec["tau"], rec["q"]
    excl = tau - np.array([plant.hold.gravity(qi) for qi in q])  # libfranka limits the command without gravity
    steps = np.diff(np.vstack([np.zeros(7), excl]), axis=0)
    assert np.abs(steps).max() <= limit * 0.002 + 1e-9  # 2 Nm per 2 ms step
    np.testing.assert_allclose(excl[:2], np.tile([[2.0], [4.0]], (1, 7)), atol=1e-9)  # 2 Nm a step
    np.testing.assert_allclose(excl[3:], np.full((5, 7), 6.0), atol=0.05)  # caught up (gravity moves a little with q)
    assert plant.counts["rate_limited_steps"] in (2, 3)


def test_a_simulator_holding_torques_longer_than_one_physics_step_is_refused(nominal):
    sim = PandaSim(SimConfig())
    with pytest.raises(ValueError, match="one step at a time"):
        RealtimePlant(sim, HoldController(nominal, None, sim.torque_limits, kp=0.0), PlantConfig())
