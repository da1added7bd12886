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

from whatmatters.data.bags import COMMANDS, JOINT_NAMES, JOINT_STATES, PAYLOAD, REFERENCE
from whatmatters.robot.payload import Payload

__all__ = [
    "CLOCK", "COMMANDS", "DIAGNOSTICS", "ERROR", "OK", "WARN", "JOINT_NAMES", "JOINT_STATES", "LATCHED", "PAYLOAD", "PREDICTION",
    "RELIABLE", "REFERENCE", "SENSITIVITY", "TORQUE", "ReferenceBuffer", "diagnostic_array", "float64_array", "inertia_msg", "joint_state_msg",
    "joint_state_to_x", "stamp_seconds", "time_msg", "trajectory_msg", "trajectory_to_array",
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


def joint_state_to_x(msg: JointState) -> np.ndarray | None:
    """State ``[q, qd]`` (14,) in panda_joint1..7 order, or None if joints are missing or not finite.

    Accepts ``fr3_joint*`` names (franka_ros2 with an FR3) and any joint order.
    """
    names = [n.replace("fr3_", "panda_") for n in msg.name]
    if len(msg.position) != len(names) or len(msg.velocity) != len(names):
        return None
    try:
        idx = [names.index(n) for n in JOINT_NAMES]
    except ValueError:
        return None
    x = np.array([msg.position[i] for i in idx] + [msg.velocity[i] for i in idx], dtype=float)
    return x if np.all(np.isfinite(x)) else None


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


def trajectory_msg(stamp: Time, x: np.ndarray, dt: float) -> JointTrajectory:
    """JointTrajectory of states ``x`` (K, 14) ``dt`` s apart, the first at ``stamp``."""
    msg = JointTrajectory(header=Header(stamp=stamp), joint_names=list(JOINT_NAMES))
    for k, xk in enumerate(np.asarray(x, dtype=float)):
        tk = k * dt
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


class ReferenceBuffer:
    """The last few references (stamp -> (N + 1, 14)), looked up by a state's stamp.

    Args:
        dt: Spacing of the reference's points, s.
        keep: References kept.
    """

    def __init__(self, dt: float, keep: int = 50) -> None:
        self.dt, self.keep = dt, keep
        self.refs: dict[int, np.ndarray] = {}

    def add(self, stamp_ns: int, x_ref: np.ndarray) -> None:
        """Stores a reference whose first point is at ``stamp_ns``."""
        self.refs[stamp_ns] = x_ref
        if len(self.refs) > self.keep:
            for old in sorted(self.refs)[: len(self.refs) - self.keep]:
                del self.refs[old]

    def exact(self, stamp_ns: int) -> np.ndarray | None:
        """The reference stamped exactly ``stamp_ns`` (lock-step), or None."""
        return self.refs.get(stamp_ns)

    def at(self, stamp_ns: int) -> np.ndarray | None:
        """The latest reference at or before ``stamp_ns``, shifted to it (last point repeated).

        Returns None if there is none, or if it is older than its own horizon.
        """
        if stamp_ns in self.refs:
            return self.refs[stamp_ns]
        older = [s for s in self.refs if s <= stamp_ns]
        if not older:
            return None
        s = max(older)
        ref = self.refs[s]
        shift = int(round((stamp_ns - s) * 1e-9 / self.dt))
        if shift >= len(ref):
            return None
        return np.vstack([ref[shift:], np.repeat(ref[-1:], shift, axis=0)])
