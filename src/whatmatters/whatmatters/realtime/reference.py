"""The reference over the MPC horizon at any time on the task's clock.

A reference message holds the N + 1 states ``x_ref(tau_s + k dt)`` from the
task time ``tau_s`` of its stamp ``s``. The task time of a ROS time ``t`` is
``tau(t) = max(0, t - t_start)``: zero until the task has started (the
reference publisher holds the first point until the controller runs), and
zero for every time while the start is not known yet. The horizon at a time
``t`` comes from the latest message stamped at or before ``t``, evaluated at
the offsets ``tau(t) - tau(s) + k dt`` by cubic Hermite interpolation of its
points (positions with their velocities as slopes: error O(dt^4) in q). Past
its last point a message is extrapolated with that point's velocity.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ReferenceBuffer", "hermite"]


def hermite(points: np.ndarray, dt: float, offsets: np.ndarray) -> np.ndarray:
    """States between the points of a reference, by cubic Hermite interpolation.

    Args:
        points: Reference states ``[q, qd]`` at ``0, dt, ..., (K - 1) dt``, shape (K, 2 n).
        dt: Spacing of the points, s.
        offsets: Times at which to evaluate, s, >= 0, shape (M,).

    Returns:
        ``[q, qd]`` at the offsets, shape (M, 2 n): q is the cubic Hermite
        interpolant of the positions and velocities, qd its derivative. Offsets
        past the last point extrapolate it with constant velocity.
    """
    points = np.asarray(points, dtype=float)
    offsets = np.asarray(offsets, dtype=float)
    n = points.shape[1] // 2
    k_last = points.shape[0] - 1
    u = offsets / dt
    seg = np.clip(np.floor(u).astype(int), 0, max(k_last - 1, 0))
    out = np.empty((offsets.size, points.shape[1]))
    inside = u <= k_last
    if k_last >= 1 and np.any(inside):
        s = (u - seg)[inside][:, None]
        a, b = points[seg[inside]], points[seg[inside] + 1]
        q0, v0, q1, v1 = a[:, :n], a[:, n:] * dt, b[:, :n], b[:, n:] * dt
        h00, h10, h01, h11 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s, -2 * s**3 + 3 * s**2, s**3 - s**2
        d00, d10, d01, d11 = 6 * s**2 - 6 * s, 3 * s**2 - 4 * s + 1, -6 * s**2 + 6 * s, 3 * s**2 - 2 * s
        out[inside, :n] = h00 * q0 + h10 * v0 + h01 * q1 + h11 * v1
        out[inside, n:] = (d00 * q0 + d10 * v0 + d01 * q1 + d11 * v1) / dt
    beyond = ~inside if k_last >= 1 else np.ones(offsets.size, dtype=bool)
    if np.any(beyond):
        last = points[-1]
        extra = (offsets[beyond] - k_last * dt)[:, None]
        out[beyond, :n] = last[:n] + extra * last[n:]
        out[beyond, n:] = last[n:]
    return out


class ReferenceBuffer:
    """The last few reference messages, looked up by time.

    Args:
        dt: Spacing of the reference's points (the MPC's shooting interval), s.
        keep: Messages kept.

    Attributes:
        start_ns: ROS time at which the task time is zero, ns; None until known.
    """

    def __init__(self, dt: float, keep: int = 50) -> None:
        self.dt, self.keep = dt, keep
        self.refs: dict[int, np.ndarray] = {}
        self.start_ns: int | None = None

    def add(self, stamp_ns: int, x_ref: np.ndarray) -> None:
        """Stores a reference whose first point is at ``stamp_ns``, shape (N + 1, 14).

        A stamp older than the newest kept one means the clock restarted (a new
        lock-step episode on a restarted simulator): the old episode's references
        are dropped, else they would answer the new one's stamps (and, the newest
        being kept, crowd out the new ones).
        """
        if self.refs and stamp_ns < max(self.refs):
            self.refs.clear()
        self.refs[stamp_ns] = np.asarray(x_ref, dtype=float)
        if len(self.refs) > self.keep:
            for old in sorted(self.refs)[: len(self.refs) - self.keep]:
                del self.refs[old]

    def task_time(self, t_ns: int) -> float:
        """Task time of a ROS time, s: ``max(0, t - start)``; 0 while the start is unknown."""
        if self.start_ns is None:
            return 0.0
        return max(0.0, (t_ns - self.start_ns) * 1e-9)

    def exact(self, stamp_ns: int) -> np.ndarray | None:
        """The reference stamped exactly ``stamp_ns`` (lock-step), or None."""
        return self.refs.get(stamp_ns)

    def at(self, t_ns: int) -> np.ndarray | None:
        """The reference over the horizon from the task time of ``t_ns``, (N + 1, 14).

        Returns None if no message is stamped at or before ``t_ns``, or if the
        latest one is older than its own horizon.
        """
        older = [s for s in self.refs if s <= t_ns]
        if not older:
            return None
        s = max(older)
        ref = self.refs[s]
        delta = self.task_time(t_ns) - self.task_time(s)
        horizon = (len(ref) - 1) * self.dt
        if delta > horizon + 1e-12:
            return None
        if delta <= 0.0:
            return ref
        return hermite(ref, self.dt, delta + self.dt * np.arange(len(ref)))
