"""The trainer node on a small bag folder: trains, skips a damaged bag by name, reloads a live MPC."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from std_msgs.msg import String  # noqa: E402

from whatmatters.control.hold import HoldController  # noqa: E402
from whatmatters.data.bags import SENSITIVITY, EpisodeBagWriter, float64_array  # noqa: E402
from whatmatters.dynamics.learned import LearnedDynamics  # noqa: E402
from whatmatters.dynamics.nominal import nominal_model  # noqa: E402
from whatmatters.sim.environments import make_environment  # noqa: E402
from whatmatters.sim.simulator import PandaSim, SimConfig  # noqa: E402
from whatmatters_ros import messages as m  # noqa: E402

Q_HOME = np.array([0.0, -0.4, 0.0, -2.4, 0.0, 2.2, -0.785])


def _episode_bag(path: Path, env_seed: int, steps: int = 60) -> None:
    """A closed-loop episode (PD hold around a moving target) with an S_hat per step, as the logger records it."""
    sim = PandaSim(SimConfig.from_yaml())
    rng = np.random.default_rng(env_seed)
    ctrl = HoldController(nominal_model(sim.params), Q_HOME, sim.torque_limits)
    state = sim.reset(make_environment(env_seed), Q_HOME)
    with EpisodeBagWriter(path, {SENSITIVITY: "std_msgs/msg/Float64MultiArray"}) as bag:
        last = np.zeros(7)
        for k in range(steps + 1):
            t = 0.02 * k
            bag.joint_state(t, state.q, state.qd, last)
            if k == steps:
                break
            ctrl.q_target = Q_HOME + 0.2 * np.sin(2.0 * t + np.arange(7))
            tau = ctrl(state.q, state.qd)
            bag.command(t, tau)
            bag.write(SENSITIVITY, t, float64_array(np.abs(rng.normal(size=(12, 14))), ("horizon", "state")))
            state, last = sim.step(tau), tau


def test_trainer_trains_skips_damaged_bag_and_reloads_the_mpc(start_node: Any, test_node: Any, tmp_path: Path) -> None:
    bags = tmp_path / "bags"
    for i in range(3):
        _episode_bag(bags / f"episode_{i:04d}", 3000 + i)
    mcap = next((bags / "episode_0001").glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[:3000])  # closed (metadata.yaml), but its data is cut
    statuses: list[dict[str, Any]] = []
    diags: list[Any] = []
    test_node.create_subscription(String, "/trainer/status", lambda msg: statuses.append(json.loads(msg.data)), 10)
    test_node.create_subscription(m.DiagnosticArray, m.DIAGNOSTICS, diags.append, 100)
    start_node("mpc_controller", {"lockstep": True, "use_sim_time": False, "model": "base"})
    start_node("sensitivity_logger", {"lockstep": True, "use_sim_time": False, "model": "base", "bag_dir": str(tmp_path / "logged"),
                                      "report_period": 0.2})
    ckpt = tmp_path / "out" / "model.pt"
    trainer = start_node("trainer", {"bag_dir": str(bags), "checkpoint": str(ckpt), "weighting": "ours", "rollout": 2,
                                     "epochs": 2, "min_bags": 3, "poll_period": 0.5, "max_rounds": 1, "service_timeout": 120.0})

    def reported(node: str) -> dict[str, str]:
        for d in reversed(diags):
            for st in d.status:
                if st.name == node:
                    return {k.key: k.value for k in st.values}
        return {}

    def mpc_version() -> tuple[int, str]:
        kv = reported("mpc_controller")
        return (int(kv["model_version"]), kv["model"]) if kv else (0, "")

    assert test_node.spin_until(lambda: trainer.poll() is not None and mpc_version()[0] == 2, 300.0), (
        trainer.log_path.read_text()[-3000:])  # type: ignore[attr-defined]
    assert trainer.returncode == 0
    assert test_node.spin_until(lambda: reported("sensitivity_logger").get("model_version") == "2", 120.0)  # the logger follows
    assert mpc_version() == (2, str(ckpt.resolve()))
    log = trainer.log_path.read_text()  # type: ignore[attr-defined]
    assert "episode_0001" in log and "skipped damaged bag" in log
    done = [s for s in statuses if s["state"] == "done"]
    if done:  # the last status may be lost when the node exits; the log has it too
        assert done[-1]["reloaded"] and "version 2" in done[-1]["message"]
        assert done[-1]["skipped"] == [str(bags / "episode_0001")] and done[-1]["bags"] == 3
    assert "loaded as version 2" in log
    model = LearnedDynamics.load(ckpt)
    assert model.cfg.window > 0  # a checkpoint the MPC and the core load


def _absent_mpc_trainer(start_node: Any, tmp_path: Path, service_timeout: float) -> tuple[Any, Path]:
    """A trainer whose MPC node does not exist, started on two small bags (one 1-epoch round)."""
    bags = tmp_path / "bags"
    for i in range(2):
        _episode_bag(bags / f"episode_{i:04d}", 3100 + i, steps=30)
    trainer = start_node("trainer", {"bag_dir": str(bags), "checkpoint": str(tmp_path / "out" / "model.pt"), "weighting": "stand",
                                     "rollout": 1, "epochs": 1, "min_bags": 2, "poll_period": 0.2, "max_rounds": 1,
                                     "mpc_node": "/absent_mpc", "service_timeout": service_timeout})
    log_path: Path = trainer.log_path  # type: ignore[attr-defined]
    deadline = time.monotonic() + 180.0
    while "[reloading]" not in log_path.read_text():  # trained; now waiting for the services
        assert trainer.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
        time.sleep(0.1)
    return trainer, log_path


def test_trainer_waits_for_an_absent_mpc_without_blocking_and_stops_at_once(start_node: Any, tmp_path: Path) -> None:
    trainer, log_path = _absent_mpc_trainer(start_node, tmp_path, 600.0)
    time.sleep(1.0)
    t0 = time.monotonic()
    trainer.send_signal(signal.SIGINT)
    assert trainer.wait(20) == 0, log_path.read_text()[-3000:]
    assert time.monotonic() - t0 < 5.0  # not after service_timeout: the wait does not block the executor


def test_trainer_reports_an_absent_mpc_after_its_service_timeout(start_node: Any, tmp_path: Path) -> None:
    trainer, log_path = _absent_mpc_trainer(start_node, tmp_path, 1.0)
    assert trainer.wait(30) == 0, log_path.read_text()[-3000:]  # max_rounds reached: the node ends
    assert "[error] round 1: /absent_mpc services not available within 1 s" in log_path.read_text()
