"""``whatmatters up bench``: the real-time graph against lock-step, environment by environment, run by run.

For every model and evaluation environment: J_track of the lock-step episode
(the core's closed loop, deterministic, :class:`whatmatters.eval.evaluate.Evaluator`)
and of ``runs`` real-time graph runs (:class:`~whatmatters_ros.graph.SimGraph`:
simulator at its physics step, reference, MPC and the sensitivity logger
computing S_hat), each summarised from its bag (:func:`~whatmatters_ros.graph.summarize_bag`:
J_track on the reference's clock, latency at the robot and at the logger, the
simulator's lag). Every run is reported, not a median. Results go to
``<out>/realtime_bench.json`` and a markdown table ``<out>/realtime_bench.md``.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

from whatmatters.eval.evaluate import Evaluator
from whatmatters.io import atomic_write_text
from whatmatters.mpc.config import MpcConfig
from whatmatters.sim.simulator import SimConfig
from whatmatters.trajectory.fourier import FourierConfig
from whatmatters_ros.graph import SimGraph, summarize_bag

__all__ = ["markdown_table", "run_bench"]

log = logging.getLogger(__name__)

COLUMNS = (
    ("env", "env"), ("model", "model"), ("run", "run"), ("J lock-step", "j_lockstep"), ("J real time", "j_track"), ("ratio", "ratio"),
    ("latency at robot p50 / p99 / max, ms", "robot_latency"), ("late (> 20 ms)", "robot_late_commands"),
    ("latency at logger p99, ms", "latency_ms_p99"), ("sim lag p99 / max, ms", "sim_lag"), ("late physics steps", "sim_late_steps"),
    ("S_hat, Hz", "sensitivity_rate_hz"), ("start offset, ms", "start_offset_ms"), ("steal, %", "steal_pct"),
)


def _fmt(v: Any, digits: int = 3) -> str:
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """One line per run: the columns of :data:`COLUMNS`."""
    lines = ["| " + " | ".join(c for c, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = []
        for _, key in COLUMNS:
            if key == "robot_latency":
                cells.append(" / ".join(_fmt(r.get(f"robot_latency_ms_{p}"), 2) for p in ("median", "p99", "max")))
            elif key == "sim_lag":
                cells.append(" / ".join(_fmt(r.get(f"sim_lag_ms_{p}"), 2) for p in ("p99", "max")))
            elif key == "latency_ms_p99":
                cells.append(_fmt(r.get(key), 2))
            elif key in ("sensitivity_rate_hz", "start_offset_ms", "steal_pct"):
                cells.append(_fmt(r.get(key), 1))
            else:
                cells.append(_fmt(r.get(key), 4 if key.startswith("j") or key == "ratio" else 3))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cpu_ticks() -> list[int]:
    """The first line of /proc/stat: user nice system idle iowait irq softirq steal ... (ticks); [] elsewhere."""
    try:
        return [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return []


def _steal_pct(before: list[int], after: list[int]) -> float | None:
    """Share of the machine's CPU time the hypervisor took (steal) during a run, %."""
    if len(before) < 8 or len(after) < 8:
        return None
    delta = [a - b for a, b in zip(after, before)]
    total = sum(delta[:8])
    return 100.0 * delta[7] / total if total > 0 else None


def _start_offset_ms(summary: dict[str, Any]) -> float | None:
    """The reference's origin minus the tick at which the simulator applied the first command, ms."""
    sim_start = summary.get("sim_task_start_ns")
    return (summary["start_ns"] - int(sim_start)) * 1e-6 if sim_start else None


def run_bench(envs: list[int], models: list[str], runs: int, seconds: float, out: Path, domain_id: int,
              overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Lock-step and real-time J_track and timing per environment, model and run.

    Args:
        envs: Environment seeds.
        models: MPC models (``nominal``, ``base``, a checkpoint).
        runs: Real-time runs per environment and model.
        seconds: Episode length, s.
        out: Folder of the runs and the results.
        domain_id: ROS_DOMAIN_ID of the graphs.
        overrides: Extra node parameters for every run (e.g. the torque-rate limiter).

    Returns:
        ``rows`` (one per run), ``worst_ratio``, ``machine``, ``command`` fields.
    """
    rows: list[dict[str, Any]] = []
    cfg = MpcConfig.from_yaml()
    start = time.perf_counter()
    for model in models:
        evaluator = Evaluator(model, cfg, SimConfig.from_yaml(), FourierConfig.from_yaml())
        for env in envs:
            j_lock = evaluator.episode(env, seconds).j_track
            for run in range(runs):
                folder = out / f"{model.replace('/', '_')}_{env}_{run}"
                params = {"franka_sim": {"env_seed": env}, "reference_publisher": {"env_seed": env}, "mpc_controller": {"model": model},
                          "sensitivity_logger": {"model": model}}
                for node, extra in (overrides or {}).items():
                    params.setdefault(node, {}).update(extra)
                graph = SimGraph(folder, seconds, lockstep=False, domain_id=domain_id, overrides=params)
                cpu_before = _cpu_ticks()
                graph.start()
                try:
                    graph.wait_sim(600.0)
                finally:
                    graph.stop()
                cpu_after = _cpu_ticks()
                bag = sorted((folder / "bags").glob("*/metadata.yaml"))[-1].parent
                s = summarize_bag(bag, env, cfg, seconds)
                row = {"env": env, "model": model, "run": run, "j_lockstep": j_lock, **s, "ratio": s["j_track"] / j_lock, "bag": str(bag),
                       "steal_pct": _steal_pct(cpu_before, cpu_after), "start_offset_ms": _start_offset_ms(s)}
                rows.append(row)
                log.info("%s env %d run %d: J %.4f (lock-step %.4f, ratio %.3f), latency at the robot p99 %s ms",
                         model, env, run, s["j_track"], j_lock, row["ratio"], s["robot_latency_ms_p99"])
    result = {
        "rows": rows, "worst_ratio": max(r["ratio"] for r in rows), "seconds": seconds, "runs": runs, "envs": envs, "models": models,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}", "wall_s": time.perf_counter() - start,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(result, indent=1), out / "realtime_bench.json")
    atomic_write_text(markdown_table(rows), out / "realtime_bench.md")
    return result
