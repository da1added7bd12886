"""The Franka Panda: published parameters, composite inertias and the MJCF model."""

from whatmatters.robot.params import (
    Inertial,
    JointSpec,
    PandaParams,
    load_panda_params,
    rpy_to_matrix,
)

__all__ = ["Inertial", "JointSpec", "PandaParams", "load_panda_params", "rpy_to_matrix"]
