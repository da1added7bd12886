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
from whatmatters.executor import Executor, Job, LocalExecutor, Outcome, Task
from whatmatters.io import atomic_write_bytes
from whatmatters.mpc.config import MpcConfig
from whatmatters.robot.params import load_panda_params
from whatmatters.sensitivity.compute import SensitivityComputer, SensitivityConfig
from whatmatters.sensitivity.point import OperatingPoint, SensitivityError, warm_start

__all__ = ["SEGMENT_STEPS", "SIDECAR", "STATE_LABELS", "compute_bag_dir", "compute_episode", "compute_samples", "factor_statistics", "load_sidecar", "segments"]

log = logging.getLogger(__name__)

SIDECAR = "sensitivity.npz"
#: Control steps per batch task: a bag is cut into segments of this many steps, which run in
#: parallel, each step warm-started from the one before within its segment and the first one
#: cold (the same converged samples, to the SQP's tolerance). Fixed, so that the sidecars do
#: not depend on the number of workers.
SEGMENT_STEPS = 100
STATE_LABELS = tuple([f"q{i}" for i in range(1, 8)] + [f"qd{i}" for i in range(1, 8)])


def compute_episode(computer: SensitivityComputer, ep: EpisodeRecord, max_steps: int | None = None, start: int = 0) -> dict[str, np.ndarray]:
    """Sensitivities of the steps ``start .. stop - 1`` of one recorded arm episode (failures are NaN with ``ok`` False).

    Args:
        computer: The arm's sensitivity computer.
        ep: The episode.
        max_steps: ``stop``: only the steps before it (default: every step).
        start: The first step; it starts cold, each later one from the one before.

    Raises:
        ValueError: Naming the bag, if its reference does not cover the horizon or ``start`` is past ``stop``.
    """
    model = computer.model
    n = computer.mpc.horizon
    stop = len(ep.tau) if max_steps is None else min(len(ep.tau), max_steps)
    if ep.x_ref_horizon is None or ep.x_ref_horizon.shape[1] != n + 1:
        raise ValueError(f"bag {ep.path}: the recorded reference does not cover the horizon of {n + 1} points")
    if not 0 <= start <= stop:
        raise ValueError(f"bag {ep.path}: steps from {start} to {stop} (of {len(ep.tau)})")
    contexts = None
    if isinstance(model, LearnedDynamics):
        feats = history_features(model.nominal, ep.x[:, :7], ep.x[:, 7:], ep.tau, ep.dt)
        with torch.no_grad():
            contexts = model.encode(history_windows(feats, ep.x[0], model.cfg.window)[start:stop]).numpy()
    label = ep.path.name if start == 0 else f"{ep.path.name} (from step {start})"
    out = compute_samples(computer, ep.x[start:stop], ep.x_ref_horizon[start:stop], contexts, label)
    out["labels"] = np.array(STATE_LABELS)
    return out


def segments(steps: int, size: int = SEGMENT_STEPS) -> list[tuple[int, int]]:
    """``(start, stop)`` of the batch tasks of an episode of ``steps`` steps, ``size`` steps each (the last one shorter).

    Raises:
        ValueError: If ``size`` < 1.
    """
    if size < 1:
        raise ValueError(f"a segment holds >= 1 step, got {size}")
    return [(a, min(a + size, steps)) for a in range(0, steps, size)] or [(0, 0)]


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
_EPISODE: tuple[tuple[str, Any], EpisodeRecord] | None = None


def _init(model_spec: str, mpc: MpcConfig, cfg: SensitivityConfig) -> None:
    """The batch job's setup: this process's computer (kept when it already has one for these settings)."""
    global _WORKER, _WORKER_ARGS
    args = (model_spec, mpc, cfg)
    if _WORKER is None or _WORKER_ARGS != args:
        torch.set_num_threads(1)  # one process per core
        _WORKER = SensitivityComputer(resolve_model(model_spec), mpc, load_panda_params().torque_limits, cfg)
        _WORKER_ARGS = args


def _bag_key(bag: str) -> tuple[tuple[str, int, int], ...]:
    """The bag folder's files with their sizes and modification times (a changed bag is read again)."""
    return tuple((p.name, (st := p.stat()).st_size, st.st_mtime_ns) for p in sorted(Path(bag).iterdir()) if p.name != SIDECAR)


def _episode(bag: str) -> EpisodeRecord:
    """The episode of ``bag``, read once for the consecutive segments this process computes."""
    global _EPISODE
    key = (bag, _bag_key(bag))
    if _EPISODE is None or _EPISODE[0] != key:
        _EPISODE = (key, read_episode(bag))
    return _EPISODE[1]


def _one(bag: str, start: int, stop: int) -> tuple[str, int, dict[str, np.ndarray]]:
    """One segment of a bag (a batch task): ``(bag, start, results)``."""
    assert _WORKER is not None
    return bag, start, compute_episode(_WORKER, _episode(bag), stop, start)


def _write_sidecar(bag: str, parts: dict[int, dict[str, np.ndarray]]) -> tuple[str, int, int]:
    """Joins a bag's segments in step order into its sidecar: ``(bag, converged samples, samples)``."""
    ordered = [parts[start] for start in sorted(parts)]
    res = {key: np.concatenate([part[key] for part in ordered]) for key in ordered[0] if key != "labels"}
    res["labels"] = np.array(STATE_LABELS)
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
    segment_steps: int = SEGMENT_STEPS,
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
        segment_steps: Steps per task: each bag is cut into :func:`segments`
            of this many, so that a few long bags use every worker too.

    A bag's sidecar is written as soon as all its segments are in.

    Returns:
        ``(bag, converged samples, samples)`` per bag computed.

    Raises:
        TaskError: Naming each segment that failed (after the others finished;
            the bags whose segments all succeeded have their sidecars).
    """
    folder = Path(folder).resolve()  # workers in another folder (or on another node) read the same bags
    episodes, _ = read_bag_dir(folder)
    todo = [ep for ep in episodes if not (skip_existing and (ep.path / SIDECAR).is_file())]
    if not todo:
        return []
    mpc = mpc or MpcConfig.from_yaml()
    cfg = SensitivityConfig.from_yaml()
    setup = (absolute_model_spec(model_spec), mpc, cfg)
    resolve_model(setup[0])  # a bad model spec fails here, named, before any worker starts
    job = Job("sensitivities", _one, _init, setup, shared_paths=(str(folder),))
    tasks, expected = [], {}
    for ep in todo:
        bag, steps = str(ep.path), len(ep.tau) if max_steps is None else min(len(ep.tau), max_steps)
        parts = segments(steps, segment_steps)
        expected[bag] = len(parts)
        tasks += [Task(f"{ep.path.name}[{a}:{b}]", (bag, a, b)) for a, b in parts]
    received: dict[str, dict[int, dict[str, np.ndarray]]] = {bag: {} for bag in expected}
    written: list[tuple[str, int, int]] = []

    def collect_segment(outcome: Outcome) -> None:
        bar.update()
        if outcome.ok:
            bag, start, res = outcome.result
            received[bag][start] = res
            if len(received[bag]) == expected[bag]:
                written.append(_write_sidecar(bag, received.pop(bag)))

    with tqdm(total=len(tasks), desc="sensitivities", unit="segment", disable=not progress) as bar:
        (executor or LocalExecutor(workers)).run(job, tasks, on_outcome=collect_segment)
    return sorted(written)
