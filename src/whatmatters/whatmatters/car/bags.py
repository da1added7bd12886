"""The car's rosbag2 (MCAP) bags: topics, and reading them into training episodes.

The ROS 2 graph of the car (``whatmatters up car``) uses the topics of an
F1TENTH stack where a standard message type exists, and standard types with
a documented layout where F1TENTH's own package (``ackermann_msgs``) is not
available:

=====================  ==================================  =====================================================
topic                  type                                content
=====================  ==================================  =====================================================
``/odom``              nav_msgs/msg/Odometry               pose ``X, Y`` (m), yaw (quaternion); twist in
                                                           ``base_link``: ``vx, vy`` (m/s), ``r`` (rad/s)
``/actuator_states``   sensor_msgs/msg/JointState          ``steering_angle`` (rad) and ``drive_acceleration``
                                                           (m/s^2) as positions: the actuators' realised state
``/drive``             std_msgs/msg/Float64MultiArray      ``[acceleration m/s^2, steering_angle rad]``: the
                                                           ``acceleration`` and ``steering_angle`` fields of
                                                           ``ackermann_msgs/AckermannDrive``
``/mpc/state``         sensor_msgs/msg/JointState          per control step, at its state's stamp: the model
                                                           state solved from (``s`` unwrapped) and the command,
                                                           as positions named by the model's labels
``/mpc/reference``     trajectory_msgs/msg/JointTrajectory the reference of that step (N + 1 points ``dt`` apart)
``/mpc/prediction``    trajectory_msgs/msg/JointTrajectory its predicted states
``/mpc/sensitivity``   std_msgs/msg/Float64MultiArray      S_hat (N, 8) of that step, logged at its stamp
=====================  ==================================  =====================================================

:func:`read_car_bag` turns a bag into :class:`~whatmatters.car.data.CarRecord`
episodes for the trainer: one per run of consecutive control steps (``dt``
apart; a real-time run that missed an instant continues in a new one).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import Reader

from whatmatters.car.data import CarDataError, CarRecord
from whatmatters.data.bags import SENSITIVITY, TYPESTORE, BagError

__all__ = [
    "ACTUATORS", "CAR_TOPIC_TYPES", "DRIVE", "MPC_PREDICTION", "MPC_REFERENCE", "MPC_STATE", "ODOM", "read_car_bag", "read_car_bags",
]  # fmt: skip

log = logging.getLogger(__name__)

ODOM = "/odom"
ACTUATORS = "/actuator_states"
DRIVE = "/drive"
MPC_STATE = "/mpc/state"
MPC_REFERENCE = "/mpc/reference"
MPC_PREDICTION = "/mpc/prediction"
CAR_TOPIC_TYPES = {
    ODOM: "nav_msgs/msg/Odometry",
    ACTUATORS: "sensor_msgs/msg/JointState",
    DRIVE: "std_msgs/msg/Float64MultiArray",
    MPC_STATE: "sensor_msgs/msg/JointState",
    MPC_REFERENCE: "trajectory_msgs/msg/JointTrajectory",
    MPC_PREDICTION: "trajectory_msgs/msg/JointTrajectory",
    SENSITIVITY: "std_msgs/msg/Float64MultiArray",
    "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray",
}
STAMP_TOLERANCE_NS = 10_000  # a logged time this close to a step's stamp is that step's (steps are dt apart)


def _ns(stamp: object) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)  # type: ignore[attr-defined]


def read_car_bag(path: str | Path, nx: int = 8, nu: int = 2) -> list[CarRecord]:
    """The control steps of a car bag as episodes of consecutive steps.

    Args:
        path: The bag folder.
        nx: State size of ``/mpc/state``.
        nu: Command size of ``/mpc/state``.

    Returns:
        One record per run of at least two consecutive steps (``dt`` apart, each with its reference):
        ``x`` (T + 1, nx) the steps' states, ``u`` (T, nu) and ``x_ref`` (T, N + 1, nx) of all but the
        last, ``s_hat`` (T, N, nx) from ``/mpc/sensitivity`` (NaN where a step has none) or None if the
        bag has no sensitivities at all; ``env_seed`` -1.

    Raises:
        BagError: Naming the bag, if it cannot be read or holds no control step.
    """
    path = Path(path)
    steps: dict[int, np.ndarray] = {}
    refs: dict[int, tuple[np.ndarray, float]] = {}
    sens: dict[int, np.ndarray] = {}
    try:
        with Reader(path) as reader:
            conns = [c for c in reader.connections if c.topic in (MPC_STATE, MPC_REFERENCE, SENSITIVITY)]
            for conn, t, raw in reader.messages(connections=conns):
                msg = TYPESTORE.deserialize_cdr(raw, conn.msgtype)
                if conn.topic == MPC_STATE:
                    values = np.asarray(msg.position, dtype=float)
                    if values.shape == (nx + nu,) and np.all(np.isfinite(values)):
                        steps[_ns(msg.header.stamp)] = values
                elif conn.topic == MPC_REFERENCE and len(msg.points) >= 2:
                    x_ref = np.array([p.positions for p in msg.points], dtype=float)
                    dt = _ns(msg.points[1].time_from_start) * 1e-9 - _ns(msg.points[0].time_from_start) * 1e-9
                    if x_ref.shape[1] == nx:
                        refs[_ns(msg.header.stamp)] = (x_ref, dt)
                else:
                    sens[int(t)] = np.asarray(msg.data, dtype=float)
    except Exception as exc:  # rosbags raises many types for a damaged bag
        raise BagError(f"bag {path} cannot be read: {exc}") from exc
    stamps = [ns for ns in sorted(steps) if ns in refs]
    if not stamps:
        raise BagError(f"bag {path} holds no control step ({MPC_STATE} with its {MPC_REFERENCE})")
    dt = refs[stamps[0]][1]
    horizon = refs[stamps[0]][0].shape[0] - 1
    if not dt > 0:
        raise BagError(f"bag {path}: {MPC_REFERENCE} points are not spaced in time")
    runs: list[list[int]] = [[stamps[0]]]
    for ns in stamps[1:]:
        consecutive = abs((ns - runs[-1][-1]) * 1e-9 - dt) < 1e-3 * dt and refs[ns][0].shape[0] == horizon + 1
        if consecutive:
            runs[-1].append(ns)
        else:
            runs.append([ns])
    # S_hat is logged at its step's stamp; a bag's log times are float seconds on the way in (rosbags' writer),
    # so a wall-clock stamp (~1.8e9 s) comes back within ~0.2 us: matched to the nearest step
    order = np.array(stamps, dtype=np.int64)
    by_step: dict[int, np.ndarray] = {}
    for t, values in sens.items():
        i = int(np.clip(np.searchsorted(order, t), 1, len(order) - 1)) if len(order) > 1 else 0
        nearest = min((int(order[j]) for j in (i - 1, i) if 0 <= j < len(order)), key=lambda ns: abs(ns - t))
        if abs(nearest - t) <= STAMP_TOLERANCE_NS and values.size == horizon * nx:
            by_step[nearest] = values.reshape(horizon, nx)
    records = []
    for run in (r for r in runs if len(r) >= 2):
        s_hat = np.full((len(run) - 1, horizon, nx), np.nan)
        for i, ns in enumerate(run[:-1]):
            if ns in by_step:
                s_hat[i] = by_step[ns]
        values = np.array([steps[ns] for ns in run])
        x_ref = np.array([refs[ns][0] for ns in run[:-1]])
        records.append(CarRecord(path, values[:, :nx], values[:-1, nx:], x_ref, dt, -1, s_hat if sens else None))
    if not records:
        raise BagError(f"bag {path} holds no two consecutive control steps")
    return records


def read_car_bags(bags: Sequence[str | Path]) -> tuple[list[CarRecord], list[tuple[Path, str]]]:
    """Reads the given bags; a damaged one is skipped with a warning naming it.

    Returns:
        The episodes read, and ``(path, reason)`` for every bag skipped.
    """
    records, skipped = [], []
    for bag in bags:
        try:
            records.extend(read_car_bag(bag))
        except (BagError, CarDataError) as exc:
            log.warning("skipping %s", exc)
            skipped.append((Path(bag), str(exc)))
    return records, skipped
