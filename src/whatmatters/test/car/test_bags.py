"""The car's bags: written as the ROS logger writes them, read into episodes; the fine-tuning job on them."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from whatmatters.car.bags import CAR_TOPIC_TYPES, MPC_REFERENCE, MPC_STATE, read_car_bag, read_car_bags
from whatmatters.car.experiment import CarExperimentConfig, CarSystem, car_base_checkpoint
from whatmatters.car.job import CarFinetuneJob, run_car_job
from whatmatters.data.bags import SENSITIVITY, TYPESTORE, EpisodeBagWriter, float64_array
from whatmatters.errors import ConfigError

T = TYPESTORE.types
LABELS = ["s", "n", "mu", "vx", "vy", "r", "delta", "a", "a_cmd", "delta_cmd"]
DT = 0.02
WALL_NS = 1_796_554_919_637_010_891  # a wall-clock stamp: as float seconds it keeps ~0.2 us


def _time(ns: int):
    return T["builtin_interfaces/msg/Time"](sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def _duration(i: int):
    ns = int(round(i * DT * 1e9))
    return T["builtin_interfaces/msg/Duration"](sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def _header(ns: int):
    return T["std_msgs/msg/Header"](stamp=_time(ns), frame_id="")


def write_bag(path: Path, x: np.ndarray, u: np.ndarray, x_ref: np.ndarray, s_hat: np.ndarray | None, t0_ns: int, skip: int = -1) -> None:
    """Steps as ``car_mpc`` and ``car_logger`` record them; step ``skip`` left out."""
    horizon = x_ref.shape[1] - 1
    with EpisodeBagWriter(path, topics=CAR_TOPIC_TYPES) as bag:
        for k in range(u.shape[0]):
            if k == skip:
                continue
            ns = t0_ns + k * int(DT * 1e9)
            state = T["sensor_msgs/msg/JointState"](header=_header(ns), name=LABELS, position=np.concatenate([x[k], u[k]]),
                                                   velocity=np.zeros(0), effort=np.zeros(0))
            bag.write(MPC_STATE, ns * 1e-9, state)
            points = [T["trajectory_msgs/msg/JointTrajectoryPoint"](
                positions=x_ref[k, i], velocities=np.zeros(0), accelerations=np.zeros(0), effort=np.zeros(0), time_from_start=_duration(i))
                for i in range(horizon + 1)]  # fmt: skip
            bag.write(MPC_REFERENCE, ns * 1e-9, T["trajectory_msgs/msg/JointTrajectory"](header=_header(ns), joint_names=LABELS[:8], points=points))
            if s_hat is not None and np.all(np.isfinite(s_hat[k])):
                bag.write(SENSITIVITY, ns * 1e-9, float64_array(s_hat[k], ("horizon", "state")))


def _episode(rng: np.random.Generator, steps: int = 12, horizon: int = 5) -> tuple[np.ndarray, ...]:
    x = rng.normal(size=(steps, 8))
    u = rng.normal(size=(steps, 2))
    x_ref = rng.normal(size=(steps, horizon + 1, 8))
    s_hat = rng.normal(size=(steps, horizon, 8))
    s_hat[3] = np.nan  # a failed step: not recorded
    return x, u, x_ref, s_hat


def test_a_bag_reads_back_its_steps_and_wall_clock_sensitivities(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x, u, x_ref, s_hat = _episode(rng)
    write_bag(tmp_path / "bag", x, u, x_ref, s_hat, WALL_NS)
    (rec,) = read_car_bag(tmp_path / "bag")
    np.testing.assert_array_equal(rec.x, x)
    np.testing.assert_array_equal(rec.u, u[:-1])
    np.testing.assert_array_equal(rec.x_ref, x_ref[:-1])
    assert rec.dt == pytest.approx(DT)
    finite = np.all(np.isfinite(rec.s_hat), axis=(1, 2))
    assert finite.sum() == len(finite) - 1 and not finite[3]
    np.testing.assert_array_equal(rec.s_hat[finite], s_hat[:-1][finite])


def test_a_missing_step_splits_the_episode(tmp_path: Path) -> None:
    x, u, x_ref, _ = _episode(np.random.default_rng(1))
    write_bag(tmp_path / "bag", x, u, x_ref, None, 0, skip=5)
    first, second = read_car_bag(tmp_path / "bag")
    np.testing.assert_array_equal(first.x, x[:5])
    np.testing.assert_array_equal(second.x, x[6:])
    assert first.s_hat is None and second.u.shape == (5, 2)


def test_a_damaged_bag_is_skipped_with_its_name(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    x, u, x_ref, s_hat = _episode(np.random.default_rng(2))
    write_bag(tmp_path / "good", x, u, x_ref, s_hat, 0)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "bad_0.mcap").write_bytes(b"\x89MCAP0\r\n garbage")
    with caplog.at_level(logging.WARNING):
        records, skipped = read_car_bags([tmp_path / "good", bad])
    assert len(records) == 1 and [p for p, _ in skipped] == [bad]
    assert str(bad) in caplog.text


@pytest.fixture(scope="module")
def system() -> CarSystem:
    return CarSystem(CarExperimentConfig.from_yaml())


def _closed_loop_bag(system: CarSystem, path: Path, with_s_hat: bool) -> None:
    """A short lap of the base model's MPC as a bag (S_hat: random stand-ins, only their magnitudes weight the loss)."""
    model = system.model("base")
    ep = system.episode(model, 2001, 1.0)
    s_hat = np.random.default_rng(3).normal(size=(ep.u.shape[0] + 1, ep.x_ref.shape[1] - 1, 8)) if with_s_hat else None
    u = np.concatenate([ep.u, ep.u[-1:]])
    x_ref = np.concatenate([ep.x_ref, ep.x_ref[-1:]])
    write_bag(path, ep.x, u, x_ref, s_hat, WALL_NS)


def test_the_job_fine_tunes_the_base_model_on_bags(tmp_path: Path, system: CarSystem) -> None:
    _closed_loop_bag(system, tmp_path / "bags" / "lap_0000", with_s_hat=True)
    result = run_car_job(CarFinetuneJob(weighting="ours", p=4, epochs=2), tmp_path / "bags", tmp_path / "model.pt", system=system)
    assert result["epochs"] == 2 and result["windows"] == 50 - 4 + 1 and result["skipped"] == []
    tuned, base = system.model(str(tmp_path / "model.pt")), system.model("base")
    assert not np.allclose(tuned.parameter_values(), base.parameter_values())


def test_ours_without_sensitivities_is_refused_naming_the_bag(tmp_path: Path, system: CarSystem) -> None:
    _closed_loop_bag(system, tmp_path / "bags" / "lap_0000", with_s_hat=False)
    with pytest.raises(ConfigError, match="lap_0000"):
        run_car_job(CarFinetuneJob(weighting="ours", epochs=1), tmp_path / "bags", tmp_path / "model.pt", system=system)


def test_models_by_name_and_a_bad_checkpoint_named(tmp_path: Path, system: CarSystem) -> None:
    assert system.model("nominal") is system.nominal
    assert car_base_checkpoint().is_file() and system.model("base").n_params > 0
    with pytest.raises(ConfigError, match="unknown car model 'fast'"):
        system.model("fast")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="bad.pt"):
        system.model(str(bad))
