"""``whatmatters episode`` and ``whatmatters evaluate``: closed-loop tracking runs."""

from __future__ import annotations

import argparse
from typing import Any

from whatmatters.errors import ConfigError
from whatmatters.eval.evaluate import Evaluator, evaluate
from whatmatters.mpc.config import MpcConfig
from whatmatters.sim.environments import environment_seeds
from whatmatters.sim.simulator import SimConfig
from whatmatters.trajectory.fourier import FourierConfig


def add_parser(sub: Any) -> None:
    """Registers both sub-commands."""
    p = sub.add_parser("episode", help="one closed-loop MPC episode on one environment")
    p.add_argument("--model", default="nominal", help="nominal, exact, or a checkpoint path")
    p.add_argument("--env-seed", type=int, default=2000, help="environment seed")
    p.add_argument("--seconds", type=float, default=10.0, help="episode length, s")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run_episode_cmd)

    p = sub.add_parser("evaluate", help="closed-loop tracking cost over a set of environments")
    p.add_argument("--model", default="nominal", help="nominal, exact, or a checkpoint path")
    p.add_argument("--envs", default="eval", help="train, validation, eval, or comma-separated seeds")
    p.add_argument("--seconds", type=float, default=10.0, help="episode length, s")
    p.add_argument("--workers", type=int, default=0, help="worker processes (0: one per CPU)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run_evaluate_cmd)


def _check_seconds(seconds: float) -> None:
    if seconds <= 0:
        raise ConfigError(f"--seconds must be > 0, got {seconds}")


def run_episode_cmd(args: argparse.Namespace) -> dict[str, Any]:
    """Runs one episode and returns its summary."""
    _check_seconds(args.seconds)
    ev = Evaluator(args.model, MpcConfig.from_yaml(), SimConfig.from_yaml(), FourierConfig.from_yaml())
    result = ev.episode(args.env_seed, args.seconds)
    return {"model": args.model, **result.summary()}


def run_evaluate_cmd(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluates the model on the named environment set."""
    _check_seconds(args.seconds)
    if args.workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {args.workers}")
    seeds = environment_seeds(args.envs)
    return evaluate(args.model, seeds, args.seconds, args.workers or None).summary()
