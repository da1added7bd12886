"""The project's own Panda MJCF, written from :class:`~whatmatters.robot.PandaParams`.

Primitive capsule geoms are for display only (no contacts, no mass: every body
has an explicit ``<inertial>``). Joints carry armature and damping, motors are
torque motors with the published torque limits, and a payload body is welded
at the flange; its mass properties are changed at run time by the simulator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from whatmatters.robot.params import Inertial, PandaParams, matrix_to_quat

__all__ = ["MjcfOptions", "panda_mjcf", "PAYLOAD_BODY"]

PAYLOAD_BODY = "payload"


@dataclass(frozen=True)
class MjcfOptions:
    """Physics options written into the MJCF.

    Attributes:
        timestep: Physics step, s.
        integrator: MuJoCo integrator name.
        armature: Rotor inertia added to every joint, kg m^2.
        damping: Viscous joint damping, Nm s/rad.
        joint_limits: Whether joint range limits are enforced as constraints.
    """

    timestep: float = 0.002
    integrator: str = "implicitfast"
    armature: float = 0.1
    damping: float = 1.0
    joint_limits: bool = True


def _f(values: np.ndarray | list[float]) -> str:
    return " ".join(f"{float(v):.12g}" for v in np.ravel(values))


def _inertial_xml(inertial: Inertial, indent: str) -> str:
    i = inertial.inertia
    full = [i[0, 0], i[1, 1], i[2, 2], i[0, 1], i[0, 2], i[1, 2]]
    # MuJoCo rejects a zero mass with a zero inertia on a moving body; welded
    # bodies are lumped by MuJoCo into their parent's composite inertia anyway.
    return (
        f'{indent}<inertial pos="{_f(inertial.com)}" mass="{max(inertial.mass, 0.0):.12g}" '
        f'fullinertia="{_f(full)}"/>\n'
    )


def panda_mjcf(params: PandaParams, options: MjcfOptions | None = None) -> str:
    """Writes the Panda MJCF.

    Args:
        params: The robot parameters.
        options: Physics options; defaults follow the CaDeLaC setup.

    Returns:
        The MJCF document as a string.
    """
    opt = options or MjcfOptions()
    limited = "true" if opt.joint_limits else "false"
    body_xml = ""
    closers = ""
    indent = "    "
    for idx, (joint, inertial) in enumerate(zip(params.joints, params.links), start=1):
        nxt = params.joints[idx].origin_pos if idx < 7 else params.flange_pos
        body_xml += (
            f'{indent}<body name="panda_link{idx}" pos="{_f(joint.origin_pos)}" '
            f'quat="{_f(matrix_to_quat(joint.origin_rot))}">\n'
        )
        inner = indent + "  "
        body_xml += _inertial_xml(inertial, inner)
        body_xml += (
            f'{inner}<joint name="{joint.name}" axis="0 0 1" range="{joint.lower:.12g} {joint.upper:.12g}" '
            f'limited="{limited}" armature="{opt.armature:.12g}" damping="{opt.damping:.12g}"/>\n'
        )
        if np.linalg.norm(nxt) > 1e-9:
            body_xml += f'{inner}<geom type="capsule" size="0.04" fromto="0 0 0 {_f(nxt)}"/>\n'
        else:
            body_xml += f'{inner}<geom type="sphere" size="0.05"/>\n'
        closers = f"{indent}</body>\n" + closers
        indent = inner
    for name, (rot, pos, inertial) in params.fixed_bodies.items():
        if inertial.mass <= 0.0:
            continue  # the massless flange frame is represented by the payload site
        body_xml += f'{indent}<body name="{name}" pos="{_f(pos)}" quat="{_f(matrix_to_quat(rot))}">\n'
        body_xml += _inertial_xml(inertial, indent + "  ")
        body_xml += f'{indent}  <geom type="box" size="0.02 0.08 0.03"/>\n' if name == "panda_hand" else ""
        body_xml += f"{indent}</body>\n"
    body_xml += (
        f'{indent}<body name="{PAYLOAD_BODY}" pos="{_f(params.flange_pos)}" '
        f'quat="{_f(matrix_to_quat(params.flange_rot))}">\n'
        f'{indent}  <inertial pos="0 0 0" mass="1" diaginertia="0.001 0.001 0.001"/>\n'
        f'{indent}  <geom name="payload_box" type="box" size="0.03 0.03 0.03" rgba="0.9 0.5 0.1 1"/>\n'
        f'{indent}  <site name="flange" pos="0 0 0"/>\n'
        f"{indent}</body>\n"
    )
    actuators = "".join(
        f'    <motor name="{j.name}_motor" joint="{j.name}" gear="1" ctrllimited="true" '
        f'ctrlrange="{-j.effort:.12g} {j.effort:.12g}"/>\n'
        for j in params.joints
    )
    return f"""<mujoco model="whatmatters_panda">
  <compiler angle="radian" inertiafromgeom="false" autolimits="true"/>
  <option timestep="{opt.timestep:.12g}" integrator="{opt.integrator}" gravity="0 0 -9.81">
    <flag contact="disable"/>
  </option>
  <default>
    <geom contype="0" conaffinity="0" group="1" rgba="0.9 0.9 0.9 1"/>
  </default>
  <worldbody>
    <light pos="0 0 3" dir="0 0 -1"/>
    <body name="panda_link0">
      <geom type="cylinder" size="0.06 0.05" pos="0 0 0.05"/>
{body_xml}{closers}    </body>
  </worldbody>
  <actuator>
{actuators}  </actuator>
</mujoco>
"""
