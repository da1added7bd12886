"""The extension point for dynamics models: one model, a torch and a CasADi form.

:class:`DynamicsModel` is any system ``xdot = f(x, u; p)``: a model gives its
state derivative for torch batches and CasADi symbols alike, and the base
class builds the RK4 map over one control period and the derivatives the MPC
and the sensitivities use. A model with runtime parameters (learned weights,
context) exposes them to CasADi as one flat vector so that a compiled solver
can take new values without a rebuild.

:class:`JointSpaceModel` is the robot arm's kind: joint positions,
velocities and torques to accelerations, with ``x = [q, qd]`` and ``u = tau``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import casadi as ca
import numpy as np

from whatmatters.dynamics.backend import backend_for

__all__ = ["DynamicsModel", "JointSpaceModel", "rk4"]


class DynamicsModel(ABC):
    """Base class of every dynamics model: ``xdot = f(x, u; p)``.

    Attributes:
        nx: State dimension.
        nu: Input dimension.
        state_labels: A short name per state entry (plots, sidecars), (nx,).
        input_labels: A short name per input entry, (nu,).
    """

    nx: int
    nu: int
    state_labels: tuple[str, ...] = ()
    input_labels: tuple[str, ...] = ()

    @property
    def n_params(self) -> int:
        """Length of the runtime parameter vector of the CasADi form (0 if none)."""
        return 0

    def parameter_values(self) -> np.ndarray:
        """Current values of the CasADi form's runtime parameters, shape (n_params,)."""
        return np.zeros(self.n_params)

    def context_tracker(self) -> Any | None:
        """An online context estimator for models with a context (None otherwise).

        The tracker has ``reset(x0)``, ``observe(x, tau_prev, x_prev)`` and
        ``context() -> (slice_start, values)``: the runtime parameters to update
        before each solve.
        """
        return None

    @abstractmethod
    def state_derivative(self, x: Any, u: Any, params: Any = None) -> Any:
        """``xdot`` for states ``x`` and inputs ``u``.

        Args:
            x: States: (B, nx) tensor or nx x 1 SX.
            u: Inputs, same form: (B, nu) or nu x 1.
            params: CasADi form only: the runtime parameter vector (n_params x 1).

        Returns:
            xdot in the inputs' form.
        """

    def state_derivative_jacobian(self, x: ca.SX, u: ca.SX, params: ca.SX | None = None) -> tuple[ca.SX, ca.SX]:
        """CasADi form only: ``xdot`` (nx) and its exact Jacobian ``d xdot / d(x, u)`` (nx, nx + nu).

        The default differentiates :meth:`state_derivative` with CasADi's AD;
        a model may override it with a cheaper exact form (the MPC evaluates it
        at every RK4 stage of every interval).
        """
        f = self.state_derivative(x, u, params)
        return f, ca.jacobian(f, ca.vertcat(x, u))

    def code_identity(self) -> str:
        """What generated code of this model depends on beyond :meth:`state_derivative`'s
        expression (e.g. hand-written kernels its Jacobian calls): part of the solvers' cache key."""
        return ""

    def state_derivative_hessian(
        self, x: ca.SX, u: ca.SX, mu: ca.SX, params: ca.SX | None = None, xdot: ca.SX | None = None, jac: ca.SX | None = None
    ) -> ca.SX:
        """CasADi form only: ``d^2 (mu' xdot) / d(x, u)^2``, (nx + nu, nx + nu), for a weight ``mu`` (nx).

        ``xdot`` and ``jac`` (this model's :meth:`state_derivative_jacobian` at
        the same point) may be passed for a model to reuse; the default
        ignores them and differentiates :meth:`state_derivative` twice with
        CasADi's AD. The sensitivities evaluate it at every RK4 stage.
        """
        return ca.hessian(ca.dot(mu, self.state_derivative(x, u, params)), ca.vertcat(x, u))[0]

    def rk4_step(self, x: Any, u: Any, dt: float, params: Any = None) -> Any:
        """One classical Runge-Kutta step of length ``dt`` s with ``u`` held constant."""
        return rk4(lambda xx: self.state_derivative(xx, u, params), x, dt)

    def casadi_functions(self) -> dict[str, ca.Function]:
        """Compiled-free CasADi functions for numeric use: ``f(x, u, p)`` and ``rk4(x, u, dt, p)``."""
        x, u, dt = ca.SX.sym("x", self.nx), ca.SX.sym("u", self.nu), ca.SX.sym("dt")
        p = ca.SX.sym("p", self.n_params)
        return {
            "f": ca.Function("f", [x, u, p], [self.state_derivative(x, u, p)]),
            "rk4": ca.Function("rk4", [x, u, dt, p], [self.rk4_step(x, u, dt, p)]),
        }


