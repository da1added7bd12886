"""ament_python / pip package of the whatmatters ROS 2 nodes (thin adapters over the core)."""

import os
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "whatmatters_ros"
HERE = Path(__file__).resolve().parent
NODES = ("franka_sim", "reference_publisher", "mpc_controller", "sensitivity_logger", "trainer")
CAR_NODES = ("car_sim", "car_mpc", "car_logger")  # the race car's graph; the trainer serves both systems
# One parameter file per node, in the repository's config/ (the car's in config/car/; the CLI reads the same files).
CONFIG = [os.path.relpath(HERE.parent.parent / "config" / f"{n}.yaml", HERE) for n in NODES]
CAR_CONFIG = [os.path.relpath(HERE.parent.parent / "config" / "car" / f"{n}.yaml", HERE) for n in CAR_NODES]
# The launch files live in the repository's top-level launch/ and install into share/whatmatters_ros/launch.
LAUNCH = sorted(os.path.relpath(p, HERE) for p in glob(str(HERE.parent.parent / "launch" / "*.launch.py")))

setup(
    name=PACKAGE,
    version="0.1.0",
    description="ROS 2 nodes of whatmatters: simulators, reference, MPCs, sensitivity loggers, trainer (arm and race car)",
    license="Apache-2.0",
    packages=find_packages(exclude=["test", "test.*"]),
    package_data={PACKAGE: ["data/*.xml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", LAUNCH),
        (f"share/{PACKAGE}/config", CONFIG),
        (f"share/{PACKAGE}/config/car", CAR_CONFIG),
    ],
    python_requires=">=3.10",
    install_requires=["whatmatters", "numpy", "rosbags"],
    zip_safe=False,
    maintainer="whatmatters developers",
    maintainer_email="whatmatters@example.org",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [f"{n} = {PACKAGE}.nodes.{n}:main" for n in NODES + CAR_NODES]
        + ["whatmatters_up = whatmatters_ros.up_cmd:main", "whatmatters_demo = whatmatters_ros.demo:main"],
    },
)
