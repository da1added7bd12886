"""The car's MPC through the project's OCP builder: laps, bounded fallbacks, unwrapped arc length."""

from __future__ import annotations

import numpy as np
import pytest
from whatmatters.car import CarControlConfig, CarPlant, car_constraints, load_car_params, run_car_episode, start_state
from whatmatters.car.control import BRAKE, SHIFTED_PLAN, SOLVED
from whatmatters.errors import ConfigError


def test_the_nominal_car_laps_on_its_racing_line(car_controller, car_track, car_line):
    """On a plant with the nominal parameters the MPC follows the line: its lap time within 1 % of
    the profile's, the line within 3 cm, always on the track, never a fallback."""
    plant = CarPlant(load_car_params())
    ep = run_car_episode(car_controller, plant, car_track, 10.0, start_state(car_track, car_controller))
    assert abs(ep.lap_time - car_line.lap_time()) <= 0.01 * car_line.lap_time()
    assert np.abs(ep.x[:-1, 1] - ep.x_ref[:, 0, 1]).max() < 0.03
    assert ep.off_track == 0.0
    assert set(ep.sources) == {SOLVED} and car_controller.stats.fallbacks == 0


def test_commands_stay_inside_the_input_bounds(car_controller, car_track):
    plant = CarPlant(load_car_params())
    ep = run_car_episode(car_controller, plant, car_track, 2.0, start_state(car_track, car_controller))
    cons = car_controller.solver.constraints
    assert np.all(np.isfinite(ep.u)) and np.all(ep.u >= cons.u_lower) and np.all(ep.u <= cons.u_upper)
    # the steering band: rate = (delta_cmd - delta) / time constant stays near max_steer_rate (soft)
    band = car_controller.solver.model.steer_command_band()
    assert np.abs(ep.u[:, 1] - ep.x[:-1, 6]).max() <= 1.05 * band


def test_a_bad_state_gives_the_shifted_plan_then_braking(car_controller, car_track):
    x = start_state(car_track, car_controller)
    from whatmatters.car import frenet_state

    car_controller.reset(frenet_state(car_track, x))
    good = car_controller(frenet_state(car_track, x))
    assert good.source == SOLVED
    bad = np.full(8, np.nan)
    sources = [car_controller(bad) for _ in range(car_controller.cfg.fallback_after)]
    assert [s.source for s in sources[:-1]] == [SHIFTED_PLAN] * (car_controller.cfg.fallback_after - 1)
    assert sources[-1].source == BRAKE
    np.testing.assert_array_equal(sources[-1].u, [car_controller.cfg.fallback_brake, 0.0])
    np.testing.assert_array_equal(sources[0].u, car_controller._plan.u[1])  # the last plan, one step on


def test_arc_length_is_unwrapped_over_laps(car_controller, car_track):
    length = car_track.length
    car_controller.reset(np.array([length - 0.1, 0, 0, 5.0, 0, 0, 0, 0]))
    x = car_controller.unwrap(np.array([0.05, 0, 0, 5.0, 0, 0, 0, 0]))
    assert x[0] == pytest.approx(length + 0.05)
    assert car_controller.unwrap(np.array([0.2, 0, 0, 5.0, 0, 0, 0, 0]))[0] == pytest.approx(length + 0.2)


def test_a_car_that_does_not_fit_the_track_is_named(car_model, car_track):
    with pytest.raises(ConfigError, match="does not fit"):
        car_constraints(car_model, car_track, CarControlConfig(margin=car_track.half_width))


def test_bad_control_settings_are_named():
    with pytest.raises(ConfigError, match="fallback_brake"):
        CarControlConfig(fallback_brake=1.0)


def test_the_safe_stop_brakes_straight_and_eases_out_at_standstill():
    from whatmatters.car.control import safe_stop

    np.testing.assert_array_equal(safe_stop(5.0, -3.0), [-3.0, 0.0])
    np.testing.assert_allclose(safe_stop(0.2, -3.0), [-1.0, 0.0])  # the last 0.2 s of braking
    np.testing.assert_array_equal(safe_stop(-0.1, -3.0), [0.0, 0.0])  # never drives backwards