class JointSpaceModel(DynamicsModel):
    """A robot arm's model: accelerations from joint positions, velocities and torques.

    The state is ``x = [q, qd]`` (rad, rad/s), the input ``u = tau`` (Nm).

    Attributes:
        nq: Number of joints (7 for the Panda); the state has 2 * nq entries.
    """

    nq: int = 7

    @property
    def nx(self) -> int:  # type: ignore[override]
        """State dimension, ``2 * nq``."""
        return 2 * self.nq

    @property
    def nu(self) -> int:  # type: ignore[override]
        """Input dimension (joint torques), ``nq``."""
        return self.nq

    @property
    def state_labels(self) -> tuple[str, ...]:  # type: ignore[override]
        """``q1..q<nq>, qd1..qd<nq>``."""
        return tuple([f"q{i}" for i in range(1, self.nq + 1)] + [f"qd{i}" for i in range(1, self.nq + 1)])

    @property
    def input_labels(self) -> tuple[str, ...]:  # type: ignore[override]
        """``tau1..tau<nq>``."""
        return tuple(f"tau{i}" for i in range(1, self.nq + 1))

    @abstractmethod
    def forward_dynamics(self, q: Any, qd: Any, tau: Any, params: Any = None) -> Any:
        """Joint accelerations, rad/s^2.

        Args:
            q: Joint positions, rad: (B, nq) tensor or nq x 1 SX.
            qd: Joint velocities, rad/s, same form.
            tau: Joint torques, Nm, same form.
            params: CasADi form only: the runtime parameter vector (n_params x 1).

        Returns:
            qdd in the inputs' form.
        """

    def state_derivative(self, x: Any, u: Any, params: Any = None) -> Any:
        """``xdot = [qd, qdd]`` for ``x = [q, qd]`` (B, 2 nq) and ``u = tau`` (B, nq)."""
        be = backend_for(x)
        q, qd = be.split(x, self.nq)
        return be.concat(qd, self.forward_dynamics(q, qd, u, params))

    def casadi_functions(self) -> dict[str, ca.Function]:
        """The base class' functions plus ``fd(q, qd, tau, p)`` (the accelerations)."""
        q, qd, tau = (ca.SX.sym(n, self.nq) for n in ("q", "qd", "tau"))
        p = ca.SX.sym("p", self.n_params)
        return {**super().casadi_functions(), "fd": ca.Function("fd", [q, qd, tau, p], [self.forward_dynamics(q, qd, tau, p)])}


def rk4(f: Any, x: Any, dt: float) -> Any:
    """Classical fourth-order Runge-Kutta step ``x -> x + dt/6 (k1 + 2 k2 + 2 k3 + k4)``.

    Args:
        f: Time-invariant vector field ``x -> xdot``.
        x: State, torch (B, nx) or CasADi SX.
        dt: Step length, s.
    """
    k1 = f(x)
    k2 = f(x + (0.5 * dt) * k1)
    k3 = f(x + (0.5 * dt) * k2)
    k4 = f(x + dt * k3)
    return x + (dt / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
