"""The MuJoCo Panda simulator with payloads (core library, no ROS).

``step(tau)`` holds the torque for one control period (``control_period /
timestep`` physics steps, 10 by default) and returns the new joint state.
Torques are clamped to the joint limits (clamps are counted); a non-finite
torque raises :class:`~whatmatters.errors.InvalidTorqueError` and leaves the
simulator untouched, so the caller can decide the safe action.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import mujoco
import numpy as np

from whatmatters.config import YamlConfig
from whatmatters.errors import ConfigError, InvalidTorqueError
from whatmatters.robot.mjcf import PAYLOAD_BODY, MjcfOptions, panda_mjcf
from whatmatters.robot.params import PandaParams, load_panda_params
from whatmatters.robot.payload import Payload
from whatmatters.sim.environments import Environment

__all__ = ["PandaSim", "SimConfig", "SimState"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimConfig(YamlConfig):
    """Simulator settings (``config/sim.yaml``).

    Attributes:
        timestep: Physics step, s.
        control_period: Torque hold time per :meth:`PandaSim.step`, s.
        integrator: MuJoCo integrator.
        armature: Joint armature, kg m^2.
        damping: Joint damping, Nm s/rad.
        joint_limits: Whether joint range limits are active.
    """

    yaml_file: ClassVar[str] = "sim.yaml"

    timestep: float = 0.002
    control_period: float = 0.02
    integrator: str = "implicitfast"
    armature: float = 0.1
    damping: float = 1.0
    joint_limits: bool = True

    def __post_init__(self) -> None:
        if self.timestep <= 0 or self.control_period <= 0:
            raise ConfigError("sim: timestep and control_period must be > 0")
        ratio = self.control_period / self.timestep
        if abs(ratio - round(ratio)) > 1e-9:
            raise ConfigError(f"sim: control_period {self.control_period} is not a multiple of timestep {self.timestep}")
        if self.integrator not in ("Euler", "RK4", "implicit", "implicitfast"):
            raise ConfigError(f"sim: unknown integrator '{self.integrator}'")
        if self.armature < 0 or self.damping < 0:
            raise ConfigError("sim: armature and damping must be >= 0")

    @property
    def substeps(self) -> int:
        """Physics steps per control period."""
        return int(round(self.control_period / self.timestep))



@dataclass(frozen=True)
class SimState:
    """Joint state after a step.

    Attributes:
        time: Simulated time, s.
        q: Joint positions, rad, shape (7,).
        qd: Joint velocities, rad/s, shape (7,).
        tau: Torque applied during the step (after clamping), Nm, shape (7,).
        clamped: Whether the commanded torque was clamped.
    """

    time: float
    q: np.ndarray
    qd: np.ndarray
    tau: np.ndarray
    clamped: bool


class PandaSim:
    """The simulated Panda.

    Args:
        config: Simulator settings (defaults: the CaDeLaC setup).
        params: Robot parameters (defaults: the packaged Panda).
    """

    def __init__(self, config: SimConfig | None = None, params: PandaParams | None = None) -> None:
        self.config = config or SimConfig()
        self.params = params or load_panda_params()
        opts = MjcfOptions(
            timestep=self.config.timestep,
            integrator=self.config.integrator,
            armature=self.config.armature,
            damping=self.config.damping,
            joint_limits=self.config.joint_limits,
        )
        self.model = mujoco.MjModel.from_xml_string(panda_mjcf(self.params, opts))
        self.data = mujoco.MjData(self.model)
        self._payload_id = self.model.body(PAYLOAD_BODY).id
        self.torque_limits = self.params.torque_limits.copy()
        self.clamp_count = 0
        self.payload = Payload()
        self.set_payload(self.payload)

    @property
    def time(self) -> float:
        """Simulated time since the last reset, s."""
        return float(self.data.time)

    def set_payload(self, payload: Payload) -> None:
        """Sets the payload's mass properties (box at the flange)."""
        bid = self._payload_id
        self.model.body_mass[bid] = payload.mass
        self.model.body_ipos[bid] = np.asarray(payload.offset, dtype=float)
        self.model.body_inertia[bid] = np.asarray(payload.inertia_diag, dtype=float)
        self.model.body_iquat[bid] = (1.0, 0.0, 0.0, 0.0)
        self.model.geom_pos[self.model.geom("payload_box").id] = np.asarray(payload.offset, dtype=float)
        mujoco.mj_setConst(self.model, self.data)
        self.payload = payload

    def reset(
        self,
        env: Environment | Payload | None,
        q0: np.ndarray,
        qd0: np.ndarray | None = None,
    ) -> SimState:
        """Resets time, state, clamp counter and payload.

        Args:
            env: Environment (or bare payload); None keeps the current payload.
            q0: Initial joint positions, rad, shape (7,).
            qd0: Initial joint velocities, rad/s, shape (7,); zero if None.
        """
        if env is not None:
            self.set_payload(env.payload if isinstance(env, Environment) else env)
        q0 = np.asarray(q0, dtype=float)
        qd0 = np.zeros(7) if qd0 is None else np.asarray(qd0, dtype=float)
        if q0.shape != (7,) or qd0.shape != (7,) or not (np.all(np.isfinite(q0)) and np.all(np.isfinite(qd0))):
            raise ConfigError(f"reset needs finite q0 and qd0 of shape (7,), got {q0.shape} and {qd0.shape}")
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:] = q0
        self.data.qvel[:] = qd0
        mujoco.mj_forward(self.model, self.data)
        self.clamp_count = 0
        return SimState(0.0, q0.copy(), qd0.copy(), np.zeros(7), False)

    def clamp(self, tau: np.ndarray) -> tuple[np.ndarray, bool]:
        """Validates and clamps a torque command.

        Raises:
            InvalidTorqueError: If the torque has the wrong shape or is not finite.
        """
        tau = np.asarray(tau, dtype=float)
        if tau.shape != (7,):
            raise InvalidTorqueError(f"torque must have shape (7,), got {tau.shape}")
        if not np.all(np.isfinite(tau)):
            raise InvalidTorqueError(f"torque is not finite: {tau.tolist()}")
        out = np.clip(tau, -self.torque_limits, self.torque_limits)
        return out, bool(np.any(out != tau))

    def step(self, tau: np.ndarray) -> SimState:
        """Holds ``tau`` (Nm, shape (7,)) for one control period.

        Raises:
            InvalidTorqueError: If ``tau`` is malformed; the state is unchanged.
        """
        applied, clamped = self.clamp(tau)
        if clamped:
            self.clamp_count += 1
        self.data.ctrl[:] = applied
        mujoco.mj_step(self.model, self.data, nstep=self.config.substeps)
        return SimState(self.time, self.data.qpos.copy(), self.data.qvel.copy(), applied, clamped)
