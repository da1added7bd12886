"""``whatmatters sensitivities`` and ``whatmatters plot-sensitivity``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from whatmatters.cli.executor_args import add_executor_args, executor_from_args
from whatmatters.data.bags import read_bag_dir
from whatmatters.errors import ConfigError
from whatmatters.sensitivity.batch import STATE_LABELS, compute_bag_dir, load_sidecar


def add_parser(sub: Any) -> None:
    """Registers both sub-commands."""
    p = sub.add_parser("sensitivities", help="S_hat for every control step of the bags in a folder (sidecar files)")
    p.add_argument("--data", required=True, help="folder of bags")
    p.add_argument("--model", default="base", help="the MPC's model: nominal, base, or a checkpoint path")
    p.add_argument("--max-steps", type=int, default=None, help="only the first steps of each episode")
    add_executor_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run_compute)

    p = sub.add_parser("plot-sensitivity", help="Fig. 1: mean |S_hat| over a dataset (states x horizon)")
    p.add_argument("--data", required=True, help="folder of bags with sensitivity sidecars")
    p.add_argument("--out", required=True, help="PNG path")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run_plot)


def run_compute(args: argparse.Namespace) -> dict[str, Any]:
    """Computes the sidecars."""
    if args.max_steps is not None and args.max_steps < 1:
        raise ConfigError(f"--max-steps must be >= 1, got {args.max_steps}")
    start = time.perf_counter()
    with executor_from_args(args) as executor:
        res = compute_bag_dir(args.data, args.model, max_steps=args.max_steps, executor=executor)
    ok, total = sum(r[1] for r in res), sum(r[2] for r in res)
    wall = time.perf_counter() - start
    return {"bags": len(res), "samples": total, "converged": ok, "wall_s": round(wall, 2)}


def run_plot(args: argparse.Namespace) -> dict[str, Any]:
    """Draws Fig. 1 from the sidecars."""
    from whatmatters.sensitivity.plot import plot_sensitivity_maps  # matplotlib: only for this command

    episodes, _ = read_bag_dir(args.data)
    maps = []
    for ep in episodes:
        try:
            maps.append(load_sidecar(ep.path)["s_hat"])
        except FileNotFoundError as exc:
            raise ConfigError(str(exc)) from exc
    s_hat = np.concatenate(maps)
    out = plot_sensitivity_maps(s_hat, STATE_LABELS, Path(args.out))
    return {"figure": str(out), "samples": int(np.all(np.isfinite(s_hat), axis=(1, 2)).sum())}
