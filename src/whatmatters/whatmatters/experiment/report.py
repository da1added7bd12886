"""Fig. 2 of the paper from the sweep's runs: ``fig2.json``, ``fig2.png`` and ``results.md``.

The reported numbers are each run's **selected checkpoint** (chosen on the
validation environments, :mod:`whatmatters.experiment.selection`) on all the
evaluation environments:

* ``paired``: the environment-paired ratio to ``stand`` at the same p with
  its 95 % bootstrap interval and win count
  (:func:`~whatmatters.experiment.per_env.paired_to_stand`): the main reading.
* ``selected``: the paper's normalisation (J_track averaged over the
  environments per run, divided by the mean of ``stand``'s runs at the same
  p; mean and standard deviation, ddof 0, over runs), on all evaluation
  environments; ``selected_first``: the same on the first
  ``epoch_eval_envs`` of them (the paper-sized table).

Secondary, from the per-epoch evaluations on those first environments:

* ``best5``: the paper's way, selection on the evaluation set: of all
  evaluations of a weighting at a p (every run, every epoch) the five lowest,
  each divided by the mean of ``stand``'s five lowest; mean and std of those five.
* ``final``: each run's last epoch divided by the mean of ``stand``'s last epochs.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from whatmatters.experiment.bounds import bounds_markdown
from whatmatters.experiment.figure import plot_fig2
from whatmatters.experiment.floor import floor_markdown
from whatmatters.experiment.per_env import claims_markdown, env_costs, paired_markdown, paired_to_stand, per_env_markdown
from whatmatters.experiment.selection import selected_costs
from whatmatters.io import atomic_write_bytes, atomic_write_text

__all__ = ["fig2_data", "results_markdown", "write_report"]


def _final(run: dict[str, Any]) -> float:
    return float(run["epochs"][-1]["j_track_mean"])


def _all(run: dict[str, Any]) -> list[float]:
    return [float(e["j_track_mean"]) for e in run["epochs"] if "j_track_mean" in e]


def _selected_mean(run: dict[str, Any], envs: list[str] | None) -> float:
    """Mean J of a run's selected checkpoint over ``envs`` (None: all of its evaluation environments); NaN if it lacks one."""
    if envs is None:
        return float((run.get("selected") or run["epochs"][-1])["j_track_mean"])
    costs = selected_costs(run)
    return float(np.mean([costs[e] for e in envs])) if all(e in costs for e in envs) else float("nan")


def _normalised(by_w: dict[str, list[dict[str, Any]]], value: Any) -> dict[str, dict[str, Any]]:
    """``value(run)`` of every run divided by the mean of ``stand``'s: {weighting: {mean, std, runs}}; none if a value is NaN."""
    values = {w: np.array([value(r) for r in runs]) for w, runs in by_w.items() if runs}
    if not all(np.isfinite(v).all() for v in values.values()):
        return {}
    ref = float(values["stand"].mean())
    return {w: {"mean": float((v / ref).mean()), "std": float((v / ref).std()), "runs": len(v)} for w, v in values.items()}


