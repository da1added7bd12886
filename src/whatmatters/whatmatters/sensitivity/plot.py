"""Fig. 1 of the paper: the mean |S_hat| over a dataset as a states x horizon heatmap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["draw_sensitivity_map", "plot_sensitivity_maps"]


def plot_sensitivity_maps(s_hat: np.ndarray, labels: tuple[str, ...], out: str | Path, examples: int = 3, seed: int = 0) -> Path:
    """Draws mean |S_hat| and a few per-sample maps.

    Args:
        s_hat: Samples, (S, N, nx) (NaN rows are ignored).
        labels: State names, (nx,).
        out: PNG path.
        examples: Per-sample maps drawn beside the mean.
        seed: Choice of the example samples.
    """
    data = _finite_abs(s_hat)
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(data), size=min(examples, len(data)), replace=False)
    fig, axes = plt.subplots(1, 1 + len(picks), figsize=(4.2 * (1 + len(picks)), 4.8), squeeze=False)
    panels = [("mean |S_hat| over %d samples" % len(data), data.mean(0))] + [(f"sample {int(i)}", data[i]) for i in picks]
    for ax, (title, m) in zip(axes[0], panels):
        _heatmap(ax, m, labels, title)
    axes[0][0].set_ylabel("predicted state")
    fig.suptitle("Task sensitivity of the MPC cost to prediction errors (eq. 5)")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def draw_sensitivity_map(ax: Any, s_hat: np.ndarray, labels: tuple[str, ...], title: str | None = None) -> None:
    """Draws mean |S_hat| over the samples as a states x horizon heatmap into ``ax`` (a matplotlib Axes).

    Args:
        ax: The axes.
        s_hat: Samples, (S, N, nx) (NaN rows are ignored).
        labels: State names, (nx,).
        title: Panel title (default: "mean |S_hat| over S samples").
    """
    data = _finite_abs(s_hat)
    _heatmap(ax, data.mean(0), labels, title or f"mean |S_hat| over {len(data)} samples")
    ax.set_ylabel("predicted state")


def _finite_abs(s_hat: np.ndarray) -> np.ndarray:
    """|S_hat| of the samples without NaN, (S', N, nx); ValueError if none is left."""
    ok = np.all(np.isfinite(s_hat), axis=(1, 2))
    data = np.abs(s_hat[ok])
    if not len(data):
        raise ValueError("no finite sensitivity sample to plot")
    return data


def _heatmap(ax: Any, m: np.ndarray, labels: tuple[str, ...], title: str) -> None:
    """One (N, nx) map, states down and horizon steps across, with its colour bar."""
    n = m.shape[0]
    im = ax.imshow(m.T, aspect="auto", cmap="viridis", origin="upper")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("horizon step k (error e_k)")
    ax.set_xticks(range(n), [str(k + 1) for k in range(n)], fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
