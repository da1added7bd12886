"""One fine-tuning job on bags: dataset, windows, weighting, :func:`finetune`, atomic checkpoint.

The command line (``whatmatters finetune``) and the ROS ``trainer`` node run
the same job, so the training path exists once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from whatmatters.data.dataset import load_transitions
from whatmatters.dynamics.learned import LearnedDynamics
from whatmatters.dynamics.registry import base_checkpoint
from whatmatters.errors import ConfigError
from whatmatters.io import atomic_write_bytes
from whatmatters.mpc.config import MpcConfig
from whatmatters.train.finetune import FinetuneConfig, finetune
from whatmatters.train.weighting import WEIGHTINGS, make_windows, weights

__all__ = ["FinetuneJob", "run_job"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneJob:
    """What to fine-tune and how.

    Attributes:
        base: Starting checkpoint: ``base`` (the packaged model) or a path.
        weighting: One of :data:`whatmatters.train.weighting.WEIGHTINGS`.
        p: Rollout length (steps).
        seed: Seed of the data order.
        cfg: Optimizer settings (epochs, batch, lr, objective, ...).
    """

    base: str = "base"
    weighting: str = "ours"
    p: int = 4
    seed: int = 0
    cfg: FinetuneConfig = FinetuneConfig()

    def __post_init__(self) -> None:
        if self.weighting not in WEIGHTINGS:
            raise ConfigError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {self.weighting!r}")
        if self.p < 1:
            raise ConfigError(f"rollout length p must be >= 1, got {self.p}")

    @property
    def base_path(self) -> str:
        """The starting checkpoint's path."""
        return str(base_checkpoint()) if self.base == "base" else self.base


def run_job(
    job: FinetuneJob,
    data: str | Path,
    out: str | Path,
    bags: Sequence[str | Path] | None = None,
    run_dir: str | Path | None = None,
    on_epoch: Callable[[LearnedDynamics, int], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Fine-tunes on bags and writes the final checkpoint atomically to ``out``.

    Args:
        job: The settings.
        data: Folder of bags (damaged bags are skipped with a warning naming them).
        out: Checkpoint to write (``.pt``); replaced atomically, so a reader
            never sees a partial file.
        bags: Only these bag folders (default: every bag below ``data``).
        run_dir: Training state folder (resumable); ``<out>.run`` if None.
        on_epoch: Passed to :func:`finetune`.

    Returns:
        ``checkpoint``, ``bags``, ``skipped`` (paths), ``windows``, ``epochs``,
        ``train_loss`` (per epoch), ``wall_s``.

    Raises:
        ConfigError: If the data cannot make a dataset for this job (no bag,
            no sensitivities for ``ours``, too short), naming the cause.
    """
    start = time.perf_counter()
    model = LearnedDynamics.load(job.base_path)
    needs = job.weighting in ("ours", "ours_avg")
    try:
        dataset = load_transitions(data, model.nominal, model.cfg.window, sensitivities=needs, bags=bags)
        win = make_windows(dataset, job.p)
        mpc = MpcConfig.from_yaml()
        s = weights(job.weighting, win, job.cfg.objective, np.asarray(mpc.q_weights + mpc.qd_weights))
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    out = Path(out)
    run_dir = Path(run_dir) if run_dir is not None else out.with_name(out.name + ".run")
    history = finetune(job.base_path, win, s, run_dir, job.cfg, job.seed, dataset.dt, on_epoch)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes((run_dir / "model.pt").read_bytes(), out)
    log.info("fine-tuned %s on %d windows of %d bags: %s", job.weighting, len(win), len(dataset.sources), out)
    return {
        "checkpoint": str(out),
        "bags": [str(b) for b in dataset.sources],
        "skipped": [str(b) for b, _ in dataset.skipped],
        "windows": len(win),
        "epochs": len(history),
        "train_loss": [round(h["train_loss"], 6) for h in history],
        "wall_s": round(time.perf_counter() - start, 2),
    }
