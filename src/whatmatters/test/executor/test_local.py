"""The local engine (whatmatters.executor.local): results in task order, failures named, setup once, retries."""

from __future__ import annotations

import pytest

import executor_jobs as jobs
from whatmatters.errors import ConfigError
from whatmatters.executor import Job, LocalExecutor, Task, TaskError


def _tasks(n: int) -> list[Task]:
    return [Task(f"t{i}", (i,)) for i in range(n)]


@pytest.mark.parametrize("workers", [1, 2])
def test_results_come_back_in_task_order(workers):
    assert LocalExecutor(workers).run(Job("squares", jobs.square), _tasks(7)) == [i * i for i in range(7)]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_task_is_named_and_the_others_finish(workers):
    seen = []
    with pytest.raises(TaskError, match=r"1 of 5 tasks failed(.|\n)*t3: ValueError: task 3 is the bad one") as info:
        LocalExecutor(workers).run(Job("fails", jobs.fail_on), [Task(f"t{i}", (i, 3)) for i in range(5)], on_outcome=seen.append)
    assert sorted(o.index for o in seen if o.ok) == [0, 1, 2, 4]
    assert [o.task.name for o in info.value.failed] == ["t3"]


@pytest.mark.parametrize("workers", [1, 2])
def test_task_messages_reach_the_driver(workers):
    messages = []
    LocalExecutor(workers).run(Job("reports", jobs.reports), _tasks(4), on_message=messages.append)
    assert sorted(messages) == [("done", i) for i in range(4)]


def test_setup_runs_once_per_worker_process():
    out = LocalExecutor(2).run(Job("setup", jobs.setups_seen, jobs.setup, ("a",)), _tasks(8))
    assert {calls for _, calls in out} == {1}  # each process ran the setup before its first task only
    assert 1 <= len({pid for pid, _ in out}) <= 2


def test_a_task_whose_worker_process_died_is_run_again(tmp_path):
    marker = tmp_path / "killed"
    out = LocalExecutor(2).run(Job("dies", jobs.dies_once), [Task(f"t{i}", (str(marker), i)) for i in range(4)])
    assert marker.is_file()  # a worker was killed mid-task
    assert out == [0, 1, 4, 9]


def test_without_retries_the_dead_worker_is_reported(tmp_path):
    with pytest.raises(TaskError, match="BrokenProcessPool"):
        LocalExecutor(2, max_retries=0).run(Job("dies", jobs.dies_once), [Task(f"t{i}", (str(tmp_path / "k"), i)) for i in range(2)])


def test_negative_settings_are_refused():
    with pytest.raises(ConfigError, match="workers"):
        LocalExecutor(-1)
