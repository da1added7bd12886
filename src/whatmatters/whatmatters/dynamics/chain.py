"""Numeric parameters of a serial chain of revolute joints (the rigid-body model)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from whatmatters.robot.params import Inertial, PandaParams
from whatmatters.robot.payload import Payload

__all__ = ["ChainParams"]

GRAVITY = np.array([0.0, 0.0, -9.81])


@dataclass(frozen=True)
class ChainParams:
    """Everything the rigid-body algorithms need, as numpy constants.

    Joint ``i`` turns about the z axis of link frame ``i``, whose pose in the
    parent frame is ``(joint_pos[i], joint_rot[i] @ Rz(q_i))``.

    Attributes:
        joint_pos: Joint origins in the parent frames, m, shape (n, 3).
        joint_rot: Joint frame orientations at q = 0, shape (n, 3, 3).
        mass: Link masses, kg, shape (n,).
        com: Link centres of mass in their own frames, m, shape (n, 3).
        inertia: Link inertias about their centres of mass, kg m^2, shape (n, 3, 3).
        armature: Reflected rotor inertia added to M's diagonal, kg m^2, shape (n,).
        damping: Viscous joint damping, Nm s/rad, shape (n,).
        gravity: Gravity in the base frame, m/s^2, shape (3,).
    """

    joint_pos: np.ndarray
    joint_rot: np.ndarray
    mass: np.ndarray
    com: np.ndarray
    inertia: np.ndarray
    armature: np.ndarray
    damping: np.ndarray
    gravity: np.ndarray

    @property
    def n(self) -> int:
        """Number of joints."""
        return int(self.mass.shape[0])

    @classmethod
    def from_panda(
        cls,
        params: PandaParams,
        payload: Payload | None = None,
        armature: float = 0.0,
        damping: float = 0.0,
    ) -> ChainParams:
        """The Panda arm with its hand, optionally with a payload, armature, damping.

        Args:
            params: Published robot parameters.
            payload: Payload at the flange, or None for the bare arm (nominal model).
            armature: Rotor inertia per joint, kg m^2 (the nominal model uses 0).
            damping: Viscous damping per joint, Nm s/rad (the nominal model uses 0).
        """
        links: list[Inertial] = list(params.links)
        tip = links[-1] + params.end_effector_inertial()
        if payload is not None:
            tip = tip + payload.inertial_in_link7(params)
        links[-1] = tip
        n = len(params.joints)
        return cls(
            joint_pos=np.array([j.origin_pos for j in params.joints]),
            joint_rot=np.array([j.origin_rot for j in params.joints]),
            mass=np.array([lk.mass for lk in links]),
            com=np.array([lk.com for lk in links]),
            inertia=np.array([lk.inertia for lk in links]),
            armature=np.full(n, float(armature)),
            damping=np.full(n, float(damping)),
            gravity=GRAVITY.copy(),
        )

    def first_moments(self) -> np.ndarray:
        """``mass * com`` per link, kg m, shape (n, 3)."""
        return self.mass[:, None] * self.com

    def origin_inertias(self) -> np.ndarray:
        """Link inertias about their frame origins, kg m^2, shape (n, 3, 3)."""
        c = self.com
        shift = np.einsum("i,ij->ij", np.einsum("ij,ij->i", c, c), np.ones((self.n, 3)))
        par = shift[:, :, None] * np.eye(3)[None] - np.einsum("ij,ik->ijk", c, c)
        return self.inertia + self.mass[:, None, None] * par
