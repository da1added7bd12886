"""Topic names, QoS profiles and numpy <-> ROS message conversions shared by the nodes.

Topic names and joint names are the core's (:mod:`whatmatters.data.bags`), so
the bags the logger records are the bags the core reads. Only standard message
types are used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from builtin_interfaces.msg import Duration, Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Inertia, Vector3
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, Header, MultiArrayDimension, MultiArrayLayout
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from whatmatters.data.bags import COMMANDS, JOINT_NAMES, JOINT_STATES, MPC_REFERENCE, MPC_STATE, PAYLOAD, REFERENCE, REFERENCE_START
from whatmatters.realtime.reference import ReferenceBuffer
from whatmatters.robot.payload import Payload

__all__ = [
    "CLOCK", "COMMANDS", "DIAGNOSTICS", "ERROR", "OK", "WARN", "JOINT_NAMES", "JOINT_STATES", "LATCHED", "MPC_REFERENCE", "MPC_STATE",
    "PAYLOAD", "PREDICTION", "REFERENCE_START",
    "RELIABLE", "REFERENCE", "SENSITIVITY", "TORQUE", "ReferenceBuffer", "diagnostic_array", "float64_array", "inertia_msg", "joint_state_msg",
    "joint_state_effort", "joint_state_to_x", "stamp_seconds", "time_msg", "time_msg_ns", "trajectory_msg", "trajectory_to_array",
]

PREDICTION = "/mpc/prediction"
TORQUE = "/mpc/torque"  # total joint torque of a step when the command excludes gravity (real robot)
SENSITIVITY = "/mpc/sensitivity"
DIAGNOSTICS = "/diagnostics"
CLOCK = "/clock"

# Lock-step runs must not lose a message: reliable, deep queues.
RELIABLE = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
# The payload is published once: late subscribers (the logger) still get it.
LATCHED = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, durability=DurabilityPolicy.TRANSIENT_LOCAL
)


def time_msg(t: float) -> Time:
    """A ``builtin_interfaces/Time`` from seconds."""
    sec = math.floor(t + 1e-12)
    return Time(sec=int(sec), nanosec=min(int(round((t - sec) * 1e9)), 999_999_999))


def time_msg_ns(t_ns: int) -> Time:
    """A ``builtin_interfaces/Time`` from integer nanoseconds (exact)."""
    return Time(sec=int(t_ns // 1_000_000_000), nanosec=int(t_ns % 1_000_000_000))


def stamp_seconds(stamp: Time) -> float:
    """Seconds of a ``builtin_interfaces/Time``."""
    return stamp.sec + 1e-9 * stamp.nanosec


def stamp_ns(stamp: Time) -> int:
    """Nanoseconds of a ``builtin_interfaces/Time``."""
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def joint_state_msg(stamp: Time, q: np.ndarray, qd: np.ndarray, effort: np.ndarray) -> JointState:
    """``/joint_states``: positions rad, velocities rad/s, effort Nm (the torque applied last period), each (7,)."""
    msg = JointState(header=Header(stamp=stamp), name=list(JOINT_NAMES))
    msg.position = [float(v) for v in q]
    msg.velocity = [float(v) for v in qd]
    msg.effort = [float(v) for v in effort]
    return msg


_ORDER: dict[tuple[str, ...], list[int] | None] = {}


def _joint_order(names: Sequence[str]) -> list[int] | None:
    """Indices of panda_joint1..7 in a JointState's names (``fr3_`` accepted), cached per name list."""
    key = tuple(names)
    if key not in _ORDER:
        canonical = [n.replace("fr3_", "panda_") for n in key]
        try:
            _ORDER[key] = [canonical.index(n) for n in JOINT_NAMES]
        except ValueError:
            _ORDER[key] = None
        if len(_ORDER) > 64:
            _ORDER.pop(next(iter(_ORDER)))
    return _ORDER[key]


def joint_state_to_x(msg: JointState) -> np.ndarray | None:
    """State ``[q, qd]`` (14,) in panda_joint1..7 order, or None if joints are missing or not finite.

    Accepts ``fr3_joint*`` names (franka_ros2 with an FR3) and any joint order.
    """
    n = len(msg.name)
    if len(msg.position) != n or len(msg.velocity) != n:
        return None
    idx = _joint_order(msg.name)
    if idx is None:
        return None
    x = np.concatenate([np.asarray(msg.position, dtype=float)[idx], np.asarray(msg.velocity, dtype=float)[idx]])
    return x if np.all(np.isfinite(x)) else None


def joint_state_effort(msg: JointState) -> np.ndarray | None:
    """Effort (7,) in panda_joint1..7 order, Nm, or None if absent or not finite (same names as :func:`joint_state_to_x`)."""
    if len(msg.effort) != len(msg.name):
        return None
    idx = _joint_order(msg.name)
    if idx is None:
        return None
    tau = np.asarray(msg.effort, dtype=float)[idx]
    return tau if np.all(np.isfinite(tau)) else None


def float64_array(values: np.ndarray, labels: Sequence[str]) -> Float64MultiArray:
    """A Float64MultiArray with its layout (labels and sizes of ``values.shape``, row-major strides)."""
    values = np.ascontiguousarray(values, dtype=np.float64)
    dims, stride = [], int(values.size)
    for label, size in zip(labels, values.shape):
        dims.append(MultiArrayDimension(label=label, size=int(size), stride=int(stride)))
        stride //= max(int(size), 1)
    msg = Float64MultiArray(layout=MultiArrayLayout(dim=dims, data_offset=0))
    msg.data = values.ravel().tolist()
    return msg


def trajectory_msg(stamp: Time, x: np.ndarray, dt: float, offset: float = 0.0) -> JointTrajectory:
    """JointTrajectory of states ``x`` (K, 14) ``dt`` s apart, the first ``offset`` s after ``stamp``."""
    msg = JointTrajectory(header=Header(stamp=stamp), joint_names=list(JOINT_NAMES))
    for k, xk in enumerate(np.asarray(x, dtype=float)):
        tk = offset + k * dt
        sec = math.floor(tk + 1e-12)
        pt = JointTrajectoryPoint(time_from_start=Duration(sec=int(sec), nanosec=int(round((tk - sec) * 1e9))))
        pt.positions = xk[:7].tolist()
        pt.velocities = xk[7:].tolist()
        msg.points.append(pt)
    return msg


def trajectory_to_array(msg: JointTrajectory) -> np.ndarray:
    """States (K, 14) of a JointTrajectory (positions and velocities of each point)."""
    return np.array([list(p.positions) + list(p.velocities) for p in msg.points], dtype=float).reshape(-1, 14)


def inertia_msg(payload: Payload) -> Inertia:
    """``/payload``: mass kg, centre of mass m (flange frame), principal inertia kg m^2."""
    ix, iy, iz = payload.inertia_diag
    com = Vector3(x=float(payload.offset[0]), y=float(payload.offset[1]), z=float(payload.offset[2]))
    return Inertia(m=float(payload.mass), com=com, ixx=float(ix), iyy=float(iy), izz=float(iz))


def diagnostic_array(stamp: Time, name: str, level: int, message: str, values: dict[str, object]) -> DiagnosticArray:
    """A DiagnosticArray with one status (``level``: DiagnosticStatus.OK/WARN/ERROR)."""
    status = DiagnosticStatus(level=bytes([level]), name=name, message=message, hardware_id="whatmatters")
    status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
    return DiagnosticArray(header=Header(stamp=stamp), status=[status])


# DiagnosticStatus levels as ints (the message field is a byte).
OK, WARN, ERROR = 0, 1, 2
