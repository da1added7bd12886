"""What the mean over environments hides: per-environment statistics of the sweep.

The headline numbers (:mod:`whatmatters.experiment.report`) average J_track
over the evaluation environments before normalising, so an environment with a
large J weighs in proportion to it, and one closed-loop failure in one
environment can move a run's mean. These statistics show both effects:

* :func:`base_concentration`: the environments with the largest J of the base
  model and their share of its mean.
* :func:`per_env_normalised`: each environment normalised on its own, then
  combined with equal weight: for a run, the geometric mean over environments e
  of ``J_e(run) / mean over stand's runs of J_e(stand)``
  at the same p; mean and standard deviation (ddof 0) over runs.
* :func:`paired_to_stand`: the environment-paired ratio to ``stand`` with a
  bootstrap 95 % interval over environments and seeds, and win counts
  (:mod:`whatmatters.experiment.statistics`).
* :func:`claims`: the three claims of the paper's comparison, each with its
  interval: ``ours`` against ``stand`` and against ``ours_avg`` at every p
  (paired ratios), and whether ``ours``' gain over ``stand`` grows from the
  shortest to the longest rollout (:func:`~whatmatters.experiment.statistics.ratio_change`).
* :func:`failures`: closed-loop failures, evaluations (run x
  environment) whose J_e exceeds ``factor`` (default 5) times the base model's
  J_e in that environment. The factor is high on purpose: environments with a
  small base J (below 1) often double after fine-tuning without failing.

Every statistic reads each run's selected checkpoint on the evaluation
environments (:func:`~whatmatters.experiment.selection.selected_costs`; the
last epoch for runs made before the selection existed).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from whatmatters.experiment.selection import selected_costs
from whatmatters.experiment.statistics import Interval, PairedRatio, paired_ratio, ratio_change

__all__ = ["base_concentration", "claims", "claims_markdown", "env_costs", "failures", "paired_markdown", "paired_to_stand", "per_env_markdown", "per_env_normalised", "verdict"]


def env_costs(epoch: dict[str, Any]) -> dict[str, float]:
    """An epoch record's J_track per environment (``{}`` for records made without them)."""
    return {str(k): float(v) for k, v in (epoch.get("j_track_per_env") or {}).items()}


def base_concentration(base_per_env: dict[str, float], top: int = 3) -> list[tuple[str, float, float]]:
    """The ``top`` environments with the largest base J: (environment, J, share of the sum over environments)."""
    total = float(sum(base_per_env.values()))
    ranked = sorted(base_per_env.items(), key=lambda kv: -kv[1])[:top]
    return [(str(env), float(j), float(j) / total if total > 0 else float("nan")) for env, j in ranked]


def per_env_normalised(results: list[dict[str, Any]], weightings: list[str], rollouts: list[int]) -> dict[str, dict[str, Any]]:
    """Geometric mean over environments of the selected checkpoint's J_e relative to ``stand`` (see module docstring).

    Returns:
        ``{weighting: {str(p): {"mean", "std", "runs"}}}``; a p without a
        ``stand`` run, or runs without per-environment costs, have no entry.
    """
    out: dict[str, dict[str, Any]] = {w: {} for w in weightings}
    for p in rollouts:
        stand = [selected_costs(r) for r in results if r["weighting"] == "stand" and r["p"] == p]
        envs = sorted(set.intersection(*(set(s) for s in stand))) if stand else []
        if not envs:
            continue
        ref = np.array([np.mean([s[e] for s in stand]) for e in envs])  # (E,)
        for w in weightings:
            scores = []
            for r in results:
                if r["weighting"] != w or r["p"] != p:
                    continue
                last = selected_costs(r)
                if not all(e in last for e in envs):
                    continue
                j = np.array([last[e] for e in envs])  # (E,)
                scores.append(float(np.exp(np.mean(np.log(j / ref)))))
            if scores:
                out[w][str(p)] = {"mean": float(np.mean(scores)), "std": float(np.std(scores)), "runs": len(scores)}
    return out


