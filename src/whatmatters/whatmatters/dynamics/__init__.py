"""Dynamics models: the rigid-body (nominal) model in torch and CasADi forms."""

from whatmatters.dynamics.base import DynamicsModel, rk4
from whatmatters.dynamics.chain import ChainParams
from whatmatters.dynamics.nominal import exact_model, nominal_model
from whatmatters.dynamics.rigid_body import RigidBodyDynamics

__all__ = ["ChainParams", "DynamicsModel", "RigidBodyDynamics", "exact_model", "nominal_model", "rk4"]
