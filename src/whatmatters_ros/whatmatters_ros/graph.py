"""Starting the node graph as separate processes, for machines without ``ros2 launch``.

:class:`SimGraph` runs the nodes of ``launch/sim.launch.py`` (simulator,
reference, MPC, logger) as ``python -m whatmatters_ros.nodes.<node>``
processes with the same parameter files (``config/<node>.yaml``), on an
isolated DDS domain restricted to this host, waits for the simulator to end
its episode, stops the others with SIGINT (the logger closes its bag) and
summarises the recorded bag (:func:`summarize_bag`). No rclpy in this process.

The node processes run in their own session, so a Ctrl-C in the terminal
reaches only this process, which then stops them with one SIGINT each (a
second signal would interrupt the logger while it closes its bag); and each
gets SIGTERM from the kernel if this process dies (Linux ``PR_SET_PDEATHSIG``),
so no node outlives it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from rosbags.rosbag2 import Reader

from whatmatters.config import config_dir
from whatmatters.data.bags import COMMANDS, JOINT_STATES, TYPESTORE
from whatmatters.errors import WhatmattersError
from whatmatters.realtime.metrics import bag_figures
from whatmatters.mpc.config import MpcConfig
from whatmatters.robot.params import load_panda_params
from whatmatters.sim.environments import make_environment
from whatmatters.trajectory.fourier import FourierConfig, sample_fourier_trajectory

__all__ = ["GraphError", "SimGraph", "node_command", "summarize_bag"]

log = logging.getLogger(__name__)

FASTDDS_PROFILE = Path(__file__).resolve().parent / "data" / "fastdds.xml"
NODES = ("franka_sim", "reference_publisher", "mpc_controller", "sensitivity_logger")
CAR_NODES = ("car_sim", "car_mpc", "car_logger")  # the race car's graph (parameter files in config/car/)
SENSITIVITY = "/mpc/sensitivity"


class GraphError(WhatmattersError, RuntimeError):
    """A node of the graph failed to start or did not finish; the message names it and its log."""


def ros_environment(domain_id: int) -> dict[str, str]:
    """The environment of the node processes: isolated domain, discovery on this host only."""
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1")
    env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(FASTDDS_PROFILE))
    env.pop("ROS_STATIC_PEERS", None)
    return env


def _stop_with_parent() -> None:
    """``preexec_fn`` of a node process: SIGTERM when the process that started it exits (Linux)."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def realtime_cpus(nodes: tuple[str, ...], count: int | None = None) -> dict[str, set[int]]:
    """CPU sets of a real-time graph: the MPC alone on the last core, the simulator and the reference on the rest.

    The controller's solve then finds its caches warm (measured on 2 cores with the learned
    model: acados 1.5 instead of 1.9 ms in the graph, state-to-command p99 5.1 instead of
    6.5-10.8 ms). With one core nothing is pinned.
    """
    count = count or os.cpu_count() or 1
    mpc = next((n for n in ("mpc_controller", "car_mpc") if n in nodes), None)
    if count < 2 or mpc is None:
        return {}
    rest = set(range(count - 1))
    # the logger's sensitivity worker runs at the lowest priority: it may use any core's idle time
    return {n: ({count - 1} if n == mpc else rest) for n in nodes if n not in ("sensitivity_logger", "car_logger")}


def _preexec(cpus: set[int] | None) -> Any:
    def run() -> None:
        _stop_with_parent()
        if cpus:
            os.sched_setaffinity(0, cpus)  # before the interpreter starts: every thread inherits it

    return run


def node_command(node: str, params: dict[str, Any], config: Path | None = None) -> list[str]:
    """The command line of one node: its YAML file, then ``-p key:=value`` overrides."""
    folder = config or (config_dir() / "car" if node in CAR_NODES else config_dir())
    cmd = [sys.executable, "-m", f"whatmatters_ros.nodes.{node}", "--ros-args", "--params-file", str(folder / f"{node}.yaml")]
    for key, value in params.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        cmd += ["-p", f"{key}:={text}"]
    return cmd


