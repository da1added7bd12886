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
from whatmatters.eval.episode import tracking_cost
from whatmatters.mpc.config import MpcConfig
from whatmatters.robot.params import load_panda_params
from whatmatters.sim.environments import make_environment
from whatmatters.trajectory.fourier import FourierConfig, sample_fourier_trajectory

__all__ = ["GraphError", "SimGraph", "node_command", "summarize_bag"]

log = logging.getLogger(__name__)

FASTDDS_PROFILE = Path(__file__).resolve().parent / "data" / "fastdds.xml"
NODES = ("franka_sim", "reference_publisher", "mpc_controller", "sensitivity_logger")
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


def node_command(node: str, params: dict[str, Any], config: Path | None = None) -> list[str]:
    """The command line of one node: its YAML file, then ``-p key:=value`` overrides."""
    cmd = [sys.executable, "-m", f"whatmatters_ros.nodes.{node}", "--ros-args", "--params-file", str((config or config_dir()) / f"{node}.yaml")]
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
        nodes: Which nodes this graph starts (of :data:`NODES` and ``trainer``);
            others may run in another graph on the same domain.
    """

    out: Path
    seconds: float = 10.0
    lockstep: bool = True
    domain_id: int = 42
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    nodes: tuple[str, ...] = NODES
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _logs: list[IO[bytes]] = field(default_factory=list)

    def params(self) -> dict[str, dict[str, Any]]:
        """Parameters set on top of the YAML files."""
        sim_time = {"use_sim_time": True} if self.lockstep else {}
        out = {
            # lock-step: the simulator also waits for the logger, so every step gets its S_hat
            "franka_sim": {"lockstep": self.lockstep, "episode_seconds": self.seconds, "wait_for_sensitivity": self.lockstep,
                           "wait_for_nodes": ",".join(NODES[1:]), "start_delay": 1.5},
            "reference_publisher": {"lockstep": self.lockstep, **sim_time},
            "mpc_controller": {"lockstep": self.lockstep, **sim_time},
            "sensitivity_logger": {"lockstep": self.lockstep, "bag_dir": str(self.out / "bags"), **sim_time},
            "trainer": {},
        }
        for node, extra in self.overrides.items():
            out[node].update(extra)
        return {node: out[node] for node in self.nodes}

    def start(self) -> None:
        """Starts every node process (logs in ``out/logs``).

        Call it from the thread that stops the graph: the kernel sends the
        nodes SIGTERM when the thread that started them exits.
        """
        (self.out / "logs").mkdir(parents=True, exist_ok=True)
        env = ros_environment(self.domain_id)
        for node, params in self.params().items():
            fh = open(self.out / "logs" / f"{node}.log", "wb")  # noqa: SIM115 - closed in stop()
            self._logs.append(fh)
            self.procs[node] = subprocess.Popen(node_command(node, params), stdout=fh, stderr=subprocess.STDOUT, env=env,
                                                start_new_session=True, preexec_fn=_stop_with_parent)
        log.info("graph started on ROS_DOMAIN_ID %d: %s", self.domain_id, ", ".join(f"{n} ({p.pid})" for n, p in self.procs.items()))

    def wait_sim(self, timeout: float) -> None:
        """Waits for the simulator to end its episode.

        Raises:
            GraphError: If a node exits early or the simulator does not finish in time.
        """
        self.wait_node("franka_sim", timeout)

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


def summarize_bag(bag: Path, env_seed: int, mpc: MpcConfig | None = None) -> dict[str, Any]:
    """Command and sensitivity counts and rates, and eq. (7) J_track, from a recorded bag.

    The reference is regenerated from the environment seed and evaluated at
    the joint states' times (relative to the first), independently of the
    recorded ``/reference``.

    Returns:
        ``states``, ``commands``, ``expected_commands``, ``sensitivities``,
        ``seconds`` (recorded time span), ``command_rate_hz``, ``sensitivity_rate_hz``, ``j_track``.
    """
    mpc = mpc or MpcConfig.from_yaml()
    logged: dict[str, list[int]] = {}
    stamps, xs = [], []
    with Reader(bag) as reader:
        for conn, ts, raw in reader.messages():
            logged.setdefault(conn.topic, []).append(ts)
            if conn.topic == JOINT_STATES:
                msg = TYPESTORE.deserialize_cdr(raw, conn.msgtype)
                stamps.append(msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec)
                xs.append(np.concatenate([msg.position, msg.velocity]))
    if len(stamps) < 2:
        raise GraphError(f"bag {bag} holds fewer than two joint states")
    t, x = np.array(stamps), np.array(xs)
    span = float(t[-1] - t[0])
    env = make_environment(env_seed)
    reference = sample_fourier_trajectory(env.reference_seed, FourierConfig.from_yaml(), load_panda_params())
    j = tracking_cost(x, reference.state(t - t[0]), np.asarray(mpc.q_weights), np.asarray(mpc.qd_weights))
    # steps are the intervals between states: what answers the last state is past the episode
    last_ns = int(round(t[-1] * 1e9))
    commands, sens = (sum(ts < last_ns for ts in logged.get(topic, [])) for topic in (COMMANDS, SENSITIVITY))
    return {
        "states": len(t),
        "commands": commands,
        "expected_commands": int(round(span / mpc.dt)),
        "sensitivities": sens,
        "seconds": span,
        "command_rate_hz": commands / span,
        "sensitivity_rate_hz": sens / span,
        "j_track": j,
    }
