"""``reference_publisher``: the environment's seeded Fourier reference over the MPC horizon.

Publishes ``/reference`` (trajectory_msgs/JointTrajectory): the N + 1 states
``x_ref(t), x_ref(t + dt), ..., x_ref(t + N dt)`` that the MPC tracks, with
``header.stamp`` = the time of the first point and ``time_from_start = k dt``.
The trajectory is :func:`whatmatters.trajectory.fourier.sample_fourier_trajectory`
of the environment's reference seed (the same one the core's episodes use);
N and dt come from ``config/mpc.yaml``.

* lock-step: one message per ``/joint_states`` message, for the state's stamp
  (the simulation time; the trajectory starts at 0). With ``wait_for_nodes``
  the node subscribes to ``/joint_states`` only once those nodes' ``/reference``
  readers are matched (DDS-level): the simulator, which waits for our
  subscription, then cannot start before the first reference reaches them.
* real time: a ``rate_hz`` timer publishes the horizon from the task time of
  now. The task starts when the controller runs: at the first joint state
  stamped at or after the arrival of the first valid command on
  ``/effort_controller/commands`` (the tick at which the robot applies it).
  Until then the first point is held (task time 0); nothing is published
  before the command subscription is matched with a publisher (DDS-level), so
  the first command, which needs a reference, cannot pass unseen. The start is published
  once on ``/reference/start`` (std_msgs/Header, latched: its stamp is the
  reference's time origin), so the controller re-anchors its grid there and
  every bag records the clock J_track is measured on. With ``start_pose:
  measured`` (the real robot) the trajectory is shifted to start at the pose
  where the robot stands (the first joint state; at most
  ``max_start_offset`` rad per joint away from the trajectory's start).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, Header
from trajectory_msgs.msg import JointTrajectory

from whatmatters.mpc.config import MpcConfig
from whatmatters.robot.params import load_panda_params
from whatmatters.sim.environments import make_environment
from whatmatters.trajectory.fourier import FourierConfig, sample_fourier_trajectory
from whatmatters_ros import messages as m
from whatmatters_ros.params import NodeParams, declare_parameters, param
from whatmatters_ros.runtime import exit_with, realtime_priority, run_node

__all__ = ["ReferenceParams", "ReferencePublisherNode", "main"]


@dataclass(frozen=True)
class ReferenceParams(NodeParams):
    """Parameters of ``reference_publisher`` (``config/reference_publisher.yaml``)."""

    node_name: ClassVar[str] = "reference_publisher"

    env_seed: int = param(2000, "environment seed; its reference seed picks the trajectory", lo=0)
    lockstep: bool = param(False, "publish one reference per /joint_states message, at its stamp")
    rate_hz: float = param(50.0, "real time: publishing rate, Hz", lo=1.0, hi=1000.0)
    start_pose: str = param("reference", "real time: reference (the robot starts at the trajectory's start) or measured (shift the trajectory to the robot's pose)",
                            choices=("reference", "measured"))
    realtime_priority: int = param(65, "real time: SCHED_FIFO priority of this process (the first command's arrival is timed as it happens); 0: ordinary", lo=0, hi=99)
    max_start_offset: float = param(0.2, "start_pose measured: largest shift per joint, rad", lo=0.0, hi=1.0)
    wait_for_nodes: str = param("", "lock-step: subscribe to /joint_states (the simulator starts once we do) only when these nodes (comma-separated names) subscribe to /reference and their readers match")


class ReferencePublisherNode(Node):
    """The reference node; see the module docstring."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("reference_publisher", **kwargs)
        self.p = declare_parameters(self, ReferenceParams)
        mpc = MpcConfig.from_yaml()
        self.dt = mpc.dt
        self.offsets = mpc.dt * np.arange(mpc.horizon + 1)
        env = make_environment(self.p.env_seed)
        self.trajectory = sample_fourier_trajectory(env.reference_seed, FourierConfig.from_yaml(), load_panda_params())
        self.t0_ns: int | None = None  # real time: ROS time of the task's start (the reference's time origin)
        self.command_ns: int | None = None  # real time: arrival of the first valid command
        self.offset = np.zeros(14)  # start_pose measured: shift of the positions
        self.first_state = False
        self.done = False
        self.armed = False
        self.last_stamp_ns: int | None = None
        self.published = 0
        self.pub = self.create_publisher(JointTrajectory, m.REFERENCE, m.RELIABLE)
        self.pub_start = self.create_publisher(Header, m.REFERENCE_START, m.LATCHED)
        self.sub_state: Any = None
        self._wanted = {n.strip() for n in self.p.wait_for_nodes.split(",") if n.strip()} if self.p.lockstep else set()
        if self._wanted:  # a served MPC runs before us: its /reference reader matches our writer only after a while
            self._gate_since = time.monotonic()
            self._gate = self.create_timer(0.01, self._open_gate, clock=Clock(clock_type=ClockType.STEADY_TIME))  # /clock stands still
        else:
            self.sub_state = self.create_subscription(JointState, m.JOINT_STATES, self._on_state, m.RELIABLE)
        if not self.p.lockstep:
            self.sub_cmd = self.create_subscription(Float64MultiArray, m.COMMANDS, self._on_command, m.RELIABLE)
            self.create_timer(1.0 / self.p.rate_hz, self._tick)
            realtime_priority(self.p.realtime_priority, "reference_publisher", process=True)
        self.get_logger().info(f"reference seed {env.reference_seed} (env {self.p.env_seed}), {len(self.offsets)} points, dt {self.dt} s")

    def _open_gate(self) -> None:
        """Lock-step timer: subscribes to /joint_states once the ``wait_for_nodes`` readers of /reference match."""
        present = {info.node_name for info in self.get_subscriptions_info_by_topic(m.REFERENCE)}
        if not self._wanted <= present or self.pub.get_subscription_count() < len(self._wanted):
            return
        self.destroy_timer(self._gate)
        self.sub_state = self.create_subscription(JointState, m.JOINT_STATES, self._on_state, m.RELIABLE)
        self.get_logger().info(f"{', '.join(sorted(self._wanted))} subscribed to /reference after {time.monotonic() - self._gate_since:.2f} s: subscribed to /joint_states")

    def horizon(self, t: float) -> np.ndarray:
        """Reference states over the horizon from trajectory time ``t`` s, (N + 1, 14)."""
        return self.trajectory.state(t + self.offsets) + self.offset

    def task_time(self, t_ns: int) -> float:
        """Real time: the task time of ROS time ``t_ns``, s (0 until the start)."""
        return 0.0 if self.t0_ns is None else max(0.0, (t_ns - self.t0_ns) * 1e-9)

    def _publish(self, stamp_ns: int, t: float) -> None:
        self.pub.publish(m.trajectory_msg(m.time_msg_ns(stamp_ns), self.horizon(t), self.dt))
        self.published += 1

    def _on_state(self, msg: JointState) -> None:
        ns = m.stamp_ns(msg.header.stamp)
        if self.p.lockstep:
            if ns != self.last_stamp_ns:  # one reference per state
                self.last_stamp_ns = ns
                self._publish(ns, ns * 1e-9)
            return
        if not self.first_state:
            self.first_state = True
            if self.p.start_pose == "measured":
                self._shift_to(msg)
        if self.t0_ns is None and self.command_ns is not None and ns >= self.command_ns:
            self._start(ns)

    def _shift_to(self, msg: JointState) -> None:
        """start_pose measured: the trajectory shifted to begin at the robot's pose."""
        x = m.joint_state_to_x(msg)
        if x is None:
            return
        shift = x[:7] - self.trajectory.state(0.0)[:7]
        if np.any(np.abs(shift) > self.p.max_start_offset):
            self.get_logger().fatal(
                f"the robot stands {np.max(np.abs(shift)):.3f} rad from the reference's start (parameter 'max_start_offset' = "
                f"{self.p.max_start_offset}); move it to the start pose first. No reference is published."
            )
            self.done = True
            return
        self.offset[:7] = shift
        self.get_logger().info(f"start_pose measured: trajectory shifted by {np.round(shift, 4).tolist()} rad")

    def _on_command(self, msg: Float64MultiArray) -> None:
        """The first valid command: the task starts at the first state stamped at or after its arrival."""
        if self.command_ns is not None or len(msg.data) != 7 or not np.all(np.isfinite(msg.data)):
            return
        self.command_ns = self.get_clock().now().nanoseconds

    def _start(self, t0_ns: int) -> None:
        self.t0_ns = t0_ns
        self.pub_start.publish(Header(stamp=m.time_msg_ns(t0_ns), frame_id=""))
        self._publish(self.get_clock().now().nanoseconds, self.task_time(self.get_clock().now().nanoseconds))
        self.get_logger().info(f"the first command was applied at {t0_ns * 1e-9:.4f} s: the reference's time starts there")
        self.destroy_subscription(self.sub_state)  # the robot's states are not needed any more
        self.destroy_subscription(self.sub_cmd)

    def _tick(self) -> None:
        if not self.armed:
            # No reference before this node's command subscription is matched with a publisher at the DDS
            # level (the graph shows an endpoint up to ~2 s before its data flow, measured here). The
            # controller sends no command without a reference, so its first command, the task's start,
            # cannot pass this node unseen.
            if self.sub_cmd.get_publisher_count() == 0:
                return
            self.armed = True
            self.get_logger().info("the command topic has a matched publisher: publishing the reference")
        now_ns = self.get_clock().now().nanoseconds
        self._publish(now_ns, self.task_time(now_ns))


def main(args: list[str] | None = None) -> None:
    """Console script ``reference_publisher``."""
    exit_with(run_node(ReferencePublisherNode, args))


if __name__ == "__main__":
    main()
