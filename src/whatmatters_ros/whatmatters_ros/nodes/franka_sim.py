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

* real time (``lockstep: false``), as franka_ros2 and the robot behave
  (:class:`whatmatters.realtime.plant.RealtimePlant`): a physics thread steps
  MuJoCo at its own step (``sim.yaml``'s ``timestep``, 2 ms; ``physics_step``
  overrides it, e.g. 1 ms), paced by the wall clock with drift correction
  (:class:`whatmatters.realtime.clock.PacedClock`), and publishes
  ``/joint_states`` at ``publish_rate_hz`` (default 500 Hz; the effort of a
  state is the mean torque applied since the previous one), stamped with the
  tick's time. The latest valid command is applied from the first physics
  step after it arrives. Until the first valid
  command the robot stands at its start pose (physics does not run): the task
  starts at the tick the first command takes effect, and ``episode_seconds``
  count from there. Optionally Franka's torque-rate limit
  (``torque_rate_limit``, ``max_torque_rate`` Nm/s at the physics rate;
  counted as ``rate_limited_steps``). ``/diagnostics`` report the real-time
  lag (``lag_ms``, ``lag_ms_p99``, ``lag_ms_max``: tick processed after its
  time) and ``late_steps`` (ticks more than one physics step late), both
  since the task started, and ``task_time``. With ``record_path`` the simulator's own record of every
  physics step (time, state, applied torque) is written there at the end.
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
import threading
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
from whatmatters.realtime.clock import PacedClock
from whatmatters.realtime.metrics import RealtimeMetrics
from whatmatters.realtime.plant import PlantConfig, RealtimePlant
from whatmatters.sim.environments import make_environment
from whatmatters.sim.simulator import PandaSim, SimConfig
from whatmatters.trajectory.fourier import FourierConfig, sample_fourier_trajectory
from whatmatters_ros import messages as m
from whatmatters_ros.lockstep import LockstepGate, LockstepSettings
from whatmatters_ros.params import NodeParams, ParameterError, declare_parameters, param
from whatmatters_ros.runtime import exit_with, realtime_priority, run_node

__all__ = ["FrankaSimNode", "FrankaSimParams", "main"]


@dataclass(frozen=True)
class FrankaSimParams(NodeParams):
    """Parameters of ``franka_sim`` (``config/franka_sim.yaml``)."""

    node_name: ClassVar[str] = "franka_sim"

    env_seed: int = param(2000, "environment seed: payload draw and reference start pose", lo=0)
    lockstep: bool = param(False, "lock-step clock: publish /clock, advance one control period per command")
    publish_rate_hz: float = param(500.0, "real time: /joint_states rate, Hz (divides the physics rate)", lo=1.0, hi=1000.0)
    physics_step: float = param(0.0, "real time: physics step, s (0: sim.yaml's timestep)", lo=0.0, hi=0.02)
    torque_rate_limit: bool = param(False, "real time: apply Franka's torque-rate limit (libfranka's rate limiter)")
    max_torque_rate: float = param(1000.0, "real time: torque-rate limit, Nm/s", lo=1.0, hi=1e6)
    realtime_priority: int = param(80, "real time: SCHED_FIFO priority of the physics thread (0: ordinary; needs the privilege, else a warning)", lo=0, hi=99)
    record_path: str = param("", "real time: write the simulator's own record of every physics step here (npz) at the end; empty: none")
    control_period: float = param(0.02, "lock-step: simulated time per command, s", lo=0.002, hi=1.0)
    command_timeout: float = param(0.1, "real time: safe hold after this long without a valid command (once started), s", lo=0.001, hi=10.0)
    lockstep_timeout: float = param(1.0, "lock-step: advance with the safe hold after this much wall time without a command, s", lo=0.01, hi=60.0)
    wait_for_sensitivity: bool = param(False, "lock-step: also wait for the sensitivity logger's /mpc/sensitivity")
    sensitivity_lag: int = param(32, "lock-step: steps the sensitivities may be behind (>= the logger's batch)", lo=0, hi=100000)
    sensitivity_timeout: float = param(60.0, "lock-step: wall time to wait for the sensitivities before advancing anyway, s", lo=0.01, hi=3600.0)
    hold_damping: tuple[float, ...] = param((20.0, 20.0, 20.0, 20.0, 5.0, 5.0, 2.0), "safe hold joint damping, Nm s/rad (7)", lo=0.0, hi=200.0)
    episode_seconds: float = param(0.0, "stop after this much simulated time, s (0: run until shut down)", lo=0.0)
    wait_for_nodes: str = param("", "lock-step: start once these nodes (comma-separated names) subscribe to /joint_states, those readers match and a command (and, waiting for them, a sensitivity) publisher matches")
    start_delay: float = param(0.0, "lock-step: wall time to wait after the subscribers appeared, s", lo=0.0, hi=60.0)
    diagnostics_period: float = param(1.0, "period of the /diagnostics status, s", lo=0.01, hi=60.0)


