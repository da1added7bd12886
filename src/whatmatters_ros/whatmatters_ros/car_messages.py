"""The race car's messages: F1TENTH's topics where a standard type exists, documented mappings where not.

Topics and layouts are those of :mod:`whatmatters.car.bags` (the bag reader
is the core's). ``ackermann_msgs`` is not on PyPI, so the drive command is a
``std_msgs/Float64MultiArray`` holding ``AckermannDrive``'s ``acceleration``
(m/s^2) and ``steering_angle`` (rad), in that order (the MPC commands the
acceleration; ``speed``, ``steering_angle_velocity`` and ``jerk`` have no
counterpart). An F1TENTH driver that takes ``AckermannDriveStamped`` needs a
relay node that copies these two fields. The plant's state is ``/odom``
(nav_msgs/Odometry, as F1TENTH's simulator and VESC driver publish it) plus
the actuators' realised state on ``/actuator_states`` (JointState).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import Pose, Quaternion, Twist
from nav_msgs.msg import Odometry
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, Header, MultiArrayDimension, MultiArrayLayout
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from whatmatters.car.bags import ACTUATORS, CAR_TOPIC_TYPES, DRIVE, MPC_PREDICTION, MPC_REFERENCE, MPC_STATE, ODOM

__all__ = [
    "ACTUATORS", "ACTUATOR_NAMES", "CAR_TOPIC_TYPES", "DRIVE", "DRIVE_LABEL", "MPC_PREDICTION", "MPC_REFERENCE", "MPC_STATE", "ODOM",
    "actuators_msg", "drive_msg", "drive_to_u", "labelled_state_msg", "labelled_state_values", "odom_msg", "plant_state",
    "trajectory_msg", "trajectory_to_array",
]  # fmt: skip

ACTUATOR_NAMES = ("steering_angle", "drive_acceleration")
DRIVE_LABEL = "acceleration,steering_angle"
FRAME, CHILD_FRAME = "map", "base_link"


def odom_msg(stamp: Time, x: np.ndarray) -> Odometry:
    """``/odom`` of plant state ``x = (X, Y, psi, vx, vy, r, delta, a)`` (8,): pose in ``map``, twist in ``base_link``."""
    X, Y, psi, vx, vy, r = (float(v) for v in x[:6])
    pose = Pose()
    pose.position.x, pose.position.y = X, Y
    pose.orientation = Quaternion(x=0.0, y=0.0, z=math.sin(0.5 * psi), w=math.cos(0.5 * psi))
    twist = Twist()
    twist.linear.x, twist.linear.y, twist.angular.z = vx, vy, r
    msg = Odometry(header=Header(stamp=stamp, frame_id=FRAME), child_frame_id=CHILD_FRAME)
    msg.pose.pose, msg.twist.twist = pose, twist
    return msg


def actuators_msg(stamp: Time, delta: float, accel: float) -> JointState:
    """``/actuator_states``: the front wheels' angle (rad) and the drive's realised acceleration (m/s^2)."""
    msg = JointState(header=Header(stamp=stamp), name=list(ACTUATOR_NAMES))
    msg.position = [float(delta), float(accel)]
    return msg


def plant_state(odom: Odometry, actuators: JointState) -> np.ndarray | None:
    """The plant state (8,) of an odometry and an actuator message, or None if malformed or not finite."""
    if list(actuators.name) != list(ACTUATOR_NAMES) or len(actuators.position) != 2:
        return None
    p, q, t = odom.pose.pose.position, odom.pose.pose.orientation, odom.twist.twist
    psi = math.atan2(2.0 * (q.w * q.z + q.x * q.y), 1.0 - 2.0 * (q.y * q.y + q.z * q.z))
    x = np.array([p.x, p.y, psi, t.linear.x, t.linear.y, t.angular.z, *actuators.position], dtype=float)
    return x if np.all(np.isfinite(x)) else None


def drive_msg(u: np.ndarray) -> Float64MultiArray:
    """``/drive``: ``[acceleration m/s^2, steering_angle rad]`` (module docstring)."""
    msg = Float64MultiArray(layout=MultiArrayLayout(dim=[MultiArrayDimension(label=DRIVE_LABEL, size=2, stride=2)], data_offset=0))
    msg.data = [float(u[0]), float(u[1])]
    return msg


def drive_to_u(msg: Float64MultiArray) -> np.ndarray | None:
    """The command ``(a_cmd, delta_cmd)`` (2,) of a ``/drive`` message, or None if it has not two finite values."""
    u = np.asarray(msg.data, dtype=float)
    return u if u.shape == (2,) and np.all(np.isfinite(u)) else None


def labelled_state_msg(stamp: Time, labels: Sequence[str], values: np.ndarray) -> JointState:
    """A JointState whose positions are ``values`` named by ``labels`` (``/mpc/state``: the model state and the command)."""
    msg = JointState(header=Header(stamp=stamp), name=list(labels))
    msg.position = [float(v) for v in values]
    return msg


def labelled_state_values(msg: JointState, labels: Sequence[str]) -> np.ndarray | None:
    """The positions of a :func:`labelled_state_msg` in the order of ``labels``, or None if any is missing or not finite."""
    names = list(msg.name)
    if len(msg.position) != len(names) or not set(labels) <= set(names):
        return None
    values = np.array([msg.position[names.index(k)] for k in labels], dtype=float)
    return values if np.all(np.isfinite(values)) else None


def trajectory_msg(stamp: Time, labels: Sequence[str], x: np.ndarray, dt: float) -> JointTrajectory:
    """States ``x`` (K, nx) ``dt`` s apart from ``stamp``, as the positions of points named by the state labels."""
    msg = JointTrajectory(header=Header(stamp=stamp), joint_names=list(labels))
    for k, xk in enumerate(np.asarray(x, dtype=float)):
        tk = k * dt
        sec = math.floor(tk + 1e-12)
        pt = JointTrajectoryPoint(time_from_start=Duration(sec=int(sec), nanosec=int(round((tk - sec) * 1e9))))
        pt.positions = xk.tolist()
        msg.points.append(pt)
    return msg


def trajectory_to_array(msg: JointTrajectory) -> np.ndarray:
    """The points' positions, (K, nx)."""
    return np.array([list(p.positions) for p in msg.points], dtype=float).reshape(len(msg.points), -1)


