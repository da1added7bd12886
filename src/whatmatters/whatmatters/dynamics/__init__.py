"""Dynamics models: the generic base, the arm's joint-space kind and its rigid-body (nominal) model."""

from whatmatters.dynamics.base import DynamicsModel, JointSpaceModel, rk4
from whatmatters.dynamics.chain import ChainParams
from whatmatters.dynamics.nominal import exact_model, nominal_model
from whatmatters.dynamics.rigid_body import RigidBodyDynamics

__all__ = ["ChainParams", "DynamicsModel", "JointSpaceModel", "RigidBodyDynamics", "exact_model", "nominal_model", "rk4"]
