"""What the ``ours`` weights do where a torque is at its bound, on training and validation data only.

At a sample whose first action ``u_0*`` has joint ``j`` at its torque limit,
the row ``j`` of du0/de is zero (the saturated input does not move under a
small prediction error), so eq. 5, ``S_hat = |dJ/du0|_eff @ du0/de``, drops
that joint's action sensitivity, although its bound multiplier makes
``|dJ/du0_j|_eff`` large there. Two measurements tell whether this matters:

* :func:`bound_weight_statistics` (training data, the sweep's sidecars): the
  share of samples with an action at a bound, the share of the sample's
  ``sum_j |dJ/du0_j|_eff`` that the zero rows drop there, and the mean
  ``ours`` window weight ``w = sum_{k<p, i} S_hat[k, i]^2`` (positions, the
  objective's states) at those samples relative to the others. ``ours_avg``
  gives every window the same S, so for it the ratio is 1 by construction.
* :func:`validation_split` (validation environments): the environment-paired
  ratio of two weightings, each run read at its selected checkpoint's
  validation costs, separately on the validation environments where the
  simulator's exact model is torque-bound
  (:data:`~whatmatters.experiment.floor.BOUND_THRESHOLD`) and on the others.

Neither reads the evaluation environments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from whatmatters.experiment.floor import BOUND_THRESHOLD
from whatmatters.experiment.statistics import PairedRatio, paired_ratio
from whatmatters.sensitivity.batch import SIDECAR, load_sidecar

__all__ = ["bound_weight_statistics", "bounds_markdown", "selected_validation_costs", "validation_split"]


def bound_weight_statistics(bag_dir: str | Path, rollouts: list[int], n_states: int = 7) -> dict[str, Any]:
    """The ``ours`` weights at samples with an action at a torque bound (module docstring).

    Args:
        bag_dir: Folder of bags with sensitivity sidecars (the sweep's data).
        rollouts: Rollout lengths p of the window weights.
        n_states: The objective's states, the first ones of x (7: positions).

    Returns:
        ``samples``, ``share_at_bound`` (any joint), ``share_at_bound_per_joint`` (nu,),
        ``eff_share_dropped`` (mean over the bound samples of the bound joints'
        share of ``sum_j |dJ/du0_j|_eff``), ``weight_ratio`` ``{str(p): mean w
        at bound / mean w elsewhere}`` and ``weight_share_at_bound`` ``{str(p):
        the bound samples' share of the summed w}``; with the rows released
        (``ours_action: bound_relaxed``) the same as ``weight_ratio_relaxed`` and
        ``weight_share_at_bound_relaxed`` where every sidecar holds them. Empty
        if the folder has no sidecar.
    """
    s_hat, du, eff, relaxed = [], [], [], []
    for path in sorted(Path(bag_dir).glob(f"*/{SIDECAR}")):
        data = load_sidecar(path.parent)
        ok = data["ok"]
        s_hat.append(data["s_hat"][ok])
        du.append(data["du0_de"][ok])
        eff.append(data["dj_du0_eff"][ok])
        if "du0_de_relaxed" in data:  # sidecars made before it have none
            relaxed.append(np.einsum("sj,sjkn->skn", data["dj_du0_eff"][ok], data["du0_de_relaxed"][ok]))
    if not s_hat:
        return {}
    s, d, e = np.concatenate(s_hat), np.concatenate(du), np.abs(np.concatenate(eff))  # (S, N, nx), (S, nu, N, nx), (S, nu)
    zero_rows = np.abs(d).sum(axis=(2, 3)) == 0  # (S, nu): u0 at a bound
    bound = zero_rows.any(axis=1)  # (S,)
    dropped = (e * zero_rows).sum(1) / np.maximum(e.sum(1), 1e-300)  # (S,)
    out: dict[str, Any] = {
        "samples": int(len(s)),
        "share_at_bound": float(bound.mean()),
        "share_at_bound_per_joint": zero_rows.mean(0).tolist(),
        "eff_share_dropped": float(dropped[bound].mean()) if bound.any() else float("nan"),
    }
    variants = {"": s, "_relaxed": np.concatenate(relaxed)} if len(relaxed) == len(s_hat) else {"": s}
    for suffix, values in variants.items():
        ratios, shares = {}, {}
        for p in rollouts:
            w = (values[:, :p, :n_states] ** 2).sum(axis=(1, 2))  # (S,)
            ratios[str(p)] = float(w[bound].mean() / w[~bound].mean()) if bound.any() and (~bound).any() else float("nan")
            shares[str(p)] = float(w[bound].sum() / w.sum()) if w.sum() > 0 else float("nan")
        out[f"weight_ratio{suffix}"], out[f"weight_share_at_bound{suffix}"] = ratios, shares
    return out


def selected_validation_costs(run: dict[str, Any]) -> dict[str, float]:
    """A run's validation J_e at its selected epoch (empty for runs made without validation)."""
    epoch = (run.get("selected") or {}).get("epoch")
    if epoch is None:
        return {}
    return {str(k): float(v) for k, v in run["epochs"][epoch - 1]["validation"]["j_track_per_env"].items()}


def validation_split(
    results: list[dict[str, Any]], weighting: str, reference: str, p: int, exact_bound: dict[str, float], threshold: float = BOUND_THRESHOLD
) -> dict[str, PairedRatio]:
    """``weighting`` against ``reference`` at ``p`` on the validation environments, split by torque-boundness.

    Args:
        results: Finished runs (``result.json``).
        weighting: The weighting compared.
        reference: The weighting it is compared with.
        p: Rollout length.
        exact_bound: Validation environment -> the exact model's share of steps with a torque at its bound.
        threshold: Share above which an environment is torque-bound.

    Returns:
        ``{"bound": PairedRatio, "free": PairedRatio}``; a group without
        environments (or without runs of both weightings) is left out.
    """

    def costs(w: str) -> list[dict[str, float]]:
        return [selected_validation_costs(r) for r in sorted(results, key=lambda r: r["seed"]) if r["weighting"] == w and r["p"] == p]

    a, b = [c for c in costs(weighting) if c], [c for c in costs(reference) if c]
    if not a or not b:
        return {}
    envs = set.intersection(*(set(c) for c in a + b)) & set(exact_bound)
    out = {}
    for name, group in (("bound", {e for e in envs if exact_bound[e] > threshold}), ("free", {e for e in envs if exact_bound[e] <= threshold})):
        keys = sorted(group)
        if keys:
            out[name] = paired_ratio(np.array([[c[e] for e in keys] for c in a]), np.array([[c[e] for e in keys] for c in b]))
    return out


def _weights_text(weights: dict[str, Any], suffix: str) -> str:
    ratio = ", ".join(f"p = {p}: {v:.3g}" for p, v in weights[f"weight_ratio{suffix}"].items())
    share = ", ".join(f"p = {p}: {100 * v:.2f} %" for p, v in weights[f"weight_share_at_bound{suffix}"].items())
    return f"{ratio}; their share of the summed weight: {share}"


def bounds_markdown(results: list[dict[str, Any]], weights: dict[str, Any], exact_bound: dict[str, float], rollouts: list[int]) -> list[str]:
    """The report's section on torque bounds (empty without the training data's statistics or the validation floor)."""
    lines: list[str] = []
    if weights and weights["share_at_bound"] == 0:
        lines += [f"Training data ({weights['samples']} samples): no sample has an action at a torque bound.", ""]
    elif weights:
        joints = ", ".join(f"joint {j + 1}: {100 * v:.1f} %" for j, v in enumerate(weights["share_at_bound_per_joint"]) if v > 0)
        lines += [
            f"Training data ({weights['samples']} samples): {100 * weights['share_at_bound']:.1f} % have an action at a torque bound"
            + (f" ({joints})" if joints else "")
            + f"; there the zero rows of du0/de drop on average {100 * weights['eff_share_dropped']:.0f} % of the sample's sum of |dJ/du0|_eff."
            f" Mean `ours` window weight at those samples relative to the others (`ours_avg`: 1 by construction): {_weights_text(weights, '')}.",
            "",
        ]
        if "weight_ratio_relaxed" in weights:
            lines += [f"With those rows released (`ours_action: bound_relaxed`): {_weights_text(weights, '_relaxed')}.", ""]
    bound = sorted(e for e, v in exact_bound.items() if v > BOUND_THRESHOLD)
    rows = []
    for ref in ("stand", "ours_avg"):
        for p in rollouts:
            split = validation_split(results, "ours", ref, p, exact_bound)
            if split:
                cells = ["—" if (c := split.get(g)) is None else f"{c.ratio:.3f} [{c.low:.3f}, {c.high:.3f}], {c.wins} of {c.envs}" for g in ("bound", "free")]
                rows.append(f"| ours vs {ref} | {p} | " + " | ".join(cells) + " |")
    if exact_bound and rows:
        lines += [
            f"Validation environments: {len(bound)} of {len(exact_bound)} are torque-bound (the exact model has a torque at its bound in more than"
            f" {100 * BOUND_THRESHOLD:g} % of the steps{': ' + ', '.join(bound) if bound else ''}). Environment-paired ratio at the selected"
            " checkpoints' validation costs [95 % bootstrap interval], and wins:",
            "",
            "| comparison | p | torque-bound environments | the others |",
            "|---|---|---|---|",
            *rows,
            "",
        ]
    if not lines:
        return []
    return ["## Torque bounds: what the `ours` weights do there (training and validation data only)", "", "Definitions: `whatmatters.experiment.bounds`.", "", *lines]
