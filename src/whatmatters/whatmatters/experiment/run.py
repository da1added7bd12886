"""One run of the sweep in a worker process: fine-tune, choose the checkpoint on validation, evaluate it.

The protocol: after every epoch the model is evaluated on the validation
environments (``select_envs``) and on the first ``epoch_eval_envs``
evaluation environments (for the paper's best5 only); the checkpoint is
chosen on validation (:func:`~whatmatters.experiment.selection.select_epoch`)
and evaluated once on all ``eval_envs`` evaluation environments
(``selected`` in ``result.json``: the reported numbers). Each worker holds
the data windows and an evaluator with its compiled solver
(:func:`init_worker`); a run's weights are swapped into it, no rebuild.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from whatmatters.data.dataset import load_transitions
from whatmatters.dynamics.learned import LearnedDynamics
from whatmatters.eval.evaluate import Evaluator
from whatmatters.executor import report
from whatmatters.experiment.config import ExperimentConfig
from whatmatters.experiment.selection import select_epoch, selection_score
from whatmatters.experiment.signatures import run_id, run_signature
from whatmatters.io import atomic_write_text
from whatmatters.sim.simulator import SimConfig
from whatmatters.train.finetune import finetune
from whatmatters.train.weighting import RolloutWindows, make_windows, weights
from whatmatters.trajectory.fourier import FourierConfig

__all__ = ["evaluate_model", "init_worker", "run_one"]

_STATE: dict[str, Any] = {}


def init_worker(cfg: ExperimentConfig, data: str, base: str, sim: SimConfig, reference: FourierConfig) -> None:
    """The sweep job's setup in a worker process: the data windows and an evaluator with its compiled solver."""
    torch.set_num_threads(1)
    _STATE.clear()
    _STATE.update(cfg=cfg, base=base, windows={})
    base_model = LearnedDynamics.load(base)
    _STATE["data"] = load_transitions(data, base_model.nominal, base_model.cfg.window, sensitivities=True, action_weights=cfg.finetune.ours_action)
    evaluator = Evaluator(base, cfg.mpc_config(), sim, reference)
    evaluator.use_model(base_model, "base")
    _STATE["evaluator"] = evaluator


def _windows(p: int) -> RolloutWindows:
    cache = _STATE["windows"]
    if p not in cache:
        cache[p] = make_windows(_STATE["data"], p)
    return cache[p]


def evaluate_model(model: LearnedDynamics, label: str, seeds: list[int]) -> dict[str, Any]:
    """Closed-loop episodes of ``model`` in the environments ``seeds``: their J_track and torque-bound shares."""
    cfg: ExperimentConfig = _STATE["cfg"]
    evaluator: Evaluator = _STATE["evaluator"]
    evaluator.use_model(model, label)
    return _summary({str(s): evaluator.episode(s, cfg.eval_seconds).summary() for s in seeds})


def _summary(per_env: dict[str, dict[str, Any]]) -> dict[str, Any]:
    j = np.array([v["j_track"] for v in per_env.values()])
    return {
        "j_track_mean": float(j.mean()),
        "j_track_std": float(j.std()),
        "j_track_per_env": {k: float(v["j_track"]) for k, v in per_env.items()},
        "bound_share_per_env": {k: float(v["bound_share"]) for k, v in per_env.items()},
        "fallbacks_per_env": {k: int(v["fallbacks"]) for k, v in per_env.items()},
        "fallbacks": int(sum(int(v["fallbacks"]) for v in per_env.values())),
    }


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One evaluation summary from summaries of sets of environments (an environment in two of them had the same episode in both)."""
    per_env = {k: {"j_track": v, "bound_share": part["bound_share_per_env"][k], "fallbacks": part["fallbacks_per_env"][k]} for part in parts for k, v in part["j_track_per_env"].items()}
    return _summary(per_env)


def _restrict(record: dict[str, Any], envs: set[str]) -> dict[str, Any]:
    """An evaluation record's per-environment entries for ``envs``."""
    return {key: {k: v for k, v in record[key].items() if k in envs} for key in ("j_track_per_env", "bound_share_per_env", "fallbacks_per_env")}


def _checkpoint(folder: Path, epoch: int) -> Path:
    return folder / "checkpoints" / f"epoch_{epoch}.pt"


def run_one(weighting: str, p: int, seed: int, out: str) -> dict[str, Any]:
    """Fine-tunes one run, chooses its checkpoint on validation, evaluates that checkpoint on the evaluation set."""
    cfg: ExperimentConfig = _STATE["cfg"]
    win = _windows(p)
    mpc = cfg.mpc_config()
    s = weights(weighting, win, cfg.finetune.objective, np.asarray(mpc.q_weights + mpc.qd_weights), cfg.finetune.ours_scaling)
    folder = Path(out) / "runs" / run_id(weighting, p, seed)
    start = time.perf_counter()
    eval_seeds, first = cfg.eval_seeds(), cfg.epoch_eval_envs

    def on_epoch(model: LearnedDynamics, epoch: int) -> dict[str, Any]:
        _checkpoint(folder, epoch).parent.mkdir(parents=True, exist_ok=True)
        model.save(_checkpoint(folder, epoch))
        label = f"{folder.name}@{epoch}"
        record: dict[str, Any] = {"validation": evaluate_model(model, label, cfg.select_seeds())}
        if first:  # the paper's best5 and the paper-sized table: the first evaluation environments after every epoch
            record.update(evaluate_model(model, label, eval_seeds[:first]))
        report((folder.name, str(epoch), record["validation"]["j_track_mean"]))
        return record

    history = finetune(_STATE["base"], win, s, folder, cfg.finetune, seed, _STATE["data"].dt, on_epoch)
    epoch = select_epoch([e["validation"]["j_track_per_env"] for e in history])
    model = LearnedDynamics.load(_checkpoint(folder, epoch))
    model.save(folder / "selected.pt")
    # environments already evaluated with this very checkpoint after its epoch are not run again (episodes are
    # deterministic): the first evaluation environments, and with eval_set validation the selection environments
    records = [history[epoch - 1]] if first else []
    if cfg.eval_set == "validation":
        records.append(history[epoch - 1]["validation"])
    wanted = {str(e) for e in eval_seeds}
    parts = [_restrict(r, wanted) for r in records]
    known = {e for part in parts for e in part["j_track_per_env"]}
    rest = [e for e in eval_seeds if str(e) not in known]
    if rest:
        parts.append(evaluate_model(model, f"{folder.name}@selected", rest))
    selected = _merge([part for part in parts if part["j_track_per_env"]])
    report((folder.name, "selected", selected["j_track_mean"]))
    result = {
        "weighting": weighting,
        "p": p,
        "seed": seed,
        "signature": run_signature(cfg, weighting),
        "windows": len(win),
        "epochs": history,
        "selected": {"epoch": epoch, "validation_score": selection_score(history[epoch - 1]["validation"]["j_track_per_env"]), **selected},
        "wall_s": time.perf_counter() - start,
    }
    atomic_write_text(json.dumps(result, indent=1), folder / "result.json")
    return result
