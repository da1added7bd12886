"""``reference_publisher``: the environment's seeded Fourier reference over the MPC horizon.

Publishes ``/reference`` (trajectory_msgs/JointTrajectory): the N + 1 states
``x_ref(t), x_ref(t + dt), ..., x_ref(t + N dt)`` that the MPC tracks, with
``header.stamp`` = the time of the first point and ``time_from_start = k dt``.
The trajectory is :func:`whatmatters.trajectory.fourier.sample_fourier_trajectory`
of the environment's reference seed (the same one the core's episodes use);
N and dt come from ``config/mpc.yaml``.

* lock-step: one message per ``/joint_states`` message, for the state's stamp
  (the simulation time; the trajectory starts at 0).
* real time: ``rate_hz`` timer; the trajectory's time zero is the stamp of the
  first joint state received (the robot starts at the reference's start pose).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory

from whatmatters.mpc.config import MpcConfig
from whatmatters.robot.params import load_panda_params
from whatmatters.sim.environments import make_environment
from whatmatters.trajectory.fourier import FourierConfig, sample_fourier_trajectory
from whatmatters_ros import messages as m
from whatmatters_ros.params import NodeParams, declare_parameters, param
from whatmatters_ros.runtime import exit_with, run_node

__all__ = ["ReferenceParams", "ReferencePublisherNode", "main"]


@dataclass(frozen=True)
class ReferenceParams(NodeParams):
    """Parameters of ``reference_publisher`` (``config/reference_publisher.yaml``)."""

    node_name: ClassVar[str] = "reference_publisher"

    env_seed: int = param(2000, "environment seed; its reference seed picks the trajectory", lo=0)
    lockstep: bool = param(False, "publish one reference per /joint_states message, at its stamp")
    rate_hz: float = param(50.0, "real time: publishing rate, Hz", lo=1.0, hi=1000.0)


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
        self.t0_ns: int | None = None  # real time: ROS time of the trajectory's start
        self.last_stamp_ns: int | None = None
        self.published = 0
        self.pub = self.create_publisher(JointTrajectory, m.REFERENCE, m.RELIABLE)
        self.create_subscription(JointState, m.JOINT_STATES, self._on_state, m.RELIABLE)
        if not self.p.lockstep:
            self.create_timer(1.0 / self.p.rate_hz, self._tick)
        self.get_logger().info(f"reference seed {env.reference_seed} (env {self.p.env_seed}), {len(self.offsets)} points, dt {self.dt} s")

    def horizon(self, t: float) -> np.ndarray:
        """Reference states over the horizon from trajectory time ``t`` s, (N + 1, 14)."""
        return self.trajectory.state(t + self.offsets)

    def _publish(self, stamp_ns: int, t: float) -> None:
        stamp = m.time_msg(stamp_ns * 1e-9)
        self.pub.publish(m.trajectory_msg(stamp, self.horizon(t), self.dt))
        self.published += 1

    def _on_state(self, msg: JointState) -> None:
        ns = m.stamp_ns(msg.header.stamp)
        if self.p.lockstep:
            if ns != self.last_stamp_ns:  # one reference per state
                self.last_stamp_ns = ns
                self._publish(ns, ns * 1e-9)
        elif self.t0_ns is None:
            self.t0_ns = ns
            self.get_logger().info("first joint state: reference time starts now")

    def _tick(self) -> None:
        if self.t0_ns is None:
            return
        now_ns = self.get_clock().now().nanoseconds
        self._publish(now_ns, max(0.0, (now_ns - self.t0_ns) * 1e-9))


def main(args: list[str] | None = None) -> None:
    """Console script ``reference_publisher``."""
    exit_with(run_node(ReferencePublisherNode, args))


if __name__ == "__main__":
    main()