@dataclass
class SimGraph:
    """The simulation graph as processes.

    Attributes:
        out: Run folder: ``bags/`` and ``logs/<node>.log``.
        seconds: Simulated episode length, s.
        lockstep: Lock-step clock (else real time).
        domain_id: ROS_DOMAIN_ID of the graph.
        overrides: Extra parameters per node (``{"mpc_controller": {"model": "base"}}``).
        nodes: Which nodes this graph starts (of :data:`NODES` and ``trainer``, or of
            :data:`CAR_NODES` and ``trainer``); others may run in another graph on the same domain.
        pin_cpus: Real time: the MPC alone on the last core (:func:`realtime_cpus`).
    """

    out: Path
    seconds: float = 10.0
    lockstep: bool = True
    domain_id: int = 42
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    nodes: tuple[str, ...] = NODES
    pin_cpus: bool = True
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _logs: list[IO[bytes]] = field(default_factory=list)

    def params(self) -> dict[str, dict[str, Any]]:
        """Parameters set on top of the YAML files."""
        sim_time = {"use_sim_time": True} if self.lockstep else {}
        out = {
            # lock-step: the simulator also waits for the logger, so every step gets its S_hat
            # real time: the robot stands until the first command, so no node waits for another
            "franka_sim": {"lockstep": self.lockstep, "episode_seconds": self.seconds, "wait_for_sensitivity": self.lockstep,
                           **({"wait_for_nodes": ",".join(NODES[1:]), "start_delay": 0.5} if self.lockstep else {})},
            "reference_publisher": {"lockstep": self.lockstep, **sim_time,
                                    **({"wait_for_nodes": "mpc_controller,sensitivity_logger"} if self.lockstep else {})},
            "mpc_controller": {"lockstep": self.lockstep, **sim_time,
                               **({} if self.lockstep else {"start_after": ",".join(n for n in NODES if n != "mpc_controller" and n in self.nodes)})},
            "sensitivity_logger": {"lockstep": self.lockstep, "bag_dir": str(self.out / "bags"), **sim_time},
            "trainer": {},
        }
        out.update(self._car_params(sim_time))
        for node, extra in self.overrides.items():
            out[node].update(extra)
        return {node: out[node] for node in self.nodes}

    def _car_params(self, sim_time: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """The race car's nodes (lock-step: the simulator waits for the MPC and the logger, and for S_hat)."""
        present = [n for n in CAR_NODES if n in self.nodes]
        trainer = {"trainer": {"system": "car", "mpc_node": "/car_mpc", "bag_dir": str(self.out / "bags")}} if present else {}
        return {
            **trainer,
            "car_sim": {"lockstep": self.lockstep, "episode_seconds": self.seconds, "wait_for_sensitivity": self.lockstep and "car_logger" in present,
                        **({"wait_for_nodes": ",".join(n for n in present if n != "car_sim"), "start_delay": 0.5} if self.lockstep else {})},
            "car_mpc": {"lockstep": self.lockstep, **sim_time,
                        **({} if self.lockstep else {"start_after": ",".join(n for n in present if n == "car_logger")})},
            "car_logger": {"lockstep": self.lockstep, "bag_dir": str(self.out / "bags"), **sim_time},
        }

    def start(self) -> None:
        """Starts every node process (logs in ``out/logs``).

        Call it from the thread that stops the graph: the kernel sends the
        nodes SIGTERM when the thread that started them exits.
        """
        (self.out / "logs").mkdir(parents=True, exist_ok=True)
        env = ros_environment(self.domain_id)
        cpus = {} if self.lockstep or not self.pin_cpus else realtime_cpus(tuple(self.params()))
        for node, params in self.params().items():
            fh = open(self.out / "logs" / f"{node}.log", "wb")  # noqa: SIM115 - closed in stop()
            self._logs.append(fh)
            self.procs[node] = subprocess.Popen(node_command(node, params), stdout=fh, stderr=subprocess.STDOUT, env=env,
                                                start_new_session=True, preexec_fn=_preexec(cpus.get(node)))
        log.info("graph started on ROS_DOMAIN_ID %d: %s", self.domain_id, ", ".join(f"{n} ({p.pid})" for n, p in self.procs.items()))

    def run_episode(self, timeout: float) -> tuple[Path, dict[str, int | None], float]:
        """Starts the graph, waits for the simulator's episode, stops the nodes.

        Returns:
            The last closed bag under ``out/bags``, the nodes' exit codes and the wall time, s.

        Raises:
            GraphError: If a node fails or the episode does not end in time (naming its log).
            WhatmattersError: If no closed bag was written.
        """
        start = time.perf_counter()
        self.start()
        try:
            self.wait_sim(timeout)
        finally:
            codes = self.stop()
        wall = time.perf_counter() - start
        bags = sorted((self.out / "bags").glob("*/metadata.yaml"))
        if not bags:
            raise WhatmattersError(f"no closed bag under {self.out / 'bags'}; see {self.out / 'logs'}")
        return bags[-1].parent, codes, wall

    def wait_sim(self, timeout: float) -> None:
        """Waits for the simulator to end its episode.

        Raises:
            GraphError: If a node exits early or the simulator does not finish in time.
        """
        self.wait_node("car_sim" if "car_sim" in self.nodes else "franka_sim", timeout)

    def wait_node(self, name: str, timeout: float) -> None:
        """Waits for node ``name`` to exit by itself with status 0 (the simulator's episode, the trainer's rounds).

        Raises:
            GraphError: If another node exits early, or ``name`` fails or does not finish in time.
        """
        deadline = time.monotonic() + timeout
        while self.procs[name].poll() is None:
            for node, proc in self.procs.items():
                if proc.poll() is not None and node != name:
                    raise GraphError(f"{node} exited with {proc.returncode}; see {self.out / 'logs' / (node + '.log')}")
            if time.monotonic() > deadline:
                raise GraphError(f"{name} did not finish within {timeout:.0f} s; see {self.out / 'logs'}")
            time.sleep(0.05)
        if self.procs[name].returncode != 0:
            raise GraphError(f"{name} exited with {self.procs[name].returncode}; see {self.out / 'logs' / (name + '.log')}")

    def stop(self, grace: float = 1.0, timeout: float = 15.0) -> dict[str, int | None]:
        """SIGINT to every node still running (after ``grace`` s), SIGKILL past ``timeout``; exit codes."""
        time.sleep(grace)
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        for node, proc in self.procs.items():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop on SIGINT; killed", node)
                proc.kill()
                proc.wait()
        for fh in self._logs:
            fh.close()
        return {node: proc.returncode for node, proc in self.procs.items()}


def summarize_bag(bag: Path, env_seed: int, mpc: MpcConfig | None = None, seconds: float | None = None) -> dict[str, Any]:
    """Counts, rates, J_track on the reference's clock and the timing figures of a recorded bag.

    J_track (eq. 7) is taken on the task's clock (:func:`whatmatters.realtime.metrics.bag_figures`):
    the states at ``t_0 + k dt`` (``t_0``: ``/reference/start`` in real time, the
    first state in lock-step) against the reference regenerated from the
    environment seed (``j_track``) and against the recorded ``/reference``
    (``j_track_recorded``).

    Returns:
        ``states``, ``commands``, ``expected_commands``, ``sensitivities``, ``seconds`` (task time
        recorded), ``command_rate_hz``, ``sensitivity_rate_hz``, ``j_track``, ``j_track_recorded``,
        ``latency_ms_median``, ``latency_ms_p99``, ``latency_ms_max``, ``late_commands``, ``sim_lag_ms_p99``,
        ``sim_lag_ms_max``, ``sim_late_steps``, ``rate_limited_steps``, ``start_ns`` (the reference's origin)
        and ``sim_task_start_ns`` (the tick the simulator applied the first command at, if it reported it).
    """
    mpc = mpc or MpcConfig.from_yaml()
    env = make_environment(env_seed)
    reference = sample_fourier_trajectory(env.reference_seed, FourierConfig.from_yaml(), load_panda_params())
    fig = bag_figures(bag, mpc.dt, np.asarray(mpc.q_weights), np.asarray(mpc.qd_weights), seconds, reference=reference.state)
    start = fig["start_ns"]
    logged: dict[str, list[int]] = {}
    states = 0
    with Reader(bag) as reader:
        for conn, ts, raw in reader.messages():
            if conn.topic == JOINT_STATES:
                msg = TYPESTORE.deserialize_cdr(raw, conn.msgtype)
                ts = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
                states += 1
            logged.setdefault(conn.topic, []).append(ts)
    stamps = sorted(logged.get(JOINT_STATES, []))
    if len(stamps) < 2:
        raise GraphError(f"bag {bag} holds fewer than two joint states")
    end = stamps[-1] if seconds is None else min(stamps[-1], start + int(round(seconds * 1e9)))
    span = (end - start) * 1e-9
    if span <= 0:
        raise GraphError(f"bag {bag}: no joint states after the task's start")
    # steps are the intervals between control instants: what answers the last state is past the episode
    commands, sens = (sum(start <= ts < end for ts in logged.get(topic, [])) for topic in (COMMANDS, SENSITIVITY))
    sim = fig["sim"]
    return {
        "states": states,
        "commands": commands,
        "expected_commands": int(round(span / mpc.dt)),
        "sensitivities": sens,
        "seconds": span,
        "command_rate_hz": commands / span,
        "sensitivity_rate_hz": sens / span,
        "j_track": fig["j_track"],
        "j_track_recorded": fig["j_track_recorded"],
        "j_points": fig["j_points"],
        "latency_ms_median": fig["latency_ms_median"],
        "latency_ms_p99": fig["latency_ms_p99"],
        "latency_ms_max": fig["latency_ms_max"],
        "late_commands": fig["late_commands"],
        "robot_latency_ms_median": sim.get("robot_latency_ms_median"),
        "robot_latency_ms_p99": sim.get("robot_latency_ms_p99"),
        "robot_latency_ms_max": sim.get("robot_latency_ms_max"),
        "robot_late_commands": sim.get("robot_late_commands"),
        "sim_lag_ms_p99": sim.get("lag_ms_p99"),
        "sim_lag_ms_max": sim.get("lag_ms_max"),
        "sim_late_steps": sim.get("late_steps"),
        "rate_limited_steps": sim.get("rate_limited_steps"),
        "start_ns": start,
        "sim_task_start_ns": sim.get("task_start_ns"),
    }
