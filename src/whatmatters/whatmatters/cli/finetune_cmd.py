"""``whatmatters finetune``: one fine-tuning run on a folder of bags (the trainer the sweep uses)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from whatmatters.train.finetune import FinetuneConfig
from whatmatters.train.job import FinetuneJob, run_job
from whatmatters.train.weighting import OBJECTIVES, WEIGHTINGS


def add_parser(sub: Any) -> None:
    """Registers the sub-command."""
    p = sub.add_parser("finetune", help="fine-tune a checkpoint on bags with the weighted multi-step loss (eq. 1)")
    p.add_argument("--data", required=True, help="folder of bags (S_hat for ours / ours_avg: sensitivity sidecars or the /mpc/sensitivity topic)")
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
    """Loads the windows, trains, and writes the final checkpoint to ``--out`` (:func:`run_job`)."""
    cfg = FinetuneConfig.from_yaml()
    if args.epochs is not None:
        cfg = replace(cfg, epochs=args.epochs)
    if args.objective is not None:
        cfg = replace(cfg, objective=args.objective)
    job = FinetuneJob(base=args.base, weighting=args.weighting, p=args.p, seed=args.seed, cfg=cfg)
    result = run_job(job, args.data, args.out)
    return {k: result[k] for k in ("checkpoint", "windows", "epochs", "train_loss", "wall_s")}
