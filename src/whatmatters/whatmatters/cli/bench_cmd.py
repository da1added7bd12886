"""``whatmatters bench``: speed figures of this machine, measured in this run."""

from __future__ import annotations

import argparse
import logging
import os
import platform
from typing import Any

from whatmatters.control.hold import run_hold
from whatmatters.dynamics.nominal import nominal_model
from whatmatters.sim.environments import make_environment
from whatmatters.sim.simulator import PandaSim, SimConfig
from whatmatters.trajectory.fourier import FourierConfig, sample_fourier_trajectory

log = logging.getLogger(__name__)


def add_parser(sub: Any) -> None:
    """Registers the sub-command."""
    p = sub.add_parser("bench", help="measure simulator (and later MPC) speed on this machine")
    p.add_argument("--sim-seconds", type=float, default=20.0, help="simulated seconds for the simulator figure")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def bench_simulator(seconds: float) -> float:
    """Realtime factor of the simulator under the hold controller (best of 3)."""
    env = make_environment(2000)
    q_start = sample_fourier_trajectory(env.reference_seed, FourierConfig.from_yaml()).evaluate(0.0)[0]
    sim = PandaSim(SimConfig.from_yaml())
    model = nominal_model(sim.params)
    return max(run_hold(sim, env, q_start, seconds, model).realtime_factor for _ in range(3))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Runs every benchmark and returns the figures."""
    out: dict[str, Any] = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"}
    log.info("bench 1/1: simulator realtime factor (%.0f s simulated, best of 3)", args.sim_seconds)
    out["sim_realtime_factor"] = round(bench_simulator(args.sim_seconds), 1)
    return out
