"""The main job's table, verdict and figure (``whatmatters_demo``), from its bags only.

Each evaluation bag gives J_track (eq. 7) on the reference's clock and the joint
tracking error over time; the training bags give the S_hat map (Fig. 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from whatmatters.data.bags import SENSITIVITY, read_bag_dir, read_episode
from whatmatters.sensitivity.batch import STATE_LABELS
from whatmatters.sensitivity.plot import draw_sensitivity_map

__all__ = ["MODELS", "demo_figure", "demo_table", "demo_verdict"]

MODELS = ("base", "stand", "ours")  # the order of the table's columns and of the swaps

JTable = Mapping[str, Mapping[int, float]]  # model -> environment -> J_track


def _mean(j: JTable, model: str) -> float:
    return float(np.mean(list(j[model].values())))


def demo_table(j: JTable) -> str:
    """A markdown table: J_track per environment and its mean, each model also in % of base.

    Args:
        j: J_track of each model of :data:`MODELS` on each evaluation environment.
    """
    envs = sorted(j["base"])
    head = "| environment | " + " | ".join(MODELS) + " | " + " | ".join(f"{m} / base" for m in MODELS[1:]) + " |"
    lines = [head, "|" + "---|" * (1 + 2 * len(MODELS) - 1)]
    rows = [(str(e), {m: j[m][e] for m in MODELS}) for e in envs] + [("mean", {m: _mean(j, m) for m in MODELS})]
    for name, row in rows:
        cells = [f"{row[m]:.4f}" for m in MODELS] + [f"{100 * row[m] / row['base']:.1f} %" for m in MODELS[1:]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def demo_verdict(j: JTable) -> tuple[bool, str]:
    """Whether ``ours`` has the lowest mean J_track of the three, and a sentence that says so plainly.

    Returns:
        (ours beats stand and base on the mean, the sentence with the figures and the per-environment wins).
    """
    means = {m: _mean(j, m) for m in MODELS}
    envs = sorted(j["base"])
    wins = {m: sum(j["ours"][e] < j[m][e] for e in envs) for m in ("stand", "base")}
    ok = means["ours"] < means["stand"] and means["ours"] < means["base"]
    detail = (f"mean J_track ours {means['ours']:.4f}, stand {means['stand']:.4f}, base {means['base']:.4f}; "
              f"ours lower than stand on {wins['stand']} and than base on {wins['base']} of {len(envs)} environments")
    if ok:
        return True, f"ours beats stand and base on these environments: {detail}."
    losers = " and ".join(m for m in ("stand", "base") if means["ours"] >= means[m])
    return False, f"ours does NOT beat {losers} on these environments this time: {detail}."


def demo_figure(eval_bags: Mapping[str, Mapping[int, Path]], train_bags: Path, out: Path) -> Path:
    """One figure: per evaluation environment the joint tracking error |q - q_ref| (rad) over time of
    the three models, and the mean |S_hat| map of the training bags.

    Args:
        eval_bags: Bag of each model on each environment.
        train_bags: The folder of the training bags (with ``/mpc/sensitivity``).
        out: PNG path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = sorted(eval_bags["base"])
    fig = plt.figure(figsize=(4.6 * (len(envs) + 1), 4.2))
    grid = fig.add_gridspec(1, len(envs) + 1)
    for i, env in enumerate(envs):
        ax = fig.add_subplot(grid[0, i])
        for model in MODELS:
            ep = read_episode(eval_bags[model][env])
            ax.plot(ep.t - ep.t[0], np.linalg.norm(ep.x[:, :7] - ep.x_ref[:, :7], axis=1), label=model, lw=1.0)
        ax.set(xlabel="time, s", title=f"evaluation environment {env}")
        if i == 0:
            ax.set_ylabel("joint tracking error |q - q_ref|, rad")
            ax.legend()
    episodes, _ = read_bag_dir(train_bags, (SENSITIVITY,))
    s_hat = np.concatenate([ep.extra[SENSITIVITY] for ep in episodes if SENSITIVITY in ep.extra])
    draw_sensitivity_map(fig.add_subplot(grid[0, len(envs)]), s_hat, STATE_LABELS, f"training data: mean |S_hat| ({len(s_hat)} steps)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out

