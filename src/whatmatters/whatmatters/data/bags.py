"""rosbag2 (MCAP) episode bags, written and read with ``rosbags`` (no ROS install needed).

One bag per episode, standard message types only, so ``ros2 bag``,
PlotJuggler and Foxglove read them too:

==============================  ===================================  ==========================================
topic                           type                                 content
==============================  ===================================  ==========================================
``/joint_states``               sensor_msgs/msg/JointState           q, qd, effort = torque applied last period
``/effort_controller/commands`` std_msgs/msg/Float64MultiArray       torque command for the next period (7)
``/reference``                  trajectory_msgs/msg/JointTrajectory  reference over the MPC horizon (N + 1 pts)
``/payload``                    geometry_msgs/msg/Inertia            ground-truth payload (analysis only)
==============================  ===================================  ==========================================

Header stamps are simulation time; control step k has stamp ``k * dt``. The
ROS logger node records the same topics, and :func:`read_episode` reads both.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from whatmatters.data.realtime_episode import control_steps
from whatmatters.errors import WhatmattersError
from whatmatters.robot.payload import Payload

__all__ = ["BagError", "EpisodeBagWriter", "EpisodeRecord", "find_bags", "message_stamp_ns", "read_bag_dir", "read_bags", "read_episode"]

log = logging.getLogger(__name__)

JOINT_NAMES = tuple(f"panda_joint{i}" for i in range(1, 8))
JOINT_STATES = "/joint_states"
COMMANDS = "/effort_controller/commands"
REFERENCE = "/reference"
PAYLOAD = "/payload"
SENSITIVITY = "/mpc/sensitivity"  # S_hat per control step (the ROS logger's topic), Float64MultiArray (N, nx)
MPC_STATE = "/mpc/state"  # real time: per control step, the state solved from (stamp, q, qd) and the torque commanded (effort)
MPC_REFERENCE = "/mpc/reference"  # real time: the reference the MPC tracked at that step (JointTrajectory)
REFERENCE_START = "/reference/start"  # real time: the reference's time origin (std_msgs/Header stamp; latched)
TOPIC_TYPES = {
    JOINT_STATES: "sensor_msgs/msg/JointState",
    COMMANDS: "std_msgs/msg/Float64MultiArray",
    REFERENCE: "trajectory_msgs/msg/JointTrajectory",
    PAYLOAD: "geometry_msgs/msg/Inertia",
}
REALTIME_TOPICS = (MPC_STATE, REFERENCE_START)  # read_episode: a bag with REFERENCE_START is read on the control grid
TYPESTORE = get_typestore(Stores.ROS2_KILTED)


class BagError(WhatmattersError, ValueError):
    """A bag is unreadable, truncated or inconsistent; the message names it."""


def _stamp(t: float) -> Any:
    T = TYPESTORE.types
    sec = int(np.floor(t + 1e-12))
    return T["builtin_interfaces/msg/Time"](sec=sec, nanosec=int(round((t - sec) * 1e9)))


def _header(t: float) -> Any:
    return TYPESTORE.types["std_msgs/msg/Header"](stamp=_stamp(t), frame_id="")


def _ns(t: float) -> int:
    return int(round(t * 1e9))


def float64_array(values: np.ndarray, labels: tuple[str, ...] = ()) -> Any:
    """A Float64MultiArray with its layout dims filled (labels and sizes of ``values.shape``)."""
    T = TYPESTORE.types
    values = np.ascontiguousarray(values, dtype=np.float64)
    shape = values.shape
    labels = labels or tuple(f"dim{i}" for i in range(len(shape)))
    dims, stride = [], int(values.size)
    for label, size in zip(labels, shape):
        dims.append(T["std_msgs/msg/MultiArrayDimension"](label=label, size=int(size), stride=int(stride)))
        stride = stride // max(int(size), 1)
    layout = T["std_msgs/msg/MultiArrayLayout"](dim=dims, data_offset=0)
    return T["std_msgs/msg/Float64MultiArray"](layout=layout, data=values.ravel())


class EpisodeBagWriter:
    """Writes one episode to a new bag folder (MCAP storage).

    Args:
        path: Bag folder to create (must not exist).
        extra_topics: Additional ``topic -> type`` connections (e.g. sensitivities).
        topics: The base connections (default: the arm's, :data:`TOPIC_TYPES`).

    Use as a context manager; the bag is closed (metadata written) on exit.
    """

    def __init__(self, path: str | Path, extra_topics: dict[str, str] | None = None, topics: dict[str, str] | None = None) -> None:
        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"bag {self.path} already exists")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._conns = {
            topic: self._writer.add_connection(topic, msgtype, typestore=TYPESTORE)
            for topic, msgtype in {**(TOPIC_TYPES if topics is None else topics), **(extra_topics or {})}.items()
        }

    def __enter__(self) -> EpisodeBagWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Finishes the bag (idempotent)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None  # type: ignore[assignment]

    def write(self, topic: str, t: float, msg: Any) -> None:
        """Writes any message on a registered topic at simulation time ``t``."""
        conn = self._conns[topic]
        self._writer.write(conn, _ns(t), TYPESTORE.serialize_cdr(msg, conn.msgtype))

    def write_raw(self, topic: str, t: float, data: bytes | memoryview) -> None:
        """Writes an already CDR-serialized message (e.g. as received by a ROS node) at time ``t``."""
        self._writer.write(self._conns[topic], _ns(t), data)

    def joint_state(self, t: float, q: np.ndarray, qd: np.ndarray, effort: np.ndarray) -> None:
        """Writes ``/joint_states``."""
        msg = TYPESTORE.types["sensor_msgs/msg/JointState"](
            header=_header(t),
            name=list(JOINT_NAMES),
            position=np.asarray(q, dtype=np.float64),
            velocity=np.asarray(qd, dtype=np.float64),
            effort=np.asarray(effort, dtype=np.float64),
        )
        self.write(JOINT_STATES, t, msg)

    def command(self, t: float, tau: np.ndarray) -> None:
        """Writes ``/effort_controller/commands`` (7 torques)."""
        self.write(COMMANDS, t, float64_array(np.asarray(tau), ("joints",)))

    def reference(self, t: float, x_ref: np.ndarray, dt: float) -> None:
        """Writes ``/reference``: the horizon's points, shape (N + 1, 14), ``dt`` apart."""
        T = TYPESTORE.types
        points = []
        for k, x in enumerate(np.asarray(x_ref, dtype=np.float64)):
            tk = k * dt
            sec = int(np.floor(tk + 1e-12))
            points.append(
                T["trajectory_msgs/msg/JointTrajectoryPoint"](
                    positions=x[:7].copy(),
                    velocities=x[7:].copy(),
                    accelerations=np.zeros(0),
                    effort=np.zeros(0),
                    time_from_start=T["builtin_interfaces/msg/Duration"](sec=sec, nanosec=int(round((tk - sec) * 1e9))),
                )
            )
        msg = T["trajectory_msgs/msg/JointTrajectory"](header=_header(t), joint_names=list(JOINT_NAMES), points=points)
        self.write(REFERENCE, t, msg)

    def payload(self, t: float, payload: Payload) -> None:
        """Writes ``/payload`` (geometry_msgs/Inertia, inertia about the centre of mass)."""
        T = TYPESTORE.types
        ix, iy, iz = payload.inertia_diag
        msg = T["geometry_msgs/msg/Inertia"](
            m=float(payload.mass),
            com=T["geometry_msgs/msg/Vector3"](x=payload.offset[0], y=payload.offset[1], z=payload.offset[2]),
            ixx=ix, ixy=0.0, ixz=0.0, iyy=iy, iyz=0.0, izz=iz,
        )
        self.write(PAYLOAD, t, msg)


@dataclass
class EpisodeRecord:
    """One episode read back from a bag, aligned by control step.

    Attributes:
        path: The bag.
        t: Times of the states, s, shape (T + 1,).
        x: States [q, qd], shape (T + 1, 14).
        tau: Commanded torque for each step, Nm, shape (T, 7).
        x_ref: Reference at each state's time, shape (T + 1, 14) (NaN where missing).
        x_ref_horizon: The reference over the MPC horizon sent at each step,
            shape (T + 1, N + 1, 14) (NaN where missing).
        payload: Ground-truth payload, if recorded.
        extra: Other topics: name -> array stacked over the steps that have one.
        extra_steps: The step index of each row of ``extra[name]``, (rows,).
    """

    path: Path
    t: np.ndarray
    x: np.ndarray
    tau: np.ndarray
    x_ref: np.ndarray
    x_ref_horizon: np.ndarray | None = None
    payload: Payload | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    extra_steps: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def dt(self) -> float:
        """Control period, s."""
        return float(np.median(np.diff(self.t)))


def read_episode(path: str | Path, extra_topics: tuple[str, ...] = ()) -> EpisodeRecord:
    """Reads one episode bag.

    Args:
        path: Bag folder.
        extra_topics: Float64MultiArray topics to read as arrays (reshaped by their layout).

    Raises:
        BagError: Naming the bag, if it cannot be read or is inconsistent.
    """
    path = Path(path)
    msgs: list[tuple[str, int, Any]] = []
    try:
        with Reader(path) as reader:
            wanted = [c for c in reader.connections if c.topic in (*TOPIC_TYPES, *REALTIME_TOPICS, *extra_topics)]
            for conn, ts, raw in reader.messages(connections=wanted):
                msg = TYPESTORE.deserialize_cdr(raw, conn.msgtype)
                stamp = message_stamp_ns(msg)
                msgs.append((conn.topic, ts if stamp is None else stamp, msg))
    except Exception as exc:  # rosbags raises several types for damaged files
        raise BagError(f"bag {path} cannot be read: {type(exc).__name__}: {exc}") from exc
    payload = next((_payload(msg) for topic, _, msg in msgs if topic == PAYLOAD), None)
    if any(topic == REFERENCE_START for topic, _, _ in msgs):
        fields = control_steps(path, msgs, _reference_dt(msgs), extra_topics)
        return EpisodeRecord(path, fields["t"], fields["x"], fields["tau"], fields["x_ref_horizon"][:, 0], fields["x_ref_horizon"],
                             payload, fields["extra"], fields["extra_steps"])
    stamps = sorted(s for topic, s, _ in msgs if topic == JOINT_STATES)
    if len(stamps) < 2:
        raise BagError(f"bag {path}: fewer than two {JOINT_STATES} messages")
    t0, dt_ns = stamps[0], int(np.median(np.diff(stamps)))
    if dt_ns <= 0:
        raise BagError(f"bag {path}: {JOINT_STATES} stamps do not increase")
    states: dict[int, np.ndarray] = {}
    cmds: dict[int, np.ndarray] = {}
    refs: dict[int, np.ndarray] = {}
    extras: dict[str, dict[int, np.ndarray]] = {t: {} for t in extra_topics}
    times: dict[int, float] = {}
    for topic, stamp, msg in msgs:
        k = int(round((stamp - t0) / dt_ns))
        if topic == JOINT_STATES:
            states[k] = np.concatenate([msg.position, msg.velocity])
            times[k] = stamp * 1e-9
        elif topic == COMMANDS:
            cmds[k] = np.asarray(msg.data, dtype=float)
        elif topic == REFERENCE:
            refs[k] = np.array([np.concatenate([pt.positions, pt.velocities]) for pt in msg.points])
        elif topic in (PAYLOAD, *REALTIME_TOPICS):
            continue
        else:
            shape = tuple(d.size for d in msg.layout.dim) or (len(msg.data),)
            extras[topic][k] = np.asarray(msg.data, dtype=float).reshape(shape)
    n_states = max(states) + 1 if states else 0
    if sorted(states) != list(range(n_states)):
        raise BagError(f"bag {path}: {JOINT_STATES} has gaps")
    steps = n_states - 1
    missing = [k for k in range(steps) if k not in cmds]
    if missing:
        raise BagError(f"bag {path}: {COMMANDS} missing for {len(missing)} of {steps} steps (first: {missing[0]})")
    x = np.array([states[k] for k in range(n_states)])
    tau = np.array([cmds[k] for k in range(steps)])
    if x.shape[1] != 14 or tau.shape[1] != 7:
        raise BagError(f"bag {path}: expected 7 joints, got states {x.shape} and commands {tau.shape}")
    horizon = max((len(r) for r in refs.values()), default=1)
    blank = np.full((horizon, 14), np.nan)
    x_ref_h = np.array([refs[k] if k in refs and len(refs[k]) == horizon else blank for k in range(n_states)])
    x_ref = x_ref_h[:, 0]
    t = np.array([times[k] for k in range(n_states)])
    extra = {topic: np.array([v[k] for k in sorted(v)]) for topic, v in extras.items() if v}
    extra_steps = {topic: np.array(sorted(v), dtype=int) for topic, v in extras.items() if v}
    return EpisodeRecord(path, t, x, tau, x_ref, x_ref_h, payload, extra, extra_steps)


def message_stamp_ns(msg: Any) -> int | None:
    """The header stamp of a deserialized message (a std_msgs/Header is its own), ns; None without one."""
    header = msg if hasattr(msg, "stamp") and hasattr(msg, "frame_id") else getattr(msg, "header", None)
    return None if header is None else int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def _payload(msg: Any) -> Payload:
    return Payload(float(msg.m), (msg.com.x, msg.com.y, msg.com.z), (msg.ixx, msg.iyy, msg.izz))


def _reference_dt(msgs: list[tuple[str, int, Any]]) -> float:
    """The spacing of the recorded reference's points, s (the control period); 0.02 s without a reference."""
    for topic, _, msg in msgs:
        if topic == REFERENCE and len(msg.points) > 1:
            d = msg.points[1].time_from_start
            return d.sec + 1e-9 * d.nanosec
    return 0.02


def find_bags(folder: str | Path, complete_only: bool = False) -> list[Path]:
    """The bag folders below ``folder``, sorted.

    Args:
        folder: Folder to search.
        complete_only: Only closed bags (with ``metadata.yaml``); else also
            folders holding only ``*.mcap`` (bags still being written, or killed).

    Raises:
        BagError: If the folder does not exist.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise BagError(f"data folder {folder} does not exist")
    closed = {p.parent for p in folder.rglob("metadata.yaml")}
    return sorted(closed if complete_only else closed | {p.parent for p in folder.rglob("*.mcap")})


def read_bags(bags: list[Path], extra_topics: tuple[str, ...] = ()) -> tuple[list[EpisodeRecord], list[tuple[Path, str]]]:
    """Reads the given bags; damaged ones are skipped with a warning naming them.

    Returns:
        The episodes read, and ``(path, reason)`` for every bag skipped.
    """
    episodes, skipped = [], []
    for bag in bags:
        try:
            episodes.append(read_episode(bag, extra_topics))
        except BagError as exc:
            log.warning("skipping %s", exc)
            skipped.append((Path(bag), str(exc)))
    return episodes, skipped


def read_bag_dir(folder: str | Path, extra_topics: tuple[str, ...] = ()) -> tuple[list[EpisodeRecord], list[tuple[Path, str]]]:
    """Reads every bag below a folder; damaged bags are skipped with a warning naming them.

    Returns:
        The episodes read, and ``(path, reason)`` for every bag skipped.

    Raises:
        BagError: If the folder does not exist or holds no bag at all.
    """
    bags = find_bags(folder)
    if not bags:
        raise BagError(f"no bags (folders with metadata.yaml or *.mcap) under {folder}")
    return read_bags(bags, extra_topics)
