"""``whatmatters build``: compile a model's solvers and functions into the cache before a job."""

from __future__ import annotations

import argparse
import time
from typing import Any

from whatmatters.build import PARTS, SYSTEMS, build_model, solvers_cached


def add_parser(sub: Any) -> None:
    """Registers the sub-command."""
    p = sub.add_parser("build", help="compile a model's MPC and S_hat solvers into the cache, in parallel (first use on a machine)")
    p.add_argument("--model", default="base", help="nominal, base, or a checkpoint path")
    p.add_argument("--system", default="arm", choices=SYSTEMS, help="arm (config/) or car (the race car, config/car/)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)} (default: all)")
    p.add_argument("--if-missing", action="store_true", help="do nothing when the model's MPC and S_hat solvers are already cached")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run_build)


def run_build(args: argparse.Namespace) -> dict[str, Any]:
    """Builds the parts; seconds per part and the wall time."""
    start = time.perf_counter()
    if args.if_missing and solvers_cached(args.model, args.system):
        return {"model": args.model, "system": args.system, "cached": True, "wall_s": round(time.perf_counter() - start, 2)}
    seconds = build_model(args.model, [p.strip() for p in args.parts.split(",") if p.strip()], system=args.system)
    return {"model": args.model, "system": args.system, "cached": False, **{f"{part}_s": round(s, 2) for part, s in seconds.items()}, "wall_s": round(time.perf_counter() - start, 2)}
