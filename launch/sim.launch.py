"""Simulation graph: franka_sim + reference_publisher + mpc_controller + sensitivity_logger.

    ros2 launch whatmatters_ros sim.launch.py [lockstep:=true] [model:=base] [env_seed:=2000]

Each node reads its installed config/<node>.yaml; the launch arguments override
a few keys. In lock-step the simulator publishes /clock and every other node
runs on simulated time. Without ros2 launch: `whatmatters up sim` (docs/ros.md).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

PACKAGE = "whatmatters_ros"


def _config(node):
    return os.path.join(get_package_share_directory(PACKAGE), "config", f"{node}.yaml")


def generate_launch_description():
    lockstep = ParameterValue(LaunchConfiguration("lockstep"), value_type=bool)
    env_seed = ParameterValue(LaunchConfiguration("env_seed"), value_type=int)
    model = ParameterValue(LaunchConfiguration("model"), value_type=str)
    seconds = ParameterValue(LaunchConfiguration("episode_seconds"), value_type=float)
    sim_time = {"use_sim_time": lockstep}
    return LaunchDescription([
        DeclareLaunchArgument("lockstep", default_value="false", description="lock-step clock (publishes /clock)"),
        DeclareLaunchArgument("env_seed", default_value="2000", description="environment: payload and reference"),
        DeclareLaunchArgument("model", default_value="nominal", description="MPC model: nominal, base or a checkpoint"),
        DeclareLaunchArgument("episode_seconds", default_value="0.0", description="simulated seconds (0: until stopped)"),
        Node(
            package=PACKAGE, executable="franka_sim", name="franka_sim", output="screen",
            parameters=[_config("franka_sim"), {"lockstep": lockstep, "env_seed": env_seed,
                                                "episode_seconds": seconds, "wait_for_nodes": "reference_publisher,mpc_controller,sensitivity_logger", "start_delay": 1.0}],
        ),
        Node(
            package=PACKAGE, executable="reference_publisher", name="reference_publisher", output="screen",
            parameters=[_config("reference_publisher"), {"lockstep": lockstep, "env_seed": env_seed,
                                                         "wait_for_nodes": "mpc_controller,sensitivity_logger"}, sim_time],  # lock-step only
        ),
        Node(
            package=PACKAGE, executable="mpc_controller", name="mpc_controller", output="screen",
            parameters=[_config("mpc_controller"), {"lockstep": lockstep, "model": model,
                                                   "start_after": "reference_publisher,sensitivity_logger"}, sim_time],
        ),
        Node(
            package=PACKAGE, executable="sensitivity_logger", name="sensitivity_logger", output="screen",
            parameters=[_config("sensitivity_logger"), {"lockstep": lockstep, "model": model}, sim_time],
        ),
    ])
