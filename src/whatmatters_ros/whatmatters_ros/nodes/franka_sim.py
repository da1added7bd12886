"""``franka_sim``: the MuJoCo Panda (:class:`whatmatters.sim.PandaSim`) behind franka_ros2's topics.

Publishes ``/joint_states`` (panda_joint1..7; effort = torque applied during
the last period), takes torques on ``/effort_controller/commands``
(Float64MultiArray, 7 values, Nm) with zero-order hold, clamps them to the
limits (in :class:`PandaSim`), rejects malformed ones (wrong length, NaN/inf)
with a throttled warning and keeps the last valid one. Without a fresh command
for ``command_timeout`` s it applies the safe hold (nominal gravity
compensation plus damping, :class:`whatmatters.control.hold.HoldController`)
and reports it (log and ``/diagnostics``).

Clock modes:

* real time (``lockstep: false``): a wall-clock timer steps the physics by
  ``1 / publish_rate_hz`` s and publishes the state, stamped with ROS time.
* lock-step (``lockstep: true``): publishes ``/clock`` and the state at
  simulation time ``t``, then advances one ``control_period`` per received
  command; if none arrives within ``lockstep_timeout`` s of wall time it
  advances with the safe hold. Nodes run with ``use_sim_time``. With
  ``wait_for_sensitivity`` it also waits for the sensitivity logger: it
  advances past state k only once ``/mpc/sensitivity`` has brought the
  samples of states 0..k - ``sensitivity_lag`` (the lag lets the logger
  finish its samples in batches), and at the end of the episode for all of
  them; after ``sensitivity_timeout`` s of wall time it advances anyway
  (counted as ``sensitivity_timeouts``).

The environment (payload and reference start pose) comes from ``env_seed``:
the robot starts at rest at the reference's start, as in the core's episodes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from whatmatters.control.hold import HoldController
from whatmatters.dynamics.nominal import nominal_model
from whatmatters.errors import ConfigError
from whatmatters.sim.environments import make_environment
from whatmatters.sim.simulator import PandaSim, SimConfig
from whatmatters.trajectory.fourier import FourierConfig, sample_fourier_trajectory
from whatmatters_ros import messages as m
from whatmatters_ros.params import NodeParams, ParameterError, declare_parameters, param
from whatmatters_ros.runtime import exit_with, run_node

__all__ = ["FrankaSimNode", "FrankaSimParams", "main"]


@dataclass(frozen=True)
class FrankaSimParams(NodeParams):
    """Parameters of ``franka_sim`` (``config/franka_sim.yaml``)."""

    node_name: ClassVar[str] = "franka_sim"

    env_seed: int = param(2000, "environment seed: payload draw and reference start pose", lo=0)
    lockstep: bool = param(False, "lock-step clock: publish /clock, advance one control period per command")
    publish_rate_hz: float = param(50.0, "real time: physics advanced and /joint_states published at this rate, Hz", lo=1.0, hi=500.0)
    control_period: float = param(0.02, "lock-step: simulated time per command, s", lo=0.002, hi=1.0)
    command_timeout: float = param(0.1, "real time: safe hold after this long without a valid command, s", lo=0.001, hi=10.0)
    lockstep_timeout: float = param(1.0, "lock-step: advance with the safe hold after this much wall time without a command, s", lo=0.01, hi=60.0)
    wait_for_sensitivity: bool = param(False, "lock-step: also wait for the sensitivity logger's /mpc/sensitivity")
    sensitivity_lag: int = param(32, "lock-step: steps the sensitivities may be behind (>= the logger's batch)", lo=0, hi=100000)
    sensitivity_timeout: float = param(60.0, "lock-step: wall time to wait for the sensitivities before advancing anyway, s", lo=0.01, hi=3600.0)
    hold_damping: tuple[float, ...] = param((20.0, 20.0, 20.0, 20.0, 5.0, 5.0, 2.0), "safe hold joint damping, Nm s/rad (7)", lo=0.0, hi=200.0)
    episode_seconds: float = param(0.0, "stop after this much simulated time, s (0: run until shut down)", lo=0.0)
    wait_for_nodes: str = param("", "lock-step: start once these nodes (comma-separated names) subscribe to /joint_states")
    start_delay: float = param(0.0, "lock-step: wall time to wait after the subscribers appeared, s", lo=0.0, hi=60.0)
    diagnostics_period: float = param(1.0, "period of the /diagnostics status, s", lo=0.01, hi=60.0)


class FrankaSimNode(Node):
    """The simulator node; see the module docstring."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("franka_sim", **kwargs)
        self.p = declare_parameters(self, FrankaSimParams)
        base = SimConfig.from_yaml()
        period = self.p.control_period if self.p.lockstep else 1.0 / self.p.publish_rate_hz
        try:
            self.sim = PandaSim(replace(base, control_period=period))
        except ConfigError as exc:
            key = "control_period" if self.p.lockstep else "publish_rate_hz"
            raise ParameterError(f"node 'franka_sim': parameter '{key}' gives a step of {period} s: {exc}") from exc
        self.env = make_environment(self.p.env_seed)
        reference = sample_fourier_trajectory(self.env.reference_seed, FourierConfig.from_yaml(), self.sim.params)
        x0 = reference.state(0.0)
        self.sim.reset(self.env, x0[:7], x0[7:])
        self.hold = HoldController(nominal_model(self.sim.params), None, self.sim.torque_limits, kp=0.0, kd=np.asarray(self.p.hold_damping))
        self.done = False
        self.effort = np.zeros(7)  # torque applied during the last period
        self.command: np.ndarray | None = None
        self.command_wall = -math.inf  # time.monotonic() of the last valid command
        self.counts = {"commands": 0, "rejected": 0, "hold_steps": 0, "steps": 0, "sensitivities": 0, "sensitivity_timeouts": 0}
        self.answered = False  # lock-step: the command for the current state arrived
        self.ending = False  # lock-step: episode over, waiting for the last sensitivities
        self.holding = False
        self.started = not self.p.lockstep
        self._ready_since: float | None = None
        self._waiting_since = time.monotonic()

        self.pub_state = self.create_publisher(JointState, m.JOINT_STATES, m.RELIABLE)
        self.pub_payload = self.create_publisher(m.Inertia, m.PAYLOAD, m.LATCHED)
        self.pub_diag = self.create_publisher(m.DiagnosticArray, m.DIAGNOSTICS, 100)
        self.pub_clock = self.create_publisher(Clock, m.CLOCK, m.RELIABLE) if self.p.lockstep else None
        self.create_subscription(Float64MultiArray, m.COMMANDS, self._on_command, m.RELIABLE)
        if self.p.lockstep and self.p.wait_for_sensitivity:
            self.create_subscription(Float64MultiArray, m.SENSITIVITY, self._on_sensitivity, m.RELIABLE)
        self.pub_payload.publish(m.inertia_msg(self.env.payload))
        if self.p.lockstep:
            self.create_timer(0.01, self._lockstep_watchdog)
        else:
            self.create_timer(1.0 / self.p.publish_rate_hz, self._realtime_tick)
            self._publish_state()
        self.create_timer(self.p.diagnostics_period, self._publish_diagnostics)
        self.get_logger().info(
            f"env {self.p.env_seed}: payload {self.env.payload.mass:.2f} kg, "
            f"{'lock-step' if self.p.lockstep else f'real time at {self.p.publish_rate_hz:g} Hz'}"
        )

    # ------------------------------------------------------------- commands
    def _on_command(self, msg: Float64MultiArray) -> None:
        tau = np.asarray(msg.data, dtype=float)
        if tau.shape != (7,) or not np.all(np.isfinite(tau)):
            self.counts["rejected"] += 1
            self.get_logger().warning(
                f"rejected malformed command ({tau.size} values, finite: {bool(np.all(np.isfinite(tau)))}); keeping the last valid one",
                throttle_duration_sec=1.0,
            )
        else:
            self.command, self.command_wall = tau, time.monotonic()
            self.counts["commands"] += 1
        if self.p.lockstep:
            self.answered = True
            self._try_advance()

    def _on_sensitivity(self, _msg: Float64MultiArray) -> None:
        self.counts["sensitivities"] += 1
        self._try_advance()

    def _sensitivities_ready(self) -> bool:
        """Lock-step: the samples of states 0..k - lag are in (k: the current state)."""
        if not self.p.wait_for_sensitivity:
            return True
        if self.ending:
            return self.counts["sensitivities"] >= self.counts["steps"]
        return self.counts["sensitivities"] >= self.counts["steps"] + 1 - self.p.sensitivity_lag

    def _try_advance(self) -> None:
        """Lock-step: one period per received command (last valid one held), once the logger is close enough."""
        if self.ending and self._sensitivities_ready():
            self._finish_episode()
        if not self.started or self.done or self.ending or not self.answered or not self._sensitivities_ready():
            return
        self._step(self.command)

    def _finish_episode(self) -> None:
        self.ending = False
        self.get_logger().info(f"episode of {self.sim.time:.2f} s done: {self.counts}")
        self._publish_diagnostics()
        self.done = True

    def _safe_hold(self, reason: str) -> np.ndarray:
        if not self.holding:
            self.holding = True
            self.get_logger().warning(f"safe hold (gravity compensation + damping): {reason}")
            self._publish_diagnostics()
        self.counts["hold_steps"] += 1
        return self.hold(self.sim.data.qpos.copy(), self.sim.data.qvel.copy())

    def _step(self, tau: np.ndarray | None, reason: str = "no command received yet") -> None:
        if tau is None:
            tau = self._safe_hold(reason)
        elif self.holding:
            self.holding = False
            self.get_logger().info("valid commands again: safe hold ended")
        state = self.sim.step(tau)
        self.effort = state.tau
        self.counts["steps"] += 1
        self._publish_state()
        if self.p.episode_seconds > 0 and self.sim.time >= self.p.episode_seconds - 1e-9:
            self.ending = True
            if self._sensitivities_ready():
                self._finish_episode()

    # ---------------------------------------------------------------- clocks
    def _realtime_tick(self) -> None:
        if self.done:
            return
        fresh = time.monotonic() - self.command_wall <= self.p.command_timeout
        reason = f"no valid command for {self.p.command_timeout * 1e3:.0f} ms" if self.command is not None else "no command received yet"
        self._step(self.command if fresh else None, reason)

    def _lockstep_watchdog(self) -> None:
        if self.done:
            return
        now = time.monotonic()
        if not self.started:
            wanted = {n.strip() for n in self.p.wait_for_nodes.split(",") if n.strip()}
            present = {info.node_name for info in self.get_subscriptions_info_by_topic(m.JOINT_STATES)}
            if not wanted <= present:
                return
            self._ready_since = self._ready_since or now
            if now - self._ready_since < self.p.start_delay:
                return
            self.started = True
            self.get_logger().info("lock-step started")
            self._publish_state()
        elif (self.ending or self.answered) and now - self._waiting_since > self.p.sensitivity_timeout:
            self.counts["sensitivity_timeouts"] += 1
            self.get_logger().warning(f"no sensitivities for {self.p.sensitivity_timeout:g} s of wall time: advancing without them")
            if self.ending:
                self._finish_episode()
            else:
                self._step(self.command)
        elif not self.answered and not self.ending and now - self._waiting_since > self.p.lockstep_timeout:
            self.command = None  # the controller is silent: hold until it speaks again
            self._step(None, f"no command for {self.p.lockstep_timeout:g} s of wall time")

    def _publish_state(self) -> None:
        if self.p.lockstep:
            stamp = m.time_msg(self.sim.time)
            self.pub_clock.publish(Clock(clock=stamp))  # type: ignore[union-attr]
        else:
            stamp = self.get_clock().now().to_msg()
        d = self.sim.data
        self.answered = False
        self.pub_state.publish(m.joint_state_msg(stamp, d.qpos, d.qvel, self.effort))
        self._waiting_since = time.monotonic()

    def _publish_diagnostics(self) -> None:
        level = m.WARN if self.holding else m.OK
        text = "safe hold (no valid command within the timeout)" if self.holding else "commands applied"
        values = {**self.counts, "sim_time": f"{self.sim.time:.3f}", "clamps": self.sim.clamp_count, "payload_kg": self.env.payload.mass}
        self.pub_diag.publish(m.diagnostic_array(self.get_clock().now().to_msg(), "franka_sim", level, text, values))


def main(args: list[str] | None = None) -> None:
    """Console script ``franka_sim``."""
    exit_with(run_node(FrankaSimNode, args))


if __name__ == "__main__":
    main()
