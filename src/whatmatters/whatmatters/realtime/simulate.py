"""The real-time loop on a virtual clock: the robot's ticks, the controller's instants and a known input delay.

:func:`simulate_realtime` runs the parts of the real-time graph that shape
its closed loop, without processes or DDS and deterministically: the plant at
its physics step (:class:`~whatmatters.realtime.plant.RealtimePlant`), the MPC
on the robot's clock (:class:`~whatmatters.realtime.control.RealtimeMpc`), a
command that arrives ``latency`` s after the state it answers, the start gate
(the task starts at the tick the first command takes effect) and J_track on
the reference's clock (:class:`~whatmatters.realtime.metrics.RealtimeMetrics`).
With ``latency = 0`` and no compensation it is the lock-step episode up to the
physics integration of each period (tested). It is how delay compensation is
tested on a known delay, and what a real-time run should approach.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from whatmatters.control.hold import HoldController
from whatmatters.dynamics.nominal import nominal_model
from whatmatters.mpc.controller import MpcController
from whatmatters.realtime.control import RealtimeConfig, RealtimeMpc, RealtimeStep
from whatmatters.realtime.delay import StatePredictor
from whatmatters.realtime.metrics import RealtimeMetrics
from whatmatters.realtime.plant import PlantConfig, RealtimePlant
from whatmatters.realtime.reference import ReferenceBuffer
from whatmatters.sim.environments import Environment
from whatmatters.sim.simulator import PandaSim, SimConfig
from whatmatters.trajectory.fourier import FourierTrajectory

__all__ = ["RealtimeTrace", "simulate_realtime"]


@dataclass
class RealtimeTrace:
    """What :func:`simulate_realtime` saw.

    Attributes:
        steps: The control steps.
        samples: ``(stamp ns, state (14,), effort (7,))`` of every tick.
        start_ns: The task's start (the tick the first command took effect).
    """

    steps: list[RealtimeStep] = field(default_factory=list)
    samples: list[tuple[int, np.ndarray, np.ndarray]] = field(default_factory=list)
    start_ns: int | None = None


def simulate_realtime(
    controller: MpcController,
    env: Environment,
    reference: FourierTrajectory,
    seconds: float,
    latency: float,
    cfg: RealtimeConfig,
    sim_config: SimConfig | None = None,
    predictor: StatePredictor | None = None,
    plant_config: PlantConfig | None = None,
    controller_start: float = 0.0,
    trace: RealtimeTrace | None = None,
) -> dict[str, float]:
    """One real-time episode on a virtual clock.

    Args:
        controller: The MPC controller.
        env: The payload environment.
        reference: The trajectory (its start is the robot's start pose).
        seconds: Task time, s.
        latency: From a state's stamp to its command's arrival at the robot, s (the
            command takes effect at the first tick at or after that).
        cfg: The controller's real-time settings (``dt`` must be a multiple of the physics step).
        sim_config: Simulator settings; its ``timestep`` is the physics step (default ``sim.yaml``'s).
        predictor: The state predictor (required with ``cfg.delay_compensation``).
        plant_config: Plant settings (rate limiter).
        controller_start: The controller sees no state before this much time has passed, s
            (a controller that starts late; the robot stands meanwhile).
        trace: If given, collects every control step, every state the controller saw and the start.

    Returns:
        ``j_track`` (eq. 7 on the reference's clock), ``start_s`` (the task's start: the tick
        the first command took effect), ``steps``, ``mean_delay_s`` (delay compensated),
        ``rate_limited_steps``.
    """
    base = sim_config or SimConfig.from_yaml()
    sim = PandaSim(replace(base, control_period=base.timestep))
    h_ns = int(round(base.timestep * 1e9))
    dt_ns = int(round(cfg.dt * 1e9))
    if dt_ns % h_ns:
        raise ValueError(f"the control period {cfg.dt} s is not a multiple of the physics step {base.timestep} s")
    x_start = reference.state(0.0)
    sim.reset(env, x_start[:7], x_start[7:])
    hold = HoldController(nominal_model(sim.params), None, sim.torque_limits, kp=0.0)
    plant = RealtimePlant(sim, hold, plant_config or PlantConfig())
    now = [0]
    refs = ReferenceBuffer(cfg.dt)
    rt = RealtimeMpc(controller, refs, cfg, predictor, now_ns=lambda: now[0])
    mpc_cfg = controller.solver.cfg
    metrics = RealtimeMetrics(cfg.dt, np.asarray(mpc_cfg.q_weights), np.asarray(mpc_cfg.qd_weights), seconds, reference=reference.state)
    offsets = cfg.dt * np.arange(controller.solver.n + 1)
    latency_ns = int(round(latency * 1e9))
    end_ticks = int(round(seconds / base.timestep))
    delays: list[float] = []
    tick = 0
    while True:
        stamp = tick * h_ns
        st = plant.measure(stamp)
        x = np.concatenate([st.q, st.qd])
        if refs.start_ns is None and plant.start_ns is not None:
            rt.on_start(plant.start_ns)
            metrics.set_start(plant.start_ns)
        if stamp % dt_ns == 0:  # the reference publisher's 50 Hz messages
            refs.add(stamp, reference.state(refs.task_time(stamp) + offsets))
        metrics.add_state(stamp, x)
        if plant.start_ns is not None and stamp - plant.start_ns >= end_ticks * h_ns:
            break
        now[0] = stamp
        step = rt.on_state(stamp, x, st.effort) if stamp >= controller_start * 1e9 else None
        if trace is not None:
            trace.samples.append((stamp, x, st.effort))
            trace.start_ns = plant.start_ns
        if step is not None:
            tau = np.clip(step.out.tau, -sim.torque_limits, sim.torque_limits)
            rt.sent(tau)
            plant.receive(tau, stamp + latency_ns)
            if step.started:
                delays.append(step.delay_s)
            if trace is not None:
                trace.steps.append(step)
        plant.step(stamp)
        tick += 1
    j = metrics.summary()["j_track"]
    return {
        "j_track": float(j) if j is not None else float("nan"),
        "start_s": (plant.start_ns or 0) * 1e-9,
        "steps": float(rt.steps),
        "mean_delay_s": float(np.mean(delays)) if delays else 0.0,
        "rate_limited_steps": float(plant.counts["rate_limited_steps"]),
    }
