"""The state predicted over the input delay, with the controller's own model.

Between the instant a state is measured (``t_k``) and the instant the command
computed from it takes effect (``t_k + d``) the robot moves under the torque
already applied. Solving the OCP from the measured state therefore plans a
first input for a moment that is already past. Delay compensation solves it
from the state predicted at ``t_k + d``::

    x_hat = Phi_d(x_k; u_applied, p)

with the model's RK4 map (``DynamicsModel.state_derivative``, the same model
and runtime parameters, context included, as the MPC) in steps of at most
``max_step``, the torque held piecewise constant over the given segments.
The map is compiled once per model formulation (the weights are parameters:
no rebuild per checkpoint); without a C compiler CasADi's VM evaluates it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import casadi as ca
import numpy as np

from whatmatters.codegen import evaluate, shared_compiled
from whatmatters.dynamics.base import DynamicsModel, rk4

__all__ = ["StatePredictor"]


class StatePredictor:
    """``x(t + d)`` from ``x(t)`` under piecewise-constant torques.

    Args:
        model: The controller's dynamics model (CasADi form).
        max_step: Longest RK4 step, s.
    """

    def __init__(self, model: DynamicsModel, max_step: float = 0.005) -> None:
        if max_step <= 0:
            raise ValueError(f"max_step must be > 0, got {max_step}")
        self.model, self.max_step = model, max_step
        xs, us, ps = ca.SX.sym("x", model.nx), ca.SX.sym("u", model.nu), ca.SX.sym("p", model.n_params)
        f = ca.Function("wm_xdot", [xs, us, ps], [model.state_derivative(xs, us, ps if model.n_params else None)])
        x, u, h, p = ca.MX.sym("x", model.nx), ca.MX.sym("u", model.nu), ca.MX.sym("h"), ca.MX.sym("p", model.n_params)
        self._vm = ca.Function("wm_predict", [x, u, h, p], [rk4(lambda xx: f(xx, u, p), x, h)])
        self._key = "wm_predict_" + hashlib.sha256(f.serialize().encode()).hexdigest()[:16]
        shared_compiled(self._key, lambda: self._vm)  # compiled (or loaded) now, not in a control step

    def step(self, x: np.ndarray, u: np.ndarray, h: float, params: np.ndarray | None = None) -> np.ndarray:
        """One RK4 step of length ``h`` s, (nx,)."""
        p = np.zeros(self.model.n_params) if params is None else params
        fn = shared_compiled(self._key, lambda: self._vm)
        out = evaluate(fn if fn is not None else self._vm, x, u, np.array([h]), p)[0]
        return np.asarray(out, dtype=float).ravel()

    def __call__(self, x: np.ndarray, segments: Sequence[tuple[float, np.ndarray]], params: np.ndarray | None = None) -> np.ndarray:
        """The state after the segments.

        Args:
            x: State ``[q, qd]`` at the start, (nx,).
            segments: ``(duration s, torque Nm (nu,))`` in order; the torque held over each.
            params: The model's runtime parameters (context included), (n_params,).

        Returns:
            The predicted state, (nx,).
        """
        x = np.asarray(x, dtype=float)
        for duration, tau in segments:
            if duration <= 0:
                continue
            n = int(np.ceil(duration / self.max_step - 1e-9))
            for _ in range(n):
                x = self.step(x, np.asarray(tau, dtype=float), duration / n, params)
        return x