class FrankaSimNode(Node):
    """The simulator node; see the module docstring."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("franka_sim", **kwargs)
        self.p = declare_parameters(self, FrankaSimParams)
        base = SimConfig.from_yaml()
        if self.p.lockstep:
            period, key = self.p.control_period, "control_period"
        else:
            period, key = self.p.physics_step or base.timestep, "physics_step"
            base = replace(base, timestep=period)
        try:
            self.sim = PandaSim(replace(base, control_period=period))
        except ConfigError as exc:
            raise ParameterError(f"node 'franka_sim': parameter '{key}' gives a step of {period} s: {exc}") from exc
        if not self.p.lockstep:
            ratio = 1.0 / (self.p.publish_rate_hz * period)
            if abs(ratio - round(ratio)) > 1e-6 or round(ratio) < 1:
                raise ParameterError(
                    f"node 'franka_sim': parameter 'publish_rate_hz' = {self.p.publish_rate_hz:g}: must divide the physics rate {1.0 / period:g} Hz"
                )
            self.publish_every = int(round(ratio))
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
        self.holding = False
        self.gate = LockstepGate(LockstepSettings(self.p.wait_for_sensitivity, self.p.sensitivity_lag, self.p.sensitivity_timeout,
                                                  self.p.lockstep_timeout, self.p.start_delay), self.counts)

        self.pub_state = self.create_publisher(JointState, m.JOINT_STATES, m.RELIABLE)
        self.pub_payload = self.create_publisher(m.Inertia, m.PAYLOAD, m.LATCHED)
        self.pub_diag = self.create_publisher(m.DiagnosticArray, m.DIAGNOSTICS, 100)
        self.pub_clock = self.create_publisher(Clock, m.CLOCK, m.RELIABLE) if self.p.lockstep else None
        self.plant: RealtimePlant | None = None
        self.clock: PacedClock | None = None
        self._physics: threading.Thread | None = None
        self._stop = threading.Event()
        if not self.p.lockstep:
            cfg = PlantConfig(self.p.command_timeout, self.p.torque_rate_limit, self.p.max_torque_rate, bool(self.p.record_path))
            self.plant = RealtimePlant(self.sim, self.hold, cfg)
            self.clock = PacedClock(self.sim.config.timestep)
            self.create_subscription(Float64MultiArray, m.COMMANDS, self._on_command_realtime, m.RELIABLE)
            # the robot's own view of the latency: each command's arrival against the state it answers
            self.latency = RealtimeMetrics(0.02, np.zeros(7), np.zeros(7), self.p.episode_seconds or None)
            self.create_subscription(JointState, m.MPC_STATE, self._on_mpc_state, m.RELIABLE)
        else:
            self.sub_cmd = self.create_subscription(Float64MultiArray, m.COMMANDS, self._on_command, m.RELIABLE)
        if self.p.lockstep and self.p.wait_for_sensitivity:
            self.sub_sens = self.create_subscription(Float64MultiArray, m.SENSITIVITY, self._on_sensitivity, m.RELIABLE)
        self.pub_payload.publish(m.inertia_msg(self.env.payload))
        if self.p.lockstep:
            self.create_timer(0.01, self._lockstep_watchdog)
        self.create_timer(self.p.diagnostics_period, self._publish_diagnostics)
        mode = "lock-step" if self.p.lockstep else (
            f"real time: physics {self.sim.config.timestep * 1e3:g} ms, /joint_states at {self.p.publish_rate_hz:g} Hz, "
            f"torque-rate limit {'on' if self.p.torque_rate_limit else 'off'}; held at the start pose until the first command"
        )
        self.get_logger().info(f"env {self.p.env_seed}: payload {self.env.payload.mass:.2f} kg, {mode}")
        if not self.p.lockstep:
            self._physics = threading.Thread(target=self._physics_loop, name="physics", daemon=True)
            self._physics.start()

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
            self.gate.answered = True
            self._try_advance()

    def _on_sensitivity(self, _msg: Float64MultiArray) -> None:
        self.counts["sensitivities"] += 1
        self._try_advance()

    def _try_advance(self) -> None:
        """Lock-step: one period per received command (last valid one held), once the logger is close enough."""
        if self.gate.may_finish():
            self._finish_episode()
        if not self.done and self.gate.may_step():
            self._step(self.command)

    def _finish_episode(self) -> None:
        self.gate.ending = False
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
            self.gate.ending = True
            if self.gate.sensitivities_ready():
                self._finish_episode()

    # -------------------------------------------------------------- real time
    def _on_command_realtime(self, msg: Float64MultiArray) -> None:
        """A command, at its arrival (the executor dispatches within microseconds): it takes effect at the first tick after that."""
        received = time.time_ns()
        tau = np.asarray(msg.data, dtype=float)
        self.latency.add_command(received, tau)
        if not self.plant.receive(tau, received):  # type: ignore[union-attr]
            self.get_logger().warning(
                f"rejected malformed command ({len(msg.data)} values or not finite); keeping the last valid one", throttle_duration_sec=1.0
            )

    def _on_mpc_state(self, msg: JointState) -> None:
        """The controller's record of a step (the state it answered, its torque): for the latency at the robot."""
        if self.plant is not None and self.plant.start_ns is not None:
            self.latency.set_start(self.plant.start_ns)
        self.latency.add_step(m.stamp_ns(msg.header.stamp), np.asarray(msg.effort, dtype=float))

    def _physics_loop(self) -> None:
        """Thread: one physics step per tick of the wall clock, the state published every ``publish_every`` ticks."""
        plant, clock = self.plant, self.clock
        assert plant is not None and clock is not None
        realtime_priority(max(self.p.realtime_priority - 1, 0), "franka_sim", process=True)  # the executor and DDS, just below
        realtime_priority(self.p.realtime_priority, "franka_sim physics thread")
        clock.start()
        tick = 0
        ticks_per_episode = int(round(self.p.episode_seconds / self.sim.config.timestep)) if self.p.episode_seconds > 0 else 0
        try:
            while not self._stop.is_set():
                stamp = clock.wait()
                if tick % self.publish_every == 0:
                    st = plant.measure(stamp)
                    self.pub_state.publish(m.joint_state_msg(m.time_msg_ns(stamp), st.q, st.qd, st.effort))
                if ticks_per_episode and plant.start_ns is not None and (stamp - plant.start_ns) // plant.h_ns >= ticks_per_episode:
                    break  # the state at start + episode_seconds is published; the episode is over
                mode = plant.step(stamp)
                if mode == "safe_hold" and not self.holding:
                    self.holding = True
                    self.get_logger().warning(f"safe hold (gravity compensation + damping): no valid command for {self.p.command_timeout * 1e3:.0f} ms")
                elif mode == "command" and self.holding:
                    self.holding = False
                    self.get_logger().info("valid commands again: safe hold ended")
                if plant.start_ns == stamp:
                    clock.reset_figures()  # the lag figures describe the task, not the other nodes' start-up
                    self.get_logger().info("first command applied: the task starts")
                tick += 1
        finally:
            if not self._stop.is_set():
                self.get_logger().info(f"episode of {self.task_time():.3f} s done: {self._realtime_values()}")
                self._publish_diagnostics()
                self.done = True

    def task_time(self) -> float:
        """Real time: seconds since the task started (0 before)."""
        if self.plant is None or self.plant.start_ns is None or self.clock is None or self.clock.origin_ns is None:
            return 0.0
        return max(0.0, (self.clock.deadline(self.clock.ticks) - self.plant.start_ns) * 1e-9)

    def _realtime_values(self) -> dict[str, Any]:
        assert self.plant is not None and self.clock is not None
        fig = self.clock.figures()
        return {
            **self.plant.counts, "task_time": f"{self.task_time():.3f}", "task_start_ns": self.plant.start_ns or 0,
            "lag_ms": f"{fig['lag_ms']:.3f}", "lag_ms_median": f"{fig['lag_ms_median']:.3f}", "lag_ms_p99": f"{fig['lag_ms_p99']:.3f}",
            "lag_ms_max": f"{fig['lag_ms_max']:.3f}", "late_steps": fig["late_steps"], "ticks": fig["ticks"],
            "clamps": self.sim.clamp_count, "payload_kg": self.env.payload.mass,
            **{f"robot_{k}": "" if v is None else (f"{v:.3f}" if isinstance(v, float) else v) for k, v in self.latency.summary().items()
               if k.startswith("latency") or k in ("late_commands", "matched_commands")},
        }

    def close(self) -> None:
        """Stops the physics thread and writes the record (real time)."""
        self._stop.set()
        if self._physics is not None:
            self._physics.join(timeout=2.0)
        if self.plant is not None and self.p.record_path:
            path = self.plant.save_record(self.p.record_path)
            self.get_logger().info(f"simulator record: {path}")

    def _lockstep_watchdog(self) -> None:
        if self.done:
            return
        if not self.gate.started:
            if self.gate.may_start(self._graph_ready()):
                self.get_logger().info("lock-step started")
                self._publish_state()
            return
        waited = self.gate.timeout()
        if waited == "sensitivities":
            self.counts["sensitivity_timeouts"] += 1
            self.get_logger().warning(f"no sensitivities for {self.p.sensitivity_timeout:g} s of wall time: advancing without them")
            if self.gate.ending:
                self._finish_episode()
            else:
                self._step(self.command)
        elif waited == "command":
            self.command = None  # the controller is silent: hold until it speaks again
            self._step(None, f"no command for {self.p.lockstep_timeout:g} s of wall time")

    def _graph_ready(self) -> bool:
        """Lock-step: the nodes of ``wait_for_nodes`` subscribe to /joint_states, our states reach them and a
        controller's commands (and, waiting for them, a logger's sensitivities) reach us."""
        wanted = {n.strip() for n in self.p.wait_for_nodes.split(",") if n.strip()}
        present = {info.node_name for info in self.get_subscriptions_info_by_topic(m.JOINT_STATES)}
        # the graph names the nodes; the DDS-level match counts say that our states reach them and a
        # controller's commands reach us (a served MPC's writer matches a new simulator only after a while)
        matched = self.pub_state.get_subscription_count() >= len(wanted) and (not wanted or self.sub_cmd.get_publisher_count() > 0) \
            and (not wanted or not self.p.wait_for_sensitivity or self.sub_sens.get_publisher_count() > 0)
        return wanted <= present and matched

    def _publish_state(self) -> None:
        """Lock-step: ``/clock`` and the state at the simulation time."""
        stamp = m.time_msg(self.sim.time)
        self.pub_clock.publish(Clock(clock=stamp))  # type: ignore[union-attr]
        d = self.sim.data
        self.gate.published()
        self.pub_state.publish(m.joint_state_msg(stamp, d.qpos, d.qvel, self.effort))

    def _publish_diagnostics(self) -> None:
        level = m.WARN if self.holding else m.OK
        text = "safe hold (no valid command within the timeout)" if self.holding else "commands applied"
        if self.plant is not None:
            if self.plant.start_ns is None:
                text = "holding the start pose until the first command"
            values = self._realtime_values()
        else:
            values = {**self.counts, "sim_time": f"{self.sim.time:.3f}", "clamps": self.sim.clamp_count, "payload_kg": self.env.payload.mass}
        self.pub_diag.publish(m.diagnostic_array(self.get_clock().now().to_msg(), "franka_sim", level, text, values))


def main(args: list[str] | None = None) -> None:
    """Console script ``franka_sim``."""
    exit_with(run_node(FrankaSimNode, args))


if __name__ == "__main__":
    main()
