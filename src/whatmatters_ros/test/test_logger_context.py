"""The logger's context history in real time: a state that got no command does not stall it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def test_real_time_history_goes_on_past_a_state_without_command(rclpy_context: Any, tmp_path: Path) -> None:
    from rclpy.parameter import Parameter
    from std_msgs.msg import Float64MultiArray
    from whatmatters.dynamics.context import ContextTracker
    from whatmatters.dynamics.nominal import nominal_model
    from whatmatters.robot.params import load_panda_params
    from whatmatters_ros import messages as m
    from whatmatters_ros.nodes.sensitivity_logger import SensitivityLoggerNode

    overrides = [Parameter("sensitivity", value=False), Parameter("bag_dir", value=str(tmp_path)), Parameter("lockstep", value=False)]
    node = SensitivityLoggerNode(parameter_overrides=overrides)
    try:
        nominal = nominal_model(load_panda_params())
        node.tracker = ContextTracker(nominal, 15, 0.02)  # the learned model's history, without its solver
        rng = np.random.default_rng(0)
        xs = [0.1 * rng.normal(size=14) for _ in range(5)]
        taus = [rng.normal(size=7) for _ in range(5)]

        def state(k: int) -> None:
            node._on_state(m.joint_state_msg(m.time_msg(0.02 * k), xs[k][:7], xs[k][7:], np.zeros(7)))

        def command(k: int) -> None:
            node._on_command(Float64MultiArray(data=taus[k].tolist()))

        state(0)
        node.tracker.reset(xs[0])
        command(0)
        state(1)  # no command for state 1: the simulator held command 0
        state(2)
        command(2)
        state(3)
        command(3)
        state(4)
        assert node.tracked == 4  # was stuck at 1 before the fix
        window = node.tracker.window_array()
        held = taus[0] - node.tracker.tau_nom(xs[1][:7], xs[1][7:], (xs[2][7:] - xs[1][7:]) / 0.02)
        np.testing.assert_allclose(window[-3], np.concatenate([xs[1], held]))  # transition 1 -> 2 under the held torque
        np.testing.assert_allclose(window[-1][:14], xs[3])
    finally:
        node._close_bag()
        node.destroy_node()

