"""The trainer beside a running graph (sim.launch.py or real.launch.py).

    ros2 launch whatmatters_ros sim.launch.py lockstep:=true model:=base    # or real.launch.py
    ros2 launch whatmatters_ros train.launch.py weighting:=ours rollout:=4 min_bags:=3

The trainer watches the logger's bag folder (closed bags: one per episode, or
every max_bag_seconds of recorded time), fine-tunes from the base checkpoint,
writes the checkpoint atomically, sets the MPC's 'model' parameter to it and
calls /mpc_controller/reload_model; the logger follows the MPC's new model.
Progress on /trainer/status (std_msgs/String, JSON). See docs/ros.md.

The race car (car.launch.py): system:=car mpc_node:=/car_mpc bag_dir:=runs/car_ros/bags (docs/car.md).
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
    def arg(name, value_type):
        return ParameterValue(LaunchConfiguration(name), value_type=value_type)

    return LaunchDescription([
        DeclareLaunchArgument("system", default_value="arm", description="arm or car (the race car's job and model)"),
        DeclareLaunchArgument("bag_dir", default_value="runs/ros/bags", description="the logger's bag folder (its bag_dir)"),
        DeclareLaunchArgument("checkpoint", default_value="runs/ros/model.pt", description="fine-tuned checkpoint to write"),
        DeclareLaunchArgument("weighting", default_value="ours", description="ones, stand, norm, mpc_cost, ours, ours_avg"),
        DeclareLaunchArgument("rollout", default_value="4", description="rollout length p"),
        DeclareLaunchArgument("epochs", default_value="0", description="epochs per round (0: finetune.yaml)"),
        DeclareLaunchArgument("min_bags", default_value="1", description="new closed bags per round"),
        DeclareLaunchArgument("mpc_node", default_value="/mpc_controller", description="MPC node to reload"),
        Node(
            package=PACKAGE, executable="trainer", name="trainer", output="screen",
            parameters=[_config("trainer"), {
                "system": arg("system", str), "bag_dir": arg("bag_dir", str), "checkpoint": arg("checkpoint", str), "weighting": arg("weighting", str),
                "rollout": arg("rollout", int), "epochs": arg("epochs", int), "min_bags": arg("min_bags", int),
                "mpc_node": arg("mpc_node", str),
            }],
        ),
    ])
