"""Multi-step training windows and the weightings S of the loss (eq. 1).

A window starting at recorded step t of an episode holds the true state x_t,
the applied torques u_t..u_{t+p-1}, the true states x_{t+1}..x_{t+p}, the
history window before t (for the context) and, when the bags carry
sensitivities, S_hat_t restricted to the first p horizon steps (row k-1 of
S_hat weights the error of the k-th predicted state). Windows never cross an
episode boundary; steps whose sensitivities did not converge are left out of
every weighting's data, so all variants train on identical windows.

Weightings (each returns S with shape (M, p, nx) or broadcastable to it; the
exact definitions are in ``docs/training.md``):

=============  ===============================================================
``ones``       S = 1
``stand``      S_i = 1 / std_i, std of state i over all windows' true states
``norm``       S_i = 1 / (max_i - min_i) over the same states
``mpc_cost``   S_i = sqrt(Q_ii): the loss is the MPC's stage cost of the error
``ours``       S_{t,k,i} = c |S_hat_{t,k,i}|, one dataset constant c with
               mean(S_ours^2) = mean(S_stand^2) over the objective's entries
``ours_avg``   the dataset mean of ``ours`` over windows: one (p, nx) map
=============  ===============================================================

``ours_scaling="per_state"`` (a remedy to try on the validation set, not the
paper's) standardises |S_hat| per horizon step and state instead:
S_{t,k,i} = (1/std_i) |S_hat_{t,k,i}| / mean_t |S_hat_{t,k,i}|, so ``ours`` keeps
only the per-sample variation on top of ``stand`` (and ``ours_avg`` equals
``stand``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from whatmatters.data.dataset import TransitionDataset

__all__ = ["OBJECTIVES", "OURS_SCALINGS", "WEIGHTINGS", "RolloutWindows", "make_windows", "objective_mask", "weight_statistics", "weights"]

WEIGHTINGS = ("ones", "stand", "norm", "mpc_cost", "ours", "ours_avg")
OURS_SCALINGS = ("global", "per_state")
OBJECTIVES = ("position", "velocity", "both")


@dataclass
class RolloutWindows:
    """p-step training windows (M of them).

    Attributes:
        x0: True initial states x_t, (M, 14).
        u: Applied torques u_t..u_{t+p-1}, Nm, (M, p, 7).
        x_true: True states x_{t+1}..x_{t+p}, (M, p, 14).
        history: Context windows before t, (M, W, 21).
        s_hat: Sensitivities of the first p horizon steps, (M, p, 14), or None.
        start: Flat dataset index of each window's first step, (M,).
    """

    x0: np.ndarray
    u: np.ndarray
    x_true: np.ndarray
    history: np.ndarray
    s_hat: np.ndarray | None
    start: np.ndarray

    def __len__(self) -> int:
        return int(self.x0.shape[0])

    @property
    def p(self) -> int:
        """Rollout length."""
        return int(self.u.shape[1])


def make_windows(data: TransitionDataset, p: int, require_sensitivities: bool = True) -> RolloutWindows:
    """All p-step windows of a dataset.

    Args:
        data: Transitions (with ``s_hat`` loaded if the weighting needs it).
        p: Rollout length (1 <= p <= the sensitivities' horizon).
        require_sensitivities: Drop windows whose first step has no converged
            S_hat (keeps the windows identical for every weighting).

    Raises:
        ValueError: If p is out of range or no window remains.
    """
    if p < 1:
        raise ValueError(f"rollout length p must be >= 1, got {p}")
    if data.s_hat is not None and p > data.s_hat.shape[1]:
        raise ValueError(f"rollout length p={p} exceeds the sensitivities' horizon {data.s_hat.shape[1]}")
    n = len(data)
    last = np.arange(n) + p - 1
    ok = last < n
    ok[ok] &= (data.episode[last[ok]] == data.episode[ok.nonzero()[0]]) & (data.step[last[ok]] == data.step[ok.nonzero()[0]] + p - 1)
    if require_sensitivities and data.s_hat is not None:
        ok &= np.all(np.isfinite(data.s_hat), axis=(1, 2))
    start = np.nonzero(ok)[0]
    if start.size == 0:
        raise ValueError(f"no {p}-step window in the dataset ({n} transitions)")
    idx = start[:, None] + np.arange(p)
    s_hat = None if data.s_hat is None else np.abs(data.s_hat[start, :p])
    return RolloutWindows(data.x[start], data.u[idx], data.x_next[idx], data.windows[start], s_hat, start)


def objective_mask(objective: str, nx: int = 14, groups: dict[str, tuple[int, ...]] | None = None) -> np.ndarray:
    """Boolean (nx,): the states the loss includes (``position``, ``velocity`` or ``both``).

    Args:
        objective: One of :data:`OBJECTIVES`.
        nx: State dimension.
        groups: The system's ``position`` and ``velocity`` state indices (a model's
            ``objective_groups``); None: the first and second half (the arm's q and qd).
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    groups = groups or {"position": tuple(range(nx // 2)), "velocity": tuple(range(nx // 2, nx))}
    mask = np.zeros(nx, dtype=bool)
    for name in ("position", "velocity"):
        if objective in (name, "both"):
            mask[list(groups[name])] = True
    return mask


def weights(
    name: str,
    win: RolloutWindows,
    objective: str,
    q_weights: np.ndarray | None = None,
    ours_scaling: str = "global",
    groups: dict[str, tuple[int, ...]] | None = None,
) -> np.ndarray:
    """The weighting tensor S of eq. (1) for every window.

    Args:
        name: One of :data:`WEIGHTINGS`.
        win: The training windows (statistics are over these).
        objective: ``position``, ``velocity`` or ``both`` (entries outside it are 0).
        q_weights: The MPC's state weights diag(Q), (nx,) (``mpc_cost`` only).
        ours_scaling: ``global`` (one dataset constant) or ``per_state``
            (per horizon step and state; see the module docstring).
        groups: The objective's state groups (:func:`objective_mask`).

    Returns:
        S, (M, p, nx) for ``ours``, (1, p, nx) otherwise; zero outside the objective.

    Raises:
        ValueError: For an unknown name or scaling, or a weighting whose input is missing.
    """
    if ours_scaling not in OURS_SCALINGS:
        raise ValueError(f"ours_scaling must be one of {', '.join(OURS_SCALINGS)}, got {ours_scaling!r}")
    nx, p = win.x0.shape[1], win.p
    mask = objective_mask(objective, nx, groups).astype(float)
    states = win.x_true.reshape(-1, nx)
    stand = 1.0 / np.maximum(states.std(0), 1e-12)
    if name == "ones":
        per_state = np.ones(nx)
    elif name == "stand":
        per_state = stand
    elif name == "norm":
        per_state = 1.0 / np.maximum(states.max(0) - states.min(0), 1e-12)
    elif name == "mpc_cost":
        if q_weights is None:
            raise ValueError("mpc_cost weighting needs the MPC's state weights")
        per_state = np.sqrt(np.asarray(q_weights, dtype=float))
    elif name in ("ours", "ours_avg"):
        if win.s_hat is None:
            raise ValueError(f"{name} weighting needs sensitivities (run 'whatmatters sensitivities' on the bags)")
        sel = mask.astype(bool)
        if ours_scaling == "per_state":
            ours = win.s_hat / np.maximum(win.s_hat.mean(0, keepdims=True), 1e-300) * (stand * mask)
        else:
            scale = np.sqrt(np.mean(stand[sel] ** 2) / max(np.mean(win.s_hat[:, :, sel] ** 2), 1e-300))
            ours = scale * win.s_hat * mask
        return ours if name == "ours" else ours.mean(0, keepdims=True)
    else:
        raise ValueError(f"unknown weighting {name!r}: expected one of {', '.join(WEIGHTINGS)}")
    return np.broadcast_to(per_state * mask, (1, p, nx)).copy()


def weight_statistics(s: np.ndarray) -> dict[str, float]:
    """How unequal per-window weights are (what separates ``ours`` from ``ours_avg``).

    With ``w_m = sum_{k,i} S_{m,k,i}^2`` the loss weight of window m:

    * ``ess_fraction``: Kish's effective sample size over M, ``(sum w)^2 / (M sum w^2)``
      (1: every window counts equally; 1/M: one window dominates);
    * ``p99_over_mean``: the 99th percentile of w over its mean;
    * ``top1_share``: the share of the loss weight held by the heaviest 1 % of windows;
    * ``cosine_to_mean``: the mean cosine similarity of each window's S (flattened
      over steps and states) with the dataset mean S, i.e. how far the per-sample
      pattern differs from ``ours_avg``'s (1: only the scale differs).

    Args:
        s: Per-window weights, (M, p, nx).
    """
    s = np.asarray(s, dtype=float)
    flat = s.reshape(s.shape[0], -1)
    w = np.sum(flat**2, axis=1)
    m = w.size
    top = np.sort(w)[::-1][: max(1, m // 100)]
    mean = flat.mean(0)
    norms = np.linalg.norm(flat, axis=1) * np.linalg.norm(mean)
    cos = flat @ mean / np.maximum(norms, 1e-300)
    return {
        "ess_fraction": float(w.sum() ** 2 / (m * np.sum(w**2))),
        "p99_over_mean": float(np.quantile(w, 0.99) / w.mean()),
        "top1_share": float(top.sum() / w.sum()),
        "cosine_to_mean": float(cos.mean()),
    }
