"""The context: a recurrent encoding of the recent motion, held constant over the horizon.

History features of one control transition ``i`` (state ``x_i``, torque
``tau_i`` held for ``dt``, next velocity ``qd_{i+1}``)::

    f_i = [q_i, qd_i, tau_i - tau_nom_i],   tau_nom_i = ID_nom(q_i, qd_i, (qd_{i+1} - qd_i) / dt)

i.e. the torque the nominal model fails to explain. At control step t the
window holds the transitions t-W..t-1 (W = 15, 0.3 s); before enough
transitions exist it is padded with ``[q_0, qd_0, 0]`` (as if the robot had
been resting in the nominal model's state). :func:`history_windows` builds the
windows for training and :class:`ContextTracker` the same windows online.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections import deque

import casadi as ca
import numpy as np
import torch
from torch import nn

from whatmatters.codegen import shared_compiled
from whatmatters.dynamics.rigid_body import RigidBodyDynamics

__all__ = ["ContextEncoder", "ContextTracker", "WindowTracker", "history_features", "history_windows", "padded_windows"]

N_FEATURES = 21


def history_features(
    nominal: RigidBodyDynamics, q: np.ndarray, qd: np.ndarray, tau: np.ndarray, dt: float
) -> np.ndarray:
    """Features of consecutive transitions.

    Args:
        nominal: The nominal model (for tau_nom).
        q: Positions, rad, shape (T + 1, 7).
        qd: Velocities, rad/s, shape (T + 1, 7).
        tau: Applied torques, Nm, shape (T, 7).
        dt: Control period, s.

    Returns:
        Features, shape (T, 21).
    """
    qt, qdt = torch.as_tensor(q[:-1], dtype=torch.float64), torch.as_tensor(qd[:-1], dtype=torch.float64)
    qdd = torch.as_tensor((qd[1:] - qd[:-1]) / dt, dtype=torch.float64)
    tau_nom = nominal.inverse_dynamics(qt, qdt, qdd).numpy()
    return np.concatenate([q[:-1], qd[:-1], tau - tau_nom], axis=1)


def history_windows(features: np.ndarray, x0: np.ndarray, window: int) -> np.ndarray:
    """The window of features seen at every control step 0..T-1.

    Args:
        features: Transition features of one episode, shape (T, 21).
        x0: The episode's first state, shape (14,) (padding).
        window: W.

    Returns:
        Windows, shape (T, W, 21): row t holds transitions t-W..t-1.
    """
    return padded_windows(features, np.concatenate([x0, np.zeros(7)]), window)


def padded_windows(features: np.ndarray, pad: np.ndarray, window: int) -> np.ndarray:
    """The window of transition features seen at every control step 0..T-1, any system.

    Args:
        features: Transition features of one episode, (T, F).
        pad: The features standing in for the transitions before the first, (F,).
        window: W.

    Returns:
        Windows, (T, W, F): row t holds transitions t-W..t-1.
    """
    padded = np.concatenate([np.tile(pad, (window, 1)), features], axis=0)  # transition i sits at row i + W
    idx = np.arange(features.shape[0])[:, None] + np.arange(window)[None, :]
    return padded[idx]


class ContextEncoder(nn.Module):
    """LSTM over the normalised history window -> context vector.

    Args:
        context_dim: Output size.
        hidden: LSTM hidden size.
        n_features: Features per transition (21, the arm's :func:`history_features`, by default).
    """

    def __init__(self, context_dim: int = 10, hidden: int = 32, n_features: int = N_FEATURES) -> None:
        super().__init__()
        self.lstm = nn.LSTM(n_features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, context_dim)
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_std", torch.ones(n_features))

    def set_normalization(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Sets the feature normalisation (from the training data)."""
        self.feature_mean.copy_(torch.as_tensor(mean))
        self.feature_std.copy_(torch.as_tensor(np.maximum(std, 1e-6)))

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """Windows (B, W, 21) -> contexts (B, context_dim)."""
        x = (windows - self.feature_mean) / self.feature_std
        _, (h, _) = self.lstm(x)
        return self.head(h[-1])

    def forward_numpy(self, window: np.ndarray) -> np.ndarray:
        """The same map for one window (W, 21) -> (context_dim,), in float64 numpy.

        For the control loop: no torch call (whose per-call overhead and
        intra-op threads cost ~0.2-8 ms per step on a busy 2-core machine).
        The weights are converted once and again whenever a tensor is
        changed in place (optimizer steps, ``load_state_dict``) or replaced,
        so updates are always seen. The sigmoid gates are computed as
        ``0.5 + 0.5 tanh(x / 2)`` with the halving folded into the weights,
        so each step takes one ``tanh`` over all four gates (~0.1 ms for a
        window of 15; torch's gate order i, f, g, o).
        """
        w_in, bias, w_hh, mean, std, head_w, head_b = self._numpy_weights()
        gates_in = ((np.asarray(window, dtype=float) - mean) / std) @ w_in + bias  # (W, 4 hidden), i/f/o halved
        n = w_hh.shape[0]
        h, c = np.zeros(n), np.zeros(n)
        for g in gates_in:
            t = np.tanh(g + h @ w_hh)  # (4 hidden,)
            s = 0.5 * t + 0.5  # sigmoid of the i, f, o gates (the g part is unused)
            c = s[n : 2 * n] * c + s[:n] * t[2 * n : 3 * n]
            h = s[3 * n :] * np.tanh(c)
        return head_w @ h + head_b

    def _numpy_weights(self) -> tuple[np.ndarray, ...]:
        """(W_ih' (21, 4h), bias (4h,), W_hh' (h, 4h), mean, std, head W, head b) with the sigmoid gates' rows halved."""
        tensors = (
            self.lstm.weight_ih_l0, self.lstm.weight_hh_l0, self.lstm.bias_ih_l0, self.lstm.bias_hh_l0,
            self.feature_mean, self.feature_std, self.head.weight, self.head.bias,
        )  # fmt: skip
        key = tuple((id(t), t._version) for t in tensors)
        cached = getattr(self, "_np_cache", None)
        if cached is None or cached[0] != key:
            w_ih, w_hh, b_ih, b_hh, mean, std, head_w, head_b = (t.detach().double().numpy().copy() for t in tensors)
            n = w_hh.shape[1]
            scale = np.full(4 * n, 0.5)
            scale[2 * n : 3 * n] = 1.0  # the cell input g uses tanh itself
            arrays = ((w_ih * scale[:, None]).T.copy(), (b_ih + b_hh) * scale, (w_hh * scale[:, None]).T.copy(), mean, std, head_w, head_b)
            object.__setattr__(self, "_np_cache", (key, arrays))
            cached = self._np_cache
        return cached[1]


class WindowTracker(ABC):
    """Online history window of transition features and its context, for any system.

    A subclass says what stands in for the transitions before the first
    (:meth:`padding`) and what one transition contributes (:meth:`features`);
    the windows are then exactly the training windows of :func:`padded_windows`.

    Args:
        window: W.
        dt: Control period, s.
        encoder: The context encoder (needed by :meth:`context` only).
        param_start: Index of the context in the solver's parameter vector.
    """

    def __init__(self, window: int, dt: float, encoder: ContextEncoder | None = None, param_start: int = 0) -> None:
        self.window, self.dt = window, dt
        self.encoder, self.param_start = encoder, param_start
        self._buf: deque[np.ndarray] = deque(maxlen=window)

    @abstractmethod
    def padding(self, x0: np.ndarray) -> np.ndarray:
        """The features of the transitions before the first, (F,)."""

    @abstractmethod
    def features(self, x: np.ndarray, u_prev: np.ndarray, x_prev: np.ndarray) -> np.ndarray:
        """The features of the transition ``x_prev --u_prev--> x``, (F,)."""

    def reset(self, x0: np.ndarray) -> None:
        """Starts a new episode at state ``x0``: the window is all padding."""
        self._buf.clear()
        self._buf.extend([self.padding(np.asarray(x0, dtype=float))] * self.window)

    def observe(self, x: np.ndarray, u_prev: np.ndarray | None, x_prev: np.ndarray | None) -> None:
        """Adds the transition ``x_prev --u_prev--> x`` (skipped if either is None)."""
        if u_prev is None or x_prev is None:
            return
        self._buf.append(self.features(*(np.asarray(v, dtype=float) for v in (x, u_prev, x_prev))))

    def window_array(self) -> np.ndarray:
        """The current window, (W, F)."""
        return np.array(self._buf)

    def context(self) -> tuple[int, np.ndarray]:
        """``(first parameter index, context vector (context_dim,))`` for the solver.

        Raises:
            RuntimeError: If the tracker has no encoder.
        """
        if self.encoder is None:
            raise RuntimeError(f"this {type(self).__name__} has no encoder")
        return self.param_start, self.encoder.forward_numpy(self.window_array())


class ContextTracker(WindowTracker):
    """Online history window for one robot, matching :func:`history_windows`.

    Args:
        nominal: The nominal model.
        window: W.
        dt: Control period, s.
        encoder: The context encoder.
        param_start: Index of the context in the solver's parameter vector.
    """

    def __init__(
        self,
        nominal: RigidBodyDynamics,
        window: int,
        dt: float,
        encoder: ContextEncoder | None = None,
        param_start: int = 0,
    ) -> None:
        super().__init__(window, dt, encoder, param_start)
        self.nominal = nominal
        # one sample per control step: compiled C through ctypes (~10 us) or, without
        # a C compiler, CasADi's VM (~0.1 ms; both ~100x faster than torch here)
        q, qd, qdd = (ca.SX.sym(n, nominal.nq) for n in ("q", "qd", "qdd"))
        fn = ca.Function("wm_tau_nom", [q, qd, qdd], [nominal.inverse_dynamics(q, qd, qdd)])
        self._tau_nom_vm = fn
        self._tau_nom_key = "wm_tau_nom_" + hashlib.sha256(fn.serialize().encode()).hexdigest()[:16]
        shared_compiled(self._tau_nom_key, lambda: fn)  # compiled (or loaded) now, not in the first control step

    def padding(self, x0: np.ndarray) -> np.ndarray:
        """Rest: ``[q_0, qd_0, 0]``, (21,)."""
        return np.concatenate([x0, np.zeros(7)])

    def features(self, x: np.ndarray, u_prev: np.ndarray, x_prev: np.ndarray) -> np.ndarray:
        """``[q, qd, tau - tau_nom]`` of the transition, (21,)."""
        qdd = (x[7:] - x_prev[7:]) / self.dt
        return np.concatenate([x_prev, u_prev - self.tau_nom(x_prev[:7], x_prev[7:], qdd)])

    def tau_nom(self, q: np.ndarray, qd: np.ndarray, qdd: np.ndarray) -> np.ndarray:
        """The nominal inverse dynamics of one sample, Nm, (7,) (compiled when a C compiler exists)."""
        fn = shared_compiled(self._tau_nom_key, lambda: self._tau_nom_vm)
        if fn is not None:
            return fn(q, qd, qdd)[0]
        return np.asarray(self._tau_nom_vm(q, qd, qdd)).ravel()
