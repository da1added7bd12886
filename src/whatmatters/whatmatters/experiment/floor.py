"""The achievable floor: how much of the model-induced cost each weighting removes.

The simulator's own model of an environment (``--model exact``: its payload,
armature and damping) gives the tracking cost J_e(exact) that no learned model
can be expected to beat with the same MPC. Against it:

* the **model-induced gap** of a model is ``J_e - J_e(exact)``;
* :func:`gap_closed_table`: the fraction of the base model's total gap that each
  weighting's selected checkpoint closes
  (:func:`~whatmatters.experiment.statistics.gap_closed`, 95 % bootstrap interval
  over environments and seeds), on all environments and on those where the task
  itself is not torque-bound;
* an environment is **torque-bound** when the exact model has a torque at its
  bound in more than :data:`BOUND_THRESHOLD` of the steps: there, even the
  right model cannot follow the reference, and du0/de has zero rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from whatmatters.experiment.selection import selected_costs
from whatmatters.experiment.statistics import Interval, gap_closed

__all__ = ["BOUND_THRESHOLD", "bound_environments", "floor_markdown", "gap_closed_table"]

#: Share of the steps with a torque at its bound above which the exact model's task counts as torque-bound.
BOUND_THRESHOLD = 0.05


def bound_environments(exact_bound: dict[str, float], threshold: float = BOUND_THRESHOLD) -> set[str]:
    """The environments where the exact model has a torque at its bound in more than ``threshold`` of the steps."""
    return {str(e) for e, share in exact_bound.items() if share > threshold}


def gap_closed_table(
    results: list[dict[str, Any]],
    base: dict[str, float],
    exact: dict[str, float],
    weightings: list[str],
    rollouts: list[int],
    envs: set[str] | None = None,
) -> dict[str, dict[str, Interval]]:
    """The fraction of the base model's gap each weighting closes (selected checkpoints), over ``envs`` (default: all).

    Returns:
        ``{weighting: {str(p): Interval}}``; entries without runs, or without a
        gap to close on those environments, are left out.
    """
    out: dict[str, dict[str, Interval]] = {w: {} for w in weightings}
    for w in weightings:
        for p in rollouts:
            runs = [selected_costs(r) for r in sorted(results, key=lambda r: r["seed"]) if r["weighting"] == w and r["p"] == p]
            if not runs:
                continue
            keys = set.intersection(*(set(c) for c in runs)) & set(base) & set(exact)
            common = sorted(keys if envs is None else keys & envs)
            if not common:
                continue
            j = np.array([[c[e] for e in common] for c in runs])  # (seeds, E)
            j_base, j_exact = np.array([base[e] for e in common]), np.array([exact[e] for e in common])
            if np.sum(j_base - j_exact) > 0:
                out[w][str(p)] = gap_closed(j, j_base, j_exact)
    return out


def floor_markdown(
    results: list[dict[str, Any]],
    base: dict[str, float],
    exact: dict[str, float],
    exact_bound: dict[str, float],
    weightings: list[str],
    rollouts: list[int],
) -> list[str]:
    """The report's section on the floor (empty without the exact model's costs)."""
    if not exact or not base:
        return []
    bound = bound_environments(exact_bound)
    free = set(exact) - bound
    common = sorted(set(base) & set(exact))
    header = ["| weighting | " + " | ".join(f"p = {p}" for p in rollouts) + " |", "|---" * (len(rollouts) + 1) + "|"]
    lines = [
        "## The achievable floor (the simulator's exact model)",
        "",
        f"Definitions: `whatmatters.experiment.floor`. Mean J over the {len(common)} environments: base model "
        f"{np.mean([base[e] for e in common]):.3f}, exact model {np.mean([exact[e] for e in common]):.3f}. "
        f"Torque-bound (the exact model has a torque at its bound in more than {100 * BOUND_THRESHOLD:g} % of the steps): "
        f"{len(bound & set(common))} of {len(common)}" + (f" ({', '.join(sorted(bound & set(common)))})" if bound & set(common) else "") + ".",
        "",
    ]
    for title, envs in (("all environments", None), (f"the {len(free & set(common))} environments that are not torque-bound", free)):
        table = gap_closed_table(results, base, exact, weightings, rollouts, envs)
        lines += [
            f"Fraction of the base model's gap J - J_exact that each weighting closes, {title} (selected checkpoints; 1: the exact model's cost, 0: the base model's) [95 % bootstrap interval]:",
            "",
            *header,
            *[
                f"| {w} | " + " | ".join("—" if (c := table[w].get(str(p))) is None else f"{c.value:.3f} [{c.low:.3f}, {c.high:.3f}]" for p in rollouts) + " |"
                for w in weightings
            ],
            "",
        ]
    return lines
