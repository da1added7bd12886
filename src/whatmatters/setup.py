"""ament_python / pip package of the whatmatters core library (no ROS import)."""

import os
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "whatmatters"
HERE = Path(__file__).resolve().parent
# The repository's config/ YAML files are installed so that non-editable installs
# (pip, colcon without --symlink-install) find them under share/whatmatters/config.
CONFIG = sorted(os.path.relpath(p, HERE) for p in glob(str(HERE.parent.parent / "config" / "*.yaml")))
CAR_CONFIG = sorted(os.path.relpath(p, HERE) for p in glob(str(HERE.parent.parent / "config" / "car" / "*.yaml")))  # the race car's

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Task-tailored dynamics models for MPC: sensitivity-weighted learning through differentiable MPC",
    license="Apache-2.0",
    packages=find_packages(exclude=["test", "test.*"]),
    package_data={"whatmatters.robot": ["data/*.yaml"], "whatmatters.car": ["data/*.yaml", "checkpoints/*.pt"], "whatmatters.dynamics": ["checkpoints/*.pt"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/config", CONFIG),
        (f"share/{PACKAGE}/config/car", CAR_CONFIG),
    ],
    python_requires=">=3.10",
    install_requires=["numpy", "pyyaml", "mujoco>=3", "casadi", "torch"],
    # the Ray engine of whatmatters.executor (pip install 'whatmatters[ray]'); requirements-ray.txt pins its dependencies
    extras_require={"ray": ["ray==2.60.0"]},
    zip_safe=False,
    maintainer="whatmatters developers",
    maintainer_email="whatmatters@example.org",
    tests_require=["pytest"],
    entry_points={"console_scripts": ["whatmatters = whatmatters.cli.main:main"]},
)
