"""``whatmatters episode`` and ``whatmatters evaluate``: closed-loop tracking runs."""

from __future__ import annotations

import argparse
import math
from typing import Any

from whatmatters.cli.executor_args import add_executor_args, executor_from_args
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
    p.add_argument("--latency", type=float, default=None,
                   help="real-time loop on a virtual clock: a command arrives this long after its state, s (whatmatters.realtime.simulate)")
    p.add_argument("--delay-compensation", action="store_true", help="with --latency: the MPC solves from the state predicted over the delay")
    p.add_argument("--rate-limit", type=float, default=0.0, help="with --latency: Franka's torque-rate limit at the physics rate, Nm/s (0: off)")
    p.set_defaults(run=run_episode_cmd)

    p = sub.add_parser("evaluate", help="closed-loop tracking cost over a set of environments")
    p.add_argument("--model", default="nominal", help="nominal, exact, or a checkpoint path")
    p.add_argument("--envs", default="eval", help="train, validation, eval, the first N of a set (eval:20), or comma-separated seeds")
    p.add_argument("--seconds", type=float, default=10.0, help="episode length, s")
    add_executor_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run_evaluate_cmd)


def _check_seconds(seconds: float) -> None:
    if seconds <= 0:
        raise ConfigError(f"--seconds must be > 0, got {seconds}")


def run_episode_cmd(args: argparse.Namespace) -> dict[str, Any]:
    """Runs one episode and returns its summary."""
    _check_seconds(args.seconds)
    ev = Evaluator(args.model, MpcConfig.from_yaml(), SimConfig.from_yaml(), FourierConfig.from_yaml())
    if args.latency is not None:
        return {"model": args.model, "env_seed": args.env_seed, **_realtime(ev, args)}
    if args.delay_compensation or args.rate_limit:
        raise ConfigError("--delay-compensation and --rate-limit need --latency (the real-time loop)")
    result = ev.episode(args.env_seed, args.seconds)
    return {"model": args.model, **result.summary()}


def _realtime(ev: Evaluator, args: argparse.Namespace) -> dict[str, Any]:
    """The real-time loop on a virtual clock, with the lock-step J of the same controller for comparison."""
    from whatmatters.realtime.control import RealtimeConfig
    from whatmatters.realtime.delay import StatePredictor
    from whatmatters.realtime.plant import PlantConfig
    from whatmatters.realtime.simulate import simulate_realtime
    from whatmatters.sim.environments import make_environment
    from whatmatters.trajectory.fourier import sample_fourier_trajectory

    if args.latency < 0 or args.rate_limit < 0:
        raise ConfigError(f"--latency and --rate-limit must be >= 0, got {args.latency} and {args.rate_limit}")
    lockstep = ev.episode(args.env_seed, args.seconds).j_track
    env = make_environment(args.env_seed)
    reference = sample_fourier_trajectory(env.reference_seed, ev.ref_cfg, ev.sim.params)
    ctrl = ev.controller(args.env_seed)
    h = ev.sim_cfg.timestep
    delay = math.ceil(args.latency / h - 1e-9) * h  # the command takes effect at the first physics step after it arrives
    cfg = RealtimeConfig(ev.mpc.dt, args.delay_compensation, delay)
    plant = PlantConfig(rate_limit=args.rate_limit > 0, max_torque_rate=args.rate_limit or 1000.0)
    predictor = StatePredictor(ctrl.solver.model) if args.delay_compensation else None
    out = simulate_realtime(ctrl, env, reference, args.seconds, args.latency, cfg, predictor=predictor, plant_config=plant)
    return {**out, "j_track_lockstep": lockstep, "ratio": out["j_track"] / lockstep, "latency_s": args.latency,
            "delay_compensation": args.delay_compensation, "rate_limit": args.rate_limit}


def run_evaluate_cmd(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluates the model on the named environment set."""
    _check_seconds(args.seconds)
    seeds = environment_seeds(args.envs)
    with executor_from_args(args) as executor:
        return evaluate(args.model, seeds, args.seconds, executor=executor).summary()
