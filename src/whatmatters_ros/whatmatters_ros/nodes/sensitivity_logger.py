"""``sensitivity_logger``: records the graph into rosbag2 MCAP bags and computes S_hat online.

Recording (:class:`whatmatters.data.bags.EpisodeBagWriter`, ``rosbags``): the
core's topics (``/joint_states``, ``/effort_controller/commands``,
``/reference``, ``/payload``) plus ``/mpc/prediction``, ``/mpc/sensitivity``
and ``/diagnostics``, as received (CDR), so :func:`whatmatters.data.bags.read_episode`
reads the bags. Stamped messages are logged at their header stamp; a command
(no header) at the stamp of the joint state it answers (lock-step) or at
reception (real time). With ``command_excludes_gravity`` (real robot: the
MPC's command on the wire excludes gravity, which libfranka adds) the step's
torque is taken from ``/mpc/torque`` (the MPC's clamped total torque) instead
and recorded under ``/effort_controller/commands``: in every bag that topic
holds the total joint torque of the step, the torque the core trains on. A new bag starts with each episode (joint-state stamps
going backwards) and when the current one passes ``max_bag_mb``. Bags are
closed on shutdown (SIGINT/SIGTERM); after a SIGKILL the complete chunks of
the last bag are recovered by :func:`whatmatters_ros.recover.recover_bag`.

Sensitivities (:class:`whatmatters_ros.sensitivity_lanes.SensitivityLanes`):
for a control step, S_hat (N, 14) from the inputs the MPC used (the joint
state, the reference of the same stamp and, for a learned model, the context
from the same history), published on ``/mpc/sensitivity`` (Float64MultiArray,
layout ``horizon`` x ``state``) and recorded at the step's stamp. Each step
is computed whole as it comes (``batch`` > 1: operating points finished together).

* lock-step: every step is queued (none skipped); the simulator
  (``wait_for_sensitivity``) advances only when the sensitivities are at most
  ``sensitivity_lag`` steps behind, so every step gets one. A step whose
  S_hat fails is published as NaN (so the simulator's count advances) and not
  recorded.
* real time: the controller's steps are rebuilt from its messages
  (:class:`whatmatters.realtime.steps.StepAssembler`): the state it solved
  from (``/mpc/prediction`` point 0), the reference it tracked
  (``/mpc/reference``) and the context from the same history (restarted at
  the task's start, transitions under the mean applied torque of the robot's
  states). Every ``decimation``-th step is offered; up to ``max_backlog``
  steps wait per worker while it is busy, and one arriving when every
  worker has that many is skipped and counted. The queued steps are
  finished at shutdown. The achieved rate (samples per
  second of recorded time) is on ``/diagnostics`` (``rate_hz``). The
  computation runs in ``workers`` child processes that take the steps in turn
  (:class:`whatmatters_ros.sensitivity_process.ProcessComputer`) at low
  priority (``worker_nice``; torch with ``torch_threads`` intra-op threads):
  it never takes the CPU from the control loop, and the recording thread
  shares no GIL with it, so arrival times are taken as messages arrive.
  Commands are recorded at their arrival, and
  ``/diagnostics`` carry the run's figures
  (:class:`whatmatters.realtime.metrics.RealtimeMetrics`: ``j_track`` on the
  reference's clock, ``latency_ms_median/p99/max``, ``late_commands``).

The logger follows the MPC's model: when ``/diagnostics`` of ``mpc_controller``
report a new ``model_version`` (after ``~/reload_model``), the reported model
is loaded in a thread and used for the steps after it.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, Header
from trajectory_msgs.msg import JointTrajectory

from whatmatters.data.bags import TYPESTORE, TOPIC_TYPES, EpisodeBagWriter
from whatmatters.dynamics.registry import resolve_model
from whatmatters.mpc.config import MpcConfig
from whatmatters.robot.params import load_panda_params
from whatmatters.errors import WhatmattersError
from whatmatters.realtime.metrics import RealtimeMetrics
from whatmatters.realtime.steps import ReadyStep, StepAssembler
from whatmatters_ros import messages as m
from whatmatters_ros.model_follow import ModelFollower
from whatmatters_ros.params import NodeParams, declare_parameters, param
from whatmatters_ros.runtime import exit_with, run_node
from whatmatters_ros.sensitivity_process import ProcessComputer
from whatmatters_ros.sensitivity_lanes import SensitivityLanes
from whatmatters_ros.sensitivity_worker import SensitivityJob, WorkerSettings

log = logging.getLogger(__name__)

__all__ = ["EXTRA_TOPICS", "LoggerParams", "SensitivityLoggerNode", "main"]

EXTRA_TOPICS = {
    m.MPC_STATE: "sensor_msgs/msg/JointState",
    m.MPC_REFERENCE: "trajectory_msgs/msg/JointTrajectory",
    m.REFERENCE_START: "std_msgs/msg/Header",
    m.PREDICTION: "trajectory_msgs/msg/JointTrajectory",
    m.SENSITIVITY: "std_msgs/msg/Float64MultiArray",
    m.DIAGNOSTICS: "diagnostic_msgs/msg/DiagnosticArray",
}

ALL_TOPICS = {**TOPIC_TYPES, **EXTRA_TOPICS}


def cdr(msg: Any, msgtype: str) -> bytes:
    """CDR bytes of an rclpy message, as rosbags reads them (see :func:`trimmed`)."""
    return trimmed(serialize_message(msg), msgtype)


def trimmed(raw: bytes, msgtype: str) -> bytes:
    """CDR bytes cut where the message ends.

    rclpy's serializer (and so the wire) can append padding past the message
    (16 bytes after a JointTrajectory); rosbags rejects more than 3 trailing
    bytes, so the end is measured by rosbags' own decoder. JointState, the
    high-rate topic, has no such padding and is recorded as received.
    """
    if msgtype == "sensor_msgs/msg/JointState":
        return raw
    msgdef = TYPESTORE.get_msgdef(msgtype)
    decode = msgdef.deserialize_cdr_le if raw[1] else msgdef.deserialize_cdr_be
    _, end = decode(raw[4:], 0, msgdef.cls, TYPESTORE)
    return raw[: 4 + end]


def header_stamp_ns(raw: bytes) -> int:
    """The stamp of a serialized message that starts with a std_msgs/Header (or is one), ns."""
    sec, nanosec = struct.unpack_from("<iI" if raw[1] else ">iI", raw, 4)
    return sec * 1_000_000_000 + nanosec


@dataclass(frozen=True)
class LoggerParams(NodeParams):
    """Parameters of ``sensitivity_logger`` (``config/sensitivity_logger.yaml``)."""

    node_name: ClassVar[str] = "sensitivity_logger"

    bag_dir: str = param("runs/ros/bags", "folder of the bags (relative to the working directory)")
    bag_prefix: str = param("episode", "bag folder names: <prefix>_<index>")
    max_bag_mb: float = param(1024.0, "start a new bag past this size, MB (0: no limit)", lo=0.0)
    model: str = param("nominal", "model of the MPC whose sensitivities are computed (nominal, base, checkpoint path)")
    sensitivity: bool = param(True, "compute S_hat online")
    decimation: int = param(1, "real time: offer every this many control steps to the sensitivity workers", lo=1, hi=100000)
    workers: int = param(2, "sensitivity processes; the steps go to them in turn, each warm-started from its own previous step", lo=1, hi=64)
    max_backlog: int = param(25, "real time: steps that may wait per worker while it is busy (0: skip every step arriving while it is busy)", lo=0, hi=10000)
    batch: int = param(1, "1: each step computed whole (lowest latency); > 1: operating points finished together (only torch derivatives batch better)", lo=1, hi=1024)
    flush_after: float = param(0.2, "finish a partial batch after this long without a new step, s (wall)", lo=0.001, hi=60.0)
    max_bag_seconds: float = param(0.0, "start a new bag past this much recorded time, s (0: one bag per episode)", lo=0.0)
    lockstep: bool = param(False, "stamp commands with the joint state they answer (lock-step graphs)")
    report_period: float = param(1.0, "period of the /diagnostics report, s", lo=0.05, hi=600.0)
    command_excludes_gravity: bool = param(False, "real robot: record the MPC's total torque (/mpc/torque) as the step's command")
    worker_nice: int = param(19, "niceness of the sensitivity processes (0..19; 19: lowest priority)", lo=0, hi=19)
    torch_threads: int = param(1, "torch intra-op threads of the logger and of each sensitivity process", lo=1, hi=64)
    wait_for_publishers: bool = param(True, "lock-step: subscribe to /joint_states (the simulator starts once we do) only when the MPC's torque and /mpc/state and the /reference have a matched publisher")


class SensitivityLoggerNode(Node):
    """The logger node; see the module docstring."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("sensitivity_logger", **kwargs)
        self.p = declare_parameters(self, LoggerParams)
        self.mpc = MpcConfig.from_yaml()
        self.bag_lock = threading.Lock()
        self.bag: EpisodeBagWriter | None = None
        self.bags: list[Path] = []
        self.payload: Any = None
        self.last_state_ns: int | None = None
        self.refs = m.ReferenceBuffer(self.mpc.dt)
        self._new_episode()
        self.counts = {"messages": 0, "late": 0, "model_version": 1}
        self.first_ns: int | None = None
        self.model: Any = None
        self.tracker: Any = None
        self.worker: SensitivityLanes | None = None
        self.follower = ModelFollower("mpc_controller", lambda spec: (resolve_model(spec), self._computers(spec)), self.get_logger().error)
        torch.set_num_threads(self.p.torch_threads)
        if self.p.sensitivity:
            self.model = resolve_model(self.p.model)
            self.tracker = self.model.context_tracker()
            settings = WorkerSettings(self.p.batch, self.p.flush_after, self.p.lockstep, self.p.max_backlog, self.mpc.dt)
            self.worker = SensitivityLanes(self._computers(self.p.model), self._on_result, settings)
        self.start_msg: Header | None = None
        self.rt_steps: StepAssembler | None = None
        self.metrics: RealtimeMetrics | None = None
        self.rt_count = 0
        if not self.p.lockstep:
            self.rt_steps = StepAssembler(self.tracker)
            self.metrics = RealtimeMetrics(self.mpc.dt, np.asarray(self.mpc.q_weights), np.asarray(self.mpc.qd_weights))
        self.pub_sens = self.create_publisher(Float64MultiArray, m.SENSITIVITY, m.RELIABLE)
        self.pub_diag = self.create_publisher(m.DiagnosticArray, m.DIAGNOSTICS, 100)
        # Real time: the MPC's start gate waits for our subscription to its torque, so that one is made
        # only once the robot's states arrive here (else the task could start before we record it).
        self._torque_topic = m.TORQUE if self.p.command_excludes_gravity else m.COMMANDS  # the total torque of each step
        self._torque_sub: Any = None
        self._subscribe()
        self.create_timer(self.p.report_period, self._report)
        self.get_logger().info(f"recording into {Path(self.p.bag_dir).resolve()}; sensitivities: {self.p.model if self.p.sensitivity else 'off'}")

    def _subscribe(self) -> None:
        """Raw subscriptions: the bytes are recorded as received (no rclpy message -> CDR round trip:
        ~0.1 ms a message, half a core at 500 Hz) and parsed once for the handler.

        Lock-step: a command is stamped with the state it answers by counting (the k-th command
        answers the k-th state), so a command lost at the episode's start would shift every later
        one. The MPC may run long before this node (a served MPC); its publishers are matched
        only some time after we subscribe. So /joint_states, which the simulator's start waits
        for, is subscribed to only once the MPC's torque, ``/mpc/state`` and ``/reference``
        have a matched publisher (``wait_for_publishers``).
        """
        subscriptions = [
            (m.REFERENCE, JointTrajectory, self._on_reference, m.RELIABLE),
            (m.PAYLOAD, m.Inertia, self._on_payload, m.LATCHED),
            (m.PREDICTION, JointTrajectory, self._on_prediction, m.RELIABLE),
            (m.MPC_STATE, JointState, self._on_mpc_state, m.RELIABLE),
            (m.MPC_REFERENCE, JointTrajectory, self._on_mpc_reference, m.RELIABLE),
            (m.REFERENCE_START, Header, self._on_start, m.LATCHED),
            (m.DIAGNOSTICS, m.DiagnosticArray, self._on_diagnostics, 100),
        ]
        self._subs: dict[str, Any] = {}
        if not self.p.lockstep:  # real time: /joint_states first (the torque follows its first message)
            self._subscribe_states()
        for topic, msg_type, handler, qos in subscriptions:
            self._subs[topic] = self.create_subscription(msg_type, topic, self._raw_handler(msg_type, handler), qos, raw=True)
        if not self.p.lockstep:
            return
        self._subscribe_torque()
        if not self.p.wait_for_publishers:
            self._subscribe_states()
            return
        self._gate_since = time.monotonic()
        self._gate_warned = 0.0
        # on the wall clock: with use_sim_time the ROS clock stands still until the simulator starts
        self._gate = self.create_timer(0.01, self._open_gate, clock=Clock(clock_type=ClockType.STEADY_TIME))

    def _subscribe_torque(self) -> None:
        """Subscribes to the torque of each step (once)."""
        if self._torque_sub is None:
            handler = self._raw_handler(Float64MultiArray, self._on_command)
            self._torque_sub = self.create_subscription(Float64MultiArray, self._torque_topic, handler, m.RELIABLE, raw=True)

    def _subscribe_states(self) -> None:
        self._subs[m.JOINT_STATES] = self.create_subscription(
            JointState, m.JOINT_STATES, self._raw_handler(JointState, self._on_state), m.RELIABLE, raw=True)

    def _open_gate(self) -> None:
        """Lock-step timer: subscribes to /joint_states once the upstream publishers are matched."""
        upstream = {self._torque_topic: self._torque_sub, m.MPC_STATE: self._subs[m.MPC_STATE], m.REFERENCE: self._subs[m.REFERENCE]}
        missing = [topic for topic, sub in upstream.items() if sub.get_publisher_count() == 0]
        waited = time.monotonic() - self._gate_since
        if missing:
            if waited - self._gate_warned >= 10.0:
                self._gate_warned = waited
                self.get_logger().warning(f"waiting {waited:.0f} s for a publisher of {', '.join(missing)} before subscribing to /joint_states")
            return
        self.destroy_timer(self._gate)
        self._subscribe_states()
        self.get_logger().info(f"{', '.join(upstream)} matched after {waited:.2f} s: subscribed to /joint_states")

    def _computers(self, spec: str) -> list[ProcessComputer]:
        """The model's sensitivity computers, one child process each at ``worker_nice`` (no GIL shared with
        recording); with several, each computes its steps serially (no re-solve thread)."""
        computers: list[ProcessComputer] = []
        try:
            for _ in range(self.p.workers):
                computers.append(ProcessComputer(spec, self.p.worker_nice, self.p.torch_threads, parallel=None if self.p.workers == 1 else False))
        except BaseException:
            for computer in computers:
                computer.close()
            raise
        return computers

    # -------------------------------------------------------------- recording
    def _open_bag(self) -> None:
        folder = Path(self.p.bag_dir)
        index = len(self.bags)
        while (path := folder / f"{self.p.bag_prefix}_{index:04d}").exists():
            index += 1
        self.bag = EpisodeBagWriter(path, EXTRA_TOPICS)
        self.bags.append(path)
        self.bag_start_ns: int | None = None
        self.get_logger().info(f"recording {path}")
        if self.payload is not None:
            self.bag.write_raw(m.PAYLOAD, 0.0, cdr(self.payload, ALL_TOPICS[m.PAYLOAD]))
        if self.start_msg is not None:  # a bag rolled over mid-episode keeps the reference's origin
            self.bag.write_raw(m.REFERENCE_START, m.stamp_seconds(self.start_msg.stamp), cdr(self.start_msg, ALL_TOPICS[m.REFERENCE_START]))

    def _close_bag(self) -> None:
        if self.bag is not None:
            if self.p.lockstep and self.n_commands < self.n_states - 1:
                log.warning("%s: %d of %d joint states have no command from the MPC (its messages were lost or matched late)",
                            self.bags[-1], self.n_states - self.n_commands, self.n_states)
            self.bag.close()
            log.info("closed %s", self.bags[-1])  # also at shutdown, when the ROS logger is gone
            self.bag = None

    @staticmethod
    def _raw_handler(msg_type: Any, handler: Any) -> Any:
        def callback(raw: bytes) -> None:
            handler(deserialize_message(raw, msg_type), raw)

        return callback

    def _record(self, topic: str, raw: bytes, t: float | None = None) -> None:
        """Writes serialized bytes as received (or ``cdr`` of our own messages); stamped types at their
        header stamp, the others at ``t`` (default: now)."""
        msgtype = ALL_TOPICS[topic]
        if t is None:
            stamped = msgtype not in ("std_msgs/msg/Float64MultiArray", "geometry_msgs/msg/Inertia")
            t = header_stamp_ns(raw) * 1e-9 if stamped else self.get_clock().now().nanoseconds * 1e-9
        data = trimmed(raw, msgtype)
        with self.bag_lock:
            if self.bag is None:
                self._open_bag()
            self.bag.write_raw(topic, t, data)  # type: ignore[union-attr]
            self.counts["messages"] += 1

    def _roll_if_large(self) -> None:
        if self.p.max_bag_mb <= 0 or self.bag is None:
            return
        size = sum(f.stat().st_size for f in self.bags[-1].glob("*.mcap"))
        if size > self.p.max_bag_mb * 1e6:
            with self.bag_lock:
                self._close_bag()
                self._open_bag()

    def _record_state(self, ns: int, raw: bytes) -> bool:
        """Records a joint state, in a new bag for a new episode or past ``max_bag_seconds``;
        returns whether a new episode began (stamps going backwards)."""
        new_episode = self.last_state_ns is not None and ns < self.last_state_ns
        full = self.bag is not None and self.p.max_bag_seconds > 0 and self.bag_start_ns is not None \
            and ns - self.bag_start_ns >= self.p.max_bag_seconds * 1e9  # the episode and the context history go on
        if new_episode or full:
            with self.bag_lock:
                self._close_bag()
        self.first_ns = ns if self.first_ns is None or ns < self.first_ns else self.first_ns
        self.last_state_ns = ns
        self._record(m.JOINT_STATES, raw)
        if self.bag_start_ns is None:
            self.bag_start_ns = ns
        return new_episode

    # ----------------------------------------------------------------- inputs
    def _new_episode(self) -> None:
        """Per-episode step bookkeeping: step index -> stamp, state, command."""
        self.n_states = 0
        self.stamps: dict[int, int] = {}
        self.xs: dict[int, np.ndarray | None] = {}
        self.index_of: dict[int, int] = {}  # stamp ns -> step index
        self.taus: dict[int, np.ndarray] = {}
        self.n_commands = 0
        self.pending_commands: list[tuple[Float64MultiArray, bytes]] = []
        self.tracked = 0  # the context tracker has seen the transitions up to this step
        self.waiting: tuple[int, np.ndarray] | None = None  # a sample waiting for the tracker

    def _on_state(self, msg: JointState, raw: bytes) -> None:
        ns = m.stamp_ns(msg.header.stamp)
        if not self.p.lockstep:
            self._on_state_realtime(ns, msg, raw)
            return
        if self._record_state(ns, raw):
            self._new_episode()
        k = self.n_states
        self.n_states += 1
        x = m.joint_state_to_x(msg)
        self.stamps[k], self.xs[k], self.index_of[ns] = ns, x, k
        for old in [i for i in self.stamps if i < k - 100]:
            self.index_of.pop(self.stamps.pop(old), None)
            self.xs.pop(old, None)
            self.taus.pop(old, None)
        if k == 0 and self.tracker is not None and x is not None:
            self.tracker.reset(x)
        while self.pending_commands and self.n_commands < self.n_states:
            self._assign_command(*self.pending_commands.pop(0))
        self._advance()
        ref = self.refs.exact(ns)
        if ref is not None and x is not None:
            self._offer(k, ref)

    def _on_reference(self, msg: JointTrajectory, raw: bytes) -> None:
        self._record(m.REFERENCE, raw)
        x_ref = m.trajectory_to_array(msg)
        if x_ref.shape != (self.mpc.horizon + 1, 14):
            return
        ns = m.stamp_ns(msg.header.stamp)
        self.refs.add(ns, x_ref)
        if self.metrics is not None:
            self.metrics.add_reference(ns, x_ref)
        k = self.index_of.get(ns)
        if self.p.lockstep and k is not None and self.xs.get(k) is not None:
            self._offer(k, x_ref)

    def _on_command(self, msg: Float64MultiArray, raw: bytes) -> None:
        if not self.p.lockstep:  # real time: stamped at its arrival (a Franka applies it from then on)
            received = self.get_clock().now().nanoseconds
            self._record(m.COMMANDS, raw, received * 1e-9)
            if self.metrics is not None:
                self.metrics.add_command(received, np.asarray(msg.data, dtype=float))
        elif self.n_commands < self.n_states:
            self._assign_command(msg, raw)
        else:  # its state is still in the queue: the k-th command answers the k-th state
            self.pending_commands.append((msg, raw))

    def _assign_command(self, msg: Float64MultiArray, raw: bytes) -> None:
        k = self.n_commands
        self.n_commands += 1
        if k in self.stamps:
            self._record(m.COMMANDS, raw, self.stamps[k] * 1e-9)
        if len(msg.data) == 7:
            self.taus[k] = np.asarray(msg.data, dtype=float)
        self._advance()

    def _advance(self) -> None:
        """Lock-step: feeds the context tracker every complete transition, then a sample that waited for it."""
        if self.tracker is not None:
            while self.tracked + 1 < self.n_states:
                tau = self.taus.get(self.tracked)
                if tau is None:
                    break  # the command answering this state is still to come
                x_prev, x = self.xs.get(self.tracked), self.xs.get(self.tracked + 1)
                if tau is not None and x_prev is not None and x is not None:
                    self.tracker.observe(x, tau, x_prev)
                self.tracked += 1
        if self.waiting is not None and (self.tracker is None or self.tracked >= self.waiting[0]):
            k, ref = self.waiting
            self.waiting = None
            self._submit(k, ref)

    # -------------------------------------------------------------- real time
    def _on_state_realtime(self, ns: int, msg: JointState, raw: bytes) -> None:
        self._subscribe_torque()  # the robot's states reach us: the MPC may start (see __init__)
        if self._record_state(ns, raw):
            self.start_msg = None
            self.rt_steps = StepAssembler(self.tracker)
            self.metrics = RealtimeMetrics(self.mpc.dt, np.asarray(self.mpc.q_weights), np.asarray(self.mpc.qd_weights))
        x, effort = m.joint_state_to_x(msg), m.joint_state_effort(msg)
        if x is None:
            return
        self.metrics.add_state(ns, x)  # type: ignore[union-attr]
        self.rt_steps.on_state(ns, x, effort if effort is not None else np.zeros(7))  # type: ignore[union-attr]
        self._release_steps()

    def _on_start(self, msg: Header, raw: bytes) -> None:
        self.start_msg = msg
        self._record(m.REFERENCE_START, raw)
        if self.rt_steps is not None and self.metrics is not None:
            self.rt_steps.on_start(m.stamp_ns(msg.stamp))
            self.metrics.set_start(m.stamp_ns(msg.stamp))

    def _on_mpc_state(self, msg: JointState, raw: bytes) -> None:
        self._record(m.MPC_STATE, raw)
        x = m.joint_state_to_x(msg)
        if self.rt_steps is None or self.metrics is None or x is None:
            return
        ns = m.stamp_ns(msg.header.stamp)
        tau = np.asarray(msg.effort, dtype=float)
        self.metrics.add_step(ns, tau)
        self.rt_steps.on_step(ns, x, tau)
        self._release_steps()

    def _on_prediction(self, msg: JointTrajectory, raw: bytes) -> None:
        self._record(m.PREDICTION, raw)
        if self.rt_steps is not None and msg.points:
            self.rt_steps.on_solve(m.stamp_ns(msg.header.stamp), x0=m.trajectory_to_array(msg)[0])
            self._release_steps()

    def _on_mpc_reference(self, msg: JointTrajectory, raw: bytes) -> None:
        self._record(m.MPC_REFERENCE, raw)
        x_ref = m.trajectory_to_array(msg)
        if self.rt_steps is not None and x_ref.shape == (self.mpc.horizon + 1, 14):
            self.rt_steps.on_solve(m.stamp_ns(msg.header.stamp), x_ref=x_ref)
            self._release_steps()

    def _release_steps(self) -> None:
        """Real time: the steps whose inputs are complete go to the worker (every ``decimation``-th)."""
        for step in self.rt_steps.ready():  # type: ignore[union-attr]
            self.rt_count += 1
            if self.worker is None or (self.rt_count - 1) % self.p.decimation:
                continue
            self._submit_realtime(step)

    def _submit_realtime(self, step: ReadyStep) -> None:
        self._swap_model()
        params = self.model.parameter_values()
        if step.context is not None:
            start, z = step.context
            params[start : start + len(z)] = z
        self.worker.submit(SensitivityJob(len(self.bags), step.instant_ns, step.x0, step.x_ref, params))  # type: ignore[union-attr]

    def _on_payload(self, msg: Any, raw: bytes) -> None:
        self.payload = msg
        self._record(m.PAYLOAD, raw, (self.last_state_ns or 0) * 1e-9)

    def _on_diagnostics(self, msg: Any, raw: bytes) -> None:
        if not any(s.name == "sensitivity_logger" for s in msg.status):  # our own are recorded when sent
            self._record(m.DIAGNOSTICS, raw)
        if self.worker is not None:
            self.follower.on_statuses(msg.status)

    def _swap_model(self) -> None:
        """Executor thread, between two steps: the MPC's newer model (loaded by the follower) takes over."""
        loaded = self.follower.take() if self.worker is not None else None
        if loaded is None:
            return
        version, (model, computers) = loaded
        self.model = model
        if self.tracker is not None:
            self.tracker.encoder = model.context_tracker().encoder  # the history window is kept
        self.worker.swap(computers)  # type: ignore[union-attr]
        self.counts["model_version"] = version
        self.get_logger().info(f"sensitivities now from the MPC's model version {version}")

    # ---------------------------------------------------------- sensitivities
    def _offer(self, k: int, x_ref: np.ndarray) -> None:
        if self.worker is None or (not self.p.lockstep and k % self.p.decimation):
            return
        if self.tracker is not None and self.tracked < k:
            if self.waiting is not None:
                self.worker.counts["skipped"] += 1
            self.waiting = (k, x_ref)  # the context needs the command of the previous step first
            return
        self._submit(k, x_ref)

    def _submit(self, k: int, x_ref: np.ndarray) -> None:
        x = self.xs.get(k)
        if x is None or self.worker is None:
            return
        self._swap_model()
        params = self.model.parameter_values()
        if self.tracker is not None:
            start, z = self.tracker.context()
            params[start : start + len(z)] = z
        self.worker.submit(SensitivityJob(len(self.bags), self.stamps[k], x, x_ref, params))

    def _on_result(self, tag: int, ns: int, s_hat: np.ndarray | None) -> None:
        """Worker thread: publishes a step's S_hat (NaN if it failed) and records it in its own bag."""
        values = np.full((self.mpc.horizon, 14), np.nan) if s_hat is None else s_hat
        msg = m.float64_array(values, ("horizon", "state"))
        self.pub_sens.publish(msg)
        if s_hat is None:
            return
        with self.bag_lock:
            if tag != len(self.bags) or self.bag is None:
                self.counts["late"] += 1  # its bag is closed already
                return
            self.bag.write_raw(m.SENSITIVITY, ns * 1e-9, cdr(msg, ALL_TOPICS[m.SENSITIVITY]))
            self.counts["messages"] += 1

    # -------------------------------------------------------------- reporting
    def rate_hz(self) -> float:
        """Sensitivity samples per second of recorded (joint-state) time."""
        if self.first_ns is None or self.last_state_ns is None or self.last_state_ns <= self.first_ns:
            return 0.0
        samples = self.worker.counts["samples"] if self.worker is not None else 0
        return samples / ((self.last_state_ns - self.first_ns) * 1e-9)

    def _report(self) -> None:
        self._roll_if_large()
        self._swap_model()  # also without steps (a model loaded between episodes)
        work = {**self.worker.counts, "backlog": self.worker.backlog} if self.worker is not None else {}
        values = {**self.counts, **work, "rate_hz": f"{self.rate_hz():.2f}", "bag": str(self.bags[-1]) if self.bags else ""}
        if self.metrics is not None:
            fig = self.metrics.summary()
            values.update({k: "" if v is None else (f"{v:.4f}" if isinstance(v, float) else v) for k, v in fig.items()})
        msg = m.diagnostic_array(self.get_clock().now().to_msg(), "sensitivity_logger", m.OK, "recording", values)
        self.pub_diag.publish(msg)
        if self.bag is not None:
            self._record(m.DIAGNOSTICS, serialize_message(msg))

    def close(self) -> None:
        """Finishes the queued sensitivities (lock-step; real time: at most ``max_backlog``), then closes the bag (once, at shutdown)."""
        if self.worker is not None:
            self.worker.close(drain=True)
        with self.bag_lock:
            self._close_bag()
        counts = {**self.counts, **(self.worker.counts if self.worker is not None else {})}
        log.info("sensitivities: %s, %.2f Hz of recorded time", counts, self.rate_hz())


def main(args: list[str] | None = None) -> None:
    """Console script ``sensitivity_logger``."""
    exit_with(run_node(SensitivityLoggerNode, args))


if __name__ == "__main__":
    main()
