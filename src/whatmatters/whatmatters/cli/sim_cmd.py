"""``whatmatters sim``: hold the start pose of an environment under gravity compensation."""

from __future__ import annotations

import argparse
from typing import Any

from whatmatters.control.hold import run_hold
from whatmatters.dynamics.nominal import nominal_model
from whatmatters.errors import ConfigError
from whatmatters.sim.environments import make_environment
from whatmatters.sim.simulator import PandaSim, SimConfig
from whatmatters.trajectory.fourier import FourierConfig, sample_fourier_trajectory


def add_parser(sub: Any) -> None:
    """Registers the sub-command."""
    p = sub.add_parser("sim", help="run the simulator holding an environment's start pose")
    p.add_argument("--env-seed", type=int, default=2000, help="environment seed (payload draw)")
    p.add_argument("--seconds", type=float, default=10.0, help="simulated seconds")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Runs the hold episode and returns the summary."""
    if args.seconds <= 0:
        raise ConfigError(f"--seconds must be > 0, got {args.seconds}")
    env = make_environment(args.env_seed)
    q_start = sample_fourier_trajectory(env.reference_seed, FourierConfig.from_yaml()).evaluate(0.0)[0]
    sim = PandaSim(SimConfig.from_yaml())
    res = run_hold(sim, env, q_start, args.seconds, nominal_model(sim.params))
    return {
        "env_seed": env.seed,
        "sim_seconds": round(res.sim_seconds, 6),
        "wall_seconds": round(res.wall_seconds, 6),
        "realtime_factor": round(res.realtime_factor, 2),
        "final_q": [round(float(v), 6) for v in res.final_q],
        "max_abs_q_error": round(res.max_error, 6),
        "torque_clamps": res.clamps,
        "payload_mass": round(env.payload.mass, 6),
        "payload_offset": [round(float(v), 6) for v in env.payload.offset],
    }
