"""whatmatters_ros: ROS 2 nodes over the whatmatters core library.

Nodes (one module each in :mod:`whatmatters_ros.nodes`): ``franka_sim``,
``reference_publisher``, ``mpc_controller``, ``sensitivity_logger``. See docs/ros.md.
Importing this package does not import rclpy; the node modules do.
"""

__version__ = "0.1.0"
