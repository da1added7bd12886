"""``whatmatters experiment``: the paper's comparison in one command (resumable)."""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from whatmatters.cli.executor_args import add_executor_args, executor_config
from whatmatters.config import config_dir, dataclass_from_mapping
from whatmatters.executor import make_executor
from whatmatters.experiment.bounds import bound_weight_statistics
from whatmatters.experiment.config import load_experiment_config
from whatmatters.experiment.report import write_report
from whatmatters.errors import ConfigError
from whatmatters.experiment.sweep import finished_runs, ours_statistics, run_sweep
from whatmatters.sensitivity.batch import factor_statistics
from whatmatters.io import atomic_write_text
from whatmatters.sim.environments import environment_seeds


def add_parser(sub: Any) -> None:
    """Registers the sub-command."""
    p = sub.add_parser("experiment", help="fine-tune every weighting x rollout length x seed and draw Fig. 2 (resumable)")
    p.add_argument("--system", choices=("arm", "car"), default="arm", help="the Panda arm (Fig. 2) or the race car (Fig. 3, config/car/experiment.yaml)")
    p.add_argument("--config", default=None, help="experiment YAML (default config/experiment.yaml, or config/car/experiment.yaml with --system car)")
    p.add_argument("--quick", action="store_true", help="the reduced sweep of the YAML's quick: section (~10 min)")
    p.add_argument("--out", default=None, help="output folder, reused to resume (default runs/experiment[_quick])")
    p.add_argument("--data", default=None, help="data folder (default <out>/data; share one between sweeps with the same data settings)")
    p.add_argument("--docs", default=None, help="also write fig2.json, fig2.png, results.md under this docs folder "
                   "(results/, figures/; default: docs for the shipped sweep of config/experiment.yaml on the "
                   "eval set, none for --quick, another --config or --eval-set validation)")
    p.add_argument("--eval-set", choices=("eval", "validation"), default=None, help="override the evaluation set (validation: for choosing settings)")
    p.add_argument("--report-only", action="store_true", help="write the report from the runs finished so far (computes nothing)")
    add_executor_args(p)  # default: the YAML's executor: section over config/executor.yaml
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run_experiment)


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this sweep (printed into results.md)."""
    parts = ["whatmatters", "experiment"]
    for flag, value in (("--config", args.config), ("--out", args.out), ("--data", args.data), ("--docs", args.docs), ("--eval-set", args.eval_set)):
        if value:
            parts += [flag, shlex.quote(str(value))]
    if args.quick:
        parts.append("--quick")
    if args.report_only:
        parts.append("--report-only")
    return " ".join(parts)


def _is_shipped_sweep(args: argparse.Namespace, cfg: Any) -> bool:
    """Whether this is the sweep docs/results.md reports: the shipped config
    (``config/experiment.yaml``, found as the CLI finds it), not ``--quick``,
    the evaluation set. Only it writes into ``docs/`` without ``--docs``; any
    other sweep (a probe, a validation run) would overwrite the committed results."""
    if args.quick or cfg.eval_set != "eval":
        return False
    if args.config is None:
        return True
    try:
        return Path(args.config).resolve() == (config_dir() / "experiment.yaml").resolve()
    except ConfigError:
        return False


def run_car_experiment(args: argparse.Namespace) -> dict[str, Any]:
    """``--system car``: runs or continues the car's sweep, then writes its report (table and Fig. 3)."""
    from whatmatters.car.data import load_episodes
    from whatmatters.car.experiment import CarExperimentConfig
    from whatmatters.car.generate import generate_track
    from whatmatters.car.model import CarModel
    from whatmatters.car.params import load_car_params
    from whatmatters.car.raceline import racing_line
    from whatmatters.car.report import write_car_report
    from whatmatters.car.sweep import finished_runs, run_car_sweep, summary
    from whatmatters.executor import ExecutorConfig

    if args.quick or args.eval_set or args.data:
        raise ConfigError("--system car takes --config, --out, --docs, --report-only and the executor options only")
    cfg = CarExperimentConfig.from_yaml(args.config)
    out = Path(args.out or "runs/car_experiment")
    if args.report_only:  # from the files of the runs finished so far
        refs = [out / "nominal_eval.json", out / "base_eval.json"]
        if not all(p.is_file() for p in refs):
            raise ConfigError(f"no car sweep with its reference evaluations in {out} ({', '.join(str(p) for p in refs if not p.is_file())} missing)")
        report = {"nominal": json.loads(refs[0].read_text()), "base": json.loads(refs[1].read_text())}
    else:
        base = ExecutorConfig.from_yaml()
        if cfg.workers:
            base = replace(base, workers=cfg.workers)
        with make_executor(executor_config(args, base)) as executor:
            report = run_car_sweep(cfg, out, executor)
    ran_cfg = out / "experiment.json"
    if not ran_cfg.is_file():
        raise ConfigError(f"no car sweep in {out} ({ran_cfg} missing)")
    ran = dataclass_from_mapping(CarExperimentConfig, json.loads(ran_cfg.read_text()), str(ran_cfg))
    runs = finished_runs(out)
    report["summary"] = summary(runs, ran.weightings, ran.rollout_lengths)  # every finished run, this version's summary
    report["runs"] = len(runs)
    records = [r for r in load_episodes(out / "data") if r.s_hat is not None]
    if not records:
        raise ConfigError(f"no episode with sensitivities in {out / 'data'}")
    command = " ".join(["whatmatters", "experiment", "--system", "car"] + [f"{k} {shlex.quote(str(v))}" for k, v in (("--config", args.config), ("--out", args.out)) if v])
    shipped = ran == CarExperimentConfig.from_yaml(config_dir() / "car" / "experiment.yaml")  # docs/ holds the shipped sweep's numbers only
    folders = [out / "report"] + ([Path(args.docs or "docs") / "car"] if (args.docs or shipped) else [])
    track = generate_track(ran.track_seed)
    line = racing_line(track, load_car_params())
    for folder in folders:
        write_car_report(report, records[0], track, line, CarModel.state_labels, ran, command, folder)
    return {"summary": report["summary"], "runs": report["runs"], "seconds": report.get("seconds"), "report": [str(f) for f in folders]}


