"""whatmatters: task-tailored dynamics models for model predictive control.

The core library has no ROS dependency. Sub-packages are named after concepts:

* :mod:`whatmatters.robot`: the Franka Panda's parameters and MJCF model.
* :mod:`whatmatters.sim`: the MuJoCo simulator and the payload environments.
* :mod:`whatmatters.dynamics`: rigid-body (nominal) dynamics in torch and CasADi.
* :mod:`whatmatters.trajectory`: seeded reference trajectories.
"""

from whatmatters.errors import WhatmattersError

__all__ = ["WhatmattersError", "__version__"]

__version__ = "0.1.0"
