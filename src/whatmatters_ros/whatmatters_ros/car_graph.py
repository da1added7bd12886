"""``whatmatters up car``: the race car's graph as processes, and the figures of its bag.

Compiles the model's solvers first where they are not cached
(:func:`whatmatters.build.build_model`, ``system="car"``), then starts
``car_sim``, ``car_mpc`` and ``car_logger`` (:class:`whatmatters_ros.graph.SimGraph`
with :data:`~whatmatters_ros.graph.CAR_NODES`) on an isolated DDS domain, waits
for the simulator's episode, stops the others with SIGINT (the logger finishes
its queued sensitivities and closes its bag) and summarises the bag
(:func:`summarize_car_bag`). No rclpy in this process.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.rosbag2 import Reader

from whatmatters.build import build_model, solvers_cached
from whatmatters.car.bags import DRIVE, MPC_STATE, ODOM, read_car_bag
from whatmatters.car.experiment import CarExperimentConfig, CarSystem
from whatmatters.data.bags import SENSITIVITY, TYPESTORE
from whatmatters.errors import WhatmattersError
from whatmatters_ros.graph import CAR_NODES, SimGraph

__all__ = ["run_car_graph", "summarize_car_bag"]

log = logging.getLogger(__name__)


def summarize_car_bag(bag: Path, system: CarSystem, realtime: bool = False) -> dict[str, Any]:
    """Counts, rates and the task's figures of a recorded car bag.

    The figures are the core episode's (:func:`whatmatters.car.run_car_episode`), from the
    control steps the MPC recorded (``/mpc/state`` against stage 0 of its ``/mpc/reference``):
    ``j_track`` (mean of ``1/2 (x - x_ref)' Q (x - x_ref)``), ``progress_m`` (arc length driven),
    ``off_track_s`` (steps with a wheel beyond the border, times ``dt``).

    Returns:
        ``odom``, ``steps``, ``commands``, ``sensitivities`` (logged from the first step to one period
        after the last), ``sensitivities_finite`` (of the steps with a successor), ``seconds`` (that span),
        ``step_rate_hz``, ``sensitivity_rate_hz``, ``j_track``, ``progress_m``, ``off_track_s``,
        ``episodes`` (runs of consecutive steps), ``latency_ms_median/p99/max`` (``realtime``: a state's
        stamp to its command's arrival at the logger, wall clock; else None: a lock-step logger stamps
        a command with the simulated time it sees, which may already be the next state's).

    Raises:
        WhatmattersError: If the bag holds no control steps.
    """
    records = read_car_bag(bag)
    dt = records[0].dt
    times: dict[str, list[int]] = {}
    with Reader(bag) as reader:
        for conn, ts, raw in reader.messages():
            if conn.topic == MPC_STATE:
                msg = TYPESTORE.deserialize_cdr(raw, conn.msgtype)
                ts = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            times.setdefault(conn.topic, []).append(ts)
    steps = sorted(times.get(MPC_STATE, []))
    if len(steps) < 2:
        raise WhatmattersError(f"bag {bag} holds fewer than two control steps")
    first, end = steps[0], steps[-1] + int(round(dt * 1e9))  # the task: its steps and the period after the last
    span = (end - first) * 1e-9
    counts = {topic: sum(first <= t < end for t in ts) for topic, ts in times.items()}
    q = np.diag(system.mpc.state_weight)
    err = np.concatenate([r.x[:-1] - r.x_ref[:, 0] for r in records])
    border = system.track.half_width - 0.5 * system.params.width
    n = np.concatenate([r.x[:-1, 1] for r in records])  # the steps, as in the core's episode
    finite = sum(int(np.all(np.isfinite(r.s_hat), axis=(1, 2)).sum()) for r in records if r.s_hat is not None)
    drives = np.sort(np.array(times.get(DRIVE, []), dtype=np.int64))
    at = np.searchsorted(drives, steps)  # each step's command: the first /drive logged at or after its state's stamp
    latency = np.array([(drives[i] - ns) * 1e-6 for i, ns in zip(at, steps) if i < len(drives)])
    latency = latency if realtime and latency.size else None
    return {
        "odom": counts.get(ODOM, 0),
        "steps": len(steps),
        "commands": counts.get(DRIVE, 0),
        "sensitivities": counts.get(SENSITIVITY, 0),
        "sensitivities_finite": finite,
        "seconds": span,
        "step_rate_hz": len(steps) / span,
        "sensitivity_rate_hz": counts.get(SENSITIVITY, 0) / span,
        "j_track": float(np.mean(0.5 * np.sum(q * err**2, axis=1))),
        "progress_m": float(sum(r.x[-1, 0] - r.x[0, 0] for r in records)),
        "off_track_s": float(np.sum(np.abs(n) > border) * dt),
        "episodes": len(records),
        "latency_ms_median": None if latency is None else float(np.median(latency)),
        "latency_ms_p99": None if latency is None else float(np.percentile(latency, 99)),
        "latency_ms_max": None if latency is None else float(latency.max()),
    }


def run_car_graph(
    out: Path, seconds: float, lockstep: bool, domain: int, env_seed: int | None = None, model: str | None = None,
    timeout: float = 600.0, sensitivity: bool = True,
) -> dict[str, Any]:
    """Runs the car's graph for one episode of ``seconds`` and summarises its bag.

    Args:
        out: Run folder (``bags/``, ``logs/``).
        seconds: Episode length, s (simulated in lock-step, of the task in real time).
        lockstep: Lock-step clock (else real time).
        domain: ROS_DOMAIN_ID.
        env_seed: Environment (None: ``config/car/car_sim.yaml``'s).
        model: The MPC's model (None: ``config/car/car_mpc.yaml``'s); the logger follows it.
        timeout: Wall-clock limit, s.
        sensitivity: Compute S_hat in the logger.

    Raises:
        GraphError: If a node fails or the episode does not end in time (naming its log).
        WhatmattersError: If no closed bag was written.
    """
    from whatmatters_ros.nodes.car_mpc import CarMpcParams  # rclpy imported here only
    from whatmatters_ros.nodes.car_sim import CarSimParams

    env_seed = CarSimParams.defaults().env_seed if env_seed is None else env_seed
    model = CarMpcParams.defaults().model if model is None else model
    if not solvers_cached(model, "car"):  # else the nodes compile them, the logger's fallback solver at the first stall
        log.info("compiling the car's solvers for model '%s' first (once per machine)", model)
        build_model(model, system="car")
    overrides = {"car_sim": {"env_seed": env_seed}, "car_mpc": {"model": model}, "car_logger": {"model": model, "sensitivity": sensitivity}}
    graph = SimGraph(out, seconds, lockstep, domain, overrides, nodes=CAR_NODES)
    bag, codes, wall = graph.run_episode(timeout)
    summary = summarize_car_bag(bag, CarSystem(CarExperimentConfig.from_yaml()), realtime=not lockstep)
    return {
        "bag": str(bag), **summary, "lockstep": lockstep, "env_seed": env_seed, "model": model, "wall_seconds": wall,
        "realtime_factor": summary["seconds"] / wall, "domain_id": domain, "exit_codes": codes, "logs": str(out / "logs"),
    }
