"""Fig. 2 as a PNG: the environment-paired ratios with their intervals, and the paper's best5."""

from __future__ import annotations

from typing import Any

__all__ = ["plot_fig2"]


def plot_fig2(fig: dict[str, Any], weightings: list[str], rollouts: list[int]) -> bytes:
    """Bars per p, percent of stand. Top: the environment-paired ratio of the
    selected checkpoints with its 95 % interval; bottom: best5 (mean +- std,
    selection on the evaluation set). PNG bytes."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = dict(zip(["ones", "stand", "norm", "mpc_cost", "ours", "ours_avg"], ["#9e9e9e", "#1f77b4", "#8c564b", "#2ca02c", "#d62728", "#ff9896"]))
    figure, axes = plt.subplots(2, len(rollouts), figsize=(4.0 * len(rollouts), 6.5), sharey="row", squeeze=False)
    titles = {"paired": "selected on validation, paired, 95 % CI", "best5": "best5: selection on the eval set"}
    for row, kind in enumerate(("paired", "best5")):
        values = []
        for col, p in enumerate(rollouts):
            ax = axes[row][col]
            for i, w in enumerate(weightings):
                if kind == "paired":
                    e = fig["paired"][w].get(str(p)) or ({"ratio": 1.0, "low": 1.0, "high": 1.0} if str(p) in fig["selected"]["stand"] and w == "stand" else None)
                    if e is None:
                        continue
                    mid, err = 100 * e["ratio"], [[100 * (e["ratio"] - e["low"])], [100 * (e["high"] - e["ratio"])]]
                    values += [100 * e["low"], 100 * e["high"]]
                else:
                    e = fig[kind][w].get(str(p))
                    if e is None:
                        continue
                    mid, err = 100 * e["mean"], [[100 * e["std"]], [100 * e["std"]]]
                    values += [mid - err[0][0], mid + err[1][0]]
                ax.bar(i, mid, yerr=err, color=colors.get(w, "#777777"), capsize=3)
            ax.axhline(100.0, color="k", lw=0.8, ls="--")
            ax.set_xticks(range(len(weightings)), weightings, rotation=35, ha="right")
            ax.set_title(f"p = {p}: {titles[kind]}", fontsize=9)
            if col == 0:
                ax.set_ylabel("J_track, % of stand")
        if values:
            lo, hi = min(values), max(values)
            axes[row][0].set_ylim(max(0.0, lo - 0.25 * (hi - lo) - 5), hi + 0.25 * (hi - lo) + 5)
    figure.suptitle("Closed-loop tracking cost after fine-tuning, normalised to stand")
    figure.tight_layout()
    buf = io.BytesIO()
    figure.savefig(buf, format="png", dpi=110)
    plt.close(figure)
    return buf.getvalue()
