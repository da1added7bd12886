"""``car_sim``: the race car (:class:`whatmatters.car.CarPlant`) on the track, behind F1TENTH's topics.

Publishes ``/odom`` (nav_msgs/Odometry) and ``/actuator_states`` (the
realised steering angle and drive acceleration) with the same stamp, and takes
``/drive`` (``[acceleration m/s^2, steering_angle rad]``,
:mod:`whatmatters_ros.car_messages`) with zero-order hold. The plant clips a
command to its actuators' limits; a malformed one (not two finite values) is
rejected with a throttled warning and the last valid one is kept. Without a
valid command the car brakes to a stop with straight wheels (the safe hold:
``config/car/control.yaml``'s ``fallback_brake``, eased out near standstill)
and says so (log and ``/diagnostics``).

The environment (tyre friction, mass and its distribution) comes from
``env_seed``; the car starts on the racing line at ``start_s`` at the line's
speed, as in the core's episodes (:func:`whatmatters.car.start_state`).

Clock modes (as ``franka_sim``):

* lock-step (``lockstep: true``): publishes ``/clock`` and the state at
  simulation time ``t``, then advances one ``control_period`` (the plant's
  RK4 at ``physics_step``) per received command; without one for
  ``lockstep_timeout`` s of wall time it advances with the safe hold. With
  ``wait_for_sensitivity`` it advances past state k only once
  ``/mpc/sensitivity`` has brought the samples of states 0..k -
  ``sensitivity_lag`` (at the end: all), or after ``sensitivity_timeout`` s.
  The same inputs give the core's :func:`whatmatters.car.run_car_episode`.
* real time: a physics thread steps the plant every ``physics_step`` s of the
  wall clock (:class:`whatmatters.realtime.clock.PacedClock`) and publishes
  the state at ``publish_rate_hz``. The car stands at its start until the
  first valid command (the task starts there; ``episode_seconds`` count from
  it); afterwards, without a valid command for ``command_timeout`` s, the safe hold.

``/diagnostics`` report the counts, the simulated time, the lap progress (m)
and the time with a wheel beyond the border (``off_track_s``), both sampled at
each control step (lock-step) or published state (real time), and, in real
time, the physics thread's lag figures.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from whatmatters.car.control import CarControlConfig, safe_stop
from whatmatters.car.environments import make_car_environment
from whatmatters.car.experiment import CarExperimentConfig
from whatmatters.car.generate import generate_track
from whatmatters.car.model import frenet_state, plant_pose
from whatmatters.car.params import load_car_params
from whatmatters.car.plant import CarPlant
from whatmatters.car.raceline import racing_line
from whatmatters.errors import ConfigError
from whatmatters.realtime.clock import PacedClock
from whatmatters_ros import car_messages as cm
from whatmatters_ros import messages as m
from whatmatters_ros.lockstep import LockstepGate, LockstepSettings
from whatmatters_ros.params import NodeParams, ParameterError, declare_parameters, param
from whatmatters_ros.runtime import exit_with, realtime_priority, run_node

__all__ = ["CarSimNode", "CarSimParams", "main"]


@dataclass(frozen=True)
class CarSimParams(NodeParams):
    """Parameters of ``car_sim`` (``config/car/car_sim.yaml``)."""

    node_name: ClassVar[str] = "car_sim"
    config_subdir: ClassVar[str] = "car"

    env_seed: int = param(2000, "environment seed: tyre friction, mass and its distribution", lo=0)
    start_s: float = param(0.0, "start on the racing line at this arc length, m", lo=0.0)
    lockstep: bool = param(False, "lock-step clock: publish /clock, advance one control period per command")
    physics_step: float = param(0.001, "the plant's RK4 step, s", lo=1e-4, hi=0.01)
    control_period: float = param(0.02, "lock-step: simulated time per command, s (a whole number of physics steps)", lo=0.001, hi=1.0)
    publish_rate_hz: float = param(100.0, "real time: /odom rate, Hz (divides the physics rate)", lo=1.0, hi=1000.0)
    realtime_priority: int = param(80, "real time: SCHED_FIFO priority of the physics thread (0: ordinary; needs the privilege, else a warning)", lo=0, hi=99)
    command_timeout: float = param(0.1, "real time: safe hold after this long without a valid command (once started), s", lo=0.001, hi=10.0)
    lockstep_timeout: float = param(1.0, "lock-step: advance with the safe hold after this much wall time without a command, s", lo=0.01, hi=60.0)
    wait_for_sensitivity: bool = param(False, "lock-step: also wait for the logger's /mpc/sensitivity")
    sensitivity_lag: int = param(8, "lock-step: steps the sensitivities may be behind", lo=0, hi=100000)
    sensitivity_timeout: float = param(60.0, "lock-step: wall time to wait for the sensitivities before advancing anyway, s", lo=0.01, hi=3600.0)
    episode_seconds: float = param(0.0, "stop after this much simulated time, s (0: run until shut down)", lo=0.0)
    wait_for_nodes: str = param("", "lock-step: start once these nodes (comma-separated) subscribe to /odom and a /drive (and, waiting for it, a sensitivity) publisher matches")
    start_delay: float = param(0.0, "lock-step: wall time to wait after that, s", lo=0.0, hi=60.0)
    diagnostics_period: float = param(1.0, "period of the /diagnostics status, s", lo=0.01, hi=60.0)


class CarSimNode(Node):
    """The car simulator node; see the module docstring."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("car_sim", **kwargs)
        self.p = declare_parameters(self, CarSimParams)
        step = self.p.physics_step
        if self.p.lockstep and abs(self.p.control_period / step - round(self.p.control_period / step)) > 1e-6:
            raise ParameterError(f"node 'car_sim': parameter 'control_period' = {self.p.control_period:g}: not a whole number of {step:g} s physics steps")
        if not self.p.lockstep:
            ratio = 1.0 / (self.p.publish_rate_hz * step)
            if abs(ratio - round(ratio)) > 1e-6:
                raise ParameterError(f"node 'car_sim': parameter 'publish_rate_hz' = {self.p.publish_rate_hz:g}: must divide the physics rate {1.0 / step:g} Hz")
            self.publish_every = int(round(ratio))
        self.track = generate_track(CarExperimentConfig.from_yaml().track_seed)
        base = load_car_params()
        try:
            self.env = make_car_environment(self.p.env_seed)
            self.plant = CarPlant(self.env.params(base), step)
        except ConfigError as exc:
            raise ParameterError(f"node 'car_sim': parameter 'env_seed' = {self.p.env_seed}: {exc}") from exc
        line = racing_line(self.track, base)
        self.x = plant_pose(self.track, line.states(np.array([self.p.start_s % self.track.length]))[0])
        self.brake = CarControlConfig.from_yaml().fallback_brake
        self.lock = threading.Lock()
        self.time = 0.0  # simulated (lock-step) or task (real time) seconds
        self.command: np.ndarray | None = None
        self.command_wall = -math.inf
        self.counts = {"commands": 0, "rejected": 0, "hold_steps": 0, "steps": 0, "sensitivities": 0, "sensitivity_timeouts": 0}
        self.off_track = 0.0
        self.progress = 0.0
        self._s_last = float(frenet_state(self.track, self.x)[0])
        self.holding = False
        self.done = False
        self.task_started = False  # real time: the first valid command arrived
        self.gate = LockstepGate(LockstepSettings(self.p.wait_for_sensitivity, self.p.sensitivity_lag, self.p.sensitivity_timeout,
                                                  self.p.lockstep_timeout, self.p.start_delay), self.counts)
        self.pub_odom = self.create_publisher(Odometry, cm.ODOM, m.RELIABLE)
        self.pub_act = self.create_publisher(JointState, cm.ACTUATORS, m.RELIABLE)
        self.pub_diag = self.create_publisher(m.DiagnosticArray, m.DIAGNOSTICS, 100)
        self.pub_clock = self.create_publisher(Clock, m.CLOCK, m.RELIABLE) if self.p.lockstep else None
        self.sub_cmd = self.create_subscription(Float64MultiArray, cm.DRIVE, self._on_drive, m.RELIABLE)
        self.sub_sens = self.create_subscription(Float64MultiArray, m.SENSITIVITY, self._on_sensitivity, m.RELIABLE) \
            if self.p.lockstep and self.p.wait_for_sensitivity else None
        self.clock: PacedClock | None = None
        self._stop = threading.Event()
        self._physics: threading.Thread | None = None
        self.create_timer(self.p.diagnostics_period, self._publish_diagnostics)
        self.get_logger().info(
            f"env {self.p.env_seed}: friction {self.plant.p.mu:.3f}, mass {self.plant.p.mass:.2f} kg; "
            + ("lock-step" if self.p.lockstep else f"real time: physics {step * 1e3:g} ms, /odom at {self.p.publish_rate_hz:g} Hz; standing until the first command")
        )
        if self.p.lockstep:
            self.create_timer(0.01, self._lockstep_watchdog)
        else:
            self.clock = PacedClock(step)
            self._physics = threading.Thread(target=self._physics_loop, name="physics", daemon=True)
            self._physics.start()

    # ---------------------------------------------------------------- commands
    def _on_drive(self, msg: Float64MultiArray) -> None:
        u = cm.drive_to_u(msg)
        with self.lock:
            if u is None:
                self.counts["rejected"] += 1
                self.get_logger().warning(f"rejected malformed /drive ({len(msg.data)} values or not finite); keeping the last valid one",
                                          throttle_duration_sec=1.0)
            else:
                self.command, self.command_wall = u, time.monotonic()
                self.counts["commands"] += 1
                self.task_started = True
        if self.p.lockstep:
            self.gate.answered = True
            self._try_advance()

    def _on_sensitivity(self, _msg: Float64MultiArray) -> None:
        self.counts["sensitivities"] += 1
        self._try_advance()

    def hold_command(self) -> np.ndarray:
        """The safe hold: straight wheels and braking, eased to zero at standstill (:func:`whatmatters.car.control.safe_stop`), (2,)."""
        return safe_stop(float(self.x[3]), self.brake)

    def _advance(self, u: np.ndarray | None, duration: float) -> None:
        """The plant over ``duration`` s under ``u`` (None: the safe hold)."""
        if u is None:
            u = self.hold_command()
            self.counts["hold_steps"] += 1
            if not self.holding:
                self.holding = True
                self.get_logger().warning("safe hold: braking with straight wheels (no valid /drive)")
        elif self.holding:
            self.holding = False
            self.get_logger().info("valid commands again: safe hold ended")
        self.x = self.plant.simulate(self.x, u, duration)
        self.time += duration
        self.counts["steps"] += 1

    def _track_figures(self, duration: float) -> None:
        """Lap progress and time beyond the border, sampled every ``duration`` s (a control or publishing period)."""
        fr = frenet_state(self.track, self.x)
        ds = (float(fr[0]) - self._s_last + 0.5 * self.track.length) % self.track.length - 0.5 * self.track.length
        self.progress += ds
        self._s_last = float(fr[0])
        if abs(fr[1]) > self.track.half_width - 0.5 * self.plant.p.width:
            self.off_track += duration

    # --------------------------------------------------------------- lock-step
    def _try_advance(self) -> None:
        if self.gate.may_finish():
            self._finish()
        if not self.done and self.gate.may_step():
            self._lockstep_step(self.command)

    def _lockstep_step(self, u: np.ndarray | None) -> None:
        self._advance(u, self.p.control_period)
        self._track_figures(self.p.control_period)
        self._publish_state(m.time_msg(self.time))
        if self.p.episode_seconds > 0 and self.time >= self.p.episode_seconds - 1e-9:
            self.gate.ending = True
            if self.gate.sensitivities_ready():
                self._finish()

    def _finish(self) -> None:
        self.gate.ending = False
        self.get_logger().info(f"episode of {self.time:.2f} s done: {self.counts}, progress {self.progress:.2f} m, off track {self.off_track:.2f} s")
        self._publish_diagnostics()
        self.done = True

    def _lockstep_watchdog(self) -> None:
        if self.done:
            return
        if not self.gate.started:
            if self.gate.may_start(self._graph_ready()):
                self.get_logger().info("lock-step started")
                self._publish_state(m.time_msg(self.time))
            return
        waited = self.gate.timeout()
        if waited == "sensitivities":
            self.counts["sensitivity_timeouts"] += 1
            self.get_logger().warning(f"no sensitivities for {self.p.sensitivity_timeout:g} s of wall time: advancing without them")
            if self.gate.ending:
                self._finish()
            else:
                self._lockstep_step(self.command)
        elif waited == "command":
            self.command = None  # the controller is silent: hold until it speaks again
            self._lockstep_step(None)

    def _graph_ready(self) -> bool:
        """The nodes of ``wait_for_nodes`` subscribe to /odom, our states reach them, a /drive publisher (and,
        waiting for them, a sensitivity publisher) reaches us."""
        wanted = {n.strip() for n in self.p.wait_for_nodes.split(",") if n.strip()}
        present = {info.node_name for info in self.get_subscriptions_info_by_topic(cm.ODOM)}
        matched = self.pub_odom.get_subscription_count() >= len(wanted) and (not wanted or self.sub_cmd.get_publisher_count() > 0) \
            and (not wanted or self.sub_sens is None or self.sub_sens.get_publisher_count() > 0)
        return wanted <= present and matched

    def _publish_state(self, stamp: Any) -> None:
        if self.pub_clock is not None:
            self.pub_clock.publish(Clock(clock=stamp))
            self.gate.published()
        self.pub_odom.publish(cm.odom_msg(stamp, self.x))
        self.pub_act.publish(cm.actuators_msg(stamp, self.x[6], self.x[7]))

    # --------------------------------------------------------------- real time
    def _physics_loop(self) -> None:
        """Thread: one plant step per tick of the wall clock; the state every ``publish_every`` ticks."""
        clock = self.clock
        assert clock is not None
        realtime_priority(max(self.p.realtime_priority - 1, 0), "car_sim", process=True)
        realtime_priority(self.p.realtime_priority, "car_sim physics thread")
        clock.start()
        step, tick, start_tick = self.p.physics_step, 0, None
        try:
            while not self._stop.is_set():
                stamp = clock.wait()
                if tick % self.publish_every == 0:
                    self._publish_state(m.time_msg_ns(stamp))
                    if start_tick is not None:
                        self._track_figures(self.publish_every * step)
                with self.lock:
                    started, u, age = self.task_started, self.command, time.monotonic() - self.command_wall
                if started:
                    if start_tick is None:
                        start_tick = tick
                        clock.reset_figures()
                        self.get_logger().info("first command applied: the task starts")
                    if self.p.episode_seconds > 0 and (tick - start_tick) * step >= self.p.episode_seconds - 1e-9:
                        break
                    self._advance(u if age <= self.p.command_timeout else None, step)
                tick += 1
        finally:
            if not self._stop.is_set():
                self.get_logger().info(f"episode of {self.time:.3f} s done: {self.counts}, progress {self.progress:.2f} m")
                self._publish_diagnostics()
                self.done = True

    def close(self) -> None:
        """Stops the physics thread (real time)."""
        self._stop.set()
        if self._physics is not None:
            self._physics.join(timeout=2.0)

    def _publish_diagnostics(self) -> None:
        values: dict[str, Any] = {**self.counts, "sim_time": f"{self.time:.3f}", "progress_m": f"{self.progress:.3f}",
                                  "off_track_s": f"{self.off_track:.3f}", "env_seed": self.p.env_seed, "friction": f"{self.plant.p.mu:.4f}",
                                  "mass_kg": f"{self.plant.p.mass:.3f}"}
        if self.clock is not None and self.clock.origin_ns is not None:
            fig = self.clock.figures()
            values.update({k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in fig.items()})
        level, text = (m.WARN, "safe hold (no valid /drive)") if self.holding else (m.OK, "commands applied")
        self.pub_diag.publish(m.diagnostic_array(self.get_clock().now().to_msg(), "car_sim", level, text, values))


def main(args: list[str] | None = None) -> None:
    """Console script ``car_sim``."""
    exit_with(run_node(CarSimNode, args))


if __name__ == "__main__":
    main()
