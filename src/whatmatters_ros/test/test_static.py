"""Parameters, launch files, packaging and bag recovery: checks that need no running graph."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import subprocess
import sys
import types
import xml.etree.ElementTree as ET
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from whatmatters.config import load_node_parameters
from whatmatters.data.bags import BagError, EpisodeBagWriter, read_episode
from whatmatters_ros.params import ROS_RESERVED, ParameterError
from whatmatters_ros.recover import complete_chunk_count, recover_bag

pytest.importorskip("rclpy")
from whatmatters_ros.nodes import car_logger, car_mpc, car_sim, franka_sim, mpc_controller, reference_publisher, sensitivity_logger, trainer  # noqa: E402

PKG = Path(__file__).resolve().parents[1]
ROOT = PKG.parents[1]
PARAMS = {
    "franka_sim": franka_sim.FrankaSimParams,
    "reference_publisher": reference_publisher.ReferenceParams,
    "mpc_controller": mpc_controller.MpcParams,
    "sensitivity_logger": sensitivity_logger.LoggerParams,
    "trainer": trainer.TrainerParams,
    "car_sim": car_sim.CarSimParams,
    "car_mpc": car_mpc.CarMpcParams,
    "car_logger": car_logger.CarLoggerParams,
}


@pytest.mark.parametrize("node", sorted(PARAMS))
def test_yaml_files_are_the_defaults(node: str) -> None:
    cls = PARAMS[node]
    values = load_node_parameters(cls.yaml_path(), node)
    assert cls.yaml_path() == ROOT / "config" / cls.config_subdir / f"{node}.yaml"
    declared = {f.name for f in fields(cls)}
    assert set(values) - ROS_RESERVED <= declared
    params = cls.defaults()
    for key, value in values.items():
        got = getattr(params, key)
        assert (list(got) if isinstance(got, tuple) else got) == value, key


def test_wrong_type_and_range_name_the_key(tmp_path: Path) -> None:
    bad_type = tmp_path / "t.yaml"
    bad_type.write_text("franka_sim:\n  ros__parameters:\n    publish_rate_hz: fast\n")
    with pytest.raises(ParameterError, match="publish_rate_hz"):
        franka_sim.FrankaSimParams.defaults(bad_type)
    with pytest.raises(ParameterError, match="command_timeout"):
        franka_sim.FrankaSimParams.defaults(None, command_timeout=-1.0)
    with pytest.raises(ParameterError, match="hold_damping"):
        franka_sim.FrankaSimParams.defaults(None, hold_damping=[1.0, 2.0])
    with pytest.raises(ParameterError, match="unknown key 'rate'"):
        reference_publisher.ReferenceParams.defaults(None, rate=3.0)


def test_node_stops_on_a_bad_parameter() -> None:
    from whatmatters_ros.graph import node_command

    proc = subprocess.run(node_command("franka_sim", {"publish_rate_hz": -5.0}), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "publish_rate_hz" in proc.stdout + proc.stderr


# ------------------------------------------------------------------ launch files
class _Recorder:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs


def _stub_launch(monkeypatch: pytest.MonkeyPatch, share: Path) -> None:
    mods = {name: types.ModuleType(name) for name in (
        "launch", "launch.actions", "launch.substitutions", "launch_ros", "launch_ros.actions",
        "launch_ros.parameter_descriptions", "ament_index_python", "ament_index_python.packages")}
    mods["launch"].LaunchDescription = lambda entities: list(entities)  # type: ignore[attr-defined]
    mods["launch.actions"].DeclareLaunchArgument = _Recorder  # type: ignore[attr-defined]
    mods["launch.substitutions"].LaunchConfiguration = lambda name: f"$({name})"  # type: ignore[attr-defined]
    mods["launch_ros.actions"].Node = _Recorder  # type: ignore[attr-defined]
    mods["launch_ros.parameter_descriptions"].ParameterValue = lambda value, value_type: value  # type: ignore[attr-defined]
    mods["ament_index_python.packages"].get_package_share_directory = lambda pkg: str(share / pkg)  # type: ignore[attr-defined]
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)


@pytest.mark.parametrize("launch_file", ["sim.launch.py", "real.launch.py", "train.launch.py", "car.launch.py"])
def test_launch_files(launch_file: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "whatmatters_ros").mkdir()
    (tmp_path / "whatmatters_ros" / "config").symlink_to(ROOT / "config")
    _stub_launch(monkeypatch, tmp_path)
    path = ROOT / "launch" / launch_file
    ast.parse(path.read_text())
    spec = importlib.util.spec_from_file_location("launch_under_test", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    entities = module.generate_launch_description()
    arguments = {e.args[0] for e in entities if not e.kwargs.get("executable")}
    nodes = [e for e in entities if e.kwargs.get("executable")]
    scripts = {ep.name for ep in importlib.metadata.entry_points(group="console_scripts") if ep.value.startswith("whatmatters_ros")}
    assert nodes
    for node in nodes:
        kw = node.kwargs
        assert kw["package"] == "whatmatters_ros" and kw["executable"] in scripts
        declared = {f.name for f in fields(PARAMS[kw["executable"]])} | ROS_RESERVED
        for entry in kw["parameters"]:
            if isinstance(entry, str):
                assert Path(entry).is_file(), entry
                assert set(load_node_parameters(entry, kw["name"])) <= declared
            else:
                assert set(entry) <= declared, set(entry) - declared
                for value in entry.values():
                    if isinstance(value, str) and value.startswith("$("):
                        assert value[2:-1] in arguments, value
    if launch_file == "train.launch.py":  # the trainer watches what the logger records and reloads the MPC
        defaults = {e.args[0]: e.kwargs["default_value"] for e in entities if not e.kwargs.get("executable")}
        assert defaults["bag_dir"] == sensitivity_logger.LoggerParams.defaults().bag_dir
        assert defaults["mpc_node"] == "/" + mpc_controller.MpcParams.node_name
    if launch_file == "real.launch.py":
        assert all(kw["executable"] != "franka_sim" for kw in (n.kwargs for n in nodes))
        assert all(("/effort_controller/commands", ["/", "$(controller)", "/commands"]) in n.kwargs["remappings"] for n in nodes)
        for node in nodes:  # libfranka adds gravity: the MPC must send, and the logger record, accordingly
            if node.kwargs["executable"] in ("mpc_controller", "sensitivity_logger"):
                assert any(isinstance(e, dict) and e.get("command_excludes_gravity") is True for e in node.kwargs["parameters"])


def test_package_manifest_and_data_files() -> None:
    root = ET.parse(PKG / "package.xml").getroot()
    assert root.get("format") == "3" and root.findtext("name") == "whatmatters_ros"
    depends = {e.text for e in root.iter("exec_depend")}
    assert {"whatmatters", "rclpy", "std_msgs", "sensor_msgs", "trajectory_msgs", "diagnostic_msgs", "std_srvs", "nav_msgs"} <= depends
    assert (PKG / "resource" / "whatmatters_ros").is_file()
    for node, cls in PARAMS.items():
        assert (ROOT / "config" / cls.config_subdir / f"{node}.yaml").is_file()


# ------------------------------------------------------------------ bag recovery
def test_recover_truncated_bag(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    rng = np.random.default_rng(0)
    with EpisodeBagWriter(bag) as w:
        for k in range(1200):  # ~3 KB a step: several 1 MiB chunks
            t = 0.02 * k
            w.joint_state(t, rng.normal(size=7), rng.normal(size=7), np.zeros(7))
            w.reference(t, rng.normal(size=(13, 14)), 0.02)
            w.command(t, rng.normal(size=7))
    mcap = next(bag.glob("*.mcap"))
    data = mcap.read_bytes()
    mcap.write_bytes(data[: int(len(data) * 0.6)])  # killed inside a chunk, before index and footer
    (bag / "metadata.yaml").unlink()
    out = tmp_path / "recovered"
    n = recover_bag(bag, out)
    ep = read_episode(out)
    assert n > 600 and 300 < len(ep.x) < 1200
    assert np.all(np.isfinite(ep.x)) and ep.tau.shape == (len(ep.x) - 1, 7)


def test_complete_chunk_count_counts_only_whole_chunks(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    rng = np.random.default_rng(1)
    with EpisodeBagWriter(bag) as w:
        for k in range(800):
            w.reference(0.02 * k, rng.normal(size=(13, 14)), 0.02)
    data = next(bag.glob("*.mcap")).read_bytes()
    pos = 8  # after the magic: records of opcode (u8), length (u64), body until the first chunk (0x06)
    while data[pos] != 0x06:
        pos += 9 + int.from_bytes(data[pos + 1 : pos + 9], "little")
    end = pos + 9 + int.from_bytes(data[pos + 1 : pos + 9], "little")
    assert end < len(data)  # more follows the first chunk
    cut = tmp_path / "cut.mcap"
    for size, expected in ((pos + 100, 0), (end - 1, 0), (end, 1), (8, 0)):
        cut.write_bytes(data[:size])
        assert complete_chunk_count(cut) == expected, size
    assert complete_chunk_count(tmp_path / "missing.mcap") == 0


def test_recovered_bag_ends_with_a_whole_control_step(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    rng = np.random.default_rng(2)
    with EpisodeBagWriter(bag) as w:
        for k in range(50):
            w.joint_state(0.02 * k, rng.normal(size=7), rng.normal(size=7), np.zeros(7))
            w.reference(0.02 * k, rng.normal(size=(13, 14)), 0.02)
            w.command(0.02 * k, rng.normal(size=7))
        for k in (50, 51):  # the kill cut these steps after their state: no command
            w.joint_state(0.02 * k, rng.normal(size=7), rng.normal(size=7), np.zeros(7))
    with pytest.raises(BagError, match="missing for 1 of 51"):
        read_episode(bag)
    recover_bag(bag, tmp_path / "recovered")
    ep = read_episode(tmp_path / "recovered")
    assert ep.x.shape == (51, 14) and ep.tau.shape == (50, 7)
