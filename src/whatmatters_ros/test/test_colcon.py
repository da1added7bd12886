"""The workspace builds with colcon (both packages, colcon.meta), and the installed layout is what ROS 2 expects.

A plain (copying) ``colcon build`` into a temporary workspace: package shares
with package.xml and the ament index markers, the launch files of the
repository's top-level ``launch/`` under ``share/whatmatters_ros/launch``,
every config file, the console scripts under ``lib/<package>``, and an
installed core library that finds its config files in its own install prefix.
"""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
NODES = ("franka_sim", "reference_publisher", "mpc_controller", "sensitivity_logger", "trainer")
CAR_NODES = ("car_sim", "car_mpc", "car_logger")
COLCON = Path(sys.executable).parent / "colcon"


@pytest.fixture(scope="module")
def install(tmp_path_factory) -> Path:
    if not COLCON.is_file():
        pytest.fail(f"{COLCON} missing: make installs colcon (requirements-build.txt)")
    ws = tmp_path_factory.mktemp("ws")
    cmd = [str(COLCON), "--log-base", str(ws / "log"), "build", "--base-paths", str(ROOT / "src"), "--metas", str(ROOT / "colcon.meta"),
           "--build-base", str(ws / "build"), "--install-base", str(ws / "install"), "--event-handlers", "console_direct-"]
    env = {**os.environ, "PATH": f"{COLCON.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(cmd, cwd=ws, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return ws / "install"


def test_both_packages_are_installed_with_their_manifests(install):
    for pkg in ("whatmatters", "whatmatters_ros"):
        assert (install / pkg / "share" / pkg / "package.xml").is_file()
        assert (install / pkg / "share" / "ament_index" / "resource_index" / "packages" / pkg).is_file()


def test_the_launch_files_are_installed_into_the_package_share(install):
    launch = sorted(p.name for p in (ROOT / "launch").glob("*.launch.py"))
    assert launch == ["car.launch.py", "real.launch.py", "sim.launch.py", "train.launch.py"]
    share = install / "whatmatters_ros" / "share" / "whatmatters_ros" / "launch"
    assert sorted(p.name for p in share.iterdir()) == launch
    assert all(filecmp.cmp(ROOT / "launch" / name, share / name, shallow=False) for name in launch)


def test_every_config_file_is_installed(install):
    node_share = install / "whatmatters_ros" / "share" / "whatmatters_ros" / "config"
    assert sorted(p.name for p in node_share.iterdir()) == sorted([f"{n}.yaml" for n in NODES] + ["car"])
    assert sorted(p.name for p in (node_share / "car").iterdir()) == sorted(f"{n}.yaml" for n in CAR_NODES)
    core_share = install / "whatmatters" / "share" / "whatmatters" / "config"
    assert sorted(p.name for p in core_share.iterdir()) == sorted([p.name for p in (ROOT / "config").glob("*.yaml")] + ["car"])
    assert sorted(p.name for p in (core_share / "car").iterdir()) == sorted(p.name for p in (ROOT / "config" / "car").glob("*.yaml"))


def test_the_console_scripts_are_installed_where_ros2_run_finds_them(install):
    scripts = install / "whatmatters_ros" / "lib" / "whatmatters_ros"
    assert {*NODES, *CAR_NODES, "whatmatters_up", "whatmatters_demo"} <= {p.name for p in scripts.iterdir()}
    assert all(os.access(scripts / n, os.X_OK) for n in NODES + CAR_NODES)
    assert (install / "whatmatters" / "lib" / "whatmatters" / "whatmatters").is_file()


def test_the_installed_core_runs_from_the_install_and_finds_its_config(install, tmp_path):
    site = next((install / "whatmatters" / "lib").glob("python3*/site-packages"))
    code = ("import whatmatters, whatmatters.config as c, whatmatters.car.experiment as e; print(whatmatters.__file__); print(c.config_dir()); "
            "print(e.car_base_checkpoint().is_file() and (c.config_dir() / 'car' / 'mpc.yaml').is_file())")
    env = {k: v for k, v in os.environ.items() if k != "WHATMATTERS_CONFIG_DIR"}
    env["PYTHONPATH"] = str(site)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert Path(out[0]).is_relative_to(install) and Path(out[1]) == install / "whatmatters" / "share" / "whatmatters" / "config"
    assert out[2] == "True"  # the race car's configuration and packaged model are installed too
