"""Closed-loop laps: the car's controller on the plant, and the task's metrics.

The plant integrates at its own step (1 ms); the controller runs every
``dt`` (the MPC's interval, 20 ms) on the plant's state in Frenet
coordinates and holds its command until the next step. Lock-step: the
command of the state at ``t`` acts from ``t``.

Metrics of an episode:

* ``j_track``: the mean over control steps of the tracking cost of the
  measured state against the reference at stage 0,
  ``1/2 (x - x_ref)' Q (x - x_ref)`` with the MPC's ``Q`` (the cost the
  controller is asked to keep low; ``s`` has weight 0);
* ``lap_time``: s, the time the car needs for its first full lap (progress
  of one track length from its start); NaN if it does not finish one;
* ``off_track``: s of the episode with a wheel beyond the border
  (``|n| > half_width - width / 2``; the soft constraint's margin not counted).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from whatmatters.car.control import CarController
from whatmatters.car.model import frenet_state, plant_pose
from whatmatters.car.plant import CarPlant
from whatmatters.car.track import Track

__all__ = ["CarEpisode", "run_car_episode", "start_state"]


@dataclass(frozen=True)
class CarEpisode:
    """One closed-loop run.

    Attributes:
        t: Control step times, s, (T,).
        x: Model states at the steps and after the last, ``s`` unwrapped, (T + 1, 8).
        x_ref: The reference each step was solved with, (T, N + 1, 8).
        u: Commands, (T, 2).
        sources: Controller outcome per step, (T,).
        solve_ms: acados' solve times, ms, (T,).
        plant: Plant states at the steps and after the last, (T + 1, 8).
        dt: Control interval, s.
        j_track: Mean tracking cost.
        lap_time: s (NaN without a full lap).
        off_track: s beyond the border.
    """

    t: np.ndarray
    x: np.ndarray
    x_ref: np.ndarray
    u: np.ndarray
    sources: tuple[str, ...]
    solve_ms: np.ndarray
    plant: np.ndarray
    j_track: float
    lap_time: float
    off_track: float
    dt: float


def start_state(track: Track, controller: CarController, s0: float = 0.0) -> np.ndarray:
    """The plant state on the racing line at ``s0`` (m) at the line's speed, (8,)."""
    ref = controller.line.states(np.array([s0]))[0]
    return plant_pose(track, ref)


def run_car_episode(controller: CarController, plant: CarPlant, track: Track, seconds: float, x0: np.ndarray) -> CarEpisode:
    """Runs the controller on the plant for ``seconds`` from plant state ``x0`` (8,).

    Raises:
        ValueError: If the control interval is not a whole number of plant steps.
    """
    dt = controller.solver.cfg.dt
    steps = int(round(seconds / dt))
    q = np.diag(controller.solver.cfg.state_weight)
    xs, refs, us, plants, solve_ms, sources = [], [], [], [], [], []
    state = np.asarray(x0, dtype=float).copy()
    controller.reset(frenet_state(track, state))
    for _ in range(steps):
        step = controller(frenet_state(track, state))
        xs.append(step.x0)
        refs.append(step.x_ref)
        us.append(step.u)
        plants.append(state.copy())
        solve_ms.append(step.solve_ms)
        sources.append(step.source)
        state = plant.simulate(state, step.u, dt)
    plants.append(state.copy())
    last = frenet_state(track, state)
    last[0] += np.round((xs[-1][0] - last[0]) / track.length) * track.length  # unwrapped like the steps
    xs.append(last)
    x, x_ref = np.array(xs), np.array(refs)
    err = x[:-1] - x_ref[:, 0]
    j_track = float(np.mean(0.5 * np.sum(q * err**2, axis=1)))
    progress = x[:, 0] - x[0, 0]
    done = np.nonzero(progress >= track.length)[0]
    lap_time = float(done[0] * dt) if done.size else float("nan")
    border = track.half_width - 0.5 * plant.p.width
    off_track = float(np.sum(np.abs(x[:-1, 1]) > border) * dt)
    return CarEpisode(
        dt * np.arange(steps), x, x_ref, np.array(us), tuple(sources), np.array(solve_ms), np.array(plants), j_track, lap_time, off_track, dt
    )
