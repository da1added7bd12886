"""The Ray engine (whatmatters.executor.ray_engine) on a local two-node cluster (loopback only).

The cluster (``conftest.py``) is ``ray.cluster_utils.Cluster``: two raylets
with one CPU each on this machine, so tasks really are spread over two nodes.
"""

from __future__ import annotations

import pytest

import executor_jobs as jobs
from whatmatters.executor import Job, Task, TaskError

ray = pytest.importorskip("ray")


def _tasks(n: int) -> list[Task]:
    return [Task(f"t{i}", (i,)) for i in range(n)]


def test_the_cluster_has_two_nodes_on_loopback(ray_executor):
    nodes = [n for n in ray.nodes() if n["Alive"]]
    assert len(nodes) == 2
    assert {n["NodeManagerAddress"] for n in nodes} == {"127.0.0.1"}
    assert ray_executor.workers == 2


def test_results_come_back_in_task_order_from_both_nodes(ray_executor):
    assert ray_executor.run(Job("squares", jobs.square), _tasks(9)) == [i * i for i in range(9)]
    assert len(set(ray_executor.run(Job("nodes", jobs.node_of), _tasks(8)))) == 2


def test_a_failing_task_is_named_and_the_others_finish(ray_executor):
    seen = []
    with pytest.raises(TaskError, match=r"1 of 5 tasks failed(.|\n)*t3: ValueError: task 3 is the bad one") as info:
        ray_executor.run(Job("fails", jobs.fail_on), [Task(f"t{i}", (i, 3)) for i in range(5)], on_outcome=seen.append)
    assert sorted(o.index for o in seen if o.ok) == [0, 1, 2, 4]
    assert [o.task.name for o in info.value.failed] == ["t3"]


def test_task_messages_reach_the_driver(ray_executor):
    messages = []
    ray_executor.run(Job("reports", jobs.reports), _tasks(4), on_message=messages.append)
    assert sorted(messages) == [("done", i) for i in range(4)]


def test_setup_runs_once_per_worker_process(ray_executor):
    out = ray_executor.run(Job("setup", jobs.setups_seen, jobs.setup, ("a",)), _tasks(8))
    assert {calls for _, calls in out} == {1}


def test_a_task_whose_worker_process_died_is_retried_by_ray(ray_executor, tmp_path):
    marker = tmp_path / "killed"
    out = ray_executor.run(Job("dies", jobs.dies_once), [Task(f"t{i}", (str(marker), i)) for i in range(4)])
    assert marker.is_file()  # a worker process was killed mid-task
    assert out == [0, 1, 4, 9]


def test_a_failed_setup_names_the_node(ray_executor):
    with pytest.raises(TaskError, match=r"NodeError: node \S+ \(127\.0\.0\.1, id [0-9a-f]{12}\): the job's setup failed: RuntimeError: no C compiler here"):
        ray_executor.run(Job("setup fails", jobs.square, jobs.broken_setup), _tasks(2))


def test_a_missing_shared_path_names_the_node_and_the_path(ray_executor, tmp_path):
    missing = tmp_path / "not-mounted"
    with pytest.raises(TaskError, match=rf"NodeError: node \S+ \(127\.0\.0\.1, .*\): {missing} not found there"):
        ray_executor.run(Job("paths", jobs.square, shared_paths=(str(missing),)), _tasks(2))
