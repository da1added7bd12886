"""``whatmatters up sim|car|bench``: the node graph as separate processes (no ``ros2 launch`` needed).

``sim``: the arm's graph (simulator, reference, MPC, logger); ``car``: the race
car's (``car_sim``, ``car_mpc``, ``car_logger``; :mod:`whatmatters_ros.car_graph`);
``bench``: real-time runs of the arm against lock-step.

Registered as a ``whatmatters`` sub-command when rclpy and this package are
installed (the core finds it without importing ROS), and as the console
script ``whatmatters_up``. Defaults come from the same ``config/<node>.yaml``
files the nodes read.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from whatmatters.errors import ConfigError, WhatmattersError
from whatmatters_ros.graph import SimGraph, summarize_bag
from whatmatters_ros.params import NodeParams

__all__ = ["add_parser", "main", "run_up"]


def _defaults(node: str) -> Any:
    from whatmatters_ros.nodes import franka_sim, mpc_controller, sensitivity_logger  # rclpy imported here only

    cls: type[NodeParams] = {"franka_sim": franka_sim.FrankaSimParams, "mpc_controller": mpc_controller.MpcParams,
                             "sensitivity_logger": sensitivity_logger.LoggerParams}[node]
    return cls.defaults()


def add_parser(sub: Any) -> None:
    """Registers ``up``."""
    p = sub.add_parser("up", help="start the ROS 2 node graph as processes (sim: the arm's simulator, reference, MPC, logger; car: the race car's; bench: real time vs lock-step)")
    p.add_argument("graph", choices=["sim", "car", "bench"], help="sim: the graph of launch/sim.launch.py; car: the race car's graph (docs/car.md); bench: real-time runs against lock-step (docs/ros.md)")
    p.add_argument("--seconds", type=float, default=10.0, help="simulated episode length, s")
    p.add_argument("--lockstep", action="store_true", help="lock-step clock (faster than real time, deterministic)")
    p.add_argument("--env-seed", type=int, default=None, help="environment seed (default: config/franka_sim.yaml)")
    p.add_argument("--model", default=None, help="MPC model (default: config/mpc_controller.yaml)")
    p.add_argument("--out", type=Path, default=None, help="run folder (default: runs/ros/<time>)")
    p.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: 1 + pid mod 100)")
    p.add_argument("--timeout", type=float, default=600.0, help="wall-clock limit of the run, s")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--envs", default="eval:5", help="bench: environment seeds (comma-separated) or SET:N, the first N of a seed set")
    p.add_argument("--models", default="nominal,base", help="bench: comma-separated MPC models")
    p.add_argument("--runs", type=int, default=3, help="bench: real-time runs per environment and model")
    p.add_argument("--rate-limit", action="store_true", help="real time: Franka's torque-rate limit in the simulator")
    p.add_argument("--delay-compensation", action="store_true", help="real time: the MPC compensates its input delay")
    p.add_argument("--no-sensitivity", action="store_true", help="the logger records without computing S_hat")
    p.set_defaults(run=run_up)


def _switches(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {"franka_sim": {}, "mpc_controller": {}, "sensitivity_logger": {}}
    if args.no_sensitivity:
        out["sensitivity_logger"]["sensitivity"] = False
    if args.rate_limit:
        out["franka_sim"]["torque_rate_limit"] = True
    if args.delay_compensation:
        out["mpc_controller"]["delay_compensation"] = True
    return out


def _env_seeds(spec: str) -> list[int]:
    """Seeds of ``--envs``: a set name or list (:func:`environment_seeds`), or ``SET:N``, the first N of a set."""
    from whatmatters.sim.environments import environment_seeds

    name, _, count = spec.partition(":")
    if not count:
        return environment_seeds(spec)
    if not count.isdigit() or int(count) < 1:
        raise ConfigError(f"--envs {spec!r}: N of SET:N must be a whole number >= 1")
    return environment_seeds(name)[: int(count)]


def run_bench_cmd(args: argparse.Namespace, domain: int) -> dict[str, Any]:
    """``whatmatters up bench``."""
    from whatmatters_ros.realtime_bench import run_bench

    out = args.out or Path("runs/realtime_bench") / time.strftime("%Y%m%d-%H%M%S")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    result = run_bench(_env_seeds(args.envs), models, args.runs, args.seconds, out.resolve(), domain, _switches(args))
    if args.json:
        return result
    from whatmatters_ros.realtime_bench import markdown_table

    return {"results": str(out / "realtime_bench.json"), "worst_ratio": result["worst_ratio"], "table": "\n" + markdown_table(result["rows"])}


def run_up(args: argparse.Namespace) -> dict[str, Any]:
    """Runs the graph for one episode and summarises its bag (``bench``: the benchmark)."""
    if args.seconds <= 0:
        raise ConfigError(f"--seconds must be > 0, got {args.seconds}")
    sim, mpc = _defaults("franka_sim"), _defaults("mpc_controller")
    env_seed = sim.env_seed if args.env_seed is None else args.env_seed
    model = mpc.model if args.model is None else args.model
    domain = args.domain_id if args.domain_id is not None else 1 + os.getpid() % 100
    if not (0 <= domain <= 101 or 215 <= domain <= 232):
        raise ConfigError(f"--domain-id must be in 0..101 or 215..232 (ROS 2's safe ranges on Linux), got {domain}")
    if args.graph == "bench":
        return run_bench_cmd(args, domain)
    if args.graph == "car":
        from whatmatters_ros.car_graph import run_car_graph

        out = args.out or Path("runs/car_ros") / time.strftime("%Y%m%d-%H%M%S")
        return run_car_graph(out.resolve(), args.seconds, args.lockstep, domain, args.env_seed, args.model, args.timeout, not args.no_sensitivity)
    out = args.out or Path("runs/ros") / time.strftime("%Y%m%d-%H%M%S")
    switches = _switches(args)
    overrides = {
        "franka_sim": {"env_seed": env_seed, **switches["franka_sim"]},
        "reference_publisher": {"env_seed": env_seed},
        "mpc_controller": {"model": model, **switches["mpc_controller"]},
        "sensitivity_logger": {"model": model, **switches["sensitivity_logger"]},
    }
    graph = SimGraph(out.resolve(), args.seconds, args.lockstep, domain, overrides)
    bag, codes, wall = graph.run_episode(args.timeout)
    summary = summarize_bag(bag, env_seed, seconds=args.seconds)
    return {
        "bag": str(bag), **summary, "lockstep": args.lockstep, "env_seed": env_seed, "model": model,
        "wall_seconds": wall, "realtime_factor": summary["seconds"] / wall, "domain_id": domain,
        "exit_codes": codes, "logs": str(out / "logs"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``whatmatters_up`` (same as ``whatmatters up``)."""
    parser = argparse.ArgumentParser(prog="whatmatters_up")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(["up", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        result = run_up(args)
    except WhatmattersError as exc:
        print(f"whatmatters up: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
