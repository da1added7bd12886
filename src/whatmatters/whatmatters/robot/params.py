"""The Panda's published kinematic and inertial parameters.

The data file ``data/panda_parameters.yaml`` holds the values of Franka's
``franka_description`` URDF (SI units). Joint frames follow the URDF convention:
each joint origin ``(xyz, rpy)`` is relative to the parent link frame and every
revolute joint turns about its own +z axis.

The arm is the chain ``panda_link0 -> ... -> panda_link7``; everything welded to
link 7 (flange ``panda_link8``, hand, fingers held fixed) is lumped into link 7
for the rigid-body model by :meth:`PandaParams.end_effector_inertial`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

from whatmatters.errors import ConfigError

__all__ = ["Inertial", "JointSpec", "PandaParams", "load_panda_params", "rpy_to_matrix"]

ARM_JOINTS = tuple(f"panda_joint{i}" for i in range(1, 8))
_FIXED_TO_LINK7 = ("panda_link8", "panda_hand", "panda_leftfinger", "panda_rightfinger")


def rpy_to_matrix(rpy: np.ndarray | list[float]) -> np.ndarray:
    """URDF roll-pitch-yaw (fixed axes x, y, z) to a rotation matrix.

    Args:
        rpy: Roll, pitch, yaw in rad, shape (3,).

    Returns:
        R = Rz(yaw) @ Ry(pitch) @ Rx(roll), shape (3, 3).
    """
    r, p, y = (float(v) for v in rpy)
    cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    out = rz @ ry @ rx
    out[np.abs(out) < 1e-15] = 0.0  # exact zeros keep symbolic expressions lean
    return out


def matrix_to_quat(rot: np.ndarray) -> np.ndarray:
    """Rotation matrix (3, 3) to a unit quaternion (w, x, y, z), shape (4,)."""
    w = np.sqrt(max(0.0, 1.0 + np.trace(rot))) / 2.0
    if w > 1e-6:
        x = (rot[2, 1] - rot[1, 2]) / (4 * w)
        y = (rot[0, 2] - rot[2, 0]) / (4 * w)
        z = (rot[1, 0] - rot[0, 1]) / (4 * w)
    else:  # 180 degree rotation: pick the largest diagonal element
        i = int(np.argmax(np.diag(rot)))
        j, k = (i + 1) % 3, (i + 2) % 3
        v = np.zeros(3)
        v[i] = np.sqrt(max(0.0, 1.0 + rot[i, i] - rot[j, j] - rot[k, k])) / 2.0
        v[j] = (rot[j, i] + rot[i, j]) / (4 * v[i])
        v[k] = (rot[k, i] + rot[i, k]) / (4 * v[i])
        w = (rot[k, j] - rot[j, k]) / (4 * v[i])
        x, y, z = v
    q = np.array([w, x, y, z])
    return q / np.linalg.norm(q)


@dataclass(frozen=True)
class Inertial:
    """Mass properties of a rigid body, expressed in some body frame.

    Attributes:
        mass: Mass in kg (may be 0).
        com: Centre of mass in the frame, m, shape (3,).
        inertia: Rotational inertia about the centre of mass, in the frame's
            axes, kg m^2, shape (3, 3).
    """

    mass: float
    com: np.ndarray
    inertia: np.ndarray

    def transformed(self, rot: np.ndarray, pos: np.ndarray) -> Inertial:
        """Expresses the body in a parent frame.

        Args:
            rot: Orientation of this frame in the parent frame, shape (3, 3).
            pos: Origin of this frame in the parent frame, m, shape (3,).
        """
        return Inertial(self.mass, rot @ self.com + pos, rot @ self.inertia @ rot.T)

    def __add__(self, other: Inertial) -> Inertial:
        """Lumps two bodies expressed in the same frame into one."""
        mass = self.mass + other.mass
        if mass <= 0.0:
            return Inertial(0.0, np.zeros(3), self.inertia + other.inertia)
        com = (self.mass * self.com + other.mass * other.com) / mass
        inertia = self.inertia + other.inertia
        for body in (self, other):
            d = body.com - com
            inertia = inertia + body.mass * (d @ d * np.eye(3) - np.outer(d, d))
        return Inertial(mass, com, inertia)


@dataclass(frozen=True)
class JointSpec:
    """A revolute arm joint.

    Attributes:
        name: URDF joint name.
        origin_pos: Joint origin in the parent link frame, m, shape (3,).
        origin_rot: Joint frame orientation in the parent link frame at q = 0, (3, 3).
        lower: Lower position limit, rad.
        upper: Upper position limit, rad.
        velocity: Velocity limit, rad/s.
        effort: Torque limit, Nm.
    """

    name: str
    origin_pos: np.ndarray
    origin_rot: np.ndarray
    lower: float
    upper: float
    velocity: float
    effort: float


@dataclass(frozen=True)
class PandaParams:
    """The arm chain and everything fixed to its last link.

    Attributes:
        joints: The 7 revolute joints, base to tip.
        links: Inertials of panda_link1..7, each in its own link frame.
        fixed_bodies: Bodies welded to link 7 as ``name -> (rot, pos, inertial)``
            with the body frame's pose in the link 7 frame.
        flange_pos: Flange (panda_link8) origin in the link 7 frame, m, shape (3,).
        flange_rot: Flange orientation in the link 7 frame, shape (3, 3).
    """

    joints: tuple[JointSpec, ...]
    links: tuple[Inertial, ...]
    fixed_bodies: dict[str, tuple[np.ndarray, np.ndarray, Inertial]] = field(default_factory=dict)
    flange_pos: np.ndarray = field(default_factory=lambda: np.zeros(3))
    flange_rot: np.ndarray = field(default_factory=lambda: np.eye(3))

    @property
    def lower(self) -> np.ndarray:
        """Lower joint limits, rad, shape (7,)."""
        return np.array([j.lower for j in self.joints])

    @property
    def upper(self) -> np.ndarray:
        """Upper joint limits, rad, shape (7,)."""
        return np.array([j.upper for j in self.joints])

    @property
    def velocity_limits(self) -> np.ndarray:
        """Joint velocity limits, rad/s, shape (7,)."""
        return np.array([j.velocity for j in self.joints])

    @property
    def torque_limits(self) -> np.ndarray:
        """Joint torque limits, Nm, shape (7,)."""
        return np.array([j.effort for j in self.joints])

    def end_effector_inertial(self) -> Inertial:
        """Flange, hand and fixed fingers lumped together, in the link 7 frame."""
        total = Inertial(0.0, np.zeros(3), np.zeros((3, 3)))
        for rot, pos, inertial in self.fixed_bodies.values():
            total = total + inertial.transformed(rot, pos)
        return total


def _inertial(link: dict, source: str) -> Inertial:
    try:
        i = link["inertia"]
        inertia = np.array(
            [
                [i["ixx"], i["ixy"], i["ixz"]],
                [i["ixy"], i["iyy"], i["iyz"]],
                [i["ixz"], i["iyz"], i["izz"]],
            ],
            dtype=float,
        )
        return Inertial(float(link["mass"]), np.asarray(link["com_xyz"], dtype=float), inertia)
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{source}: link '{link.get('name')}' lacks {exc}") from exc


def parse_panda_params(data: dict, source: str = "panda_parameters.yaml") -> PandaParams:
    """Builds :class:`PandaParams` from the parsed YAML mapping.

    Raises:
        ConfigError: If a joint or link the arm needs is missing or malformed.
    """
    joints = {j["name"]: j for j in data.get("joints", [])}
    links = {lk["name"]: lk for lk in data.get("links", [])}
    arm: list[JointSpec] = []
    for name in ARM_JOINTS:
        if name not in joints:
            raise ConfigError(f"{source}: missing joint '{name}'")
        j = joints[name]
        lim = j.get("limit")
        if lim is None:
            raise ConfigError(f"{source}: joint '{name}' has no 'limit'")
        if list(j.get("axis", [0, 0, 1])) != [0, 0, 1]:
            raise ConfigError(f"{source}: joint '{name}' axis must be [0, 0, 1]")
        arm.append(
            JointSpec(
                name=name,
                origin_pos=np.asarray(j["origin_xyz"], dtype=float),
                origin_rot=rpy_to_matrix(j["origin_rpy"]),
                lower=float(lim["lower"]),
                upper=float(lim["upper"]),
                velocity=float(lim["velocity"]),
                effort=float(lim["effort"]),
            )
        )
    link_inertials = []
    for i in range(1, 8):
        name = f"panda_link{i}"
        if name not in links:
            raise ConfigError(f"{source}: missing link '{name}'")
        link_inertials.append(_inertial(links[name], source))

    # Poses of the bodies welded to link 7, composed along the fixed joints.
    by_child = {j["child"]: j for j in data["joints"]}
    fixed: dict[str, tuple[np.ndarray, np.ndarray, Inertial]] = {}
    for body in _FIXED_TO_LINK7:
        rot, pos, cur = np.eye(3), np.zeros(3), body
        while cur != "panda_link7":
            if cur not in by_child:
                raise ConfigError(f"{source}: no joint leads to '{cur}'")
            j = by_child[cur]
            r_j, p_j = rpy_to_matrix(j["origin_rpy"]), np.asarray(j["origin_xyz"], dtype=float)
            rot, pos = r_j @ rot, r_j @ pos + p_j  # fingers are held at q = 0
            cur = j["parent"]
        if body not in links:
            raise ConfigError(f"{source}: missing link '{body}'")
        fixed[body] = (rot, pos, _inertial(links[body], source))
    flange_rot, flange_pos, _ = fixed["panda_link8"]
    return PandaParams(tuple(arm), tuple(link_inertials), fixed, flange_pos, flange_rot)


@lru_cache(maxsize=4)
def load_panda_params(path: str | None = None) -> PandaParams:
    """Loads the Panda parameters shipped with the package (or from ``path``).

    Args:
        path: Optional YAML file in the format of ``data/panda_parameters.yaml``.

    Raises:
        ConfigError: If the file is missing or malformed.
    """
    if path is None:
        text = resources.files("whatmatters.robot").joinpath("data/panda_parameters.yaml").read_text()
        source = "whatmatters/robot/data/panda_parameters.yaml"
    else:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read robot parameters {path}: {exc}") from exc
        source = str(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}") from exc
    return parse_panda_params(data, source)