def _last_costs(results: list[dict[str, Any]], weighting: str, p: int) -> list[dict[str, float]]:
    """The selected checkpoint's J_e of every run of a weighting at p, in seed order."""
    return [selected_costs(r) for r in sorted(results, key=lambda r: r["seed"]) if r["weighting"] == weighting and r["p"] == p]


def _matrices(*groups: list[dict[str, float]]) -> list[np.ndarray]:
    """The groups' J as (seeds, E) arrays over the environments all of their runs have (empty if none)."""
    if not all(groups):
        return []
    envs = sorted(set.intersection(*(set(c) for g in groups for c in g)))
    return [np.array([[c[e] for e in envs] for c in g]) for g in groups] if envs else []


def claims(results: list[dict[str, Any]], rollouts: list[int]) -> list[tuple[str, Interval]]:
    """The paper's claims with their 95 % intervals (module docstring); a claim without runs to test it is left out.

    Returns:
        (claim, interval) pairs; every claim is a ratio that is below 1 when it holds.
    """
    out: list[tuple[str, Interval]] = []
    for ref in ("stand", "ours_avg"):
        for p in rollouts:
            m = _matrices(_last_costs(results, "ours", p), _last_costs(results, ref, p))
            if m:
                c = paired_ratio(*m)
                out.append((f"ours beats {ref} at p = {p}", Interval(c.ratio, c.low, c.high)))
    if len(rollouts) > 1:
        a, b = min(rollouts), max(rollouts)
        m = _matrices(*(_last_costs(results, w, p) for p in (a, b) for w in ("ours", "stand")))
        if m:
            out.append((f"ours' gain over stand grows from p = {a} to p = {b}", ratio_change(*m)))
    return out


def verdict(interval: Interval) -> str:
    """What a ratio's 95 % interval says about a claim that holds below 1."""
    if interval.high < 1.0:
        return "holds (interval below 1)"
    if interval.low > 1.0:
        return "the opposite holds (interval above 1)"
    return "not resolved: the interval contains 1"


def paired_to_stand(results: list[dict[str, Any]], weightings: list[str], rollouts: list[int]) -> dict[str, dict[str, PairedRatio]]:
    """Each weighting against ``stand`` at the same p: :func:`~whatmatters.experiment.statistics.paired_ratio`
    of the selected checkpoints' J_e over the environments every run of both has.

    Returns:
        ``{weighting: {str(p): PairedRatio}}``; a p without runs of both has no entry.
    """
    out: dict[str, dict[str, PairedRatio]] = {w: {} for w in weightings}
    for p in rollouts:
        stand = _last_costs(results, "stand", p)
        for w in weightings:
            m = _matrices(_last_costs(results, w, p), stand) if w != "stand" else []
            if m:
                out[w][str(p)] = paired_ratio(*m)
    return out


def failures(
    results: list[dict[str, Any]], base_per_env: dict[str, float], weightings: list[str], rollouts: list[int], factor: float = 5.0
) -> dict[str, dict[str, dict[str, Any]]]:
    """Evaluations of the selected checkpoints whose J_e exceeds ``factor`` x the base model's J_e.

    Returns:
        ``{weighting: {str(p): {"count", "evaluations", "where"}}}`` with
        ``where`` the ``"<weighting>_p<p>_s<seed>@<epoch>:<env>"`` labels.
    """
    out: dict[str, dict[str, dict[str, Any]]] = {w: {} for w in weightings}
    base = {str(k): float(v) for k, v in base_per_env.items()}
    for w in weightings:
        for p in rollouts:
            runs = [r for r in results if r["weighting"] == w and r["p"] == p]
            if not runs:
                continue
            where, total = [], 0
            for r in sorted(runs, key=lambda r: r["seed"]):
                epoch = (r.get("selected") or r["epochs"][-1])["epoch"]
                for env, j in selected_costs(r).items():
                    if env not in base:
                        continue
                    total += 1
                    if j > factor * base[env]:
                        where.append(f"{w}_p{p}_s{r['seed']}@{epoch}:{env}")
            out[w][str(p)] = {"count": len(where), "evaluations": total, "where": where}
    return out