def fig2_data(results: list[dict[str, Any]], weightings: list[str], rollouts: list[int], best: int = 5, first_envs: list[str] | None = None) -> dict[str, Any]:
    """The ``fig2.json`` mapping (see module docstring).

    Args:
        results: Finished runs (``result.json``).
        weightings: Weightings in table order.
        rollouts: Rollout lengths.
        best: Evaluations per weighting and p in ``best5``.
        first_envs: The first evaluation environments (``selected_first``);
            None: the environments of the per-epoch evaluations.

    A p without a finished ``stand`` run (a partial sweep) has no entries.
    """
    kinds = ("selected", "selected_first", "best5", "final")
    fig: dict[str, Any] = {k: {w: {} for w in weightings} for k in kinds}
    fig["paired"] = {w: {} for w in weightings}
    for p in rollouts:
        by_w = {w: [r for r in results if r["weighting"] == w and r["p"] == p] for w in weightings}
        if not by_w["stand"]:
            continue
        first = first_envs if first_envs is not None else sorted(env_costs(by_w["stand"][0]["epochs"][-1]))
        per_kind = {
            "selected": _normalised(by_w, lambda r: _selected_mean(r, None)),
            "selected_first": _normalised(by_w, lambda r: _selected_mean(r, first)) if first else {},
            "best5": {},
        }
        if all(len(_all(r)) == len(r["epochs"]) for runs in by_w.values() for r in runs):  # every epoch evaluated on the evaluation set
            per_kind["final"] = _normalised(by_w, _final)
            stand_best = float(np.mean(sorted(v for r in by_w["stand"] for v in _all(r))[:best]))
            for w, runs in by_w.items():
                if runs:
                    b = np.array(sorted(v for r in runs for v in _all(r))[:best]) / stand_best
                    per_kind["best5"][w] = {"mean": float(b.mean()), "std": float(b.std()), "runs": int(b.size)}
        for kind, entries in per_kind.items():
            for w, entry in entries.items():
                fig[kind][w][str(p)] = entry
    for w, per_p in paired_to_stand(results, weightings, rollouts).items():
        fig["paired"][w] = {p: {"ratio": c.ratio, "low": c.low, "high": c.high, "wins": c.wins, "envs": c.envs} for p, c in per_p.items()}
    fig["raw"] = [
        {
            "weighting": r["weighting"],
            "p": r["p"],
            "seed": r["seed"],
            "j_track": _all(r),
            "validation_j_track": [float(e["validation"]["j_track_mean"]) for e in r["epochs"] if "validation" in e],
            "selected_epoch": (r.get("selected") or {}).get("epoch"),
            "selected_j_track_per_env": selected_costs(r),
            "train_loss": [float(e["train_loss"]) for e in r["epochs"]],
            "wall_s": float(r.get("wall_s", float("nan"))),
            "j_track_per_env": [env_costs(e) for e in r["epochs"]],
        }
        for r in results
    ]
    return fig


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
    environment) it adds the per-environment and floor sections.
    """
    cfg = meta["config"]
    results = results or []
    n_eval, n_first = cfg["eval_envs"], cfg.get("epoch_eval_envs", cfg["eval_envs"])
    paired = paired_markdown(results, weightings, rollouts)
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
        f"- Fine-tuning: {cfg['finetune']}",
        *(
            [
                f"- Protocol: after every epoch each run is evaluated on {cfg['select_envs']} `validation` environments; its checkpoint is the epoch with the lowest"
                " geometric mean of J_e there (`whatmatters.experiment.selection`). That checkpoint is evaluated once on"
                f" {n_eval} `{cfg['eval_set']}` environments x {cfg['eval_seconds']} s: the reported numbers."
                f" The first {n_first} of them are also evaluated after every epoch, for the paper's best5 only.",
            ]
            if "select_envs" in cfg
            else [f"- Evaluation: {n_eval} `{cfg['eval_set']}` environments x {cfg['eval_seconds']} s after every epoch; the last epoch is reported (made before selection on validation existed)"]
        ),
        *([f"- MPC: `config/mpc.yaml` with {cfg['mpc']}"] if cfg.get("mpc") else []),
        f"- Base model before fine-tuning: J_track {meta['base_j']:.3f} (mean over the {n_eval} `{cfg['eval_set']}` environments)",
        "",
        f"## Main result: selected checkpoints on the {n_eval} `{cfg['eval_set']}` environments",
        "",
        *(
            [
                "Environment-paired ratio to `stand` at the same p (geometric mean over environments of the seed-averaged J_e ratios)"
                " [95 % bootstrap interval over environments and seeds], and the environments where the weighting's seed-averaged"
                " J_e is below stand's (`whatmatters.experiment.statistics`; below 1: better than stand; an interval containing 1 cannot tell the two apart):",
                "",
                *paired,
            ]
            if paired
            else []
        ),
        *(
            [
                "The claims, each a ratio that is below 1 when it holds (selected checkpoints; paired over environments, 95 % bootstrap interval over environments and seeds; `whatmatters.experiment.per_env.claims`):",
                "",
                *claims_markdown(results, rollouts),
            ]
            if claims_markdown(results, rollouts)
            else []
        ),
        f"The paper's normalisation of the same checkpoints: J_track averaged over the {n_eval} environments, in percent of `stand` at the same p, mean ± std over runs (number of runs):",
        "",
        *_table(fig, "selected", weightings, rollouts),
        "",
        f"![Fig. 2]({png_name})",
        "",
        f"## The paper-sized table: the same checkpoints on the first {n_first} `{cfg['eval_set']}` environments",
        "",
        *_table(fig, "selected_first", weightings, rollouts),
        "",
        f"## Secondary: best5, selection on the evaluation set (the paper's way, first {n_first} environments)",
        "",
        "The five lowest evaluations of a weighting at a p across its runs and epochs, in percent of stand's five lowest: the evaluation set chooses the epochs, so these are optimistic.",
        "",
        *_table(fig, "best5", weightings, rollouts),
        "",
        f"Last epoch of each run (first {n_first} environments, paper's normalisation, no selection):",
        "",
        *_table(fig, "final", weightings, rollouts),
        "",
        *_weights_table(meta.get("ours_weights") or {}),
        *_factors_table(meta.get("factors") or {}),
        *bounds_markdown(results, meta.get("bound_weights") or {}, meta.get("exact_validation_bound") or {}, rollouts),
        *floor_markdown(results, meta.get("base_per_env") or {}, meta.get("exact_per_env") or {}, meta.get("exact_bound_per_env") or {}, weightings, rollouts),
        *per_env_markdown(results, meta.get("base_per_env") or {}, weightings, rollouts),
        "Definitions of the weightings and of the normalisation: `docs/training.md`. Every run's per-epoch costs and its selected checkpoint's: `raw` in fig2.json.",
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
    first = [str(e) for e in meta["first_eval_seeds"]] if meta.get("first_eval_seeds") else None
    fig = fig2_data(results, weightings, rollouts, first_envs=first)
    meta = {**meta, "machine": meta.get("machine") or f"{platform.machine()}, {platform.processor() or 'cpu'}, {len(os.sched_getaffinity(0))} cores"}
    atomic_write_text(json.dumps(fig, indent=1), json_path)
    atomic_write_bytes(plot_fig2(fig, weightings, rollouts), png_path)
    rel = Path(os.path.relpath(png_path, md_path.parent))
    atomic_write_text(results_markdown(fig, meta, weightings, rollouts, rel.as_posix(), results), md_path)
    return fig
