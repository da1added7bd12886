"""Fig. 2 of the paper from the sweep's runs: ``fig2.json``, ``fig2.png`` and ``results.md``.

Normalisation (J_track averaged over the evaluation environments per
evaluation; values relative to ``stand`` at the same p, 1.0 = stand):

* ``final``: each run's last-epoch J divided by the mean of ``stand``'s
  last-epoch J over its runs; mean and standard deviation (ddof 0) over runs.
* ``best5``: the paper's way: of all evaluations of a weighting at a p (every
  run, every epoch) the five lowest, each divided by the mean of ``stand``'s
  five lowest; mean and standard deviation of those five.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from whatmatters.experiment.floor import floor_markdown
from whatmatters.experiment.per_env import env_costs, per_env_markdown
from whatmatters.io import atomic_write_bytes, atomic_write_text

__all__ = ["fig2_data", "plot_fig2", "results_markdown", "write_report"]


def _final(run: dict[str, Any]) -> float:
    return float(run["epochs"][-1]["j_track_mean"])


def _all(run: dict[str, Any]) -> list[float]:
    return [float(e["j_track_mean"]) for e in run["epochs"]]


def fig2_data(results: list[dict[str, Any]], weightings: list[str], rollouts: list[int], best: int = 5) -> dict[str, Any]:
    """The ``fig2.json`` mapping (see module docstring).

    A p without a finished ``stand`` run (a partial sweep) has no entries.
    """
    final: dict[str, dict[str, Any]] = {w: {} for w in weightings}
    best5: dict[str, dict[str, Any]] = {w: {} for w in weightings}
    for p in rollouts:
        by_w = {w: [r for r in results if r["weighting"] == w and r["p"] == p] for w in weightings}
        if not by_w["stand"]:
            continue
        stand_final = float(np.mean([_final(r) for r in by_w["stand"]]))
        stand_best = float(np.mean(sorted(v for r in by_w["stand"] for v in _all(r))[:best]))
        for w, runs in by_w.items():
            if not runs:
                continue
            f = np.array([_final(r) for r in runs]) / stand_final
            final[w][str(p)] = {"mean": float(f.mean()), "std": float(f.std()), "runs": len(runs)}
            b = np.array(sorted(v for r in runs for v in _all(r))[:best]) / stand_best
            best5[w][str(p)] = {"mean": float(b.mean()), "std": float(b.std()), "runs": int(b.size)}
    raw = [
        {
            "weighting": r["weighting"],
            "p": r["p"],
            "seed": r["seed"],
            "j_track": _all(r),
            "train_loss": [float(e["train_loss"]) for e in r["epochs"]],
            "wall_s": float(r.get("wall_s", float("nan"))),
            "j_track_per_env": [env_costs(e) for e in r["epochs"]],
        }
        for r in results
    ]
    return {"final": final, "best5": best5, "raw": raw}


def plot_fig2(fig: dict[str, Any], weightings: list[str], rollouts: list[int]) -> bytes:
    """Grouped bars (mean +- std, percent of stand) per p; best5 on top, final below. PNG bytes."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = dict(zip(["ones", "stand", "norm", "mpc_cost", "ours", "ours_avg"], ["#9e9e9e", "#1f77b4", "#8c564b", "#2ca02c", "#d62728", "#ff9896"]))
    figure, axes = plt.subplots(2, len(rollouts), figsize=(4.0 * len(rollouts), 6.5), sharey="row", squeeze=False)
    for row, kind in enumerate(("best5", "final")):
        for col, p in enumerate(rollouts):
            ax = axes[row][col]
            for i, w in enumerate(weightings):
                entry = fig[kind][w].get(str(p))
                if entry is None:
                    continue
                ax.bar(i, 100 * entry["mean"], yerr=100 * entry["std"], color=colors.get(w, "#777777"), capsize=3)
            ax.axhline(100.0, color="k", lw=0.8, ls="--")
            ax.set_xticks(range(len(weightings)), weightings, rotation=35, ha="right")
            ax.set_title(f"p = {p} ({kind})")
            if col == 0:
                ax.set_ylabel("J_track, % of stand")
    values = [100 * e["mean"] for kind in ("best5", "final") for w in weightings for e in fig[kind][w].values()]
    if values:
        lo, hi = min(values), max(values)
        for row in axes:
            row[0].set_ylim(max(0.0, lo - 0.25 * (hi - lo) - 5), hi + 0.25 * (hi - lo) + 5)
    figure.suptitle("Closed-loop tracking cost after fine-tuning (mean +- std, normalised to stand)")
    figure.tight_layout()
    buf = io.BytesIO()
    figure.savefig(buf, format="png", dpi=110)
    plt.close(figure)
    return buf.getvalue()


def _table(fig: dict[str, Any], kind: str, weightings: list[str], rollouts: list[int]) -> list[str]:
    lines = ["| weighting | " + " | ".join(f"p = {p}" for p in rollouts) + " |", "|---" * (len(rollouts) + 1) + "|"]
    for w in weightings:
        cells = []
        for p in rollouts:
            e = fig[kind][w].get(str(p))
            cells.append("—" if e is None else f"{100 * e['mean']:.1f} ± {100 * e['std']:.1f} % ({e['runs']})")
        lines.append(f"| {w} | " + " | ".join(cells) + " |")
    return lines


