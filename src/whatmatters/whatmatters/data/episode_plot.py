"""The figure a researcher wants for any bag (simulated, real-time or a real robot's).

Per joint: the position against its reference, the commanded torque against
its bounds, and, where the bag has S_hat (a ``sensitivity.npz`` sidecar or the
logger's ``/mpc/sensitivity`` topic), how much the MPC's first action depends
on that joint's predicted position and velocity, summed over the horizon.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from whatmatters.data.bags import SENSITIVITY, read_episode  # noqa: E402
from whatmatters.data.dataset import episode_sensitivities  # noqa: E402

__all__ = ["plot_episode"]

#: A torque counts as at its bound within this fraction of the bound.
AT_BOUND = 1e-6


def plot_episode(bag: str | Path, out: str | Path, torque_limits: np.ndarray) -> dict[str, Any]:
    """Draws one bag's episode into a PNG.

    Args:
        bag: The bag folder.
        out: PNG path (its folder is created).
        torque_limits: Torque bounds per joint, Nm, (7,).

    Returns:
        ``out``, ``steps``, ``seconds``, ``s_hat`` (whether S_hat was drawn and
        for how many steps), ``rms_tracking_rad`` per joint (position error
        against the reference over the steps that have one) and
        ``at_bound_steps`` per joint.

    Raises:
        BagError: Naming the bag, if it cannot be read.
    """
    ep = read_episode(bag, (SENSITIVITY,))
    try:
        s_hat = episode_sensitivities(ep)  # (T, N, 14)
    except ValueError:
        s_hat = None
    limits = np.asarray(torque_limits, dtype=float)
    t = ep.t - ep.t[0]
    err = ep.x[:, :7] - ep.x_ref[:, :7]  # (T + 1, 7), NaN without a reference
    has_ref = np.isfinite(err).all(axis=1)
    at_bound = np.abs(ep.tau) >= limits * (1.0 - AT_BOUND)  # (T, 7)
    with_s = s_hat is not None and bool(np.isfinite(s_hat).any())
    cols = 3 if with_s else 2
    fig, axes = plt.subplots(7, cols, figsize=(5.0 * cols, 13.0), sharex=True, squeeze=False)
    for j in range(7):
        ax = axes[j, 0]
        ax.plot(t, ep.x[:, j], lw=1.0, label="q")
        ax.plot(t, ep.x_ref[:, j], lw=1.0, ls="--", label="q_ref")
        ax.set_ylabel(f"joint {j + 1}\nq, rad")
        ax = axes[j, 1]
        ax.step(t[:-1], ep.tau[:, j], where="post", lw=1.0, label="tau")
        for sign in (1.0, -1.0):
            ax.axhline(sign * limits[j], color="r", lw=0.8, ls=":")
        ax.set_ylabel("tau, Nm")
        if with_s:
            ax = axes[j, 2]
            ax.plot(t[:-1], np.abs(s_hat[:, :, j]).sum(axis=1), lw=1.0, label="q (this joint)")
            ax.plot(t[:-1], np.abs(s_hat[:, :, 7 + j]).sum(axis=1), lw=1.0, label="qd (this joint)")
            ax.set_ylabel("sum_k |S_hat|")
    axes[0, 0].legend(loc="upper right", fontsize=7)
    axes[0, 1].legend(["tau", "bounds"], loc="upper right", fontsize=7)
    if with_s:
        axes[0, 2].legend(loc="upper right", fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("t, s")
    fig.suptitle(f"{Path(bag).name}: {len(ep.tau)} steps of {ep.dt * 1e3:.0f} ms")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return {
        "out": str(out),
        "steps": len(ep.tau),
        "seconds": float(t[-1]),
        "s_hat_steps": int(np.isfinite(s_hat).all(axis=(1, 2)).sum()) if with_s else 0,
        "rms_tracking_rad": np.sqrt(np.mean(err[has_ref] ** 2, axis=0)).tolist() if has_ref.any() else None,
        "at_bound_steps": at_bound.sum(axis=0).tolist(),
    }
