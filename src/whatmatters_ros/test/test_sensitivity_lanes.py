"""Steps spread over several sensitivity workers (no ROS): every step, in order, with the one-worker numbers."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from whatmatters.dynamics.nominal import nominal_model
from whatmatters.mpc.config import MpcConfig
from whatmatters.robot.params import load_panda_params
from whatmatters.sensitivity.compute import SensitivityComputer
from whatmatters.sensitivity.point import warm_start
from whatmatters.trajectory.fourier import sample_fourier_trajectory

from whatmatters_ros.sensitivity_lanes import SensitivityLanes
from whatmatters_ros.sensitivity_worker import SensitivityJob, WorkerSettings

DT = 0.02


def _computer() -> SensitivityComputer:
    params = load_panda_params()
    return SensitivityComputer(nominal_model(params), MpcConfig.from_yaml(), params.torque_limits)


@pytest.fixture(scope="module")
def computers() -> list[SensitivityComputer]:
    return [_computer(), _computer()]


def _jobs(steps: int) -> list[SensitivityJob]:
    tr = sample_fourier_trajectory(5)
    horizon = DT * np.arange(13)
    return [SensitivityJob(0, k * 20_000_000, tr.state(0.5 + DT * k), tr.state(0.5 + DT * k + horizon), np.zeros(0)) for k in range(steps)]


class _Gated:
    """A computer held at every step until released."""

    def __init__(self, computer: SensitivityComputer) -> None:
        self.computer = computer
        self.release = threading.Event()
        self.started = threading.Event()

    def compute(self, *args):
        self.started.set()
        assert self.release.wait(30.0)
        return self.computer.compute(*args)


def test_two_lanes_hand_on_every_step_in_order_with_the_one_worker_numbers(computers):
    jobs = _jobs(6)
    got: list[tuple[int, np.ndarray | None]] = []
    lanes = SensitivityLanes(computers, lambda tag, ns, s_hat: got.append((ns, s_hat)), WorkerSettings(queue_all=True, dt=DT))
    assert all(lanes.submit(job) for job in jobs)
    lanes.close(drain=True)
    assert [ns for ns, _ in got] == [job.stamp_ns for job in jobs]
    assert lanes.counts == {"offered": 6, "skipped": 0, "samples": 6, "failed": 0}
    one = computers[0]
    warm = None
    for job, (_, s_hat) in zip(jobs, got):  # one worker: each step from the one before
        ref = one.compute(job.x, job.x_ref, job.params, *((None, None, None) if warm is None else warm_start(warm)))
        warm = ref
        np.testing.assert_allclose(s_hat, ref.s_hat, rtol=0, atol=1e-8 * np.abs(ref.s_hat).max())


def test_a_step_finished_first_waits_for_the_steps_before_it(computers):
    jobs = _jobs(2)
    got: list[int] = []
    gated = _Gated(computers[0])
    lanes = SensitivityLanes([gated, computers[1]], lambda tag, ns, s_hat: got.append(ns), WorkerSettings(queue_all=True, dt=DT))
    assert lanes.submit(jobs[0]) and lanes.submit(jobs[1])  # lane 0, then lane 1
    deadline = time.monotonic() + 30.0
    while lanes.lanes[1].backlog + (not lanes.lanes[1]._idle.is_set()) and time.monotonic() < deadline:
        time.sleep(0.005)  # lane 1 has finished its step
    assert gated.started.is_set() and got == []  # held back: step 0 is not done
    gated.release.set()
    lanes.close(drain=True)
    assert got == [jobs[0].stamp_ns, jobs[1].stamp_ns]


def test_a_step_is_skipped_only_when_every_lane_is_busy_and_full(computers):
    jobs = _jobs(4)
    gates = [_Gated(c) for c in computers]
    got: list[int] = []
    lanes = SensitivityLanes(gates, lambda tag, ns, s_hat: got.append(ns), WorkerSettings(max_backlog=0, dt=DT))
    accepted = [lanes.submit(jobs[0])]
    assert gates[0].started.wait(30.0)
    accepted.append(lanes.submit(jobs[1]))  # lane 0 busy: lane 1 takes it
    assert gates[1].started.wait(30.0)
    accepted += [lanes.submit(job) for job in jobs[2:]]  # both busy, no backlog: skipped
    for gate in gates:
        gate.release.set()
    lanes.close(drain=True)
    assert accepted == [True, True, False, False]
    assert got == [jobs[0].stamp_ns, jobs[1].stamp_ns]
    assert lanes.counts == {"offered": 4, "skipped": 2, "samples": 2, "failed": 0}


def test_a_swap_needs_one_computer_per_lane(computers):
    lanes = SensitivityLanes(computers, lambda *a: None, WorkerSettings(queue_all=True, dt=DT))
    with pytest.raises(ValueError, match="2 lanes"):
        lanes.swap(computers[:1])
    lanes.close(drain=True)
    with pytest.raises(ValueError, match="at least one"):
        SensitivityLanes([], lambda *a: None, WorkerSettings(queue_all=True))


def test_a_receiver_that_fails_loses_that_result_only(computers):
    jobs = _jobs(3)
    got: list[int] = []

    def receive(tag: int, ns: int, s_hat: np.ndarray | None) -> None:
        if ns == jobs[0].stamp_ns:
            raise OSError("disk full")
        got.append(ns)

    lanes = SensitivityLanes(computers, receive, WorkerSettings(queue_all=True, dt=DT))
    assert all(lanes.submit(job) for job in jobs)
    lanes.close(drain=True)
    assert got == [jobs[1].stamp_ns, jobs[2].stamp_ns]
