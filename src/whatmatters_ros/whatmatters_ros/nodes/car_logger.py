"""``car_logger``: records the race car's graph into rosbag2 MCAP bags and computes S_hat for every control step.

Recording (:class:`whatmatters.data.bags.EpisodeBagWriter`): the topics of
:data:`whatmatters.car.bags.CAR_TOPIC_TYPES` as received (CDR): ``/odom``,
``/actuator_states``, ``/drive``, ``/mpc/state``, ``/mpc/reference``,
``/mpc/prediction``, ``/mpc/sensitivity`` and ``/diagnostics``. Stamped
messages are logged at their header stamp; ``/drive`` at its arrival on the
node's clock (the simulation time in lock-step). A new bag starts with each
episode (``/odom`` stamps going backwards); bags are closed on shutdown.
:func:`whatmatters.car.bags.read_car_bag` reads them for the trainer.

Sensitivities: for each control step (``/mpc/state`` with the
``/mpc/reference`` of its stamp), S_hat (N, 8) with the MPC's model and the
context it had (the history window replayed from the steps' states and
commands, as the controller's tracker saw them), published on
``/mpc/sensitivity`` (``horizon`` x ``state``; NaN if the step failed) and
recorded at the step's stamp. The steps go in turn to ``workers`` child
processes (:class:`whatmatters_ros.sensitivity_process.ProcessComputer`,
``system: car``), each warm-started from its previous step. Lock-step: every
step is queued (the simulator waits with ``wait_for_sensitivity``); real
time: up to ``max_backlog`` steps wait per worker, later ones are skipped and
counted (``/diagnostics``: ``samples``, ``skipped``, ``rate_hz``).

In lock-step the logger subscribes to ``/odom`` (which the simulator's start
waits for) only once the MPC's ``/mpc/state``, ``/mpc/reference`` and
``/drive`` publishers are matched, so no step of the episode is lost. It
follows the MPC's model: a new ``model_version`` on ``car_mpc``'s
``/diagnostics`` loads that model for the steps after it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from nav_msgs.msg import Odometry
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from whatmatters.car.experiment import CarExperimentConfig, CarSystem
from whatmatters.data.bags import EpisodeBagWriter
from whatmatters_ros import car_messages as cm
from whatmatters_ros import messages as m
from whatmatters_ros.nodes.sensitivity_logger import header_stamp_ns, trimmed
from whatmatters_ros.model_follow import ModelFollower
from whatmatters_ros.params import NodeParams, declare_parameters, param
from whatmatters_ros.runtime import exit_with, run_node
from whatmatters_ros.sensitivity_lanes import SensitivityLanes
from whatmatters_ros.sensitivity_process import ProcessComputer
from whatmatters_ros.sensitivity_worker import SensitivityJob, WorkerSettings

__all__ = ["CarLoggerNode", "CarLoggerParams", "main"]

UNSTAMPED = ("std_msgs/msg/Float64MultiArray",)


@dataclass(frozen=True)
class CarLoggerParams(NodeParams):
    """Parameters of ``car_logger`` (``config/car/car_logger.yaml``)."""

    node_name: ClassVar[str] = "car_logger"
    config_subdir: ClassVar[str] = "car"

    bag_dir: str = param("runs/car_ros/bags", "folder of the bags (relative to the working directory)")
    bag_prefix: str = param("lap", "bag folder names: <prefix>_<index>")
    model: str = param("nominal", "model of the MPC whose sensitivities are computed (nominal, base, checkpoint path)")
    sensitivity: bool = param(True, "compute S_hat online")
    workers: int = param(2, "sensitivity processes; the steps go to them in turn", lo=1, hi=64)
    max_backlog: int = param(25, "real time: steps that may wait per worker while it is busy", lo=0, hi=10000)
    lockstep: bool = param(False, "queue every step (lock-step graphs) and subscribe to /odom once the MPC's publishers match")
    worker_nice: int = param(19, "niceness of the sensitivity processes (0..19)", lo=0, hi=19)
    report_period: float = param(1.0, "period of the /diagnostics report, s", lo=0.05, hi=600.0)


class CarLoggerNode(Node):
    """The car's logger node; see the module docstring."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("car_logger", **kwargs)
        self.p = declare_parameters(self, CarLoggerParams)
        self.system = CarSystem(CarExperimentConfig.from_yaml())
        self.labels = list(self.system.nominal.state_labels) + list(self.system.nominal.input_labels)
        self.nx = self.system.nominal.nx
        self.bag_lock = threading.Lock()
        self.bag: EpisodeBagWriter | None = None
        self.bags: list[Path] = []
        self.counts = {"messages": 0, "steps": 0, "late": 0, "model_version": 1}
        self.last_odom_ns: int | None = None
        self.first_ns: int | None = None
        self.steps: dict[int, np.ndarray] = {}  # stamp -> [x0, u] of steps still waiting for their reference
        self.refs: dict[int, np.ndarray] = {}
        self.prev: tuple[int, np.ndarray] | None = None  # the last step submitted: (stamp, [x0, u])
        self.model = self.system.model(self.p.model) if self.p.sensitivity else None
        self.tracker = self.model.context_tracker() if self.model is not None else None
        self.worker: SensitivityLanes | None = None
        self.follower = ModelFollower("car_mpc", lambda spec: (self.system.model(spec), self._computers(spec)), self.get_logger().error)
        if self.p.sensitivity:
            settings = WorkerSettings(1, 0.2, self.p.lockstep, self.p.max_backlog, self.system.mpc.dt)
            self.worker = SensitivityLanes(self._computers(self.p.model), self._on_result, settings)
        self.pub_sens = self.create_publisher(Float64MultiArray, m.SENSITIVITY, m.RELIABLE)
        self.pub_diag = self.create_publisher(m.DiagnosticArray, m.DIAGNOSTICS, 100)
        handlers = [
            (cm.ACTUATORS, JointState, None), (cm.DRIVE, Float64MultiArray, None), (cm.MPC_STATE, JointState, self._on_step),
            (cm.MPC_REFERENCE, JointTrajectory, self._on_reference), (cm.MPC_PREDICTION, JointTrajectory, None),
            (m.DIAGNOSTICS, m.DiagnosticArray, self._on_diagnostics),
        ]
        self.subs = {topic: self.create_subscription(t, topic, self._raw(topic, t, h), m.RELIABLE if topic != m.DIAGNOSTICS else 100, raw=True)
                     for topic, t, h in handlers}
        if self.p.lockstep:
            self._gate_since = time.monotonic()
            self._gate = self.create_timer(0.01, self._open_gate, clock=Clock(clock_type=ClockType.STEADY_TIME))
        else:
            self._subscribe_odom()
        self.create_timer(self.p.report_period, self._report)
        self.get_logger().info(f"recording into {Path(self.p.bag_dir).resolve()}; sensitivities: {self.p.model if self.p.sensitivity else 'off'}")

    def _computers(self, spec: str) -> list[ProcessComputer]:
        return [ProcessComputer(spec, self.p.worker_nice, 1, parallel=self.p.workers == 1, system="car") for _ in range(self.p.workers)]

    # --------------------------------------------------------------- recording
    def _subscribe_odom(self) -> None:
        self.subs[cm.ODOM] = self.create_subscription(Odometry, cm.ODOM, self._raw(cm.ODOM, Odometry, None), m.RELIABLE, raw=True)

    def _open_gate(self) -> None:
        """Lock-step: subscribes to ``/odom`` once the MPC's publishers are matched."""
        if any(self.subs[t].get_publisher_count() == 0 for t in (cm.MPC_STATE, cm.MPC_REFERENCE, cm.DRIVE)):
            return
        self.destroy_timer(self._gate)
        self._subscribe_odom()
        self.get_logger().info(f"the MPC's publishers matched after {time.monotonic() - self._gate_since:.2f} s: subscribed to /odom")

    def _raw(self, topic: str, msg_type: Any, handler: Any) -> Any:
        def callback(raw: bytes) -> None:
            if topic == cm.ODOM:
                self._new_stamp(header_stamp_ns(raw))  # a new episode opens its bag before its first message
            self._record(topic, raw)
            if handler is not None:
                handler(deserialize_message(raw, msg_type))

        return callback

    def _record(self, topic: str, raw: bytes, t_ns: int | None = None) -> None:
        msgtype = cm.CAR_TOPIC_TYPES[topic]
        if t_ns is None:
            t_ns = self.get_clock().now().nanoseconds if msgtype in UNSTAMPED else header_stamp_ns(raw)
        data = trimmed(raw, msgtype)
        with self.bag_lock:
            if self.bag is None:
                self._open_bag()
            self.bag.write_raw(topic, t_ns * 1e-9, data)  # type: ignore[union-attr]
            self.counts["messages"] += 1

    def _open_bag(self) -> None:
        index = len(self.bags)
        while (path := Path(self.p.bag_dir) / f"{self.p.bag_prefix}_{index:04d}").exists():
            index += 1
        self.bag = EpisodeBagWriter(path, topics=cm.CAR_TOPIC_TYPES)
        self.bags.append(path)
        self.get_logger().info(f"recording {path}")

    def _close_bag(self) -> None:
        if self.bag is not None:
            self.bag.close()
            self.bag = None

    # ------------------------------------------------------------------ inputs
    def _new_stamp(self, ns: int) -> None:
        """An ``/odom`` stamp: stamps going backwards start a new episode, in a new bag."""
        if self.last_odom_ns is not None and ns < self.last_odom_ns:
            with self.bag_lock:
                self._close_bag()
        self.first_ns = ns if self.first_ns is None or ns < self.first_ns else self.first_ns
        self.last_odom_ns = ns

    def _on_step(self, msg: JointState) -> None:
        values = cm.labelled_state_values(msg, self.labels)
        if values is None:
            self.get_logger().warning("/mpc/state without the model's labels or not finite; step ignored", throttle_duration_sec=1.0)
            return
        ns = m.stamp_ns(msg.header.stamp)
        self.counts["steps"] += 1
        self.steps[ns] = values
        self._release(ns)

    def _on_reference(self, msg: JointTrajectory) -> None:
        x_ref = cm.trajectory_to_array(msg)
        if x_ref.shape != (self.system.mpc.horizon + 1, self.nx):
            return
        ns = m.stamp_ns(msg.header.stamp)
        self.refs[ns] = x_ref
        self._release(ns)

    def _release(self, ns: int) -> None:
        """A step with its reference: the context replayed, then S_hat queued (steps stay in stamp order)."""
        if ns not in self.steps or ns not in self.refs:
            return
        values, x_ref = self.steps.pop(ns), self.refs.pop(ns)
        for buf in (self.steps, self.refs):
            for old in [k for k in buf if k < ns]:
                buf.pop(old)
        x0, u = values[: self.nx], values[self.nx :]
        if self.tracker is not None:
            if self.prev is None or ns <= self.prev[0]:
                self.tracker.reset(x0)
            else:
                self.tracker.observe(x0, self.prev[1][self.nx :], self.prev[1][: self.nx])
        self.prev = (ns, values)
        if self.worker is None or self.model is None:
            return
        self._swap_model()
        params = self.model.parameter_values()
        if self.tracker is not None:
            start, z = self.tracker.context()
            params[start : start + len(z)] = z
        self.worker.submit(SensitivityJob(len(self.bags), ns, x0, x_ref, params))

    def _on_result(self, tag: int, ns: int, s_hat: np.ndarray | None) -> None:
        """Worker thread: a step's S_hat published (NaN if it failed) and recorded in its own bag."""
        values = np.full((self.system.mpc.horizon, self.nx), np.nan) if s_hat is None else s_hat
        msg = m.float64_array(values, ("horizon", "state"))
        self.pub_sens.publish(msg)
        if s_hat is None:
            return
        with self.bag_lock:
            if tag != len(self.bags) or self.bag is None:
                self.counts["late"] += 1
                return
            self.bag.write_raw(m.SENSITIVITY, ns * 1e-9, trimmed(serialize_message(msg), cm.CAR_TOPIC_TYPES[m.SENSITIVITY]))
            self.counts["messages"] += 1

    # ----------------------------------------------------------- model follow
    def _on_diagnostics(self, msg: Any) -> None:
        if self.worker is not None:
            self.follower.on_statuses(msg.status)

    def _swap_model(self) -> None:
        """Between two steps: the MPC's newer model (loaded by the follower) takes over, the context's window kept."""
        loaded = self.follower.take() if self.worker is not None else None
        if loaded is None:
            return
        version, (model, computers) = loaded
        self.model = model
        if self.tracker is not None:  # the MPC swaps only models of its formulation: a learned one stays learned
            self.tracker.encoder = model.context_tracker().encoder
        self.worker.swap(computers)  # type: ignore[union-attr]
        self.counts["model_version"] = version
        self.get_logger().info(f"sensitivities now from the MPC's model version {version}")

    # --------------------------------------------------------------- reporting
    def rate_hz(self) -> float:
        """Sensitivity samples per second of recorded (odometry) time."""
        if self.first_ns is None or self.last_odom_ns is None or self.last_odom_ns <= self.first_ns or self.worker is None:
            return 0.0
        return self.worker.counts["samples"] / ((self.last_odom_ns - self.first_ns) * 1e-9)

    def _report(self) -> None:
        self._swap_model()
        work = {**self.worker.counts, "backlog": self.worker.backlog} if self.worker is not None else {}
        values = {**self.counts, **work, "rate_hz": f"{self.rate_hz():.2f}", "bag": str(self.bags[-1]) if self.bags else ""}
        msg = m.diagnostic_array(self.get_clock().now().to_msg(), "car_logger", m.OK, "recording", values)
        self.pub_diag.publish(msg)

    def close(self) -> None:
        """Finishes the queued sensitivities, then closes the bag (at shutdown)."""
        if self.worker is not None:
            self.worker.close(drain=True)
        with self.bag_lock:
            self._close_bag()


def main(args: list[str] | None = None) -> None:
    """Console script ``car_logger``."""
    exit_with(run_node(CarLoggerNode, args))


if __name__ == "__main__":
    main()
