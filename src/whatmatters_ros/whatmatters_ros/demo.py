"""``whatmatters_demo`` (``make demo``): the main job end to end through the ROS 2 graph.

1. **collect**: lock-step graphs (``SimGraph``: simulator, reference, MPC,
   logger) with the packaged base model on a few training environments; the
   logger records one bag per episode with S_hat for every step.
2. **before**: the same graph on the evaluation environment (no
   sensitivities), J_track of the base model.
3. **train + hot swap**: a long-lived ``mpc_controller`` (base model) and the
   ``trainer`` node: it fine-tunes on the collected bags (``ours`` weighting),
   writes the checkpoint atomically, sets the MPC's model and calls its
   ``~/reload_model``, then exits.
4. **after**: simulator, reference and logger on the evaluation environment
   again, controlled by that same MPC process, now on model version 2; J_track.

Prints before/after J_track and where the bags, checkpoint and figures are
(``runs/demo/<time>/``), and writes ``summary.json`` there.
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

import numpy as np
from rosbags.rosbag2 import Reader

from whatmatters.data.bags import SENSITIVITY, TYPESTORE, read_bag_dir, read_episode
from whatmatters.errors import WhatmattersError
from whatmatters.sensitivity.plot import plot_sensitivity_maps
from whatmatters_ros.graph import SimGraph, summarize_bag

__all__ = ["main", "run_demo"]

log = logging.getLogger(__name__)

DIAGNOSTICS = "/diagnostics"
SIM_NODES = ("franka_sim", "reference_publisher", "sensitivity_logger")


def _episode(out: Path, domain: int, env_seed: int, seconds: float, bag_dir: Path, sensitivity: bool,
             nodes: tuple[str, ...] | None = None, timeout: float = 900.0) -> Path:
    """One lock-step episode of the base-model graph (or of ``nodes`` beside a running MPC); its closed bag."""
    overrides: dict[str, dict[str, Any]] = {
        "franka_sim": {"env_seed": env_seed, "wait_for_sensitivity": sensitivity},
        "reference_publisher": {"env_seed": env_seed},
        "mpc_controller": {"model": "base"},
        "sensitivity_logger": {"model": "base", "sensitivity": sensitivity, "bag_dir": str(bag_dir), "bag_prefix": f"env{env_seed}"},
    }
    graph = SimGraph(out, seconds, True, domain, overrides, **({"nodes": nodes} if nodes else {}))
    graph.start()
    codes: dict[str, int | None] = {}
    try:
        graph.wait_sim(timeout)
    finally:
        codes = graph.stop()
    bags = sorted(bag_dir.glob(f"env{env_seed}_*/metadata.yaml"))
    if not bags:
        raise WhatmattersError(f"no closed bag for env {env_seed} under {bag_dir} (node exit codes {codes}); see {out / 'logs'}")
    return bags[-1].parent


def mpc_model_version(bag: Path) -> tuple[int, str]:
    """The last ``model_version`` and ``model`` the MPC reported on ``/diagnostics`` in a bag."""
    version, model = 0, ""
    with Reader(bag) as reader:
        for conn, _, raw in reader.messages(connections=[c for c in reader.connections if c.topic == DIAGNOSTICS]):
            for status in TYPESTORE.deserialize_cdr(raw, conn.msgtype).status:
                if status.name == "mpc_controller":
                    values = {kv.key: kv.value for kv in status.values}
                    version, model = int(values.get("model_version", version)), values.get("model", model)
    return version, model


def _figures(train_bags: Path, before: Path, after: Path, out: Path) -> list[Path]:
    """Mean |S_hat| of the training bags and the tracking error before/after."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    episodes, _ = read_bag_dir(train_bags, (SENSITIVITY,))
    s_hat = np.concatenate([ep.extra[SENSITIVITY] for ep in episodes if SENSITIVITY in ep.extra])
    labels = tuple(f"q{i}" for i in range(1, 8)) + tuple(f"qd{i}" for i in range(1, 8))
    paths = [plot_sensitivity_maps(s_hat, labels, out / "sensitivity.png")]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for name, bag in (("base (before)", before), ("fine-tuned, hot-swapped (after)", after)):
        ep = read_episode(bag)
        ax.plot(ep.t - ep.t[0], np.linalg.norm(ep.x[:, :7] - ep.x_ref[:, :7], axis=1), label=name)
    ax.set(xlabel="time, s", ylabel="|q - q_ref|, rad", title="evaluation environment: joint tracking error")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "tracking.png", dpi=120)
    plt.close(fig)
    return [*paths, out / "tracking.png"]


