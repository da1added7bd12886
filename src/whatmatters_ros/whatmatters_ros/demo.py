"""``whatmatters_demo`` (``make demo``): the main job end to end through the ROS 2 graph.

1. **collect**: lock-step graphs (``SimGraph``: simulator, reference, MPC,
   logger) with the packaged base model on the training environments, up to
   ``parallel`` at once (each on its own ROS domain); the logger records one bag
   per episode with S_hat for every step.
2. **serve**: one long-lived ``mpc_controller`` process (base model). For each
   model in turn (base, then ``stand``, then ``ours``) the simulator, reference
   and logger run an episode on each evaluation environment against it. Before
   ``stand`` and ``ours``, a ``trainer`` node fine-tunes that weighting on the
   collected bags from the same base, writes its checkpoint, sets the MPC's model
   and calls its ``~/reload_model``: the MPC process is never restarted.
3. **report**: J_track of each evaluation bag (eq. 7, on the reference's
   clock), a table per environment with the mean and % of base, a plain
   verdict, and one figure (tracking error of the three models, the S_hat map).

Settings: ``config/demo.yaml`` (chosen on the validation environments,
docs/experiments.md), each overridable on the command line. Output under
``runs/demo/<time>/``: ``bags/``, ``eval_bags/<model>/``, the checkpoints,
``results.md``, ``summary.json`` and ``demo.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar

from rosbags.rosbag2 import Reader

from whatmatters.config import YamlConfig, dataclass_from_mapping, load_yaml
from whatmatters.data.bags import TYPESTORE
from whatmatters.errors import ConfigError, WhatmattersError
from whatmatters_ros.demo_report import MODELS, demo_figure, demo_table, demo_verdict
from whatmatters_ros.graph import SimGraph, summarize_bag

__all__ = ["DemoConfig", "main", "mpc_model_version", "run_demo"]

log = logging.getLogger(__name__)

DIAGNOSTICS = "/diagnostics"
SIM_NODES = ("franka_sim", "reference_publisher", "sensitivity_logger")
MAX_DOMAIN_ID = 232  # the highest ROS_DOMAIN_ID whose DDS ports exist (ROS 2 "The ROS_DOMAIN_ID")


@dataclass(frozen=True)
class DemoConfig(YamlConfig):
    """Settings of the main job (``config/demo.yaml``).

    Attributes:
        train_envs: Training environment seeds, one lock-step episode each.
        train_seconds: Simulated seconds per training episode, s.
        eval_envs: Evaluation environment seeds (never in the data).
        eval_seconds: Simulated seconds per evaluation episode, s.
        rollout: Rollout length p of the fine-tuning loss, control steps.
        epochs: Fine-tuning epochs of each weighting.
        lr: Fine-tuning learning rate (0: ``config/finetune.yaml``'s).
        parallel: Collection graphs run at once.
    """

    yaml_file: ClassVar[str] = "demo.yaml"

    train_envs: tuple[int, ...] = (0, 1, 2)
    train_seconds: float = 10.0
    eval_envs: tuple[int, ...] = (2000, 2001, 2002)
    eval_seconds: float = 10.0
    rollout: int = 4
    epochs: int = 5
    lr: float = 0.0
    parallel: int = 2

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str] | None = None) -> DemoConfig:
        """Reads ``config/demo.yaml`` (or ``path``); the seed lists are integers of any length."""
        source = str(path if path is not None else cls.yaml_file)
        data = dict(load_yaml(path if path is not None else cls.yaml_file))
        seeds = {key: data.pop(key) for key in ("train_envs", "eval_envs") if key in data}
        for key, value in seeds.items():
            if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise ConfigError(f"{source}: key '{key}': expected a list of integer seeds (got {value!r})")
        return replace(dataclass_from_mapping(cls, data, source), **{key: tuple(value) for key, value in seeds.items()})

    def __post_init__(self) -> None:
        problems = [text for bad, text in (
            (not self.train_envs or not self.eval_envs, "train_envs and eval_envs must not be empty"),
            (bool(set(self.train_envs) & set(self.eval_envs)), f"eval_envs {self.eval_envs} overlap train_envs {self.train_envs}"),
            (not (self.train_seconds > 0 and self.eval_seconds > 0), "train_seconds and eval_seconds must be positive"),
            (not 1 <= self.rollout <= 12, f"rollout must be 1..12, got {self.rollout}"),
            (self.epochs < 1 or self.parallel < 1 or self.lr < 0, "epochs and parallel must be >= 1 and lr >= 0"),
        ) if bad]
        if problems:
            raise ConfigError(f"demo.yaml: {'; '.join(problems)}")


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


def _start_build(out: Path) -> subprocess.Popen[bytes]:
    """``whatmatters build --model base`` beside the first graphs: on a cold cache the MPC's and the
    logger's solvers and functions then compile in parallel (the graphs wait for them on the cache's
    locks) instead of one after another inside the logger; on a warm one it sees them cached and ends."""
    (out / "logs").mkdir(parents=True, exist_ok=True)
    with open(out / "logs" / "build.log", "wb") as fh:
        return subprocess.Popen([sys.executable, "-m", "whatmatters.cli.main", "build", "--model", "base", "--if-missing", "--json"],
                                stdout=fh, stderr=subprocess.STDOUT, preexec_fn=lambda: os.nice(5))


def _collect(cfg: DemoConfig, out: Path, domain: int) -> Path:
    """Phase 1: a bag with S_hat per training environment, ``parallel`` graphs at once."""
    bags = out / "bags"
    build = _start_build(out)

    free: queue.Queue[int] = queue.Queue()  # a domain is reused only once its graph has stopped
    for d in range(domain, domain + cfg.parallel):
        free.put(d)

    def one(seed: int) -> Path:
        d = free.get()
        try:
            log.info("collect: env %d, %.1f s lock-step with S_hat for every step (domain %d)", seed, cfg.train_seconds, d)
            return _episode(out / f"collect_env{seed}", d, seed, cfg.train_seconds, bags, sensitivity=True)
        finally:
            free.put(d)

    try:
        with ThreadPoolExecutor(cfg.parallel) as pool:  # each thread starts and stops its own graph
            list(pool.map(one, cfg.train_envs))
    finally:
        if build.poll() is None:
            build.terminate()  # the graphs ran without it: it only ever saves time
        if build.wait() not in (0, -signal.SIGTERM):
            log.warning("whatmatters build exited with %d (the nodes compiled what they needed); see %s", build.returncode, out / "logs" / "build.log")
    return bags


def _train_and_swap(cfg: DemoConfig, out: Path, domain: int, weighting: str, bags: Path) -> Path:
    """A ``trainer`` node: ``weighting`` on ``bags`` from the base; then the running MPC reloads its checkpoint."""
    checkpoint = out / f"{weighting}.pt"
    params = {"bag_dir": str(bags), "checkpoint": str(checkpoint), "weighting": weighting, "rollout": cfg.rollout,
              "epochs": cfg.epochs, "lr": cfg.lr, "min_bags": len(cfg.train_envs), "max_rounds": 1, "poll_period": 0.5,
              "service_timeout": 300.0}
    trainer = SimGraph(out / f"train_{weighting}", cfg.eval_seconds, True, domain, {"trainer": params}, nodes=("trainer",))
    log.info("train: %s weighting, p = %d, %d epochs; then reload_model on the running MPC", weighting, cfg.rollout, cfg.epochs)
    trainer.start()
    try:
        trainer.wait_node("trainer", 1800.0)
    finally:
        trainer.stop(grace=0.0)
    return checkpoint


def run_demo(cfg: DemoConfig, out: Path, domain: int) -> dict[str, Any]:
    """Runs the three phases (module docstring) into ``out``; returns the summary."""
    start = time.perf_counter()
    timing: dict[str, float] = {}
    bags = _collect(cfg, out, domain)
    timing["collect_s"] = time.perf_counter() - start
    serve = SimGraph(out / "serve", cfg.eval_seconds, True, domain, {"mpc_controller": {"model": "base"}}, nodes=("mpc_controller",))
    eval_bags: dict[str, dict[int, Path]] = {m: {} for m in MODELS}
    versions: dict[str, int] = {}
    serve.start()
    try:
        for version, model in enumerate(MODELS, start=1):
            t0 = time.perf_counter()
            expected = "base" if model == "base" else str(_train_and_swap(cfg, out, domain, model, bags))
            timing[f"train_{model}_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            for env in cfg.eval_envs:
                if serve.procs["mpc_controller"].poll() is not None:
                    raise WhatmattersError(f"the MPC exited with {serve.procs['mpc_controller'].returncode}; see {out / 'serve' / 'logs'}")
                log.info("evaluate: %s on env %d (the running MPC, model version %d)", model, env, version)
                bag = _episode(out / f"eval_{model}_env{env}", domain, env, cfg.eval_seconds, out / "eval_bags" / model,
                               sensitivity=False, nodes=SIM_NODES)
                got, path = mpc_model_version(bag)
                if got != version or path != expected:
                    raise WhatmattersError(f"{bag} ran MPC model version {got} ('{path}'), not version {version} ('{expected}')")
                eval_bags[model][env] = bag
            versions[model] = version
            timing[f"evaluate_{model}_s"] = time.perf_counter() - t0
    finally:
        serve.stop(grace=0.0)
    j = {m: {env: float(summarize_bag(bag, env, seconds=cfg.eval_seconds)["j_track"]) for env, bag in eval_bags[m].items()} for m in MODELS}
    table = demo_table(j)
    ours_wins, verdict = demo_verdict(j)
    figure = demo_figure(eval_bags, bags, out / "demo.png")
    (out / "results.md").write_text(f"# whatmatters_demo\n\nJ_track (eq. 7) of each evaluation episode\n\n{table}\n\n{verdict}\n")
    return {
        "j_track": {m: {str(e): v for e, v in j[m].items()} for m in MODELS}, "ours_beats_stand_and_base": ours_wins,
        "verdict": verdict, "table": table, "config": {f.name: getattr(cfg, f.name) for f in fields(cfg)},
        "mpc_model_versions": versions, "bags": str(bags),
        "eval_bags": {m: {str(e): str(b) for e, b in eval_bags[m].items()} for m in MODELS},
        "checkpoints": {m: str(out / f"{m}.pt") for m in MODELS[1:]}, "figure": str(figure), "results": str(out / "results.md"),
        "wall_seconds": time.perf_counter() - start, **timing, "out": str(out),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``whatmatters_demo``."""
    base = DemoConfig()
    p = argparse.ArgumentParser(prog="whatmatters_demo", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--config", type=Path, default=None, help="demo YAML (default config/demo.yaml)")
    p.add_argument("--train-envs", type=int, nargs="+", default=None, help=f"training environment seeds (default {base.train_envs})")
    p.add_argument("--train-seconds", type=float, default=None, help="simulated seconds per training episode")
    p.add_argument("--eval-envs", type=int, nargs="+", default=None, help="evaluation environment seeds")
    p.add_argument("--eval-seconds", type=float, default=None, help="simulated seconds per evaluation episode")
    p.add_argument("--rollout", type=int, default=None, help="rollout length p")
    p.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs")
    p.add_argument("--parallel", type=int, default=None, help="collection graphs at once")
    p.add_argument("--out", type=Path, default=None, help="run folder (default: runs/demo/<time>)")
    p.add_argument("--domain-id", type=int, default=None, help="first ROS_DOMAIN_ID (the next parallel - 1 are used too)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        cfg = DemoConfig.from_yaml(args.config)
        given = {"train_envs": args.train_envs and tuple(args.train_envs), "train_seconds": args.train_seconds,
                 "eval_envs": args.eval_envs and tuple(args.eval_envs), "eval_seconds": args.eval_seconds,
                 "rollout": args.rollout, "epochs": args.epochs, "parallel": args.parallel}
        cfg = replace(cfg, **{k: v for k, v in given.items() if v is not None})
        out = (args.out or Path("runs/demo") / time.strftime("%Y%m%d-%H%M%S")).resolve()
        domain = args.domain_id if args.domain_id is not None else 1 + os.getpid() % 90
        if not 0 <= domain <= MAX_DOMAIN_ID - cfg.parallel + 1:
            raise ConfigError(f"--domain-id {domain}: the demo uses ROS domains {domain}..{domain + cfg.parallel - 1}; "
                              f"ROS 2 allows 0..{MAX_DOMAIN_ID}")
        result = run_demo(cfg, out, domain)
    except WhatmattersError as exc:
        print(f"whatmatters_demo: error: {exc}", file=sys.stderr)
        return 2
    (Path(result["out"]) / "summary.json").write_text(json.dumps(result, indent=2))
    print(f"\n{result['table']}\n\n{result['verdict']}")
    print(f"bags: {result['bags']}\nfigure: {result['figure']}\nresults: {result['results']}\nwall time: {result['wall_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
