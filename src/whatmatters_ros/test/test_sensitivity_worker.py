"""The logger's worker thread (no ROS): every batch size gives the one-sample results."""

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

from whatmatters_ros.sensitivity_worker import SensitivityJob, SensitivityWorker, WorkerSettings


@pytest.fixture(scope="module")
def computer() -> SensitivityComputer:
    params = load_panda_params()
    return SensitivityComputer(nominal_model(params), MpcConfig.from_yaml(), params.torque_limits)


def _jobs(steps: int) -> list[SensitivityJob]:
    tr = sample_fourier_trajectory(5)
    horizon = 0.02 * np.arange(13)
    return [SensitivityJob(0, k * 20_000_000, tr.state(0.5 + 0.02 * k), tr.state(0.5 + 0.02 * k + horizon), np.zeros(0)) for k in range(steps)]


@pytest.mark.parametrize("batch", [1, 3])
def test_worker_results_equal_one_sample_computations(computer, batch):
    jobs = _jobs(4)
    got: list[tuple[int, np.ndarray | None]] = []
    worker = SensitivityWorker(computer, lambda tag, ns, s_hat: got.append((ns, s_hat)), WorkerSettings(batch, 0.05, queue_all=True))
    for job in jobs:
        assert worker.submit(job)
    worker.close(drain=True)
    assert [ns for ns, _ in got] == [job.stamp_ns for job in jobs]  # every step, in order
    assert worker.counts["samples"] == len(jobs) and worker.counts["failed"] == 0
    warm = None
    for job, (_, s_hat) in zip(jobs, got):
        init = (None, None, None) if warm is None else warm_start(warm)
        ref = computer.compute(job.x, job.x_ref, job.params, *init)
        warm = ref
        np.testing.assert_allclose(s_hat, ref.s_hat, rtol=0, atol=1e-10 * np.abs(ref.s_hat).max())


def test_the_child_process_gives_the_in_process_numbers(computer):
    from whatmatters_ros.sensitivity_process import ProcessComputer

    jobs = _jobs(3)
    got: list[np.ndarray | None] = []
    remote = ProcessComputer("nominal", nice=19, torch_threads=1)
    worker = SensitivityWorker(remote, lambda tag, ns, s_hat: got.append(s_hat), WorkerSettings(3, 0.05, queue_all=True))
    for job in jobs:
        assert worker.submit(job)
    worker.close(drain=True)  # also stops the child
    warm = None
    for job, s_hat in zip(jobs, got):
        init = (None, None, None) if warm is None else warm_start(warm)
        ref = computer.compute(job.x, job.x_ref, job.params, *init)
        warm = ref
        np.testing.assert_allclose(s_hat, ref.s_hat, rtol=0, atol=1e-10 * np.abs(ref.s_hat).max())


def test_a_computer_that_cannot_be_built_fails_in_the_caller(tmp_path):
    from whatmatters_ros.sensitivity_process import ProcessComputer

    with pytest.raises(Exception, match="missing.pt"):
        ProcessComputer(str(tmp_path / "missing.pt"))


class _Gated:
    """The computer, held at its first step until released: the worker is busy for as long as the test needs."""

    def __init__(self, computer: SensitivityComputer) -> None:
        self.computer = computer
        self.release = threading.Event()

    def compute(self, *args):
        assert self.release.wait(30.0)
        return self.computer.compute(*args)


@pytest.mark.parametrize("max_backlog", [0, 2])
def test_real_time_queues_up_to_max_backlog_steps_while_busy(computer, max_backlog):
    jobs = _jobs(6)
    got: list[int] = []
    gated = _Gated(computer)
    worker = SensitivityWorker(gated, lambda tag, ns, s_hat: got.append(ns), WorkerSettings(1, 0.05, max_backlog=max_backlog))
    accepted = [worker.submit(jobs[0])]
    deadline = time.monotonic() + 10.0
    while worker.backlog and time.monotonic() < deadline:  # the first step has started (and waits at the gate)
        time.sleep(0.005)
    accepted += [worker.submit(job) for job in jobs[1:]]
    gated.release.set()
    worker.close(drain=True)
    assert accepted == [True] + [True] * max_backlog + [False] * (5 - max_backlog)
    assert got == [job.stamp_ns for job in jobs[: 1 + max_backlog]]  # the queued steps in order, none lost
    assert worker.counts == {"offered": 6, "skipped": 5 - max_backlog, "samples": 1 + max_backlog, "failed": 0}


@pytest.mark.parametrize(
    ("field", "value"), [("batch", 0), ("flush_after", 0.0), ("max_backlog", -1), ("dt", 0.0)]
)
def test_settings_out_of_range_are_refused_by_name(field, value):
    with pytest.raises(ValueError, match=field):
        WorkerSettings(**{field: value})


class _Broken:
    """A computer that raises an unexpected error at its second step."""

    def __init__(self, computer: SensitivityComputer) -> None:
        self.computer, self.calls = computer, 0

    def compute(self, *args):
        self.calls += 1
        if self.calls == 2:
            raise AttributeError("a bug in the computer")
        return self.computer.compute(*args)


def test_an_unexpected_error_fails_its_step_and_the_worker_goes_on(computer):
    jobs = _jobs(3)
    got: list[tuple[int, bool]] = []
    worker = SensitivityWorker(_Broken(computer), lambda tag, ns, s_hat: got.append((ns, s_hat is not None)), WorkerSettings(1, 0.05, queue_all=True))
    for job in jobs:
        assert worker.submit(job)
    worker.close(drain=True)
    assert got == [(jobs[0].stamp_ns, True), (jobs[1].stamp_ns, False), (jobs[2].stamp_ns, True)]
    assert worker.counts["failed"] == 1 and worker.counts["samples"] == 2
