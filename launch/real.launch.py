"""Real robot: mpc_controller + sensitivity_logger (+ reference_publisher) against franka_ros2.

Start the robot first with franka_ros2 (ros2_control) and its effort
forward-command controller, e.g.

    ros2 launch franka_bringup franka.launch.py robot_ip:=<ip>   # joint_state_broadcaster
    ros2 control load_controller --set-state active effort_controller
      (a forward_command_controller/ForwardCommandController with interface_name: effort,
       joints fr3_joint1..7 / panda_joint1..7, as configured in franka_bringup)

then, with the robot at rest at the reference's start pose:

    ros2 launch whatmatters_ros real.launch.py controller:=effort_controller model:=base

The MPC publishes std_msgs/Float64MultiArray on /<controller>/commands (remapped
from /effort_controller/commands) and reads /joint_states (fr3_* or panda_*
joint names). libfranka adds gravity compensation to every torque command, so the
MPC runs with command_excludes_gravity: the command is clip(tau) - g_nom(q), the total
torque goes to /mpc/torque and the logger records that one. Real time only: no /clock, no lock-step. See docs/ros.md.
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
    commands = ["/", LaunchConfiguration("controller"), "/commands"]
    states = LaunchConfiguration("joint_states")
    remaps = [("/effort_controller/commands", commands), ("/joint_states", states)]
    model = ParameterValue(LaunchConfiguration("model"), value_type=str)
    env_seed = ParameterValue(LaunchConfiguration("env_seed"), value_type=int)
    return LaunchDescription([
        DeclareLaunchArgument("controller", default_value="effort_controller", description="franka_ros2 effort forward-command controller"),
        DeclareLaunchArgument("joint_states", default_value="/joint_states", description="joint state topic of the robot"),
        DeclareLaunchArgument("model", default_value="base", description="MPC model: nominal, base or a checkpoint"),
        DeclareLaunchArgument("env_seed", default_value="2000", description="picks the reference trajectory"),
        Node(
            package=PACKAGE, executable="reference_publisher", name="reference_publisher", output="screen",
            # the trajectory starts where the robot stands; its clock when the first command is applied
            parameters=[_config("reference_publisher"), {"lockstep": False, "env_seed": env_seed, "start_pose": "measured"}], remappings=remaps,
        ),
        Node(
            package=PACKAGE, executable="mpc_controller", name="mpc_controller", output="screen",
            parameters=[_config("mpc_controller"), {"lockstep": False, "model": model, "command_excludes_gravity": True,
                                                   "start_after": "reference_publisher,sensitivity_logger"}], remappings=remaps,
        ),
        Node(
            package=PACKAGE, executable="sensitivity_logger", name="sensitivity_logger", output="screen",
            parameters=[_config("sensitivity_logger"), {"lockstep": False, "model": model, "command_excludes_gravity": True}], remappings=remaps,
        ),
    ])
