"""``whatmatters collect`` and ``whatmatters pretrain``: data and the base model."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from whatmatters.cli.executor_args import add_executor_args, executor_from_args
from whatmatters.data.collect import CollectConfig, collect
from whatmatters.data.dataset import load_transitions
from whatmatters.dynamics.learned import LearnedConfig
from whatmatters.dynamics.nominal import nominal_model
from whatmatters.errors import ConfigError
from whatmatters.sim.environments import environment_seeds
from whatmatters.train.pretrain import PretrainConfig, pretrain


def add_parser(sub: Any) -> None:
    """Registers both sub-commands."""
    p = sub.add_parser("collect", help="closed-loop MPC episodes on environments, one rosbag2 (MCAP) bag each")
    p.add_argument("--model", default="nominal", help="model in the MPC: nominal, base, or a checkpoint path")
    p.add_argument("--envs", default="train", help="train, validation, eval, the first N of a set (eval:20), or comma-separated seeds")
    p.add_argument("--out", required=True, help="output folder for the bags")
    p.add_argument("--seconds", type=float, default=None, help="episode length, s (config/collect.yaml)")
    p.add_argument("--no-noise", action="store_true", help="no exploration noise on the torque")
    add_executor_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run_collect)

    p = sub.add_parser("plot-episode", help="one bag's figure: per joint q vs q_ref, torque vs its bounds, S_hat over time if present")
    p.add_argument("bag", help="bag folder (simulated, real-time or a real robot's)")
    p.add_argument("--out", default=None, help="PNG path (default: <bag>.png beside the bag folder)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run_plot_episode)

    p = sub.add_parser("pretrain", help="train the learned model on torque residuals from bags")
    p.add_argument("--data", required=True, help="folder of bags (see 'collect')")
    p.add_argument("--out", required=True, help="checkpoint path (.pt); an interrupted run resumes")
    p.add_argument("--epochs", type=int, default=None, help="override config/pretrain.yaml epochs")
    p.add_argument("--seed", type=int, default=None, help="override config/pretrain.yaml seed")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run_pretrain)


def run_collect(args: argparse.Namespace) -> dict[str, Any]:
    """Collects the bags."""
    cfg = CollectConfig.from_yaml()
    if args.seconds is not None:
        if args.seconds <= 0:
            raise ConfigError(f"--seconds must be > 0, got {args.seconds}")
        cfg = replace(cfg, seconds=args.seconds)
    if args.no_noise:
        cfg = replace(cfg, noise_std=(0.0,) * 7)
    seeds = environment_seeds(args.envs)
    start = time.perf_counter()
    with executor_from_args(args) as executor:
        paths = collect(args.model, seeds, args.out, cfg, executor=executor)
    return {"bags": len(paths), "out": str(args.out), "wall_s": round(time.perf_counter() - start, 2)}


def run_plot_episode(args: argparse.Namespace) -> dict[str, Any]:
    """Draws the bag's figure."""
    from whatmatters.data.episode_plot import plot_episode
    from whatmatters.robot.params import load_panda_params

    bag = Path(args.bag)
    out = Path(args.out) if args.out else bag.parent / f"{bag.name}.png"
    return plot_episode(bag, out, load_panda_params().torque_limits)


def run_pretrain(args: argparse.Namespace) -> dict[str, Any]:
    """Pretrains and writes the checkpoint."""
    cfg = PretrainConfig.from_yaml()
    if args.epochs is not None:
        cfg = replace(cfg, epochs=args.epochs)
    if args.seed is not None:
        cfg = replace(cfg, seed=args.seed)
    model_cfg = LearnedConfig()
    try:
        data = load_transitions(args.data, nominal_model(), model_cfg.window)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    res = pretrain(data, args.out, cfg, model_cfg, metadata={"data": str(args.data), "episodes": len(data.sources)})
    return {
        "checkpoint": str(res.path),
        "transitions": len(data),
        "best_epoch": res.best_epoch,
        "val_loss": res.val_loss,
        "train_loss": res.train_loss,
        "train_samples_per_s": round(res.samples_per_s, 1),
        "wall_s": round(res.wall_s, 2),
    }