def run_demo(args: argparse.Namespace) -> dict[str, Any]:
    """Runs the four phases (module docstring) and returns the summary."""
    start = time.perf_counter()
    out = (args.out or Path("runs/demo") / time.strftime("%Y%m%d-%H%M%S")).resolve()
    domain = args.domain_id if args.domain_id is not None else 1 + os.getpid() % 100
    bags = out / "bags"
    timing: dict[str, float] = {}
    for seed in args.train_envs:
        log.info("collect: env %d, %.1f s lock-step with S_hat for every step", seed, args.train_seconds)
        _episode(out / f"collect_env{seed}", domain, seed, args.train_seconds, bags, sensitivity=True)
    timing["collect_s"] = time.perf_counter() - start
    log.info("before: base model on env %d", args.eval_env)
    before = _episode(out / "before", domain, args.eval_env, args.eval_seconds, out / "eval_bags", sensitivity=False)
    t0 = time.perf_counter()
    checkpoint = out / "model.pt"
    serve = SimGraph(out / "serve", args.eval_seconds, True, domain, {
        "mpc_controller": {"model": "base"},
        "trainer": {"bag_dir": str(bags), "checkpoint": str(checkpoint), "weighting": args.weighting, "rollout": args.rollout,
                    "epochs": args.epochs, "min_bags": len(args.train_envs), "max_rounds": 1, "poll_period": 1.0,
                    "service_timeout": 300.0},
    }, nodes=("mpc_controller", "trainer"))
    serve.start()
    try:
        log.info("train: %s weighting, p = %d, %d epochs; then reload_model on the running MPC", args.weighting, args.rollout, args.epochs)
        serve.wait_node("trainer", 1800.0)
        timing["train_and_swap_s"] = time.perf_counter() - t0
        log.info("after: the same MPC process, fine-tuned weights, env %d", args.eval_env)
        after = _episode(out / "after", domain, args.eval_env, args.eval_seconds, out / "eval_bags", sensitivity=False, nodes=SIM_NODES)
    finally:
        serve.stop(grace=0.0)
    version, model = mpc_model_version(after)
    if version != 2 or Path(model) != checkpoint:
        raise WhatmattersError(f"the after run used MPC model version {version} ('{model}'), not the fine-tuned {checkpoint}")
    j_before, j_after = summarize_bag(before, args.eval_env)["j_track"], summarize_bag(after, args.eval_env)["j_track"]
    figures = _figures(bags, before, after, out / "figures")
    return {
        "j_track_before": j_before, "j_track_after": j_after, "after_over_before": j_after / j_before,
        "eval_env": args.eval_env, "train_envs": list(args.train_envs), "weighting": args.weighting, "epochs": args.epochs,
        "bags": str(bags), "eval_bags": [str(before), str(after)], "checkpoint": str(checkpoint),
        "mpc_model_version_after": version, "figures": [str(f) for f in figures],
        "wall_seconds": time.perf_counter() - start, **timing, "out": str(out),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``whatmatters_demo``."""
    p = argparse.ArgumentParser(prog="whatmatters_demo", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--train-envs", type=int, nargs="+", default=[0, 1, 2], help="training environment seeds (one episode each)")
    p.add_argument("--train-seconds", type=float, default=4.0, help="simulated seconds per training episode")
    p.add_argument("--eval-env", type=int, default=2000, help="evaluation environment seed")
    p.add_argument("--eval-seconds", type=float, default=10.0, help="simulated seconds of the before/after runs")
    p.add_argument("--weighting", default="ours")
    p.add_argument("--rollout", type=int, default=4)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--out", type=Path, default=None, help="run folder (default: runs/demo/<time>)")
    p.add_argument("--domain-id", type=int, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        result = run_demo(args)
    except WhatmattersError as exc:
        print(f"whatmatters_demo: error: {exc}", file=sys.stderr)
        return 2
    (Path(result["out"]) / "summary.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"\nJ_track on env {result['eval_env']}: base {result['j_track_before']:.4f} -> fine-tuned and hot-swapped "
          f"{result['j_track_after']:.4f} ({100 * result['after_over_before']:.1f} %)")
    print(f"bags: {result['bags']}\ncheckpoint: {result['checkpoint']}\nfigures: {', '.join(result['figures'])}\n"
          f"wall time: {result['wall_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