def run_experiment(args: argparse.Namespace) -> dict[str, Any]:
    """Runs or continues the sweep, then writes the report."""
    if args.system == "car":
        return run_car_experiment(args)

    cfg = load_experiment_config(args.config, args.quick)
    if args.eval_set == "validation":  # choosing settings: the validation set both selects and is reported (at most all of it)
        n = len(environment_seeds("validation"))
        cfg = replace(cfg, eval_set="validation", eval_envs=min(cfg.eval_envs, n), epoch_eval_envs=min(cfg.epoch_eval_envs, n))
    elif args.eval_set:
        cfg = replace(cfg, eval_set=args.eval_set)
    out = Path(args.out or ("runs/experiment_quick" if args.quick else "runs/experiment"))
    sitting = time.perf_counter()
    timing_path = out / "timing.json"
    if args.report_only:
        try:
            res = finished_runs(cfg, out)
        except FileNotFoundError as exc:
            raise ConfigError(str(exc)) from exc
        timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {"sittings": []}
    else:
        previous = signal.signal(signal.SIGTERM, _terminate)  # a stopped sweep still records its sitting
        outcome = "interrupted"
        try:
            with make_executor(executor_config(args, cfg.executor_config())) as executor:
                res = run_sweep(cfg, out, data=args.data, executor=executor)
            outcome = "finished"
        finally:
            signal.signal(signal.SIGTERM, previous)
            timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {"sittings": []}
            timing["sittings"].append(
                {"wall_s": time.perf_counter() - sitting, "outcome": outcome, "ended": time.strftime("%Y-%m-%d %H:%M:%S")}
            )
            atomic_write_text(json.dumps(timing, indent=1), timing_path)
    if not res.results:
        raise ConfigError(f"no finished run in {out} yet")
    total_s = sum(s["wall_s"] for s in timing["sittings"])
    data = Path(args.data) if args.data else out / "data"
    windows = sorted({r["windows"] for r in res.results})
    meta = {
        "command": _command(args),
        "config": cfg.to_dict(),
        "wall_h": total_s / 3600,
        "sitting_s": time.perf_counter() - sitting,
        "runs_done": len(res.results),
        "runs_total": len(cfg.runs()),
        "windows": "windows per p: " + ", ".join(str(w) for w in windows),
        "base_j": float(res.base_eval["j_track_mean"]),
        "first_eval_seeds": cfg.eval_seeds()[: cfg.epoch_eval_envs],
        "base_per_env": res.base_eval.get("j_track_per_env") or {},
        "exact_per_env": (res.exact_eval or {}).get("j_track_per_env") or {},
        "exact_bound_per_env": (res.exact_eval or {}).get("bound_share_per_env") or {},
        "sittings": timing["sittings"],
        "exact_validation_bound": (res.exact_validation or {}).get("bound_share_per_env") or {},
        "bound_weights": bound_weight_statistics(data, list(cfg.rollouts)),
        "ours_weights": ours_statistics(cfg, data),
        "factors": factor_statistics(data),
    }
    w, p = list(cfg.weightings), list(cfg.rollouts)
    targets = [(out / "report" / "fig2.json", out / "report" / "fig2.png", out / "report" / "results.md")]
    docs = args.docs if args.docs is not None else ("docs" if _is_shipped_sweep(args, cfg) else None)
    if docs:
        d = Path(docs)
        targets.append((d / "results" / "fig2.json", d / "figures" / "fig2.png", d / "results.md"))
    fig: dict[str, Any] = {}
    for json_path, png_path, md_path in targets:
        fig = write_report(res.results, meta, w, p, json_path, png_path, md_path)
    summary = {wt: {pp: round(v["ratio"], 4) for pp, v in fig["paired"][wt].items()} for wt in w}
    return {
        "out": str(out),
        "report": [str(t[2]) for t in targets],
        "runs": len(res.results),
        "computed": res.computed,
        "wall_s": round(res.wall_s, 1),
        "total_wall_h": round(total_s / 3600, 3),
        "base_j_track": meta["base_j"],
        "paired_ratio_vs_stand": summary,
    }
