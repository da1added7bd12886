"""The executor tests' job functions must be importable in worker processes: this folder goes on PYTHONPATH."""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

# Ray reads this when it is imported: "0" keeps a local cluster on 127.0.0.1 (no other interface is used).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import pytest  # noqa: E402


@pytest.fixture(scope="package", autouse=True)
def worker_pythonpath():
    """Worker processes started by these tests (pools, Ray nodes) import executor_jobs from here; restored after."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([HERE, *filter(None, [old])])
    yield
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


@pytest.fixture(scope="package")
def cluster():
    """A local Ray cluster of two nodes with one CPU each (``ray.cluster_utils.Cluster``), loopback only."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    yield c
    if ray.is_initialized():
        ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="package")
def ray_executor(cluster):
    """The Ray engine connected to :func:`cluster`."""
    from whatmatters.executor.ray_engine import RayExecutor

    ex = RayExecutor(address=cluster.address, max_retries=3)
    yield ex
    ex.close()
