"""Real-time bags as control steps: the states at the control instants and the torque applied between them.

A real-time bag holds the robot's states at the robot's rate (the simulator's
500 Hz, franka_ros2's up to 1 kHz), the commands at their arrival, and the
controller's record of each step (``/mpc/state``). Training data are control
transitions, as in a lock-step bag, so the episode is read on the control grid
of the task's clock, ``t_k = t_0 + k dt`` (``t_0``: ``/reference/start``, the
tick at which the first command took effect; the robot stands still before):

* ``x_k``: the state the controller solved from at ``t_k`` (``/mpc/state``),
  or where it has none at that instant, the robot's state at ``t_k``;
* ``tau_k``: the torque applied over ``(t_k, t_{k+1}]``, the time-weighted mean
  of the robot's effort samples (:func:`whatmatters.realtime.torque.mean_applied_torque`):
  the command of the previous step for the part of the step before the new one
  arrived;
* the reference at ``t_k`` from the recorded ``/reference`` messages;
* other topics (``/mpc/sensitivity``) at the step whose instant their stamp is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from whatmatters.realtime.reference import ReferenceBuffer
from whatmatters.realtime.torque import mean_applied_torque

__all__ = ["control_steps"]


def control_steps(path: Path, msgs: list[tuple[str, int, Any]], dt: float, extra_topics: tuple[str, ...]) -> dict[str, Any]:
    """The fields of an :class:`~whatmatters.data.bags.EpisodeRecord` of a real-time bag.

    Args:
        path: The bag (named in errors).
        msgs: ``(topic, stamp ns, message)`` of the bag (header stamps; log time for unstamped).
        dt: Control period, s (the reference's point spacing).
        extra_topics: Float64MultiArray topics to place on the steps.

    Returns:
        ``t`` (T + 1,), ``x`` (T + 1, 14), ``tau`` (T, 7), ``x_ref_horizon`` (T + 1, N + 1, 14),
        ``extra``, ``extra_steps``.

    Raises:
        BagError: Naming the bag, if it has no usable start, too few states, or a control
            instant without a state near it.
    """
    from whatmatters.data.bags import JOINT_STATES, MPC_STATE, REFERENCE, REFERENCE_START, BagError

    starts = sorted(s for topic, s, _ in msgs if topic == REFERENCE_START)
    joint = sorted(((s, m) for topic, s, m in msgs if topic == JOINT_STATES), key=lambda e: e[0])
    if not starts or len(joint) < 2:
        raise BagError(f"bag {path}: a real-time bag needs {REFERENCE_START} and at least two {JOINT_STATES}")
    t0, dt_ns = starts[0], int(round(dt * 1e9))
    stamps = np.array([s for s, _ in joint], dtype=np.int64)
    states = np.array([np.concatenate([m.position, m.velocity]) for _, m in joint])
    efforts = np.array([m.effort for _, m in joint], dtype=float)
    period = int(np.median(np.diff(stamps)))
    tol = max(period // 2, 1)
    mpc = {s: np.concatenate([m.position, m.velocity]) for topic, s, m in msgs if topic == MPC_STATE}
    mpc_stamps = np.array(sorted(mpc), dtype=np.int64)
    n_steps = int((stamps[-1] + tol - t0) // dt_ns)
    if n_steps < 1:
        raise BagError(f"bag {path}: fewer than one control step after the start at {t0 * 1e-9:.3f} s")
    grid = t0 + dt_ns * np.arange(n_steps + 1)
    x = np.empty((n_steps + 1, 14))
    for k, g in enumerate(grid):
        if mpc_stamps.size:
            j = int(np.argmin(np.abs(mpc_stamps - g)))
            if abs(int(mpc_stamps[j]) - int(g)) <= tol:
                x[k] = mpc[int(mpc_stamps[j])]
                continue
        j = int(np.argmin(np.abs(stamps - g)))
        if abs(int(stamps[j]) - int(g)) > tol:
            raise BagError(f"bag {path}: no {JOINT_STATES} within {tol * 1e-6:.2f} ms of control instant {k} (t = {g * 1e-9:.4f} s)")
        x[k] = states[j]
    tau = np.empty((n_steps, 7))
    for k in range(n_steps):
        mean = mean_applied_torque(stamps, efforts, int(grid[k]), int(grid[k + 1]))
        if mean is None:
            raise BagError(f"bag {path}: the effort samples do not cover control step {k}")
        tau[k] = mean
    refs = ReferenceBuffer(dt, keep=10**9)
    refs.start_ns = t0
    for topic, s, m in msgs:
        if topic == REFERENCE:
            refs.add(s, np.array([np.concatenate([p.positions, p.velocities]) for p in m.points]))
    horizon = max((len(r) for r in refs.refs.values()), default=1)
    blank = np.full((horizon, 14), np.nan)
    x_ref_h = np.empty((n_steps + 1, horizon, 14))
    for k, g in enumerate(grid):
        ref = refs.at(int(g))
        x_ref_h[k] = ref if ref is not None and len(ref) == horizon else blank
    extras: dict[str, dict[int, np.ndarray]] = {topic: {} for topic in extra_topics}
    for topic, s, m in msgs:
        if topic in extras:
            k = int(round((s - t0) / dt_ns))
            if 0 <= k <= n_steps and abs(s - int(grid[k])) <= tol:
                shape = tuple(d.size for d in m.layout.dim) or (len(m.data),)
                extras[topic][k] = np.asarray(m.data, dtype=float).reshape(shape)
    return {
        "t": grid * 1e-9,
        "x": x,
        "tau": tau,
        "x_ref_horizon": x_ref_h,
        "extra": {topic: np.array([v[k] for k in sorted(v)]) for topic, v in extras.items() if v},
        "extra_steps": {topic: np.array(sorted(v), dtype=int) for topic, v in extras.items() if v},
    }
