"""Choosing each run's checkpoint on the validation environments, never on the evaluation set.

After every epoch a run's model is evaluated in closed loop on the
validation environments (``ExperimentConfig.select_envs``). The selected
checkpoint is the epoch with the lowest **geometric mean of J_e** over those
environments: each environment counts with equal weight, as in the
environment-paired statistics of the report, so one heavy-payload
environment cannot decide the choice alone. Ties go to the earliest epoch; an
epoch with a non-finite or non-positive J_e in any environment (a
closed-loop failure) is never preferred to one without.

The functions here see only the validation records; the sweep evaluates the
selected checkpoint on the evaluation environments afterwards, once
(:mod:`whatmatters.experiment.sweep`). Functions that read a run's result
for the report (:func:`selected_costs`) fall back to the last epoch for runs
made before the selection existed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["selected_bound_shares", "selected_costs", "selection_score", "select_epoch"]


def selection_score(validation: Mapping[str, float]) -> float:
    """Geometric mean of the J_e of one epoch over the validation environments.

    Args:
        validation: Environment -> J_track of the epoch's model.

    Returns:
        The score (lower is better); ``inf`` if any J_e is not finite and positive.

    Raises:
        ValueError: If ``validation`` is empty.
    """
    if not validation:
        raise ValueError("selection needs the J_track of at least one validation environment")
    values = [float(v) for v in validation.values()]
    if not all(math.isfinite(v) and v > 0 for v in values):
        return math.inf
    return math.exp(sum(math.log(v) for v in values) / len(values))


def select_epoch(validation: Sequence[Mapping[str, float]]) -> int:
    """The selected epoch (1-based) of a run from its per-epoch validation costs.

    Args:
        validation: Per epoch (in order), environment -> J_track on the
            validation environments. Every epoch must cover the same environments.

    Raises:
        ValueError: If there is no epoch or the epochs cover different environments.
    """
    if not validation:
        raise ValueError("no epoch to select from")
    envs = set(validation[0])
    for i, v in enumerate(validation, start=1):
        if set(v) != envs:
            raise ValueError(f"epoch {i} is evaluated on other validation environments ({sorted(v)}) than epoch 1 ({sorted(envs)})")
    scores = [selection_score(v) for v in validation]
    return min(range(len(scores)), key=lambda i: (scores[i], i)) + 1


def _selected_or_last(run: Mapping[str, Any], key: str) -> dict[str, float]:
    record = run.get("selected") or run["epochs"][-1]
    return {str(k): float(v) for k, v in (record.get(key) or {}).items()}


def selected_costs(run: Mapping[str, Any]) -> dict[str, float]:
    """J_track per evaluation environment of a run's selected checkpoint (its last epoch for runs without a selection)."""
    return _selected_or_last(run, "j_track_per_env")


def selected_bound_shares(run: Mapping[str, Any]) -> dict[str, float]:
    """Share of steps with a torque at its bound per evaluation environment of a run's selected checkpoint."""
    return _selected_or_last(run, "bound_share_per_env")
