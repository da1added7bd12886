"""The torque applied over a control step, from the robot's effort samples.

A robot's ``/joint_states`` come at its own rate (the simulator's 500 Hz,
franka_ros2's up to 1 kHz), and each sample's effort is the torque applied
over the interval that ends at its stamp (the simulator: exactly the torque
it applied; a Franka: the measured joint torque). The torque applied over a
control step ``(t0, t1]`` is their time-weighted mean. A command that arrives
mid-step is therefore counted for the part of the step it was applied, which
the lock-step simulator never needs (there every command is applied over one
whole step).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["mean_applied_torque", "mean_applied_torque_of"]


def mean_applied_torque(stamps_ns: Sequence[int] | np.ndarray, efforts: np.ndarray, t0_ns: int, t1_ns: int) -> np.ndarray | None:
    """Time-weighted mean of the applied torque over ``(t0, t1]``.

    Sample ``j`` covers ``(stamps[j - 1], stamps[j]]``; the first sample's
    interval is taken as long as the second's.

    Args:
        stamps_ns: Increasing stamps of the effort samples, ns, shape (M,).
        efforts: Torque applied over the interval ending at each stamp, Nm, shape (M, nu).
        t0_ns: Start of the step, ns.
        t1_ns: End of the step, ns (> t0).

    Returns:
        The mean torque, Nm, shape (nu,); None if the samples do not cover ``(t0, t1]``.
    """
    stamps = np.asarray(stamps_ns, dtype=np.int64)
    efforts = np.asarray(efforts, dtype=float)
    if t1_ns <= t0_ns or stamps.size < 2:
        return None
    begins = np.concatenate([[stamps[0] - (stamps[1] - stamps[0])], stamps[:-1]])
    lo, hi = np.maximum(begins, t0_ns), np.minimum(stamps, t1_ns)
    weight = np.clip(hi - lo, 0, None).astype(float)
    if begins[0] > t0_ns or stamps[-1] < t1_ns or weight.sum() < (t1_ns - t0_ns) * (1 - 1e-9):
        return None
    return weight @ efforts / weight.sum()


def mean_applied_torque_of(samples: Sequence[tuple[int, np.ndarray, np.ndarray]] | Iterable[tuple[int, np.ndarray, np.ndarray]], t0_ns: int, t1_ns: int) -> np.ndarray | None:
    """:func:`mean_applied_torque` of the newest ``(stamp ns, state, effort)`` samples (oldest first)
    back to the one at or before ``t0``; only those are read, so a long buffer costs nothing."""
    recent: list[tuple[int, np.ndarray]] = []
    for stamp, _, effort in reversed(samples):  # type: ignore[call-overload]
        recent.append((stamp, effort))
        if stamp <= t0_ns and len(recent) >= 2:
            break
    if len(recent) < 2:
        return None
    recent.reverse()
    return mean_applied_torque([s for s, _ in recent], np.array([e for _, e in recent]), t0_ns, t1_ns)
