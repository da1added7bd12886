"""``whatmatters finetune``: one fine-tuning run on a folder of bags (the trainer the sweep uses)."""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from whatmatters.data.dataset import load_transitions
from whatmatters.dynamics.learned import LearnedDynamics
from whatmatters.dynamics.registry import base_checkpoint
from whatmatters.errors import ConfigError
from whatmatters.mpc.config import MpcConfig
from whatmatters.train.finetune import FinetuneConfig, finetune
from whatmatters.train.weighting import OBJECTIVES, WEIGHTINGS, make_windows, weights


def add_parser(sub: Any) -> None:
    """Registers the sub-command."""
    p = sub.add_parser("finetune", help="fine-tune a checkpoint on bags with the weighted multi-step loss (eq. 1)")
    p.add_argument("--data", required=True, help="folder of bags (with sensitivity sidecars for ours / ours_avg)")
    p.add_argument("--out", required=True, help="checkpoint to write (.pt); its training state goes beside it and resumes")
    p.add_argument("--base", default="base", help="starting checkpoint (default: the packaged base model)")
    p.add_argument("--weighting", choices=WEIGHTINGS, default="ours")
    p.add_argument("--p", type=int, default=4, help="rollout length")
    p.add_argument("--objective", choices=OBJECTIVES, default=None, help="override config/finetune.yaml")
    p.add_argument("--epochs", type=int, default=None, help="override config/finetune.yaml")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run_finetune)


def run_finetune(args: argparse.Namespace) -> dict[str, Any]:
    """Loads the windows, trains, and copies the final checkpoint to ``--out``."""
    cfg = FinetuneConfig.from_yaml()
    if args.epochs is not None:
        cfg = replace(cfg, epochs=args.epochs)
    if args.objective is not None:
        cfg = replace(cfg, objective=args.objective)
    base = str(base_checkpoint()) if args.base == "base" else args.base
    model = LearnedDynamics.load(base)
    needs = args.weighting in ("ours", "ours_avg")
    start = time.perf_counter()
    try:
        data = load_transitions(args.data, model.nominal, model.cfg.window, sensitivities=needs)
        win = make_windows(data, args.p)
        mpc = MpcConfig.from_yaml()
        s = weights(args.weighting, win, cfg.objective, np.asarray(mpc.q_weights + mpc.qd_weights))
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    out = Path(args.out)
    run_dir = out.with_name(out.name + ".run")
    history = finetune(base, win, s, run_dir, cfg, args.seed, data.dt)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    shutil.copyfile(run_dir / "model.pt", tmp)
    tmp.replace(out)
    return {
        "checkpoint": str(out),
        "windows": len(win),
        "epochs": len(history),
        "train_loss": [round(h["train_loss"], 6) for h in history],
        "wall_s": round(time.perf_counter() - start, 2),
    }
