"""The race car's node graph over real rclpy and DDS (isolated domain, this host only).

One lock-step and one real-time run of ``whatmatters up car`` with the base
model serve the closed-loop, sensitivity, bag and real-time checks; the
safety behaviours, the reload and the trainer are tested on single node
processes driven by a node in this process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from nav_msgs.msg import Odometry  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from whatmatters.car.bags import DRIVE, ODOM, read_car_bag  # noqa: E402
from whatmatters.car.data import step_contexts  # noqa: E402
from whatmatters.car.control import safe_stop  # noqa: E402
from whatmatters.car.experiment import CarExperimentConfig, CarSystem  # noqa: E402
from whatmatters.car.model import plant_pose  # noqa: E402
from whatmatters.sensitivity.batch import compute_samples  # noqa: E402
from whatmatters.sensitivity.compute import SensitivityComputer  # noqa: E402
from whatmatters_ros import car_messages as cm  # noqa: E402
from whatmatters_ros import messages as m  # noqa: E402

SECONDS = 3.0
ENV = 2001


@pytest.fixture(scope="module")
def system() -> CarSystem:
    return CarSystem(CarExperimentConfig.from_yaml())


def _up(tmp: Path, domain_id: int, lockstep: bool) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "whatmatters.cli.main", "up", "car", "--seconds", str(SECONDS), "--model", "base", "--env-seed", str(ENV),
           "--json", "--out", str(tmp), "--domain-id", str(domain_id), "--timeout", "150"] + (["--lockstep"] if lockstep else [])
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=200)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout)


@pytest.fixture(scope="module")
def lockstep_run(tmp_path_factory: pytest.TempPathFactory, domain_id: int) -> dict[str, Any]:
    return _up(tmp_path_factory.mktemp("car_lockstep"), domain_id, lockstep=True)


@pytest.fixture(scope="module")
def realtime_run(tmp_path_factory: pytest.TempPathFactory, domain_id: int) -> dict[str, Any]:
    return _up(tmp_path_factory.mktemp("car_realtime"), domain_id, lockstep=False)


def test_lockstep_graph_is_the_cores_closed_loop(lockstep_run: dict[str, Any], system: CarSystem) -> None:
    (rec,) = read_car_bag(lockstep_run["bag"])
    core = system.episode(system.model("base"), ENV, SECONDS)
    steps = int(round(SECONDS / system.mpc.dt))
    assert rec.x.shape == (steps + 1, 8) and lockstep_run["commands"] == steps + 1  # the state after the last is answered too
    np.testing.assert_allclose(rec.x, core.x, atol=1e-9)
    np.testing.assert_allclose(rec.u, core.u, atol=1e-9)
    np.testing.assert_allclose(rec.x_ref, core.x_ref, atol=1e-9)
    assert lockstep_run["j_track"] == pytest.approx(core.j_track, rel=1e-9)
    assert lockstep_run["off_track_s"] == pytest.approx(core.off_track)
    assert all(code == 0 for code in lockstep_run["exit_codes"].values())


def test_lockstep_sensitivities_are_the_cores_for_every_step(lockstep_run: dict[str, Any], system: CarSystem) -> None:
    """The logger's S_hat (context replayed from the steps, warm-started lanes) against the batch code's."""
    (rec,) = read_car_bag(lockstep_run["bag"])
    assert np.all(np.isfinite(rec.s_hat))  # lock-step: the simulator waited for every step's
    model = system.model("base")
    computer = SensitivityComputer(model, system.mpc, system.constraints, replace(system.sensitivity, parallel=False))
    ref = compute_samples(computer, rec.x[:-1], rec.x_ref, step_contexts(model, rec.x, rec.u, rec.dt), "bag")["s_hat"]
    relative = np.abs(rec.s_hat - ref).max(axis=(1, 2)) / np.abs(ref).max(axis=(1, 2))  # per step
    # the same solutions up to the SQP's tolerance from other warm starts (measured over 10 s: median 1e-10, max 1.2e-6);
    # a step paired with another's reference or context would differ at 1e-3 or more
    assert np.median(relative) < 1e-8 and relative.max() < 1e-5


def test_bag_reads_in_an_independent_mcap_reader(lockstep_run: dict[str, Any]) -> None:
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    (path,) = Path(lockstep_run["bag"]).glob("*.mcap")
    with path.open("rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        odom, drive = [], []
        for _, channel, _, msg in reader.iter_decoded_messages(topics=[ODOM, DRIVE]):
            (odom if channel.topic == ODOM else drive).append(msg)
    assert len(odom) == lockstep_run["odom"] and len(drive) == lockstep_run["commands"]
    assert odom[0].header.frame_id == "map" and odom[0].child_frame_id == "base_link"
    assert odom[0].twist.twist.linear.x > 1.0  # the car starts at the racing line's speed
    assert drive[0].layout.dim[0].label == cm.DRIVE_LABEL and all(len(d.data) == 2 for d in drive)


def test_realtime_graph_tracks_as_well_as_lock_step(realtime_run: dict[str, Any], lockstep_run: dict[str, Any], system: CarSystem) -> None:
    steps = int(round(SECONDS / system.mpc.dt))
    assert realtime_run["steps"] >= 0.95 * steps and realtime_run["step_rate_hz"] == pytest.approx(50.0, rel=0.05)
    assert realtime_run["j_track"] <= 1.5 * lockstep_run["j_track"]
    assert realtime_run["sensitivities_finite"] >= 0.5 * steps
    assert realtime_run["latency_ms_median"] < 0.5 * 1e3 * system.mpc.dt and lockstep_run["latency_ms_median"] is None
    (rec,) = read_car_bag(realtime_run["bag"])
    p = system.params
    assert np.all(np.isfinite(rec.u)) and np.all(rec.u[:, 0] >= p.min_accel) and np.all(rec.u[:, 0] <= p.max_accel)
    assert np.all(np.abs(rec.u[:, 1]) <= p.max_steer)


def test_sim_rejects_malformed_drive_and_brakes_without_commands(start_node: Any, test_node: Any) -> None:
    start_node("car_sim", {"command_timeout": 0.1, "realtime_priority": 0})
    odom: list[Odometry] = []
    diags: list[Any] = []
    test_node.create_subscription(Odometry, cm.ODOM, odom.append, m.RELIABLE)
    test_node.create_subscription(m.DiagnosticArray, m.DIAGNOSTICS, diags.append, 100)
    pub = test_node.create_publisher(Float64MultiArray, cm.DRIVE, m.RELIABLE)
    assert test_node.spin_until(lambda: len(odom) > 5 and pub.get_subscription_count() > 0, 30.0)
    for _ in range(25):  # 0.5 s of valid commands (holding speed), malformed ones between them
        pub.publish(cm.drive_msg(np.array([0.0, 0.0])))
        pub.publish(Float64MultiArray(data=[1.0]))
        pub.publish(Float64MultiArray(data=[float("nan"), 0.0]))
        test_node.spin_until(lambda: False, 0.02)
    speed = odom[-1].twist.twist.linear.x
    n = len(odom)
    assert test_node.spin_until(lambda: len(odom) > n + 100, 5.0)  # 1 s without commands
    assert odom[-1].twist.twist.linear.x < speed - 1.0  # the safe hold brakes
    assert all(np.isfinite(o.twist.twist.linear.x) for o in odom)

    def reported(key: str) -> int:
        return max([int(kv.value) for d in diags for st in d.status if st.name == "car_sim" for kv in st.values if kv.key == key] or [0])

    assert test_node.spin_until(lambda: reported("rejected") >= 40 and reported("hold_steps") > 0, 5.0)
    assert any(st.level == bytes([m.WARN]) and "safe hold" in st.message for d in diags for st in d.status)


def test_trainer_fine_tunes_on_car_bags_and_reloads_the_mpc(
    start_node: Any, test_node: Any, tmp_path: Path, lockstep_run: dict[str, Any], system: CarSystem
) -> None:
    start_node("car_mpc", {"lockstep": True, "model": "base"})
    versions: list[int] = []  # car_mpc's heartbeat repeats its model version every second

    def on_diagnostics(msg: Any) -> None:
        versions.extend(int(kv.value) for st in msg.status if st.name == "car_mpc" for kv in st.values if kv.key == "model_version")

    test_node.create_subscription(m.DiagnosticArray, m.DIAGNOSTICS, on_diagnostics, 100)
    assert test_node.spin_until(lambda: versions, 60.0) and versions[-1] == 1
    ckpt = tmp_path / "car.pt"
    trainer = start_node("trainer", {"system": "car", "bag_dir": str(Path(lockstep_run["bag"]).parent), "checkpoint": str(ckpt),
                                     "epochs": 1, "max_rounds": 1, "mpc_node": "/car_mpc", "poll_period": 0.2})
    assert test_node.spin_until(lambda: trainer.poll() is not None, 180.0), trainer.log_path.read_text()[-2000:]
    log = trainer.log_path.read_text()
    assert trainer.returncode == 0 and "[done] round 1" in log, log[-2000:]
    assert test_node.spin_until(lambda: versions[-1] == 2, 10.0)  # the MPC runs the new checkpoint
    assert not np.allclose(system.model(str(ckpt)).parameter_values(), system.model("base").parameter_values())
    client = test_node.create_client(SetParameters, "/car_mpc/set_parameters")
    reload = test_node.create_client(Trigger, "/car_mpc/reload_model")
    assert test_node.spin_until(lambda: client.service_is_ready() and reload.service_is_ready(), 30.0)
    done = client.call_async(SetParameters.Request(parameters=[Parameter("model", value="nominal").to_parameter_msg()]))
    assert test_node.spin_until(done.done, 10.0)
    answer = reload.call_async(Trigger.Request())
    assert test_node.spin_until(answer.done, 10.0)
    assert not answer.result().success and "nominal" in answer.result().message  # another formulation: another solver


def test_mpc_stale_states_give_the_safe_stop_and_an_error(start_node: Any, test_node: Any, system: CarSystem) -> None:
    start_node("car_mpc", {"stale_timeout": 0.1, "start_after": test_node.get_name(), "start_delay": 0.0, "realtime_priority": 0})
    drives: list[np.ndarray] = []
    diags: list[Any] = []
    test_node.create_subscription(Float64MultiArray, cm.DRIVE, lambda msg: drives.append(np.array(msg.data)), m.RELIABLE)
    test_node.create_subscription(m.DiagnosticArray, m.DIAGNOSTICS, diags.append, 100)
    pub_odom = test_node.create_publisher(Odometry, cm.ODOM, m.RELIABLE)
    pub_act = test_node.create_publisher(JointState, cm.ACTUATORS, m.RELIABLE)
    assert test_node.spin_until(lambda: pub_odom.get_subscription_count() > 0 and pub_act.get_subscription_count() > 0, 60.0)
    x = plant_pose(system.track, system.line.states(np.array([0.0]))[0])  # on the racing line at its speed
    for _ in range(50):  # 0.5 s of fresh states at 100 Hz: the MPC solves at 50 Hz
        stamp = test_node.get_clock().now().to_msg()
        pub_odom.publish(cm.odom_msg(stamp, x))
        pub_act.publish(cm.actuators_msg(stamp, x[6], x[7]))
        test_node.spin_until(lambda: False, 0.01)
    assert test_node.spin_until(lambda: len(drives) >= 15, 5.0)
    n = len(drives)
    assert test_node.spin_until(lambda: any(st.level == bytes([m.ERROR]) and "no state" in st.message for d in diags for st in d.status), 3.0)
    assert test_node.spin_until(lambda: len(drives) > n + 5, 3.0)  # commands go on: the safe stop
    np.testing.assert_allclose(drives[-1], safe_stop(x[3], system.control.fallback_brake))
