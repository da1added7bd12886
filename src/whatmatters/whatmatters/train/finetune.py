"""Fine-tuning with the weighted multi-step prediction loss (eq. 1): one trainer, every weighting.

For windows (x_t, u_t..u_{t+p-1}, x_{t+1..t+p}) and weights S (M or 1, p, nx)::

    x_hat = RK4 rollout of the model from x_t under the applied torques (context from the history before t)
    loss  = mean over the batch of  sum_{k, i} (S_{k,i} (x_hat_{t+k} - x_{t+k})_i)^2 / (p * n_obj)

(n_obj: the number of states in the objective; the division keeps the scale
of the learning rate the same for every p and objective). Every variant starts
from the same checkpoint with the same optimizer and, for a given seed, the
same data order. After each epoch the checkpoint and the training state are
written atomically and an optional callback (the closed-loop evaluation) runs;
its result is stored in the state, so an interrupted run resumes after its last
finished epoch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from whatmatters.config import YamlConfig
from whatmatters.data.dataset import ACTION_WEIGHTS
from whatmatters.dynamics.learned import LearnedDynamics
from whatmatters.errors import ConfigError
from whatmatters.io import atomic_torch_save
from whatmatters.train.weighting import OBJECTIVES, OURS_SCALINGS, RolloutWindows

__all__ = ["FinetuneConfig", "finetune", "rollout_loss", "tensors"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneConfig(YamlConfig):
    """Fine-tuning settings (``config/finetune.yaml``).

    Attributes:
        epochs: Passes over the windows.
        batch_size: Windows per step.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        objective: ``position`` (paper default), ``velocity`` or ``both``.
        train_encoder: Also fine-tune the context encoder; False (default) fine-tunes
            only the residual (chosen on the validation environments, ``docs/experiments.md``).
        ours_scaling: How ``ours`` standardises |S_hat|: ``global`` (one
            dataset constant, the default) or ``per_state``
            (:func:`~whatmatters.train.weighting.weights`).
        ours_action: How S_hat weighs each joint's action: ``effective``
            (|dJ/du0|_eff, eq. 5, the default), ``per_joint`` (each joint's
            divided by its dataset mean; :func:`~whatmatters.data.dataset.per_joint_sensitivities`)
            or ``bound_relaxed`` (eq. 5 with the du0/de rows of u_0's active
            bounds taken with the bound released; :func:`~whatmatters.data.dataset.load_transitions`).
    """

    yaml_file: ClassVar[str] = "finetune.yaml"

    epochs: int = 10
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 0.0
    objective: str = "position"
    train_encoder: bool = False
    ours_scaling: str = "global"
    ours_action: str = "effective"

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"finetune.objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.ours_scaling not in OURS_SCALINGS:
            raise ConfigError(f"finetune.ours_scaling must be one of {', '.join(OURS_SCALINGS)}, got {self.ours_scaling!r}")
        if self.ours_action not in ACTION_WEIGHTS:
            raise ConfigError(f"finetune.ours_action must be one of {', '.join(ACTION_WEIGHTS)}, got {self.ours_action!r}")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0 or self.weight_decay < 0:
            raise ConfigError(f"finetune: epochs, batch_size and lr must be positive, weight_decay >= 0 ({self})")


def rollout_loss(model: Any, batch: dict[str, torch.Tensor], dt: float) -> torch.Tensor:
    """Weighted p-step loss of a batch (keys x0, u, x_true, history, s; see module docstring)."""
    z = model.encoder(batch["history"])
    x_hat = model.rollout(batch["x0"], batch["u"], z, dt)
    s = batch["s"]
    n_obj = torch.count_nonzero(s.reshape(-1, s.shape[-1]).abs().sum(0)).clamp(min=1)
    return ((s * (x_hat - batch["x_true"])) ** 2).sum(dim=(1, 2)).mean() / (x_hat.shape[1] * n_obj)


def tensors(win: RolloutWindows, s: np.ndarray, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The windows and weights as the tensors :func:`rollout_loss` takes (keys x0, u, x_true, history, s)."""
    f = dtype
    return {
        "x0": torch.as_tensor(win.x0, dtype=f),
        "u": torch.as_tensor(win.u, dtype=f),
        "x_true": torch.as_tensor(win.x_true, dtype=f),
        "history": torch.as_tensor(win.history, dtype=f),
        "s": torch.as_tensor(s, dtype=f),
    }


