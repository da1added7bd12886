"""One fine-tuning job of the car on recorded bags: episodes, windows, weighting, :func:`finetune`, atomic checkpoint.

The car's counterpart of :func:`whatmatters.train.job.run_job`, with the
settings of the car's experiment (``config/car/experiment.yaml``: epochs,
rate, batch, objective) and the same weightings. The ROS ``trainer`` node runs
it for ``system: car``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from whatmatters.car.bags import read_car_bags
from whatmatters.car.data import car_windows
from whatmatters.car.experiment import CarExperimentConfig, CarSystem, car_base_checkpoint
from whatmatters.car.learned import CarLearnedModel
from whatmatters.data.bags import find_bags
from whatmatters.errors import ConfigError
from whatmatters.io import atomic_write_bytes
from whatmatters.train.finetune import finetune
from whatmatters.train.weighting import WEIGHTINGS, weights

__all__ = ["CarFinetuneJob", "run_car_job"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CarFinetuneJob:
    """What to fine-tune and how.

    Attributes:
        base: Starting checkpoint: ``base`` (the packaged car model) or a path.
        weighting: One of :data:`whatmatters.train.weighting.WEIGHTINGS`.
        p: Rollout length (control steps).
        seed: Seed of the data order.
        epochs: Epochs (0: the experiment's ``finetune_epochs``).
        lr: Learning rate (0: the experiment's ``finetune_lr``).
    """

    base: str = "base"
    weighting: str = "ours"
    p: int = 4
    seed: int = 0
    epochs: int = 0
    lr: float = 0.0

    def __post_init__(self) -> None:
        if self.weighting not in WEIGHTINGS:
            raise ConfigError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {self.weighting!r}")
        if self.p < 1:
            raise ConfigError(f"rollout length p must be >= 1, got {self.p}")
        if self.epochs < 0 or self.lr < 0:
            raise ConfigError(f"epochs and lr must be >= 0, got {self.epochs} and {self.lr}")

    @property
    def base_path(self) -> str:
        """The starting checkpoint's path."""
        return str(car_base_checkpoint()) if self.base == "base" else self.base


def run_car_job(
    job: CarFinetuneJob,
    data: str | Path,
    out: str | Path,
    bags: Sequence[str | Path] | None = None,
    run_dir: str | Path | None = None,
    on_epoch: Callable[[CarLearnedModel, int], dict[str, Any]] | None = None,
    system: CarSystem | None = None,
) -> dict[str, Any]:
    """Fine-tunes on car bags and writes the final checkpoint atomically to ``out``.

    Args:
        job: The settings.
        data: Folder of bags (damaged bags are skipped with a warning naming them).
        out: Checkpoint to write (``.pt``), replaced atomically.
        bags: Only these bag folders (default: every bag below ``data``).
        run_dir: Training state folder (resumable); ``<out>.run`` if None.
        on_epoch: Passed to :func:`finetune`.
        system: The car (default: built from ``config/car/experiment.yaml``).

    Returns:
        ``checkpoint``, ``bags``, ``skipped`` (paths), ``windows``, ``epochs``,
        ``train_loss`` (per epoch), ``wall_s``.

    Raises:
        ConfigError: If the bags make no training data for this job (none readable, no
            sensitivities for ``ours``, too short), or the base checkpoint cannot be read, naming the cause.
    """
    start = time.perf_counter()
    cfg = CarExperimentConfig.from_yaml()
    system = system or CarSystem(cfg)
    model = system.model(job.base_path)
    if not isinstance(model, CarLearnedModel):
        raise ConfigError(f"the car's fine-tuning starts from a learned checkpoint, not '{job.base}'")
    paths = [Path(b) for b in bags] if bags is not None else find_bags(data, complete_only=True)
    records, skipped = read_car_bags(paths)
    if not records:
        raise ConfigError(f"no readable car bag among {len(paths)} in {data}")
    if job.weighting in ("ours", "ours_avg") and any(r.s_hat is None for r in records):
        missing = sorted({str(r.path) for r in records if r.s_hat is None})
        raise ConfigError(f"weighting {job.weighting} needs S_hat (/mpc/sensitivity); none in {', '.join(missing)}")
    ft = cfg.finetune_config(**({"epochs": job.epochs} if job.epochs else {}), **({"lr": job.lr} if job.lr else {}))
    try:
        win = car_windows(records, model, job.p)
        q = np.diag(system.mpc.state_weight)
        s = weights(job.weighting, win, ft.objective, q, ft.ours_scaling, system.nominal.objective_groups)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    out = Path(out)
    run_dir = Path(run_dir) if run_dir is not None else out.with_name(out.name + ".run")
    history = finetune(job.base_path, win, s, run_dir, ft, job.seed, records[0].dt, on_epoch, load=system.load, dtype=torch.float64)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes((run_dir / "model.pt").read_bytes(), out)
    used = sorted({str(r.path) for r in records})
    log.info("car: fine-tuned %s on %d windows of %d bags: %s", job.weighting, len(win), len(used), out)
    return {
        "checkpoint": str(out),
        "bags": used,
        "skipped": [str(b) for b, _ in skipped],
        "windows": len(win),
        "epochs": len(history),
        "train_loss": [round(h["train_loss"], 6) for h in history],
        "wall_s": round(time.perf_counter() - start, 2),
    }
