"""Recorded laps of the car: files, their sensitivities, training windows.

An episode file (``.npz``, written atomically) holds the closed loop as the
controller saw it: model states ``x`` (T + 1, 8) (``s`` unwrapped), commands
``u`` (T, 2), the reference each step was solved with ``x_ref`` (T, N + 1, 8),
the control interval and the environment's seed. Its sensitivities are a
sidecar beside it (``<name>.sensitivity.npz``, the keys of
:func:`whatmatters.sensitivity.batch.compute_samples`), computed with the
model the controller ran, by the project's sensitivity code.

A file that cannot be read is skipped with a warning naming it
(:func:`load_episodes`); one that is read but malformed raises
:class:`CarDataError` naming the file and the key.
"""

from __future__ import annotations

import io
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from whatmatters.car.context import car_history_features, car_history_windows
from whatmatters.car.episode import CarEpisode
from whatmatters.car.learned import CarLearnedModel
from whatmatters.car.model import CarModel
from whatmatters.errors import WhatmattersError
from whatmatters.io import atomic_write_bytes
from whatmatters.sensitivity.batch import compute_samples
from whatmatters.sensitivity.compute import SensitivityComputer
from whatmatters.train.weighting import RolloutWindows

__all__ = ["CarDataError", "CarRecord", "car_windows", "compute_sidecar", "load_episodes", "load_record", "save_episode"]

log = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".sensitivity.npz"


class CarDataError(WhatmattersError, ValueError):
    """A recorded car episode or its sidecar is malformed; the message names the file and the key."""


@dataclass(frozen=True)
class CarRecord:
    """One recorded episode.

    Attributes:
        path: Its file.
        x: Model states, ``s`` unwrapped, (T + 1, 8).
        u: Commands ``(a_cmd, delta_cmd)``, (T, 2).
        x_ref: References, (T, N + 1, 8).
        dt: Control interval, s.
        env_seed: The environment's seed.
        s_hat: S_hat from the sidecar, (T, N, 8) (NaN where a step failed), or None without one.
    """

    path: Path
    x: np.ndarray
    u: np.ndarray
    x_ref: np.ndarray
    dt: float
    env_seed: int
    s_hat: np.ndarray | None = None


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def save_episode(ep: CarEpisode, path: str | Path, env_seed: int) -> Path:
    """Writes an episode atomically (module docstring)."""
    path = Path(path)
    atomic_write_bytes(_npz_bytes({"x": ep.x, "u": ep.u, "x_ref": ep.x_ref, "dt": np.array(ep.dt), "env_seed": np.array(env_seed)}), path)
    return path


def load_record(path: str | Path) -> CarRecord:
    """Reads an episode and, if present, its sidecar's S_hat.

    Raises:
        CarDataError: Naming the file and the key, for a missing key or inconsistent shapes.
        OSError, ValueError, zipfile.BadZipFile: For a file that cannot be read at all.
    """
    path = Path(path)
    keys = ("x", "u", "x_ref", "dt", "env_seed")
    with np.load(path) as data:
        missing = [k for k in keys if k not in data.files]
        if missing:
            raise CarDataError(f"{path}: missing key '{missing[0]}'")
        x, u, x_ref, dt, seed = (data[k] for k in keys)
    steps = u.shape[0]
    if x.shape != (steps + 1, 8) or u.shape != (steps, 2) or x_ref.ndim != 3 or x_ref.shape[0] != steps or x_ref.shape[2] != 8:
        raise CarDataError(f"{path}: shapes x {x.shape}, u {u.shape}, x_ref {x_ref.shape} do not fit (T + 1, 8), (T, 2), (T, N + 1, 8)")
    s_hat = None
    side = sidecar_path(path)
    if side.is_file():
        with np.load(side) as data:
            if "s_hat" not in data.files:
                raise CarDataError(f"{side}: missing key 's_hat'")
            s_hat = data["s_hat"]
        if s_hat.shape != (steps, x_ref.shape[1] - 1, 8):
            raise CarDataError(f"{side}: 's_hat' has shape {s_hat.shape}, expected {(steps, x_ref.shape[1] - 1, 8)}")
    return CarRecord(path, x, u, x_ref, float(dt), int(seed), s_hat)


def sidecar_path(path: str | Path) -> Path:
    """The sensitivity sidecar of an episode file."""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".npz") + SIDECAR_SUFFIX)


def load_episodes(folder: str | Path) -> list[CarRecord]:
    """Every readable episode of a folder (``*.npz`` but sidecars), sorted by name; unreadable files are skipped with a warning."""
    out = []
    for path in sorted(Path(folder).glob("*.npz")):
        if path.name.endswith(SIDECAR_SUFFIX):
            continue
        try:
            out.append(load_record(path))
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            log.warning("skipping %s: %s", path, exc)
    return out


def step_contexts(model: CarModel, x: np.ndarray, u: np.ndarray, dt: float) -> np.ndarray | None:
    """The context the controller had at each step, (T, context_dim); None for the nominal model.

    Args:
        model: The controller's model.
        x: States, (T + 1, 8).
        u: Commands, (T, 2).
        dt: Control interval, s.
    """
    if not isinstance(model, CarLearnedModel):
        return None
    feats = car_history_features(model.nominal, x, u, dt)
    with torch.no_grad():
        return model.encode(car_history_windows(feats, x[0], model.cfg.window)).numpy()


def compute_sidecar(computer: SensitivityComputer, rec: CarRecord) -> Path:
    """S_hat of every step of an episode with the computer's model, written beside it atomically."""
    out = compute_samples(computer, rec.x[:-1], rec.x_ref, step_contexts(computer.model, rec.x, rec.u, rec.dt), rec.path.name)
    out["labels"] = np.array(computer.model.state_labels)
    side = sidecar_path(rec.path)
    atomic_write_bytes(_npz_bytes(out), side)
    return side


def car_windows(records: list[CarRecord], model: CarLearnedModel, p: int) -> RolloutWindows:
    """All p-step windows of the episodes whose first step has a converged S_hat (when sidecars exist).

    Raises:
        ValueError: If p is out of range or no window remains.
    """
    if p < 1:
        raise ValueError(f"rollout length p must be >= 1, got {p}")
    x0, u, x_true, hist, s_hat, start = [], [], [], [], [], []
    offset = 0
    for rec in records:
        steps = rec.u.shape[0]
        if rec.s_hat is not None and p > rec.s_hat.shape[1]:
            raise ValueError(f"rollout length p={p} exceeds the sensitivities' horizon {rec.s_hat.shape[1]} ({rec.path})")
        windows = car_history_windows(car_history_features(model.nominal, rec.x, rec.u, rec.dt), rec.x[0], model.cfg.window)
        t = np.arange(steps - p + 1)
        if rec.s_hat is not None:
            t = t[np.all(np.isfinite(rec.s_hat[t]), axis=(1, 2))]
        idx = t[:, None] + np.arange(p)
        x0.append(rec.x[t])
        u.append(rec.u[idx])
        x_true.append(rec.x[idx + 1])
        hist.append(windows[t])
        s_hat.append(None if rec.s_hat is None else np.abs(rec.s_hat[t, :p]))
        start.append(offset + t)
        offset += steps
    if not sum(len(a) for a in x0):
        raise ValueError(f"no {p}-step window in {len(records)} episodes")
    s = None if any(a is None for a in s_hat) else np.concatenate(s_hat)  # type: ignore[arg-type]
    return RolloutWindows(np.concatenate(x0), np.concatenate(u), np.concatenate(x_true), np.concatenate(hist), s, np.concatenate(start))
