"""The logger's worker thread (no ROS): every batch size gives the one-sample results."""

from __future__ import annotations

import numpy as np
import pytest
from whatmatters.dynamics.nominal import nominal_model
from whatmatters.mpc.config import MpcConfig
from whatmatters.robot.params import load_panda_params
from whatmatters.sensitivity.compute import SensitivityComputer
from whatmatters.sensitivity.point import warm_start
from whatmatters.trajectory.fourier import sample_fourier_trajectory

from whatmatters_ros.sensitivity_worker import SensitivityJob, SensitivityWorker


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
    worker = SensitivityWorker(computer, lambda tag, ns, s_hat: got.append((ns, s_hat)), batch, flush_after=0.05, queue_all=True)
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
    worker = SensitivityWorker(remote, lambda tag, ns, s_hat: got.append(s_hat), 3, flush_after=0.05, queue_all=True)
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
