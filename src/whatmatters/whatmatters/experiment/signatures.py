"""What the sweep's data, evaluations and runs depend on: their signatures and names.

A finished result is reused only while its signature equals the current
settings' (:mod:`whatmatters.experiment.sweep`); anything else is computed
again, so changed settings never mix with old results.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import replace
from typing import Any

from whatmatters.data.collect import CollectConfig
from whatmatters.experiment.config import ExperimentConfig

__all__ = [
    "DATA_SIGNATURE",
    "base_eval_signature",
    "data_signature",
    "exact_eval_signature",
    "exact_validation_signature",
    "run_id",
    "run_signature",
]


def run_id(weighting: str, p: int, seed: int) -> str:
    """Folder name of a run."""
    return f"{weighting}_p{p}_s{seed}"


DATA_SIGNATURE = "experiment_data.json"  # in the data folder: what its bags were made with


_ADDED_LATER = {"ours_scaling": "global", "ours_action": "effective"}  # finetune setting -> the behaviour of runs made before it existed
_OURS_ONLY = ("ours_scaling", "ours_action")  # finetune settings only the sensitivity weightings depend on
#: The MPC settings (``config/mpc.yaml``) of the runs made before signatures held them (the exact RK4
#: Jacobian). A signature holds the settings that differ from these, so a changed mpc.yaml recomputes.
_MPC_REFERENCE: dict[str, Any] = {
    "horizon": 12, "dt": 0.02,
    "q_weights": [1000.0, 1000.0, 1000.0, 1000.0, 500.0, 500.0, 500.0],
    "qd_weights": [100.0, 100.0, 100.0, 100.0, 50.0, 50.0, 50.0],
    "r_weights": [0.2, 0.2, 0.2, 0.2, 1.0, 1.0, 1.0],
    "terminal_scale": 1.0, "cost_scaling": "time_step", "nlp_solver": "SQP_RTI", "hessian": "GAUSS_NEWTON",
    "qp_solver": "PARTIAL_CONDENSING_HPIPM", "hpipm_mode": "SPEED", "sqp_max_iter": 50, "sqp_tol": 1e-8,
    "qp_max_iter": 50, "fallback_gravity_after": 5, "rk4_jacobian": "exact", "qp_cond_n": 0, "stage_hessians": False,
    "state_weights": [], "input_weights": [],  # any system's weights (added later; the arm spells them q/qd/r_weights)
}  # fmt: skip
#: Settings that do not change the numbers (tested: compiler flags; ERK and chained RK4 agree to round-off).
_MPC_SAME_RESULTS = ("compile_flags", "integrator")


def run_signature(cfg: ExperimentConfig, weighting: str) -> dict[str, Any]:
    """What a finished run depends on besides its (weighting, p, seed): a run with another one is recomputed.

    Settings only ``ours``/``ours_avg`` use are left out of the other
    weightings' signatures, and settings added after runs were made are left
    out while at the value those runs had (``finetune.ours_scaling: global``, ``ours_action: effective``),
    so those runs stay valid. The MPC settings (``config/mpc.yaml``, used by every
    evaluation) enter as their differences from those of the committed runs.
    """
    d = cfg.to_dict()
    sig = {k: d[k] for k in ("base", "data_envs", "data_seconds", "eval_set", "eval_envs", "eval_seconds", "select_envs", "epoch_eval_envs", "finetune")}
    drop = {k for k, old in _ADDED_LATER.items() if sig["finetune"].get(k) == old}
    if weighting not in ("ours", "ours_avg"):
        drop |= set(_OURS_ONLY)
    sig["finetune"] = {k: v for k, v in sig["finetune"].items() if k not in drop}
    return _with_mpc(sig, cfg)


def _with_mpc(sig: dict[str, Any], cfg: ExperimentConfig) -> dict[str, Any]:
    """``sig`` plus the sweep's MPC settings that differ from :data:`_MPC_REFERENCE` (key ``mpc``, if any)."""
    mpc = json.loads(json.dumps(dataclasses.asdict(cfg.mpc_config())))
    changed = {k: v for k, v in mpc.items() if k not in _MPC_SAME_RESULTS and _MPC_REFERENCE.get(k) != v}
    return {**sig, "mpc": changed} if changed else sig


def data_signature(cfg: ExperimentConfig) -> dict[str, Any]:
    """What the sweep's data folder depends on: the base model, the environments, the collection and the MPC."""
    collect_cfg = replace(CollectConfig.from_yaml(), seconds=cfg.data_seconds)
    sig = {"base": cfg.base, "data_envs": cfg.data_envs, "collect": json.loads(json.dumps(dataclasses.asdict(collect_cfg)))}
    return _with_mpc(sig, cfg)


def base_eval_signature(cfg: ExperimentConfig) -> dict[str, Any]:
    """What the base model's evaluation depends on."""
    return _with_mpc({"base": cfg.base, "eval_set": cfg.eval_set, "eval_envs": cfg.eval_envs, "eval_seconds": cfg.eval_seconds}, cfg)


def exact_eval_signature(cfg: ExperimentConfig) -> dict[str, Any]:
    """What the exact model's evaluation (the floor) depends on: the base evaluation's settings without the base model."""
    return {**{k: v for k, v in base_eval_signature(cfg).items() if k != "base"}, "model": "exact"}


def exact_validation_signature(cfg: ExperimentConfig) -> dict[str, Any]:
    """What the exact model's evaluation on the selection (validation) environments depends on."""
    return _with_mpc({"model": "exact", "set": "validation", "envs": cfg.select_envs, "eval_seconds": cfg.eval_seconds}, cfg)
