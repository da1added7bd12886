"""Factories for the two rigid-body models the project uses.

* :func:`nominal_model`: the arm and hand from the published parameters; it
  knows neither the payload nor the simulator's joint armature and damping
  (those are what a learned residual has to capture; see ``docs/dynamics.md``).
* :func:`exact_model`: the simulator's own model for one environment (payload,
  armature and damping known), the upper bound a learned model can reach.
"""

from __future__ import annotations

from whatmatters.dynamics.chain import ChainParams
from whatmatters.dynamics.rigid_body import RigidBodyDynamics
from whatmatters.robot.params import PandaParams, load_panda_params
from whatmatters.robot.payload import Payload

__all__ = ["exact_model", "nominal_model"]


def nominal_model(params: PandaParams | None = None) -> RigidBodyDynamics:
    """The nominal model: bare arm with hand, no armature, no damping, no payload."""
    return RigidBodyDynamics(ChainParams.from_panda(params or load_panda_params()))


def exact_model(
    payload: Payload,
    armature: float,
    damping: float,
    params: PandaParams | None = None,
) -> RigidBodyDynamics:
    """The simulator's model for one environment.

    Args:
        payload: The environment's payload.
        armature: Joint armature of the simulator, kg m^2.
        damping: Joint damping of the simulator, Nm s/rad.
        params: Robot parameters (the packaged ones by default).
    """
    chain = ChainParams.from_panda(params or load_panda_params(), payload, armature, damping)
    return RigidBodyDynamics(chain)
