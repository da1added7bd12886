"""S_hat for every control step of recorded episodes, in parallel worker processes.

For each bag, every recorded step t gives one sample: the state x_t, the
reference over the horizon that was sent with it, and (for a learned model)
the context from the history window before t. The results are written beside
the bag as ``sensitivity.npz`` (a sidecar; the bag itself is never modified):

===============  ==================  ==============================================
key              shape               content
===============  ==================  ==============================================
``s_hat``        (T, N, nx)          eq. (5); NaN rows where a sample failed
``du0_de``       (T, nu, N, nx)      controller sensitivity
``dj_du0_eff``   (T, nu)             effective action sensitivity (eq. 6)
``ok``           (T,)                whether the operating point converged
``labels``       (nx,)               state names q1..q7, qd1..qd7
===============  ==================  ==============================================
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from whatmatters.data.bags import EpisodeRecord, read_bag_dir, read_episode
from whatmatters.dynamics.context import history_features, history_windows
from whatmatters.dynamics.learned import LearnedDynamics
from whatmatters.dynamics.registry import absolute_model_spec, resolve_model
from whatmatters.executor import Executor, Job, LocalExecutor, Task
from whatmatters.io import atomic_write_bytes
from whatmatters.mpc.config import MpcConfig
from whatmatters.robot.params import load_panda_params
from whatmatters.sensitivity.compute import SensitivityComputer, SensitivityConfig
from whatmatters.sensitivity.point import OperatingPoint, SensitivityError, warm_start

__all__ = ["SIDECAR", "STATE_LABELS", "compute_bag_dir", "compute_episode", "compute_samples", "factor_statistics", "load_sidecar"]

log = logging.getLogger(__name__)

SIDECAR = "sensitivity.npz"
STATE_LABELS = tuple([f"q{i}" for i in range(1, 8)] + [f"qd{i}" for i in range(1, 8)])


def compute_episode(computer: SensitivityComputer, ep: EpisodeRecord, max_steps: int | None = None) -> dict[str, np.ndarray]:
    """Sensitivities of every step of one recorded arm episode (failures are NaN with ``ok`` False)."""
    model = computer.model
    n = computer.mpc.horizon
    steps = len(ep.tau) if max_steps is None else min(len(ep.tau), max_steps)
    if ep.x_ref_horizon is None or ep.x_ref_horizon.shape[1] != n + 1:
        raise ValueError(f"bag {ep.path}: the recorded reference does not cover the horizon of {n + 1} points")
    contexts = None
    if isinstance(model, LearnedDynamics):
        feats = history_features(model.nominal, ep.x[:, :7], ep.x[:, 7:], ep.tau, ep.dt)
        with torch.no_grad():
            contexts = model.encode(history_windows(feats, ep.x[0], model.cfg.window)[:steps]).numpy()
    out = compute_samples(computer, ep.x[:steps], ep.x_ref_horizon[:steps], contexts, ep.path.name)
    out["labels"] = np.array(STATE_LABELS)
    return out


def compute_samples(
    computer: SensitivityComputer, x: np.ndarray, x_ref: np.ndarray, contexts: np.ndarray | None = None, label: str = "episode"
) -> dict[str, np.ndarray]:
    """Sensitivities of consecutive control steps of any system, each warm-started from the one before.

    Args:
        computer: The system's sensitivity computer.
        x: States at the steps, (T, nx).
        x_ref: The reference each step was solved with, (T, N + 1, nx).
        contexts: A learned model's context at each step, (T, context_dim): the runtime
            parameters are its current weights followed by the step's context; the model's
            current parameters at every step if None.
        label: Names the episode in warnings.

    Returns:
        ``s_hat`` (T, N, nx), ``du0_de`` and ``du0_de_relaxed`` (T, nu, N, nx), ``dj_du0_eff``
        (T, nu) and ``ok`` (T,): failed steps are NaN with ``ok`` False (logged).
    """
    model = computer.model
    steps, n, nx, nu = x.shape[0], computer.mpc.horizon, model.nx, model.nu
    out = {
        "s_hat": np.full((steps, n, nx), np.nan),
        "du0_de": np.full((steps, nu, n, nx), np.nan),
        "du0_de_relaxed": np.full((steps, nu, n, nx), np.nan),
        "dj_du0_eff": np.full((steps, nu), np.nan),
        "ok": np.zeros(steps, dtype=bool),
    }
    weights = None if contexts is None else model.parameter_values()[: model.n_params - contexts.shape[1]]
    prev: OperatingPoint | None = None
    points, steps_ok = [], []
    for t in range(steps):
        init = (None, None, None) if prev is None else warm_start(prev)
        params = None if contexts is None else np.concatenate([weights, contexts[t]])
        try:
            pt = computer.operating_point(x[t], x_ref[t], params, *init)
        except SensitivityError as exc:
            log.warning("%s step %d: %s", label, t, exc)
            prev = None
            continue
        points.append(pt)
        steps_ok.append(t)
        prev = pt
    # the stage derivatives of all steps in one batch (fast for the torch form)
    for t, s in zip(steps_ok, computer.finish(points)):
        if s is None:
            continue
        out["s_hat"][t], out["du0_de"][t], out["dj_du0_eff"][t], out["ok"][t] = s.s_hat, s.du0_de, s.dj_du0_eff, True
        out["du0_de_relaxed"][t] = s.du0_de if s.du0_de_relaxed is None else s.du0_de_relaxed
    return out


def load_sidecar(bag: str | Path) -> dict[str, np.ndarray]:
    """Reads the sensitivities stored beside a bag.

    Raises:
        FileNotFoundError: Naming the file, if the bag has none.
    """
    path = Path(bag) / SIDECAR
    if not path.is_file():
        raise FileNotFoundError(f"no sensitivities beside {bag} ({path} missing; run 'whatmatters sensitivities')")
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def factor_statistics(bag_dir: str | Path) -> dict[str, list[float]]:
    """How the two factors of S_hat vary over the converged samples of a bag folder's sidecars.

    Returns:
        Per joint (7 values each): ``eff_mean`` (mean |dJ/du0|_eff, cost/Nm),
        ``eff_cv`` (its coefficient of variation), ``at_bound`` (share of
        samples whose du0/de row is zero: u0 at a torque bound); and
        ``du0_de_cv_median`` (one value: the median over the (joint, state)
        entries of |du0/de_1|, positions, of their coefficient of variation).
        Empty if the folder has no sidecar.
    """
    effs, rows = [], []
    for path in sorted(Path(bag_dir).glob(f"*/{SIDECAR}")):
        data = load_sidecar(path.parent)
        ok = data["ok"]
        effs.append(data["dj_du0_eff"][ok])
        rows.append(data["du0_de"][ok])
    if not effs:
        return {}
    eff, du = np.concatenate(effs), np.concatenate(rows)  # (S, nu), (S, nu, N, nx)
    first = np.abs(du[:, :, 0, : du.shape[3] // 2])
    return {
        "eff_mean": eff.mean(0).tolist(),
        "eff_cv": (eff.std(0) / np.maximum(eff.mean(0), 1e-300)).tolist(),
        "at_bound": (np.abs(du).sum(axis=(2, 3)) == 0).mean(0).tolist(),
        "du0_de_cv_median": [float(np.median(first.std(0) / np.maximum(first.mean(0), 1e-300)))],
    }


_WORKER: SensitivityComputer | None = None
_WORKER_ARGS: tuple[Any, ...] | None = None


def _init(model_spec: str, mpc: MpcConfig, cfg: SensitivityConfig) -> None:
    """The batch job's setup: this process's computer (kept when it already has one for these settings)."""
    global _WORKER, _WORKER_ARGS
    args = (model_spec, mpc, cfg)
    if _WORKER is None or _WORKER_ARGS != args:
        torch.set_num_threads(1)  # one process per core
        _WORKER = SensitivityComputer(resolve_model(model_spec), mpc, load_panda_params().torque_limits, cfg)
        _WORKER_ARGS = args


def _one(bag: str, max_steps: int | None) -> tuple[str, int, int]:
    assert _WORKER is not None
    ep = read_episode(bag)
    res = compute_episode(_WORKER, ep, max_steps)
    buf = io.BytesIO()
    np.savez(buf, **res)
    atomic_write_bytes(buf.getvalue(), Path(bag) / SIDECAR)
    return bag, int(res["ok"].sum()), len(res["ok"])


def compute_bag_dir(
    folder: str | Path,
    model_spec: str,
    workers: int | None = None,
    max_steps: int | None = None,
    progress: bool = True,
    skip_existing: bool = False,
    mpc: MpcConfig | None = None,
    executor: Executor | None = None,
) -> list[tuple[str, int, int]]:
    """Computes (or recomputes) the sidecar of every readable bag in a folder.

    Args:
        folder: Folder of bags (on a path every node sees, for a cluster).
        model_spec: The MPC's model (see :func:`resolve_model`).
        workers: Worker processes of the default local executor (default: CPUs); 1 runs in this process.
        max_steps: Only the first steps of each episode.
        progress: Show a progress bar on stderr.
        skip_existing: Keep bags that already have a sidecar (resuming).
        mpc: The OCP's settings (``config/mpc.yaml`` if None; the sensitivities
            always use a converged SQP with the exact Jacobian).
        executor: Where the bags are computed (default: ``LocalExecutor(workers)``).

    Returns:
        ``(bag, converged samples, samples)`` per bag computed.

    Raises:
        TaskError: Naming each bag that failed (after the others finished).
    """
    folder = Path(folder).resolve()  # workers in another folder (or on another node) read the same bags
    episodes, _ = read_bag_dir(folder)
    bags = [str(ep.path) for ep in episodes if not (skip_existing and (ep.path / SIDECAR).is_file())]
    if not bags:
        return []
    mpc = mpc or MpcConfig.from_yaml()
    cfg = SensitivityConfig.from_yaml()
    setup = (absolute_model_spec(model_spec), mpc, cfg)
    _init(*setup)  # compiles once in this process before any worker starts
    job = Job("sensitivities", _one, _init, setup, shared_paths=(str(folder),))
    tasks = [Task(Path(b).name, (b, max_steps)) for b in bags]
    with tqdm(total=len(bags), desc="sensitivities", unit="bag", disable=not progress) as bar:
        results = (executor or LocalExecutor(workers)).run(job, tasks, on_outcome=lambda _: bar.update())
    return sorted(results)
