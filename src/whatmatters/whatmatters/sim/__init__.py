"""The MuJoCo simulator and the payload environments."""

from whatmatters.sim.environments import Environment, PayloadDistribution, environment_seeds, make_environment
from whatmatters.sim.simulator import PandaSim, SimConfig, SimState

__all__ = [
    "Environment",
    "PandaSim",
    "PayloadDistribution",
    "SimConfig",
    "SimState",
    "environment_seeds",
    "make_environment",
]