def finetune(
    base: str | Path,
    win: RolloutWindows,
    s: np.ndarray,
    out_dir: str | Path,
    cfg: FinetuneConfig,
    seed: int,
    dt: float,
    on_epoch: Callable[[Any, int], dict[str, Any]] | None = None,
    load: Callable[[Path], Any] = LearnedDynamics.load,
    dtype: torch.dtype = torch.float32,
) -> list[dict[str, Any]]:
    """Fine-tunes ``base`` on the windows with weights ``s``; resumable.

    Any learned model with the arm's training interface works (``residual``,
    ``encoder``, ``rollout``, ``save``, a loader): the arm's by default, the
    car's with its loader.

    Args:
        base: The starting checkpoint (the same for every variant).
        win: Training windows.
        s: Weights, (M, p, nx) or (1, p, nx).
        out_dir: Run folder: ``model.pt`` (latest epoch) and ``state.pt``.
        cfg: Settings.
        seed: Seed of the data order (identical across weightings).
        dt: Control period of the data, s.
        on_epoch: Called after each epoch with the model (float64) and the
            epoch (1-based); its result is stored in the history.
        load: Reads a checkpoint of the model (``base`` and nothing else).
        dtype: Training precision (float32 for the arm; the car's small model trains in float64).

    Returns:
        Per epoch: ``epoch``, ``train_loss``, ``seconds`` and the callback's keys.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state_path, model_path = out_dir / "state.pt", out_dir / "model.pt"
    if s.shape[0] not in (1, len(win)) or s.shape[1:] != win.x_true.shape[1:]:
        raise ValueError(f"weights of shape {s.shape} do not match {len(win)} windows of shape {win.x_true.shape[1:]}")
    torch.manual_seed(seed)
    model = load(Path(base))
    model.to(dtype)
    params = list(model.residual.parameters()) + (list(model.encoder.parameters()) if cfg.train_encoder else [])
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    history: list[dict[str, Any]] = []
    signature = {"cfg": asdict(cfg), "seed": seed, "windows": len(win), "p": win.p, "base": str(base)}
    if state_path.is_file():
        saved = torch.load(state_path, map_location="cpu", weights_only=False)
        if saved.get("signature") == signature:
            model.load_state_dict(saved["model"])
            opt.load_state_dict(saved["opt"])
            history = saved["history"]
            log.info("resuming %s after epoch %d", out_dir, len(history))
        else:
            log.warning("ignoring %s: it belongs to other settings", state_path)
    data = tensors(win, s, dtype)
    per_sample = s.shape[0] > 1
    n = len(win)
    for epoch in range(len(history), cfg.epochs):
        t0 = time.perf_counter()
        model.train()
        perm = torch.as_tensor(np.random.default_rng([seed, epoch]).permutation(n))
        total = 0.0
        for i in range(0, n, cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            batch = {k: v[idx] if (k != "s" or per_sample) else v for k, v in data.items()}
            loss = rollout_loss(model, batch, dt)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        if not np.isfinite(total):
            raise FloatingPointError(f"{out_dir}: the training loss became non-finite in epoch {epoch + 1}")
        record: dict[str, Any] = {"epoch": epoch + 1, "train_loss": total / n, "seconds": time.perf_counter() - t0}
        model.double()
        model.save(model_path, kind="finetuned", base=str(base), epoch=epoch + 1, seed=seed, finetune=asdict(cfg))
        if on_epoch is not None:
            model.eval()
            record.update(on_epoch(model, epoch + 1))
        model.to(dtype)
        history.append(record)
        atomic_torch_save({"signature": signature, "model": model.state_dict(), "opt": opt.state_dict(), "history": history}, state_path)
        log.info("%s epoch %d: loss %.4g %s", out_dir.name, epoch + 1, record["train_loss"], {k: v for k, v in record.items() if k == "j_track_mean"})
    return history
