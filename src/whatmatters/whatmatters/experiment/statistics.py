"""Environment-paired comparison of two weightings, with a bootstrap confidence interval.

For a weighting ``w`` and a reference (``stand``) at the same rollout length,
with J_track per seed and evaluation environment (last epoch):

* the **paired ratio** is the geometric mean over environments ``e`` of
  ``mean_s J_e(w, s) / mean_s J_e(ref, s)``: each environment normalised on
  its own (so a heavy-payload environment does not dominate, unlike the
  paper's mean-J normalisation), the seeds averaged first;
* its **95 % interval** is the percentile bootstrap over environments and
  seeds: each replicate draws the environments with replacement and, for
  each of the two weightings, its seeds with replacement, and recomputes the
  ratio (seeded: the same numbers every time);
* the **wins** are the environments where ``w``'s seed-averaged J_e is below
  the reference's.

A ratio below 1 means ``w`` tracks better than the reference; an interval
that contains 1 says the data cannot tell them apart.

Two more statistics use the same bootstrap:

* :func:`gap_closed`: the fraction of the base model's model-induced gap
  ``sum_e (J_e(base) - J_e(exact))`` that a weighting closes, with the
  simulator's exact model as the achievable floor;
* :func:`ratio_change`: how the paired ratio changes between two rollout
  lengths (``ratio at b / ratio at a``; below 1: the gain grows from a to b).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Interval", "PairedRatio", "bootstrap", "gap_closed", "paired_ratio", "ratio_change"]


@dataclass(frozen=True)
class Interval:
    """An estimate with its percentile-bootstrap interval.

    Attributes:
        value: The estimate on the data.
        low: Lower end of the interval.
        high: Upper end of the interval.
    """

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class PairedRatio:
    """The comparison of :func:`paired_ratio`.

    Attributes:
        ratio: Geometric mean over environments of the seed-averaged J_e ratios.
        low: Lower end of the bootstrap interval.
        high: Upper end of the bootstrap interval.
        wins: Environments where the weighting's seed-averaged J_e is below the reference's.
        envs: Environments compared.
    """

    ratio: float
    low: float
    high: float
    wins: int
    envs: int


def _ratio(j: np.ndarray, j_ref: np.ndarray) -> np.ndarray:
    """Geometric mean over the last axis of the seed-averaged ratios: j (..., S, E), j_ref (..., S_ref, E) -> (...)."""
    return np.exp(np.mean(np.log(j.mean(axis=-2) / j_ref.mean(axis=-2)), axis=-1))


def _check(groups: Sequence[np.ndarray]) -> list[np.ndarray]:
    arrays = [np.asarray(g, dtype=float) for g in groups]
    if not arrays or any(a.ndim != 2 or min(a.shape) == 0 or a.shape[1] != arrays[0].shape[1] for a in arrays):
        raise ValueError(f"J must be (seeds, environments) for every group, with the same environments; got {[a.shape for a in arrays]}")
    if not all(np.all(np.isfinite(a)) for a in arrays):
        raise ValueError("J_track must be finite")
    return arrays


def bootstrap(
    groups: Sequence[np.ndarray],
    statistic: Callable[[list[np.ndarray]], np.ndarray],
    samples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """A statistic of paired groups with its percentile-bootstrap interval over environments and seeds.

    Each replicate draws the environments with replacement (the same draw for
    every group: the pairing) and each group's seeds with replacement.

    Args:
        groups: J per seed and environment of each group, (S_g, E) with the same E;
            a deterministic quantity (one value per environment) is a (1, E) group.
        statistic: Maps the groups, each (..., S_g, E), to (...); it must
            broadcast over leading axes.
        samples: Bootstrap replicates.
        level: Coverage of the interval.
        seed: Seed of the bootstrap's generator.

    Raises:
        ValueError: For groups of other shapes or with non-finite values.
    """
    arrays = _check(groups)
    rng = np.random.default_rng(seed)
    e = arrays[0].shape[1]
    envs = rng.integers(0, e, (samples, e))
    drawn = [a[rng.integers(0, a.shape[0], (samples, a.shape[0]))[:, :, None], envs[:, None, :]] for a in arrays]
    boot = np.asarray(statistic(drawn))  # (samples,)
    tail = 50.0 * (1.0 - level)
    low, high = np.percentile(boot, [tail, 100.0 - tail])
    return Interval(float(statistic(arrays)), float(low), float(high))


def gap_closed(j: np.ndarray, j_base: np.ndarray, j_exact: np.ndarray, **kwargs: float) -> Interval:
    """The fraction of the base model's gap to the exact model that ``j`` closes.

    ``1 - sum_e (mean_s J_e - J_e(exact)) / sum_e (J_e(base) - J_e(exact))``: 1 is
    the exact model's cost, 0 the base model's, below 0 worse than the base model.

    Args:
        j: J of the weighting per seed and environment, (S, E).
        j_base: The base model's J per environment, (E,) or (1, E).
        j_exact: The exact model's J per environment, (E,) or (1, E).
        **kwargs: ``samples``, ``level``, ``seed`` of :func:`bootstrap`.

    Raises:
        ValueError: For mismatched shapes, or a base model no worse than the exact one in total.
    """
    groups = [j, np.atleast_2d(j_base), np.atleast_2d(j_exact)]
    arrays = _check(groups)
    if not np.sum(arrays[1] - arrays[2]) > 0:
        raise ValueError("the base model's J is not above the exact model's in total: no gap to close")

    def stat(g: list[np.ndarray]) -> np.ndarray:
        gap = (g[0].mean(axis=-2) - g[2][..., 0, :]).sum(axis=-1)
        base = (g[1][..., 0, :] - g[2][..., 0, :]).sum(axis=-1)
        return 1.0 - gap / np.where(base > 0, base, np.nan)

    return bootstrap(arrays, stat, **kwargs)  # type: ignore[arg-type]


def ratio_change(j_a: np.ndarray, ref_a: np.ndarray, j_b: np.ndarray, ref_b: np.ndarray, **kwargs: float) -> Interval:
    """The paired ratio at b divided by the paired ratio at a (e.g. p = 12 against p = 1), environments paired.

    Args:
        j_a: J of the weighting at a, (S, E) > 0.
        ref_a: J of the reference at a, (S_ref, E) > 0.
        j_b: J of the weighting at b, (S, E) > 0.
        ref_b: J of the reference at b, (S_ref, E) > 0.
        **kwargs: ``samples``, ``level``, ``seed`` of :func:`bootstrap`.

    Raises:
        ValueError: For mismatched shapes or a J that is not positive.
    """
    arrays = _check([j_a, ref_a, j_b, ref_b])
    if not all(np.all(a > 0) for a in arrays):
        raise ValueError("J_track must be positive for a ratio")
    return bootstrap(arrays, lambda g: _ratio(g[2], g[3]) / _ratio(g[0], g[1]), **kwargs)  # type: ignore[arg-type]


def paired_ratio(j: np.ndarray, j_ref: np.ndarray, samples: int = 2000, level: float = 0.95, seed: int = 0) -> PairedRatio:
    """The paired ratio of ``j`` to ``j_ref`` with its bootstrap interval (module docstring).

    Args:
        j: J_track of the weighting per seed and environment, (S, E), > 0.
        j_ref: J_track of the reference per seed and the same environments, (S_ref, E), > 0.
        samples: Bootstrap replicates.
        level: Coverage of the interval.
        seed: Seed of the bootstrap's generator.

    Raises:
        ValueError: For other shapes, no environment or seed, or a J that is not positive.
    """
    j, j_ref = _check([j, j_ref])
    if not (np.all(j > 0) and np.all(j_ref > 0)):
        raise ValueError("J_track must be positive for a ratio")
    got = bootstrap([j, j_ref], lambda g: _ratio(g[0], g[1]), samples, level, seed)
    wins = int(np.sum(j.mean(axis=0) < j_ref.mean(axis=0)))
    return PairedRatio(got.value, got.low, got.high, wins, j.shape[1])
