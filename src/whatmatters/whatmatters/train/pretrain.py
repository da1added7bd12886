"""Pretraining the learned model on torque residuals (CaDeLaC style).

For each transition ``x_t --u_t--> x_{t+1}`` the model's inverse dynamics at
the interval's midpoint, with the interval's mean acceleration, must explain
the applied torque::

    q_m = (q_t + q_{t+1}) / 2,  qd_m = (qd_t + qd_{t+1}) / 2,  qdd = (qd_{t+1} - qd_t) / dt
    loss = mean_j ((ID_model(q_m, qd_m, qdd; z_t) - u_t)_j / sigma_j)^2

with ``z_t`` the context from the history window before step t and ``sigma_j``
the standard deviation of the nominal model's torque residual per joint (the
per-joint normalisation). The midpoint makes the finite-difference
acceleration second-order accurate. Adam, seeded, checkpointed atomically
after every epoch, resumable.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm import tqdm

from whatmatters.config import YamlConfig
from whatmatters.data.dataset import TransitionDataset
from whatmatters.dynamics.learned import LearnedConfig, LearnedDynamics
from whatmatters.io import atomic_torch_save

__all__ = ["PretrainConfig", "PretrainResult", "pretrain"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainConfig(YamlConfig):
    """Pretraining settings (defaults as in the CaDeLaC reference).

    Attributes:
        epochs: Passes over the training transitions.
        batch_size: Transitions per step.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        seed: Seed of initialisation, split and shuffling.
        val_fraction: Fraction of episodes held out for validation.
    """

    yaml_file: ClassVar[str] = "pretrain.yaml"

    epochs: int = 200
    batch_size: int = 1024
    lr: float = 5e-4
    weight_decay: float = 1e-4
    seed: int = 0
    val_fraction: float = 0.1



@dataclass(frozen=True)
class PretrainResult:
    """Outcome of :func:`pretrain`.

    Attributes:
        path: The checkpoint written (best validation epoch).
        best_epoch: That epoch (1-based).
        val_loss: Its validation loss (normalised torque MSE).
        train_loss: Final training loss.
        samples_per_s: Training throughput, transitions per second.
        wall_s: Wall time of this call, s.
    """

    path: Path
    best_epoch: int
    val_loss: float
    train_loss: float
    samples_per_s: float
    wall_s: float


def _tensors(data: TransitionDataset) -> dict[str, torch.Tensor]:
    x, xn = data.x, data.x_next
    return {
        "q": torch.as_tensor(0.5 * (x[:, :7] + xn[:, :7]), dtype=torch.float32),
        "qd": torch.as_tensor(0.5 * (x[:, 7:] + xn[:, 7:]), dtype=torch.float32),
        "qdd": torch.as_tensor((xn[:, 7:] - x[:, 7:]) / data.dt, dtype=torch.float32),
        "u": torch.as_tensor(data.u, dtype=torch.float32),
        "w": torch.as_tensor(data.windows, dtype=torch.float32),
    }


def torque_loss(model: LearnedDynamics, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Normalised torque-residual MSE of a batch."""
    z = model.encoder(batch["w"])
    tau = model.inverse_dynamics(batch["q"], batch["qd"], batch["qdd"], z)
    return (((tau - batch["u"]) / model.torque_scale) ** 2).mean()


def _evaluate(model: LearnedDynamics, data: dict[str, torch.Tensor], batch: int) -> float:
    n = data["q"].shape[0]
    total = 0.0
    with torch.no_grad():
        for i in range(0, n, batch):
            part = {k: v[i : i + batch] for k, v in data.items()}
            total += float(torque_loss(model, part)) * part["q"].shape[0]
    return total / max(n, 1)


def init_normalization(model: LearnedDynamics, data: TransitionDataset) -> None:
    """Sets the encoder's feature normalisation and the per-joint torque scale from data."""
    feats = data.windows[:, -1, :]  # each transition appears once as the newest entry
    model.encoder.set_normalization(feats.mean(0), feats.std(0))
    model.torque_scale.data = torch.as_tensor(np.maximum(feats[:, 14:].std(0), 1e-3), dtype=model.torque_scale.dtype)


def pretrain(
    data: TransitionDataset,
    out: str | Path,
    cfg: PretrainConfig | None = None,
    model_cfg: LearnedConfig | None = None,
    progress: bool = True,
    metadata: dict[str, Any] | None = None,
) -> PretrainResult:
    """Trains a fresh model (or resumes an interrupted run) and writes the best checkpoint.

    Args:
        data: Transitions (all episodes; a validation split is held out by episode).
        out: Checkpoint path. Training state goes to ``<out>.state``.
        cfg: Settings.
        model_cfg: Architecture.
        progress: Show a progress bar on stderr.
        metadata: Extra metadata stored in the checkpoint.
    """
    cfg = cfg or PretrainConfig()
    out = Path(out)
    state_path = out.with_name(out.name + ".state")
    start_time = time.perf_counter()
    torch.manual_seed(cfg.seed)
    train_set, val_set = data.split_by_episode(cfg.val_fraction, cfg.seed)
    model = LearnedDynamics(model_cfg or LearnedConfig(dt=data.dt))
    init_normalization(model, train_set)
    model.float()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    first_epoch, best = 0, {"loss": float("inf"), "epoch": 0, "state": None}
    history: list[dict[str, float]] = []
    if state_path.is_file():
        saved = torch.load(state_path, map_location="cpu", weights_only=False)
        if saved.get("cfg") == asdict(cfg):
            model.load_state_dict(saved["model"])
            opt.load_state_dict(saved["opt"])
            first_epoch, best, history = saved["epoch"], saved["best"], saved["history"]
            log.info("resuming pretraining from %s at epoch %d", state_path, first_epoch)
        else:
            log.warning("ignoring %s: it belongs to other settings", state_path)
    tr, va = _tensors(train_set), _tensors(val_set)
    n = tr["q"].shape[0]
    bar = tqdm(range(first_epoch, cfg.epochs), desc="pretrain", unit="epoch", disable=not progress, initial=first_epoch, total=cfg.epochs)
    trained, train_time = 0, 0.0
    train_loss = float("nan")
    for epoch in bar:
        t0 = time.perf_counter()
        perm = torch.as_tensor(np.random.default_rng([cfg.seed, epoch]).permutation(n))
        total = 0.0
        for i in range(0, n, cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            loss = torque_loss(model, {k: v[idx] for k, v in tr.items()})
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        train_time += time.perf_counter() - t0
        trained += n
        train_loss = total / n
        val_loss = _evaluate(model, va, 4096) if va["q"].shape[0] else train_loss
        history.append({"epoch": epoch + 1, "train": train_loss, "val": val_loss})
        if val_loss < best["loss"]:
            best = {"loss": val_loss, "epoch": epoch + 1, "state": {k: v.clone() for k, v in model.state_dict().items()}}
        bar.set_postfix(train=f"{train_loss:.4f}", val=f"{val_loss:.4f}", best=best["epoch"])
        atomic_torch_save(
            {"cfg": asdict(cfg), "model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch + 1, "best": best, "history": history},
            state_path,
        )
    bar.close()
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    model.double()
    model.save(
        out,
        kind="pretrained",
        pretrain=asdict(cfg),
        best_epoch=int(best["epoch"]),
        val_loss=float(best["loss"]),
        history=history,
        train_samples=int(n),
        **(metadata or {}),
    )
    return PretrainResult(out, int(best["epoch"]), float(best["loss"]), train_loss, trained / max(train_time, 1e-9), time.perf_counter() - start_time)
