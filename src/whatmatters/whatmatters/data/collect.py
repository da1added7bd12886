"""Closed-loop data collection: MPC episodes on environments, one bag each.

Each episode tracks the environment's own seeded reference for ``seconds``
with the chosen model in the MPC (optionally with Gaussian exploration noise
on the torque, seeded per environment) and is written to
``<out>/env_<seed>/`` as a rosbag2 MCAP bag (see :mod:`whatmatters.data.bags`).
Finished bags are kept, so an interrupted collection resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from tqdm import tqdm

from whatmatters.config import YamlConfig
from whatmatters.data.bags import EpisodeBagWriter
from whatmatters.dynamics.registry import absolute_model_spec
from whatmatters.eval.evaluate import Evaluator
from whatmatters.executor import Executor, Job, LocalExecutor, Task
from whatmatters.mpc.config import MpcConfig
from whatmatters.mpc.controller import ControlStep
from whatmatters.sim.environments import make_environment
from whatmatters.sim.simulator import SimConfig
from whatmatters.trajectory.fourier import FourierConfig, sample_fourier_trajectory

__all__ = ["CollectConfig", "bag_path", "collect", "collect_episode"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CollectConfig(YamlConfig):
    """Data collection settings.

    Attributes:
        seconds: Episode length, s.
        noise_std: Exploration noise on the torque, Nm, per joint (zeros: none).
        noise_seed: Base seed of the noise (combined with the environment seed).
    """

    yaml_file: ClassVar[str] = "collect.yaml"

    seconds: float = 10.0
    noise_std: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 0.3, 0.3, 0.3)
    noise_seed: int = 0



#: Folder under a collection's output where bags are written until they are finished.
PARTIAL = ".partial"


def bag_path(out: Path, seed: int) -> Path:
    """Where the bag of an environment goes."""
    return out / f"env_{seed:04d}"


def collect_episode(evaluator: Evaluator, seed: int, out: Path, cfg: CollectConfig) -> Path:
    """Runs one episode and records it (skips a finished bag).

    Returns:
        The bag folder.
    """
    path = bag_path(out, seed)
    if (path / "metadata.yaml").is_file():
        log.debug("bag %s exists; kept", path)
        return path
    if path.exists():
        shutil.rmtree(path)  # an unfinished bag from an interrupted run
    env = make_environment(seed)
    reference = sample_fourier_trajectory(env.reference_seed, evaluator.ref_cfg, evaluator.sim.params)
    dt = evaluator.sim.config.control_period
    noise = np.asarray(cfg.noise_std, dtype=float)
    rng = np.random.default_rng([cfg.noise_seed, seed])
    # written under <out>/.partial/ with its final name (rosbags names the MCAP file after the folder),
    # then moved into place: a finished bag is env_XXXX/env_XXXX.mcap, listed so in its metadata.yaml
    tmp = out / PARTIAL / path.name
    if tmp.exists():
        shutil.rmtree(tmp)
    last_tau = np.zeros(7)
    with EpisodeBagWriter(tmp) as bag:
        bag.payload(0.0, env.payload)

        def record(i: int, x: np.ndarray, x_ref: np.ndarray, tau: np.ndarray, out_: ControlStep) -> None:
            nonlocal last_tau
            t = i * dt
            bag.joint_state(t, x[:7], x[7:], last_tau)
            bag.reference(t, x_ref, dt)
            bag.command(t, tau)
            last_tau = tau

        res = evaluator.run(seed, env, reference, cfg.seconds, noise if np.any(noise > 0) else None, rng, record)
        bag.joint_state(res.t[-1], res.x[-1, :7], res.x[-1, 7:], last_tau)
    tmp.rename(path)
    with contextlib.suppress(OSError):
        tmp.parent.rmdir()  # kept while another worker still writes there
    return path


_WORKER: Evaluator | None = None
_WORKER_ARGS: tuple[Any, ...] | None = None


def _init(model: str, mpc: MpcConfig, sim: SimConfig, ref: FourierConfig) -> None:
    """The collection job's setup: this process's evaluator (kept when it already has one for these settings)."""
    global _WORKER, _WORKER_ARGS
    args = (model, mpc, sim, ref)
    if _WORKER is None or _WORKER_ARGS != args:
        _WORKER, _WORKER_ARGS = Evaluator(model, mpc, sim, ref), args
        _WORKER.controller(None)  # compiles, or loads this node's cached solver


def _one(seed: int, out: str, cfg: CollectConfig) -> str:
    assert _WORKER is not None
    return str(collect_episode(_WORKER, seed, Path(out), cfg))


def collect(
    model: str,
    seeds: list[int],
    out: str | Path,
    cfg: CollectConfig | None = None,
    workers: int | None = None,
    progress: bool = True,
    mpc: MpcConfig | None = None,
    executor: Executor | None = None,
) -> list[Path]:
    """Collects one bag per environment seed, in parallel.

    Args:
        model: Model spec for the MPC (``nominal``, a checkpoint, ...).
        seeds: Environment seeds.
        out: Output folder (on a path every node sees, for a cluster).
        cfg: Collection settings.
        workers: Worker processes of the default local executor (default: CPUs); 1 runs in this process.
        progress: Show a progress bar on stderr.
        mpc: MPC settings (``config/mpc.yaml`` if None).
        executor: Where the episodes run (default: ``LocalExecutor(workers)``).

    Raises:
        TaskError: Naming each environment whose episode failed (after the others finished).
    """
    cfg = cfg or CollectConfig()
    out = Path(out).resolve()  # workers in another folder (or on another node) write to the same place
    out.mkdir(parents=True, exist_ok=True)
    model = absolute_model_spec(model)
    mpc, sim, ref = mpc or MpcConfig.from_yaml(), SimConfig.from_yaml(), FourierConfig.from_yaml()
    _init(model, mpc, sim, ref)  # compile once here before any worker starts
    job = Job(f"collect {model}", _one, _init, (model, mpc, sim, ref), shared_paths=(str(out),))
    tasks = [Task(f"env {seed}", (seed, str(out), cfg)) for seed in seeds]
    with tqdm(total=len(seeds), desc=f"collect {model}", unit="ep", disable=not progress) as bar:
        paths = (executor or LocalExecutor(workers)).run(job, tasks, on_outcome=lambda _: bar.update())
    return sorted(Path(p) for p in paths)