def _weights_table(stats: dict[str, dict[str, float]]) -> list[str]:
    if not stats:
        return []
    lines = [
        "## How unequal the `ours` weights are (training data)",
        "",
        "Per window the loss weight w = sum of S^2 over its steps and states; `ours_avg` replaces every window's S by the dataset mean S. Definitions: `whatmatters.train.weighting.weight_statistics`.",
        "",
        "| p | effective sample size / M | 99th percentile of w / mean | weight share of the top 1 % | mean cosine of S with the mean S |",
        "|---|---|---|---|---|",
    ]
    for p, st in stats.items():
        lines.append(f"| {p} | {st['ess_fraction']:.3f} | {st['p99_over_mean']:.2f} | {100 * st['top1_share']:.1f} % | {st['cosine_to_mean']:.3f} |")
    return [*lines, ""]


def _factors_table(st: dict[str, list[float]]) -> list[str]:
    if not st:
        return []
    joints = range(1, len(st["eff_mean"]) + 1)
    return [
        "## The two factors of S_hat over the training data",
        "",
        "Definitions: `whatmatters.sensitivity.batch.factor_statistics`. "
        f"Median coefficient of variation of the entries of |du0/de_1| (positions): {st['du0_de_cv_median'][0]:.2f}.",
        "",
        "| | " + " | ".join(f"joint {j}" for j in joints) + " |",
        "|---|" + "---|" * len(st["eff_mean"]),
        "| mean abs(dJ/du0)_eff, cost/Nm | " + " | ".join(f"{v:.3g}" for v in st["eff_mean"]) + " |",
        "| its coefficient of variation | " + " | ".join(f"{v:.2f}" for v in st["eff_cv"]) + " |",
        "| share of samples with u0 at a bound | " + " | ".join(f"{100 * v:.1f} %" for v in st["at_bound"]) + " |",
        "",
    ]


def results_markdown(
    fig: dict[str, Any],
    meta: dict[str, Any],
    weightings: list[str],
    rollouts: list[int],
    png_name: str,
    results: list[dict[str, Any]] | None = None,
) -> str:
    """``results.md``: tables, figure, command, wall time and machine.

    With ``results`` and ``meta["base_per_env"]`` (the base model's J per
    environment) it adds :func:`~whatmatters.experiment.per_env.per_env_markdown`.
    """
    cfg = meta["config"]
    lines = [
        "# Results: sensitivity-weighted fine-tuning (the paper's Fig. 2)",
        "",
        f"Produced by `{meta['command']}` (written by the command itself; do not edit).",
        "",
        *(
            [f"**Partial sweep: {meta['runs_done']} of {meta['runs_total']} runs finished.** The sweep resumes where it stopped with the same command without `--report-only`.", ""]
            if meta["runs_done"] < meta["runs_total"]
            else []
        ),
        f"- Machine: {meta['machine']}",
        f"- Wall time of the sweep: {meta['wall_h']:.2f} h in total over its sittings (this sitting {meta['sitting_s'] / 3600:.2f} h); runs finished: {meta['runs_done']} of {meta['runs_total']}",
        *[
            f"  - sitting {i}: {st['wall_s'] / 3600:.2f} h, {st['outcome']}, ended {st['ended']}" + (f" ({st['note']})" if st.get("note") else "")
            for i, st in enumerate(meta.get("sittings") or [], start=1)
        ],
        f"- Data: {cfg['data_envs']} training environments x {cfg['data_seconds']} s with the base model ({meta['windows']}), S_hat for every step",
        f"- Evaluation: {cfg['eval_envs']} `{cfg['eval_set']}` environments x {cfg['eval_seconds']} s after every epoch; fine-tuning {cfg['finetune']}",
        *([f"- MPC: `config/mpc.yaml` with {cfg['mpc']}"] if cfg.get("mpc") else []),
        f"- Base model before fine-tuning: J_track {meta['base_j']:.3f} (mean over the same environments)",
        "",
        "Values: J_track in percent of `stand` at the same p, mean ± std (number of values).",
        "",
        "## best5 (the paper's way: the five best evaluations across runs and epochs)",
        "",
        *_table(fig, "best5", weightings, rollouts),
        "",
        "## final (last epoch of each run, over seeds)",
        "",
        *_table(fig, "final", weightings, rollouts),
        "",
        f"![Fig. 2]({png_name})",
        "",
        *_weights_table(meta.get("ours_weights") or {}),
        *_factors_table(meta.get("factors") or {}),
        *per_env_markdown(results or [], meta.get("base_per_env") or {}, weightings, rollouts),
        *floor_markdown(results or [], meta.get("base_per_env") or {}, meta.get("exact_per_env") or {}, meta.get("exact_bound_per_env") or {}, weightings, rollouts),
        "Definitions of the weightings and of the normalisation: `docs/training.md`. Every run's per-epoch costs: `raw` in fig2.json.",
        "",
    ]
    return "\n".join(lines)


def write_report(
    results: list[dict[str, Any]],
    meta: dict[str, Any],
    weightings: list[str],
    rollouts: list[int],
    json_path: Path,
    png_path: Path,
    md_path: Path,
) -> dict[str, Any]:
    """Writes the three outputs atomically and returns the fig2 mapping."""
    fig = fig2_data(results, weightings, rollouts)
    meta = {**meta, "machine": meta.get("machine") or f"{platform.machine()}, {platform.processor() or 'cpu'}, {len(os.sched_getaffinity(0))} cores"}
    atomic_write_text(json.dumps(fig, indent=1), json_path)
    atomic_write_bytes(plot_fig2(fig, weightings, rollouts), png_path)
    rel = Path(os.path.relpath(png_path, md_path.parent))
    atomic_write_text(results_markdown(fig, meta, weightings, rollouts, rel.as_posix(), results), md_path)
    return fig
