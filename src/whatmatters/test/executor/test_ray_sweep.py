"""The quick sweep on the Ray cluster: its driver killed mid-sweep, resumed, and fig2.json equal to the local engine's.

The reference is ``whatmatters experiment --quick`` on the local process pool.
On the two-node cluster of ``conftest.py`` a driver process runs the same
sweep and is killed (SIGKILL) once a run has finished; a second driver
resumes it. Finished runs are kept (whole, as they were), and every number of
fig2.json equals the local sweep's (all but the runs' wall times).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from whatmatters.cli.main import main

pytest.importorskip("ray")

DRIVER = "from whatmatters.cli.main import main; raise SystemExit(main())"


def _results(out: Path) -> dict[str, float]:
    return {p.parent.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*/result.json")}


def _numbers(fig: dict) -> dict:
    """fig2.json without the runs' wall times (the only entries that are not results)."""
    return {**fig, "raw": [{k: v for k, v in run.items() if k != "wall_s"} for run in fig["raw"]]}


def _kill_after_first_run(cmd: list[str], out: Path, limit_s: float = 420.0) -> None:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + limit_s
    try:
        while not _results(out):
            assert proc.poll() is None, f"the driver ended (rc {proc.returncode}) before any run finished"
            assert time.monotonic() < deadline, "no run finished in time"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)


def test_a_killed_ray_sweep_resumes_to_the_local_engines_numbers(cluster, ray_executor, tmp_path, capsys):
    local, remote = tmp_path / "local", tmp_path / "ray"
    assert main(["experiment", "--quick", "--out", str(local), "--workers", "2", "--json"]) == 0
    capsys.readouterr()
    flags = ["experiment", "--quick", "--out", str(remote), "--executor", "ray", "--ray-address", cluster.address, "--json"]
    _kill_after_first_run([sys.executable, "-c", DRIVER, *flags], remote)
    time.sleep(3.0)  # Ray stops the dead driver's tasks
    kept = _results(remote)
    assert 1 <= len(kept) < 18
    for run in kept:  # every output written is whole
        assert json.loads((remote / "runs" / run / "result.json").read_text())["weighting"] in run
    assert main(flags) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["runs"] == 18 and summary["computed"] == 18 - len(kept)
    assert {k: v for k, v in _results(remote).items() if k in kept} == kept  # finished runs were not redone
    a = json.loads((local / "report" / "fig2.json").read_text())
    b = json.loads((remote / "report" / "fig2.json").read_text())
    assert _numbers(a) == _numbers(b) and len(a["raw"]) == 18
    assert os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0"  # the cluster stayed on loopback
