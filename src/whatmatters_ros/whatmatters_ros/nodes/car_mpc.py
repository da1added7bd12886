"""``car_mpc``: the race car's acados MPC (:class:`whatmatters.car.CarController`) at 50 Hz.

Subscribes to ``/odom`` and ``/actuator_states`` (paired by stamp) and
publishes ``/drive`` (``[acceleration, steering_angle]``, always finite and
inside the input bounds; :mod:`whatmatters_ros.car_messages`). Each control
step also publishes, at its state's stamp, ``/mpc/state`` (the model state
solved from, ``s`` unwrapped, and the command, named by the model's labels),
``/mpc/reference`` and ``/mpc/prediction`` (N + 1 states ``dt`` apart), which
the logger records and computes S_hat from, and every ``diagnostics_every``
steps ``/diagnostics`` (solve time, acados status, source of the command,
fallback counts, model and ``model_version``).

* lock-step: every state is answered with exactly one command. A state whose
  stamp goes backwards starts a new episode (the controller is reset there).
* real time: control instants on the car's clock, ``t_k = t_0 + k / rate_hz``
  from the first state; the controller solves as soon as a state at or after
  the next instant arrives (instants missed are skipped). The first command
  waits until the nodes of ``start_after`` subscribe to ``/drive`` (then
  ``start_delay`` s). A ``rate_hz`` watchdog sends the safe hold (straight
  wheels, braking) with an ERROR diagnostic when the latest state is older
  than ``stale_timeout`` s.

``~/reload_model`` (std_srvs/Trigger) re-reads the ``model`` parameter and
swaps the weights into the compiled solver (a car checkpoint loads in
milliseconds, in the service call; the swap happens before the next control
step, the context's history window kept). A model of another formulation
(nominal against learned) needs another solver and is refused.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from nav_msgs.msg import Odometry
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from whatmatters.car.control import safe_stop
from whatmatters.car.experiment import CarExperimentConfig, CarSystem
from whatmatters.car.learned import CarLearnedModel
from whatmatters.car.model import CarModel, frenet_state
from whatmatters.errors import WhatmattersError
from whatmatters_ros import car_messages as cm
from whatmatters_ros import messages as m
from whatmatters_ros.params import NodeParams, ParameterError, declare_parameters, param
from whatmatters_ros.runtime import exit_with, realtime_priority, run_node

__all__ = ["CarMpcNode", "CarMpcParams", "main"]


@dataclass(frozen=True)
class CarMpcParams(NodeParams):
    """Parameters of ``car_mpc`` (``config/car/car_mpc.yaml``)."""

    node_name: ClassVar[str] = "car_mpc"
    config_subdir: ClassVar[str] = "car"

    model: str = param("nominal", "nominal, base (the packaged car model) or a checkpoint path")
    lockstep: bool = param(False, "answer every state with exactly one command")
    rate_hz: float = param(50.0, "real time: control rate, Hz (must equal 1 / dt of config/car/mpc.yaml)", lo=1.0, hi=1000.0)
    start_after: str = param("", "real time: the first command waits until these nodes (comma-separated) subscribe to /drive")
    start_delay: float = param(0.5, "real time: then wait this long (wall, s)", lo=0.0, hi=60.0)
    stale_timeout: float = param(0.1, "real time: a state older than this gives the safe hold, s", lo=0.001, hi=10.0)
    realtime_priority: int = param(70, "real time: SCHED_FIFO priority of this process (0: ordinary; needs the privilege, else a warning)", lo=0, hi=99)
    diagnostics_every: int = param(10, "publish /diagnostics every this many control steps", lo=1, hi=100000)


class CarMpcNode(Node):
    """The car's controller node; see the module docstring."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("car_mpc", **kwargs)
        self.p = declare_parameters(self, CarMpcParams)
        self.system = CarSystem(CarExperimentConfig.from_yaml())
        self.dt = self.system.mpc.dt
        if not self.p.lockstep and abs(self.p.rate_hz * self.dt - 1.0) > 1e-9:
            raise ParameterError(f"node 'car_mpc': parameter 'rate_hz' = {self.p.rate_hz:g}: must be 1 / dt = {1.0 / self.dt:g} Hz (config/car/mpc.yaml)")
        try:
            model = self.system.model(self.p.model)
        except WhatmattersError as exc:
            raise ParameterError(f"node 'car_mpc': parameter 'model' = {self.p.model!r}: {exc}") from exc
        self.controller = self.system.controller(model)
        self.labels = list(model.state_labels) + list(model.input_labels)
        self.model_spec, self.model_version = self.p.model, 1
        self.loading: CarModel | Exception | None = None
        self.odom: dict[int, Odometry] = {}
        self.act: dict[int, JointState] = {}
        self.last_ns: int | None = None  # stamp of the last step (lock-step) or state (real time)
        self.last_wall = time.monotonic()
        self.last_speed = 0.0  # m/s, of the last state (the safe hold eases its braking out with it)
        self.next_ns: int | None = None  # real time: the next control instant
        self.steps = 0
        self.stale_steps = 0
        self._open = self.p.lockstep
        self._ready_since: float | None = None
        self.pub_drive = self.create_publisher(Float64MultiArray, cm.DRIVE, m.RELIABLE)
        self.pub_state = self.create_publisher(JointState, cm.MPC_STATE, m.RELIABLE)
        self.pub_ref = self.create_publisher(JointTrajectory, cm.MPC_REFERENCE, m.RELIABLE)
        self.pub_pred = self.create_publisher(JointTrajectory, cm.MPC_PREDICTION, m.RELIABLE)
        self.pub_diag = self.create_publisher(m.DiagnosticArray, m.DIAGNOSTICS, 100)
        self.create_subscription(Odometry, cm.ODOM, self._on_odom, m.RELIABLE)
        self.create_subscription(JointState, cm.ACTUATORS, self._on_actuators, m.RELIABLE)
        self.create_service(Trigger, "~/reload_model", self._reload)
        self.create_timer(1.0, lambda: self._diagnose(m.OK, "running"))  # a late logger still learns the model version
        if not self.p.lockstep:
            self.create_timer(1.0 / self.p.rate_hz, self._stale_watchdog)
            realtime_priority(self.p.realtime_priority, "car_mpc", process=True)
        self.get_logger().info(f"model '{self.p.model}' ({model.n_params} runtime parameters), N = {self.system.mpc.horizon}, dt = {self.dt} s, "
                               + ("lock-step" if self.p.lockstep else f"{self.p.rate_hz:g} Hz"))

    # ------------------------------------------------------------------ inputs
    def _on_odom(self, msg: Odometry) -> None:
        ns = m.stamp_ns(msg.header.stamp)
        self.odom[ns] = msg
        self._pair(ns)

    def _on_actuators(self, msg: JointState) -> None:
        ns = m.stamp_ns(msg.header.stamp)
        self.act[ns] = msg
        self._pair(ns)

    def _pair(self, ns: int) -> None:
        """A state is complete once its odometry and actuator messages (same stamp) are both here."""
        if ns not in self.odom or ns not in self.act:
            for buf in (self.odom, self.act):
                while len(buf) > 50:
                    buf.pop(next(iter(buf)))
            return
        x = cm.plant_state(self.odom.pop(ns), self.act.pop(ns))
        for buf in (self.odom, self.act):  # older unpaired halves will never pair
            for old in [k for k in buf if k < ns]:
                buf.pop(old)
        if x is None:
            self.get_logger().warning("state with malformed /actuator_states or not finite values; ignored", throttle_duration_sec=1.0)
            return
        self.last_wall, self.last_speed = time.monotonic(), float(x[3])
        if self.p.lockstep:
            self._step(ns, x, new_episode=self.last_ns is None or ns < self.last_ns)
            return
        if not self._may_start():
            return
        restart = self.last_ns is not None and ns < self.last_ns  # the car's clock went back: a new episode
        if self.next_ns is None or restart:
            self.next_ns = ns
        self.last_ns = ns
        if ns + 50_000 >= self.next_ns:  # within 50 us of the instant
            period = int(round(self.dt * 1e9))
            self.next_ns += (max(0, (ns - self.next_ns) // period) + 1) * period  # instants already past are skipped
            self._step(ns, x, new_episode=self.steps == 0 or restart)

    def _may_start(self) -> bool:
        """Real time: the nodes of ``start_after`` subscribe to ``/drive`` (then ``start_delay`` s)."""
        if self._open:
            return True
        wanted = {n.strip() for n in self.p.start_after.split(",") if n.strip()}
        present = {info.node_name for info in self.get_subscriptions_info_by_topic(cm.DRIVE)}
        if not wanted <= present or self.pub_drive.get_subscription_count() < len(wanted):
            return False
        now = time.monotonic()
        if self._ready_since is None:
            self._ready_since = now
        if now - self._ready_since < self.p.start_delay:
            return False
        self._open = True
        self.get_logger().info(f"{', '.join(sorted(wanted)) or 'no node'} listening: the first command may start the task")
        return True

    # ----------------------------------------------------------------- control
    def _step(self, ns: int, x: np.ndarray, new_episode: bool) -> None:
        self._swap_model()
        fr = frenet_state(self.system.track, x)
        if new_episode:
            self.controller.reset(fr)
        step = self.controller(fr)
        self.last_ns = ns
        self.steps += 1
        stamp = m.time_msg_ns(ns)
        self.pub_drive.publish(cm.drive_msg(step.u))
        self.pub_state.publish(cm.labelled_state_msg(stamp, self.labels, np.concatenate([step.x0, step.u])))
        self.pub_ref.publish(cm.trajectory_msg(stamp, self.controller.solver.model.state_labels, step.x_ref, self.dt))
        self.pub_pred.publish(cm.trajectory_msg(stamp, self.controller.solver.model.state_labels, step.prediction, self.dt))
        if self.steps % self.p.diagnostics_every == 0 or step.source != "solved":
            level = m.OK if step.source == "solved" else m.WARN
            self._diagnose(level, f"command from {step.source}", solve_ms=f"{step.solve_ms:.3f}", wall_ms=f"{step.wall_ms:.3f}", status=step.status)

    def _stale_watchdog(self) -> None:
        """Real time: the safe hold when the car's state stopped coming."""
        if self.steps == 0 or time.monotonic() - self.last_wall <= self.p.stale_timeout:
            return
        self.stale_steps += 1
        self.pub_drive.publish(cm.drive_msg(safe_stop(self.last_speed, self.controller.cfg.fallback_brake)))
        self._diagnose(m.ERROR, f"no state for {1e3 * (time.monotonic() - self.last_wall):.0f} ms: safe hold (braking, straight wheels)")

    def _diagnose(self, level: int, text: str, **extra: Any) -> None:
        st = self.controller.stats
        values = {"steps": self.steps, "failures": st.failures, "shifted_plan": st.shifted_plan, "brake": st.gravity_hold,
                  "stale_steps": self.stale_steps, "model": self.model_spec, "model_version": self.model_version, **extra}
        self.pub_diag.publish(m.diagnostic_array(self.get_clock().now().to_msg(), "car_mpc", level, text, values))

    # ------------------------------------------------------------------ reload
    def _reload(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        spec = str(self.get_parameter("model").value)
        try:
            model = self.system.model(spec)
            self.controller.solver.check_model(model)
        except WhatmattersError as exc:
            response.success, response.message = False, f"model '{spec}' refused: {exc}"
            self.get_logger().error(response.message)
            return response
        self.loading, self.model_spec = model, spec
        if self.steps == 0 or self.p.lockstep:
            self._swap_model()  # between two steps already
        version = self.model_version if self.loading is None else self.model_version + 1
        response.success, response.message = True, f"model '{spec}' loaded (version {version})"
        self.get_logger().info(response.message)
        return response

    def _swap_model(self) -> None:
        """Between two control steps: the loaded model's weights into the solver, the context's window kept."""
        model, self.loading = self.loading, None
        if not isinstance(model, CarModel):
            return
        self.controller.solver.swap_model(model)
        if isinstance(model, CarLearnedModel) and self.controller.tracker is not None:
            self.controller.tracker.encoder = model.context_tracker().encoder
        self.model_version += 1
        self._diagnose(m.OK, f"model '{self.model_spec}' swapped in")


def main(args: list[str] | None = None) -> None:
    """Console script ``car_mpc``."""
    exit_with(run_node(CarMpcNode, args))


if __name__ == "__main__":
    main()
