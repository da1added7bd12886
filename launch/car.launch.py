"""The race car's graph: car_sim + car_mpc + car_logger on F1TENTH's /odom and /drive.

    ros2 launch whatmatters_ros car.launch.py [lockstep:=true] [model:=base] [env_seed:=2000]
    ros2 launch whatmatters_ros train.launch.py system:=car mpc_node:=/car_mpc bag_dir:=runs/car_ros/bags

Each node reads its installed config/car/<node>.yaml; the launch arguments
override a few keys. In lock-step the simulator publishes /clock, the other
nodes run on simulated time and the simulator waits for the logger's S_hat.
On a real car, leave out car_sim and relay /drive to the driver's
AckermannDriveStamped (docs/car.md, "ROS 2"). Without ros2 launch:
`whatmatters up car` (docs/car.md).
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
    return os.path.join(get_package_share_directory(PACKAGE), "config", "car", f"{node}.yaml")


def generate_launch_description():
    lockstep = ParameterValue(LaunchConfiguration("lockstep"), value_type=bool)
    env_seed = ParameterValue(LaunchConfiguration("env_seed"), value_type=int)
    model = ParameterValue(LaunchConfiguration("model"), value_type=str)
    seconds = ParameterValue(LaunchConfiguration("episode_seconds"), value_type=float)
    sim_time = {"use_sim_time": lockstep}
    return LaunchDescription([
        DeclareLaunchArgument("lockstep", default_value="false", description="lock-step clock (publishes /clock)"),
        DeclareLaunchArgument("env_seed", default_value="2000", description="environment: tyre friction, mass and its distribution"),
        DeclareLaunchArgument("model", default_value="nominal", description="MPC model: nominal, base or a car checkpoint"),
        DeclareLaunchArgument("episode_seconds", default_value="0.0", description="seconds of the task (0: until stopped)"),
        Node(
            package=PACKAGE, executable="car_sim", name="car_sim", output="screen",
            parameters=[_config("car_sim"), {"lockstep": lockstep, "env_seed": env_seed, "episode_seconds": seconds,
                                             "wait_for_sensitivity": lockstep, "wait_for_nodes": "car_mpc,car_logger", "start_delay": 1.0}],
        ),
        Node(
            package=PACKAGE, executable="car_mpc", name="car_mpc", output="screen",
            parameters=[_config("car_mpc"), {"lockstep": lockstep, "model": model, "start_after": "car_logger"}, sim_time],
        ),
        Node(
            package=PACKAGE, executable="car_logger", name="car_logger", output="screen",
            parameters=[_config("car_logger"), {"lockstep": lockstep, "model": model}, sim_time],
        ),
    ])
