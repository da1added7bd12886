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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PairedRatio", "paired_ratio"]


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
    j, j_ref = np.asarray(j, dtype=float), np.asarray(j_ref, dtype=float)
    if j.ndim != 2 or j_ref.ndim != 2 or j.shape[1] != j_ref.shape[1] or min(j.shape + j_ref.shape) == 0:
        raise ValueError(f"J must be (seeds, environments) for both, with the same environments; got {j.shape} and {j_ref.shape}")
    if not (np.all(j > 0) and np.all(j_ref > 0)):
        raise ValueError("J_track must be positive for a ratio")
    rng = np.random.default_rng(seed)
    (s, e), s_ref = j.shape, j_ref.shape[0]
    envs = rng.integers(0, e, (samples, e))
    seeds, seeds_ref = rng.integers(0, s, (samples, s)), rng.integers(0, s_ref, (samples, s_ref))
    boot = _ratio(j[seeds[:, :, None], envs[:, None, :]], j_ref[seeds_ref[:, :, None], envs[:, None, :]])  # (samples,)
    tail = 50.0 * (1.0 - level)
    low, high = np.percentile(boot, [tail, 100.0 - tail])
    wins = int(np.sum(j.mean(axis=0) < j_ref.mean(axis=0)))
    return PairedRatio(float(_ratio(j, j_ref)), float(low), float(high), wins, e)
