"""``mpc_controller``: the acados MPC (:class:`whatmatters.mpc.MpcController`) at 50 Hz.

Subscribes to ``/joint_states`` and ``/reference``; publishes the torque on
``/effort_controller/commands`` (Float64MultiArray, 7 values, Nm, always
finite and inside the limits), the predicted states on ``/mpc/prediction``
(JointTrajectory, N + 1 points) and ``/diagnostics`` (solve time, acados
status, source of the torque, fallback counts, model version).

* real time (:class:`whatmatters.realtime.control.RealtimeMpc`): control
  instants on the robot's clock, ``t_k = t_0 + k / rate_hz``; the controller
  solves as soon as the state of an instant arrives and publishes the command
  at once. The grid starts at the first state and is re-anchored at the task's
  start (``/reference/start``). The context history gets the torque actually
  applied over each step (the mean effort of the robot's states in between).
  With ``delay_compensation`` the OCP is solved from the state predicted at
  ``t_k + d`` (the model's RK4 under the command in force) with the reference
  of that time; ``d`` is ``input_delay`` or, if negative, estimated each step
  (state age + recent solve time + ``command_transport``, rounded up to the
  robot's tick). Each step also publishes ``/mpc/state`` (JointState: the
  stamp and the measured state solved from, effort = the total torque
  commanded) and ``/mpc/reference`` (the reference tracked; its points and
  those of ``/mpc/prediction`` are ``d + k dt`` after the stamp). A
  ``rate_hz`` watchdog sends the safe hold (nominal gravity compensation at the
  last known pose) with an ERROR diagnostic when the latest state is older
  than ``stale_timeout`` s.
* lock-step: every ``/joint_states`` message is answered with exactly one
  command, computed with the reference of the same stamp (waiting up to
  ``reference_wait`` s of wall time for it, then the latest one, shifted).

Real robot (``command_excludes_gravity: true``, set by ``real.launch.py``):
libfranka / franka_ros2 add the robot's gravity compensation to every torque
command themselves, so the command must exclude gravity. The order is fixed:

1. the controller's full joint torque ``tau`` (MPC solution or fallback);
2. clamped to the torque limits: ``tau_total = clip(tau, -limit, limit)``
   (the limit check applies to the *total* torque the joints will see);
3. published on ``/mpc/torque`` (Float64MultiArray, Nm): the total torque,
   which the logger records as the step's torque for training;
4. ``command = tau_total - g_nom(q)`` with the nominal model's gravity at the
   measured q of the state the step answers, published on
   ``/effort_controller/commands``.

With the default (``false``, the simulator) the command is ``tau_total`` and
``/mpc/torque`` is not published.

``~/reload_model`` (std_srvs/Trigger) re-reads the ``model`` parameter (a
checkpoint may have been overwritten, or the parameter set to a new path) and
swaps the weights: they are runtime parameters of the compiled solver, so
nothing is rebuilt. The checkpoint is loaded in a worker thread while the
control loop goes on; the swap itself (writing the weights into the solver's
stages, ~1 ms) happens in the executor thread between two control steps. A
model of another architecture (or another ``exact`` environment) is refused.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
from rclpy.node import Node
from rclpy.task import Future
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, Header
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from whatmatters.dynamics.base import DynamicsModel
from whatmatters.dynamics.nominal import nominal_model
from whatmatters.dynamics.registry import resolve_model
from whatmatters.errors import WhatmattersError
from whatmatters.mpc.config import MpcConfig
from whatmatters.mpc.controller import SOLVED, MpcController
from whatmatters.mpc.solver import AcadosMpcSolver
from whatmatters.realtime.control import RealtimeConfig, RealtimeMpc, RealtimeStep
from whatmatters.realtime.delay import StatePredictor
from whatmatters.realtime.reference import ReferenceBuffer
from whatmatters.robot.params import load_panda_params
from whatmatters.sim.environments import make_environment
from whatmatters_ros import messages as m
from whatmatters_ros.params import NodeParams, ParameterError, declare_parameters, param
from whatmatters_ros.runtime import exit_with, realtime_priority, run_node

__all__ = ["MpcControllerNode", "MpcParams", "main"]


@dataclass(frozen=True)
class MpcParams(NodeParams):
    """Parameters of ``mpc_controller`` (``config/mpc_controller.yaml``)."""

    node_name: ClassVar[str] = "mpc_controller"

    model: str = param("nominal", "nominal, base, exact (needs env_seed) or a checkpoint path")
    env_seed: int = param(-1, "environment for model 'exact' (-1: none)", lo=-1)
    lockstep: bool = param(False, "answer every /joint_states message with exactly one command")
    rate_hz: float = param(50.0, "real time: control rate, Hz (instants on the robot's clock; must equal 1 / mpc.yaml's dt)", lo=1.0, hi=1000.0)
    delay_compensation: bool = param(False, "real time: solve from the state predicted over the input delay")
    input_delay: float = param(-1.0, "real time: delay from a state's stamp to its command taking effect, s; negative: estimated each step", lo=-1.0, hi=0.1)
    command_transport: float = param(0.0003, "real time: delivery time of a command to the robot, s (part of the estimated delay)", lo=0.0, hi=0.05)
    realtime_priority: int = param(70, "real time: SCHED_FIFO priority of this process's threads (0: ordinary; needs the privilege, else a warning)", lo=0, hi=99)
    start_after: str = param("reference_publisher", "real time: the first command waits for a reference and until these nodes (comma-separated) subscribe to the command (or /mpc/torque) topic")
    start_delay: float = param(0.5, "real time: then wait this long (wall, s) for their connections to settle", lo=0.0, hi=60.0)
    stale_timeout: float = param(0.1, "real time: joint states older than this give the safe hold, s", lo=0.001, hi=10.0)
    reference_wait: float = param(0.5, "lock-step: wall time to wait for the reference of a state's stamp, s", lo=0.0, hi=10.0)
    diagnostics_every: int = param(10, "publish /diagnostics every this many control steps", lo=1, hi=100000)
    command_excludes_gravity: bool = param(False, "real robot: publish clip(tau) - g_nom(q) (libfranka adds gravity); total torque on /mpc/torque")
    rk4_jacobian: str = param("", "overrides mpc.yaml's rk4_jacobian: first_stage (the default; about half the solve time with a learned model) or exact; empty: mpc.yaml's")


class MpcControllerNode(Node):
    """The controller node; see the module docstring."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("mpc_controller", **kwargs)
        self.p = declare_parameters(self, MpcParams)
        self.cfg = MpcConfig.from_yaml()
        if self.p.rk4_jacobian:
            self.cfg = replace(self.cfg, rk4_jacobian=self.p.rk4_jacobian)  # ConfigError naming the key if invalid
        params = load_panda_params()
        self.limits = params.torque_limits
        model = self._resolve(self.p.model)
        self.solver = AcadosMpcSolver(model, self.cfg, self.limits)
        self.controller = MpcController(self.solver, nominal_model(params))
        self.model_version = 1
        self.model_spec = self.p.model  # the model loaded now (reload_model re-reads the parameter)
        self.state: tuple[int, np.ndarray, float] | None = None  # (stamp ns, x, wall time received)
        self.pending: tuple[int, np.ndarray, float] | None = None  # lock-step: state awaiting its reference
        self.refs = ReferenceBuffer(self.cfg.dt)
        if self.p.lockstep:
            self.refs.start_ns = 0  # lock-step: the task time is the simulation time
        self.episode_stamp: int | None = None  # lock-step: stamp of the last control step (a smaller one starts an episode)
        self.steps = 0
        self.stale_steps = 0
        self.last_error = ""
        self.rt: RealtimeMpc | None = None
        self._start_open, self._start_ready, self._start_checked = False, 0.0, 0.0
        self._sent_after_ms = self._received_after_ms = self._rt_ms = 0.0
        self._heartbeat_steps = -1
        if not self.p.lockstep:
            if abs(self.p.rate_hz * self.cfg.dt - 1.0) > 1e-9:
                raise ParameterError(f"node 'mpc_controller': parameter 'rate_hz' = {self.p.rate_hz:g}: must be 1 / dt = {1.0 / self.cfg.dt:g} Hz (mpc.yaml)")
            rt_cfg = RealtimeConfig(self.cfg.dt, self.p.delay_compensation, self.p.input_delay, self.p.command_transport,
                                    max_age=self.p.stale_timeout)
            predictor = StatePredictor(model) if self.p.delay_compensation else None
            self.rt = RealtimeMpc(self.controller, self.refs, rt_cfg, predictor)
            realtime_priority(self.p.realtime_priority, "mpc_controller", process=True)  # the executor (this thread) and DDS

        self.pub_cmd = self.create_publisher(Float64MultiArray, m.COMMANDS, m.RELIABLE)
        self.pub_total = self.create_publisher(Float64MultiArray, m.TORQUE, m.RELIABLE) if self.p.command_excludes_gravity else None
        self.pub_pred = self.create_publisher(JointTrajectory, m.PREDICTION, m.RELIABLE)
        self.pub_state = self.create_publisher(JointState, m.MPC_STATE, m.RELIABLE)
        self.pub_ref = self.create_publisher(JointTrajectory, m.MPC_REFERENCE, m.RELIABLE)
        self.pub_diag = self.create_publisher(m.DiagnosticArray, m.DIAGNOSTICS, 100)
        self.create_subscription(JointState, m.JOINT_STATES, self._on_state, m.RELIABLE)
        self.create_subscription(JointTrajectory, m.REFERENCE, self._on_reference, m.RELIABLE)
        if self.p.lockstep:
            self.create_timer(0.01, self._lockstep_watchdog)
        else:
            self.create_subscription(Header, m.REFERENCE_START, self._on_start, m.LATCHED)
            self.create_timer(1.0 / self.p.rate_hz, self._stale_watchdog)
        self.create_timer(1.0, self._heartbeat)  # a node that starts late (the logger) still learns the model version
        self.create_service(Trigger, "~/reload_model", self._reload)
        self.get_logger().info(
            f"model '{self.p.model}' ({model.n_params} runtime parameters), N = {self.cfg.horizon}, "
            f"dt = {self.cfg.dt} s, {'lock-step' if self.p.lockstep else f'{self.p.rate_hz:g} Hz'}"
        )

    def _resolve(self, spec: str) -> DynamicsModel:
        env = make_environment(self.p.env_seed) if spec == "exact" and self.p.env_seed >= 0 else None
        return resolve_model(spec, env)

    # ----------------------------------------------------------------- inputs
    def _on_state(self, msg: JointState) -> None:
        x = m.joint_state_to_x(msg)
        if x is None:
            self.get_logger().warning("joint state without panda_joint1..7 positions and velocities, or not finite; ignored", throttle_duration_sec=1.0)
            return
        ns = m.stamp_ns(msg.header.stamp)
        self.state = (ns, x, time.monotonic())
        self._received_after_ms = (time.time_ns() - ns) * 1e-6  # the state's stamp -> its arrival here
        if self.p.lockstep:
            self.pending = self.state
            self._answer_pending(wait=True)
            return
        assert self.rt is not None
        if not self._may_start():
            if time.monotonic() - self._start_checked < 1e-3:
                self._diagnose(m.WARN, "waiting to start: the first command starts the task", force=True)
            return  # the robot stands; the first command would start the task before every node listens
        effort = m.joint_state_effort(msg)
        if effort is None:  # no effort in the state: take the command in force as the torque applied
            effort = self.rt.last_sent if self.rt.last_sent is not None else np.zeros(7)
        begin = time.perf_counter()
        step = self.rt.on_state(ns, x, effort)
        if step is not None:
            self._rt_ms = 1e3 * (time.perf_counter() - begin)
            self._publish_step(step)
        elif self.rt.no_reference:
            self.rt.no_reference = False
            if self.rt.started:  # before the start the robot stands: no command (it would start the task)
                self._publish_command(self.controller.hold(x[:7], x[7:]), x[:7], ns, x)
            self._diagnose(m.WARN, "no reference for this state" + (": safe hold" if self.rt.started else ": waiting"), force=True)

    def _may_start(self) -> bool:
        """Real time: the nodes of ``start_after`` subscribe to the command or total-torque topic (then ``start_delay`` s)."""
        if self._start_open:
            return True
        now = time.monotonic()
        if now - self._start_checked < 0.05:  # a graph query costs ~1 ms: not for every state
            return False
        self._start_checked = now
        wanted = {n.strip() for n in self.p.start_after.split(",") if n.strip()}
        pubs = [p for p in (self.pub_cmd, self.pub_total) if p is not None]  # the logger records /mpc/torque on a robot
        present = {info.node_name for p in pubs for info in self.get_subscriptions_info_by_topic(p.topic_name)}
        # the graph names the nodes; the DDS-level match count says their readers get our data
        if not wanted <= present or sum(p.get_subscription_count() for p in pubs) < len(wanted) or not self.refs.refs:
            return False
        now = time.monotonic()
        self._start_ready = self._start_ready or now
        if now - self._start_ready < self.p.start_delay:
            return False
        self._start_open = True
        self.get_logger().info(f"{', '.join(sorted(wanted)) or 'no node'} listening: the first command may start the task")
        return True

    def _on_start(self, msg: Header) -> None:
        assert self.rt is not None
        self.rt.on_start(m.stamp_ns(msg.stamp))
        self.get_logger().info(f"task started at {m.stamp_seconds(msg.stamp):.4f} s: control instants re-anchored there")

    def _on_reference(self, msg: JointTrajectory) -> None:
        x_ref = m.trajectory_to_array(msg)
        if x_ref.shape != (self.cfg.horizon + 1, 14) or not np.all(np.isfinite(x_ref)):
            self.get_logger().warning(f"reference with {len(msg.points)} points (need {self.cfg.horizon + 1}) or not finite; ignored", throttle_duration_sec=1.0)
            return
        self.refs.add(m.stamp_ns(msg.header.stamp), x_ref)
        if self.p.lockstep:
            self._answer_pending(wait=True)

    # ---------------------------------------------------------------- control
    def _answer_pending(self, wait: bool) -> None:
        if self.pending is None:
            return
        ns, x, received = self.pending
        if wait and self.refs.exact(ns) is None and time.monotonic() - received < self.p.reference_wait:
            return
        self.pending = None
        self._control(ns, x)

    def _lockstep_watchdog(self) -> None:
        self._answer_pending(wait=True)

    def _stale_watchdog(self) -> None:
        if self.state is None:
            self._diagnose(m.ERROR, "no joint states received", force=True)
            return
        ns, x, received = self.state
        age = time.monotonic() - received
        if age > self.p.stale_timeout and self.rt is not None and self.rt.last_sent is not None:
            # (before its first command the robot stands: a hold would start the task)
            self.stale_steps += 1
            tau = self.controller.hold(x[:7], np.zeros(7))  # gravity at the last known pose, no stale damping
            self._publish_command(tau, x[:7], ns, x)
            self._diagnose(m.ERROR, f"stale joint states ({age * 1e3:.0f} ms old): safe hold", force=True)

    def _publish_step(self, step: RealtimeStep) -> None:
        """Real time: the command at once, then the step's record."""
        out = step.out
        total = self._publish_command(out.tau, step.x[:7], step.instant_ns, step.x)
        self._sent_after_ms = (time.time_ns() - step.instant_ns) * 1e-6  # the state's stamp -> the command sent
        if total is not None:
            self.rt.sent(total)  # type: ignore[union-attr]
        self.steps += 1
        stamp = m.time_msg_ns(step.instant_ns)
        if np.all(np.isfinite(out.prediction)):
            self.pub_pred.publish(m.trajectory_msg(stamp, out.prediction, self.cfg.dt, step.delay_s))
        self.pub_ref.publish(m.trajectory_msg(stamp, step.x_ref, self.cfg.dt, step.delay_s))
        level = m.OK if out.source == SOLVED else m.WARN
        values = {"solve_ms": f"{out.solve_ms:.3f}", "step_ms": f"{out.wall_ms:.3f}", "status": out.status, "source": out.source,
                  "delay_ms": f"{step.delay_s * 1e3:.3f}", "started": step.started, "sent_after_ms": f"{self._sent_after_ms:.3f}",
                  "received_after_ms": f"{self._received_after_ms:.3f}", "rt_ms": f"{self._rt_ms:.3f}"}
        self._diagnose(level, out.source, force=out.source != SOLVED, extra=values)

    def _control(self, ns: int, x: np.ndarray) -> None:
        """Lock-step: one command for the state of stamp ``ns``."""
        x_ref = self.refs.exact(ns)
        x_ref = x_ref if x_ref is not None else self.refs.at(ns)
        if x_ref is None:
            self._publish_command(self.controller.hold(x[:7], x[7:]), x[:7], ns, x)
            self._diagnose(m.WARN, "no reference for this state: safe hold", force=True)
            return
        if self.episode_stamp is None or ns < self.episode_stamp:
            self.controller.reset(x, x_ref)  # a new episode (or a restarted simulator)
        self.episode_stamp = ns
        out = self.controller(x, x_ref)
        self._publish_command(out.tau, x[:7], ns, x)
        self.steps += 1
        if np.all(np.isfinite(out.prediction)):
            self.pub_pred.publish(m.trajectory_msg(m.time_msg(ns * 1e-9), out.prediction, self.cfg.dt))
        level = m.OK if out.source == SOLVED else m.WARN
        values = {"solve_ms": f"{out.solve_ms:.3f}", "step_ms": f"{out.wall_ms:.3f}", "status": out.status, "source": out.source}
        self._diagnose(level, out.source, force=out.source != SOLVED, extra=values)

    def _publish_command(self, tau: np.ndarray, q: np.ndarray, ns: int, x: np.ndarray) -> np.ndarray | None:
        """Clamps the total torque, publishes it (gravity excluded on a real robot; see the module docstring),
        then records the step on ``/mpc/state``.

        Args:
            tau: Full joint torque of the step, Nm, (7,).
            q: Measured joint positions of the state the step answers, rad, (7,).
            ns: Stamp of that state, ns.
            x: That state, (14,).

        Returns:
            The total torque sent, Nm, (7,); None if nothing was sent.
        """
        tau = np.asarray(tau, dtype=float)
        if tau.shape != (7,) or not np.all(np.isfinite(tau)):  # never send NaN: the controller guarantees it, check anyway
            self.get_logger().error(f"controller returned an invalid torque {tau}; sending none")
            return None
        total = np.clip(tau, -self.limits, self.limits)
        command = total
        if self.pub_total is not None:
            gravity = self.controller.hold.gravity(q)
            if not np.all(np.isfinite(gravity)):
                self.get_logger().error(f"nominal gravity at q = {q} is not finite; sending none")
                return None
            command = total - gravity
        self.pub_cmd.publish(m.float64_array(command, ("joints",)))
        if self.pub_total is not None:
            self.pub_total.publish(m.float64_array(total, ("joints",)))
        self.pub_state.publish(m.joint_state_msg(m.time_msg_ns(ns), x[:7], x[7:], total))
        return total

    def _heartbeat(self) -> None:
        """Once a second without control steps (between episodes, before the first state): the model and its version."""
        if self.steps == self._heartbeat_steps:
            self._diagnose(m.OK, "idle", force=True)
        self._heartbeat_steps = self.steps

    def _diagnose(self, level: int, message: str, force: bool = False, extra: dict[str, object] | None = None) -> None:
        if not force and self.steps % self.p.diagnostics_every:
            return
        st = self.controller.stats
        values = {
            **(extra or {}), "steps": self.steps, "failures": st.failures, "fallbacks": st.fallbacks,
            "shifted_plan": st.shifted_plan, "gravity_hold": st.gravity_hold, "stale_holds": self.stale_steps,
            "model": self.model_spec, "model_version": self.model_version,
        }
        if self.rt is not None:
            values["delay_compensation"] = self.p.delay_compensation
        self.pub_diag.publish(m.diagnostic_array(self.get_clock().now().to_msg(), "mpc_controller", level, message, values))

    # ----------------------------------------------------------------- reload
    def _load(self, spec: str, done: Future) -> None:
        """Worker thread: resolves and checks the model, hands it to the executor."""
        try:
            model = self._resolve(spec)
            try:
                self.solver.check_model(model)  # the same generated code: weights only
            except WhatmattersError as exc:
                raise WhatmattersError(f"model '{spec}' cannot be swapped into the running solver ({exc}); restart the node to use it") from exc
            running, tracker = self.controller.tracker, model.context_tracker()
            if running is not None and (tracker is None or (tracker.window, tracker.dt) != (running.window, running.dt)):
                raise WhatmattersError(f"model '{spec}' reads another context history than the running one (window, dt); restart the node to use it")
            done.set_result((model, model.parameter_values(), tracker))
        except WhatmattersError as exc:
            done.set_result(exc)

    async def _reload(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        spec = str(self.get_parameter("model").value)
        start = time.perf_counter()
        done = Future()
        threading.Thread(target=self._load, args=(spec, done), name="reload_model", daemon=True).start()
        result = await done  # the executor keeps serving control steps meanwhile
        if isinstance(result, Exception):
            response.success, response.message = False, str(result)
            self.get_logger().error(f"reload_model refused: {result}")
            return response
        model, values, tracker = result
        self.solver.set_parameters(values)  # between two control steps: this runs in the executor thread
        self.solver.model = model
        if self.controller.tracker is not None:
            self.controller.tracker.encoder = tracker.encoder  # the history window is kept
        self.model_version += 1
        self.model_spec = spec
        ms = 1e3 * (time.perf_counter() - start)
        response.success, response.message = True, f"model '{spec}' loaded as version {self.model_version} in {ms:.0f} ms"
        self.get_logger().info(response.message)
        self._diagnose(m.OK, "model reloaded", force=True)
        return response


def main(args: list[str] | None = None) -> None:
    """Console script ``mpc_controller``."""
    exit_with(run_node(MpcControllerNode, args))


if __name__ == "__main__":
    main()
