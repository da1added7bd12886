"""The project's jobs give the same numbers on the Ray cluster as on the local engine, bit for bit.

Collection, the S_hat batch and evaluation on the two-node cluster of
``conftest.py``, against the local process pool; and an evaluation whose Ray
worker process is killed mid-task, which Ray retries.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time

import numpy as np
import pytest

from whatmatters.data.bags import read_episode
from whatmatters.data.collect import CollectConfig, collect
from whatmatters.eval.evaluate import evaluate
from whatmatters.sensitivity.batch import compute_bag_dir, load_sidecar

pytest.importorskip("ray")

SEEDS = [21, 22, 23]


@pytest.fixture(scope="module")
def bags(tmp_path_factory, ray_executor):
    """The same three episodes collected by each engine."""
    root = tmp_path_factory.mktemp("engines")
    cfg = CollectConfig(seconds=0.4)
    local = collect("nominal", SEEDS, root / "local", cfg, workers=2, progress=False)
    remote = collect("nominal", SEEDS, root / "ray", cfg, progress=False, executor=ray_executor)
    return root, local, remote


def test_collect_records_the_same_episodes(bags):
    _, local, remote = bags
    assert [p.name for p in local] == [p.name for p in remote] == ["env_0021", "env_0022", "env_0023"]
    for a, b in zip(local, remote):
        ea, eb = read_episode(a), read_episode(b)
        for key in ("x", "tau", "x_ref_horizon"):
            np.testing.assert_array_equal(getattr(ea, key), getattr(eb, key))


def test_the_sensitivity_batch_writes_the_same_sidecars(bags, ray_executor):
    root, _, _ = bags
    shutil.copytree(root / "local", root / "s_local")
    shutil.copytree(root / "local", root / "s_ray")
    compute_bag_dir(root / "s_local", "base", workers=2, max_steps=4, progress=False)
    compute_bag_dir(root / "s_ray", "base", max_steps=4, progress=False, executor=ray_executor)
    for seed in SEEDS:
        a, b = load_sidecar(root / "s_local" / f"env_{seed:04d}"), load_sidecar(root / "s_ray" / f"env_{seed:04d}")
        assert a["ok"].all() and sorted(a) == sorted(b)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def _numbers(summary: dict) -> dict:
    return {k: summary[k] for k in ("j_track_per_env", "bound_share_per_env", "fallbacks", "j_track_mean")}


def _kill_one(name: str, stop: threading.Event, killed: list[int]) -> None:
    """Kills the first process titled ``ray::<name>`` (a Ray worker running such a task) with SIGKILL."""
    while not stop.is_set() and not killed:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    title = fh.read().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            if title.startswith(f"ray::{name}"):
                time.sleep(0.3)  # inside the task, past the worker's setup
                os.kill(int(pid), signal.SIGKILL)
                killed.append(int(pid))
                return
        time.sleep(0.02)


def test_an_evaluation_survives_a_killed_worker_with_the_same_numbers(ray_executor):
    seeds = [2000, 2001, 2002, 2003]
    local = evaluate("nominal", seeds, seconds=2.0, workers=2).summary()
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_one, args=("evaluate nominal", stop, killed), daemon=True)
    killer.start()
    try:
        remote = evaluate("nominal", seeds, seconds=2.0, executor=ray_executor).summary()
    finally:
        stop.set()
        killer.join(5.0)
    assert killed, "no Ray worker was seen running an evaluation task"
    assert _numbers(remote) == _numbers(local)


def test_the_evaluate_command_runs_on_the_cluster(cluster, capsys):
    import json

    from whatmatters.cli.main import main

    flags = ["evaluate", "--model", "nominal", "--envs", "2004,2005", "--seconds", "0.5", "--json"]
    assert main([*flags, "--workers", "1"]) == 0
    local = json.loads(capsys.readouterr().out)
    assert main([*flags, "--executor", "ray", "--ray-address", cluster.address]) == 0
    remote = json.loads(capsys.readouterr().out)
    assert _numbers(remote) == _numbers(local)
