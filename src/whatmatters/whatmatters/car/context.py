"""The race car's context features: the recent motion and what the nominal model fails to explain.

Features of one control transition ``i`` (state ``x_i``, input ``u_i`` held
for ``dt``, next state ``x_{i+1}``), 10 of them::

    f_i = [vx_i, vy_i, r_i, delta_i, a_i, a_cmd_i, delta_cmd_i, e_vx, e_vy, e_r]
    e   = (v_{i+1} - v_i) / dt - vdot_nom(x_i, u_i),   v = (vx, vy, r)

the body velocities' change the nominal model does not explain (m/s^2, m/s^2,
rad/s^2; a finite difference, so O(dt) even for the nominal model's own
motion). At control step t the window holds the transitions t-W..t-1; before
enough transitions exist it is padded with the first state's features with
zero inputs and zero errors, ``[vx_0, vy_0, r_0, delta_0, a_0, 0, 0, 0, 0, 0]``
(as the arm pads with its first state at rest). :func:`car_history_windows`
builds the windows for training and :class:`CarContextTracker` the same
windows online; both evaluate the nominal rates with one CasADi function
(:func:`body_rate_function`), so the two agree to the last bit.

Neither part depends on the track (the body rates do not involve ``s, n, mu``).
"""

from __future__ import annotations

import casadi as ca
import numpy as np

from whatmatters.car.model import CarModel
from whatmatters.dynamics.context import ContextEncoder, WindowTracker, padded_windows

__all__ = ["CarContextTracker", "N_CAR_FEATURES", "body_rate_function", "car_history_features", "car_history_windows"]

#: Features per transition.
N_CAR_FEATURES = 10
#: The body velocities' entries of the state (vx, vy, r) and the state part of a feature (vx .. a).
VELOCITIES, FEATURE_STATES = slice(3, 6), slice(3, 8)


def body_rate_function(nominal: CarModel) -> ca.Function:
    """The nominal model's body accelerations ``(vx_dot, vy_dot, r_dot)`` of ``(x (8), u (2))``.

    A CasADi function (no runtime parameters); called with (8, T) and (2, T) it
    evaluates all T columns at once and returns (3, T).
    """
    x, u = ca.SX.sym("x", 8), ca.SX.sym("u", 2)
    return ca.Function("wm_car_body_rates", [x, u], [nominal.state_derivative(x, u)[VELOCITIES]])


def _padding(x0: np.ndarray) -> np.ndarray:
    """The feature row before the first transition: the first state's, zero inputs and errors, (10,)."""
    return np.concatenate([np.asarray(x0, dtype=float)[FEATURE_STATES], np.zeros(5)])


def car_history_features(nominal: CarModel, x: np.ndarray, u: np.ndarray, dt: float) -> np.ndarray:
    """Features of consecutive transitions.

    Args:
        nominal: The nominal model (for the unexplained accelerations).
        x: Model states, (T + 1, 8).
        u: Inputs ``(a_cmd, delta_cmd)`` held over each period, (T, 2).
        dt: Control period, s.

    Returns:
        Features, (T, 10).
    """
    x, u = np.asarray(x, dtype=float), np.asarray(u, dtype=float)
    if x.ndim != 2 or x.shape[1] != 8 or u.shape != (x.shape[0] - 1, 2):
        raise ValueError(f"need states (T + 1, 8) and inputs (T, 2), got {x.shape} and {u.shape}")
    rates = np.array(body_rate_function(nominal)(x[:-1].T, u.T)).T.reshape(-1, 3)  # (T, 3)
    error = (x[1:, VELOCITIES] - x[:-1, VELOCITIES]) / dt - rates
    return np.concatenate([x[:-1, FEATURE_STATES], u, error], axis=1)


def car_history_windows(features: np.ndarray, x0: np.ndarray, window: int) -> np.ndarray:
    """The window of features seen at every control step 0..T-1.

    Args:
        features: Transition features of one episode, (T, 10).
        x0: The episode's first state, (8,) (padding: see the module docstring).
        window: W.

    Returns:
        Windows, (T, W, 10): row t holds transitions t-W..t-1.
    """
    return padded_windows(features, _padding(x0), window)


class CarContextTracker(WindowTracker):
    """Online history window for one car, matching :func:`car_history_windows`.

    Args:
        nominal: The nominal model.
        window: W.
        dt: Control period, s.
        encoder: The context encoder (needed by :meth:`context` only).
        param_start: Index of the context in the solver's parameter vector.
    """

    def __init__(self, nominal: CarModel, window: int, dt: float, encoder: ContextEncoder | None = None, param_start: int = 0) -> None:
        super().__init__(window, dt, encoder, param_start)
        # one sample per control step through CasADi's VM: ~30 operations, a few us
        self._rates = body_rate_function(nominal)

    def padding(self, x0: np.ndarray) -> np.ndarray:
        """The first state's features with zero inputs and errors, (10,)."""
        return _padding(x0)

    def features(self, x: np.ndarray, u_prev: np.ndarray, x_prev: np.ndarray) -> np.ndarray:
        """The features of the transition ``x_prev --u_prev--> x`` (states (8,), input (2,)), (10,)."""
        rates = np.array(self._rates(x_prev, u_prev)).ravel()
        error = (x[VELOCITIES] - x_prev[VELOCITIES]) / self.dt - rates
        return np.concatenate([x_prev[FEATURE_STATES], u_prev, error])