def paired_markdown(results: list[dict[str, Any]], weightings: list[str], rollouts: list[int]) -> list[str]:
    """The table of environment-paired ratios to ``stand`` with intervals and win counts."""
    paired = paired_to_stand(results, weightings, rollouts)
    rows = [
        f"| {w} | " + " | ".join("—" if (c := paired[w].get(str(p))) is None else f"{c.ratio:.3f} [{c.low:.3f}, {c.high:.3f}], {c.wins} of {c.envs}" for p in rollouts) + " |"
        for w in weightings
        if w != "stand"
    ]
    if not any(paired[w] for w in weightings):
        return []
    return [
        "| weighting | " + " | ".join(f"p = {p}" for p in rollouts) + " |",
        "|---" * (len(rollouts) + 1) + "|",
        *rows,
        "",
    ]


def per_env_markdown(
    results: list[dict[str, Any]], base_per_env: dict[str, float], weightings: list[str], rollouts: list[int], factor: float = 5.0
) -> list[str]:
    """The report's section on environments (empty without per-environment costs)."""
    if not base_per_env:
        return []
    norm = per_env_normalised(results, weightings, rollouts)
    fails = failures(results, base_per_env, weightings, rollouts, factor)
    top = base_concentration(base_per_env)
    header = ["| weighting | " + " | ".join(f"p = {p}" for p in rollouts) + " |", "|---" * (len(rollouts) + 1) + "|"]
    norm_rows, fail_rows, listed = [], [], []
    for w in weightings:
        cells = [norm[w].get(str(p)) for p in rollouts]
        norm_rows.append(f"| {w} | " + " | ".join("—" if c is None else f"{100 * c['mean']:.1f} ± {100 * c['std']:.1f} % ({c['runs']})" for c in cells) + " |")
        f_cells = [fails[w].get(str(p)) for p in rollouts]
        fail_rows.append(f"| {w} | " + " | ".join("—" if c is None else f"{c['count']} of {c['evaluations']}" for c in f_cells) + " |")
        listed += [x for c in f_cells if c for x in c["where"]]
    shown = ", ".join(listed[:12]) + (f" and {len(listed) - 12} more" if len(listed) > 12 else "")
    return [
        "## Per environment (what the mean over environments hides)",
        "",
        "Definitions: `whatmatters.experiment.per_env`. The base model's largest costs: "
        + "; ".join(f"environment {e}: J {j:.1f} ({100 * s:.0f} % of the sum)" for e, j, s in top)
        + ". The paper's normalisation averages J over environments first, so these weigh in proportion.",
        "",
        "Each run normalised on its own, each environment with equal weight (selected checkpoints; geometric mean over environments of J_e / stand's mean J_e, mean ± std over runs):",
        "",
        *header,
        *norm_rows,
        "",
        f"Closed-loop failures: evaluations (run x environment, selected checkpoints) with J_e above {factor:g} x the base model's J_e in that environment:",
        "",
        *header,
        *fail_rows,
        "",
        *([f"Where: {shown}.", ""] if listed else []),
    ]


def claims_markdown(results: list[dict[str, Any]], rollouts: list[int]) -> list[str]:
    """The claims table: each claim's ratio, 95 % interval and what the interval says."""
    found = claims(results, rollouts)
    if not found:
        return []
    return [
        "| claim | ratio [95 % interval] | what the interval says |",
        "|---|---|---|",
        *[f"| {name} | {c.value:.3f} [{c.low:.3f}, {c.high:.3f}] | {verdict(c)} |" for name, c in found],
        "",
    ]
