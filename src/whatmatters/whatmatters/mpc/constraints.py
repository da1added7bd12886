"""The OCP's constraints: hard input bounds, soft state bounds and soft linear constraints.

Every OCP of the project has

* **hard box bounds on the inputs**, ``u_lower <= u_k <= u_upper`` on every
  stage (the arm's torque limits; the car's acceleration and steering angle);
* optionally **soft box bounds on some states**, ``x_lower <= x_k[i] <= x_upper``
  on stages 1..N (the car's track limits), and
* optionally **soft linear constraints**, ``g_lower <= C x_k + D u_k <= g_upper``
  on stages 0..N-1 (the car's steering rate).

A soft constraint is priced by a purely quadratic penalty on its violation,
``penalty / 2 * v^2`` with ``v = max(0, lower - y, y - upper)`` (acados'
slacks with weights ``Zl = Zu = penalty`` and ``zl = zu = 0``), scaled like
the stage cost it belongs to. The penalty is once continuously
differentiable, so an OCP with inactive hard bounds keeps a unique smooth
solution and the sensitivities stay those of an equality-constrained
problem: :meth:`OcpConstraints.penalty_terms` gives the penalty's gradient
and Hessian for the KKT system.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from whatmatters.errors import ConfigError

__all__ = ["OcpConstraints", "as_constraints"]


def _vector(values: Any, name: str) -> np.ndarray:
    return np.atleast_1d(np.asarray(values, dtype=float)).copy()


@dataclass(frozen=True, eq=False)
class OcpConstraints:
    """Constraints of an OCP (see the module docstring).

    Attributes:
        u_lower: Hard input lower bounds, (nu,).
        u_upper: Hard input upper bounds, (nu,).
        x_index: States with soft bounds, (mx,) ints.
        x_lower: Their lower bounds, (mx,).
        x_upper: Their upper bounds, (mx,).
        g_c: Soft linear constraints' state matrix C, (mg, nx).
        g_d: Their input matrix D, (mg, nu).
        g_lower: Their lower bounds, (mg,).
        g_upper: Their upper bounds, (mg,).
        penalty: Quadratic weight of a soft constraint's violation (per squared unit of it).
    """

    u_lower: np.ndarray
    u_upper: np.ndarray
    x_index: tuple[int, ...] = ()
    x_lower: np.ndarray = field(default_factory=lambda: np.zeros(0))
    x_upper: np.ndarray = field(default_factory=lambda: np.zeros(0))
    g_c: np.ndarray | None = None
    g_d: np.ndarray | None = None
    g_lower: np.ndarray = field(default_factory=lambda: np.zeros(0))
    g_upper: np.ndarray = field(default_factory=lambda: np.zeros(0))
    penalty: float = 1e4

    def __post_init__(self) -> None:
        for name in ("u_lower", "u_upper", "x_lower", "x_upper", "g_lower", "g_upper"):
            object.__setattr__(self, name, _vector(getattr(self, name), name))
        object.__setattr__(self, "x_index", tuple(int(i) for i in self.x_index))
        if self.u_lower.shape != self.u_upper.shape or np.any(self.u_lower > self.u_upper):
            raise ConfigError(f"constraints: input bounds need equal shapes and lower <= upper, got {self.u_lower} and {self.u_upper}")
        if not len(self.x_index) == self.x_lower.size == self.x_upper.size or np.any(self.x_lower > self.x_upper):
            raise ConfigError("constraints: x_index, x_lower and x_upper need one entry per bounded state and lower <= upper")
        mg = self.g_lower.size
        if mg:
            if self.g_c is None or self.g_d is None:
                raise ConfigError("constraints: soft linear bounds need g_c and g_d")
            object.__setattr__(self, "g_c", np.atleast_2d(np.asarray(self.g_c, dtype=float)))
            object.__setattr__(self, "g_d", np.atleast_2d(np.asarray(self.g_d, dtype=float)))
            if self.g_c.shape[0] != mg or self.g_d.shape[0] != mg or self.g_upper.size != mg or np.any(self.g_lower > self.g_upper):
                raise ConfigError("constraints: g_c, g_d, g_lower and g_upper need one row per constraint and lower <= upper")
        elif self.g_c is not None or self.g_d is not None:
            raise ConfigError("constraints: g_c and g_d given without g_lower and g_upper")
        if not self.penalty > 0:
            raise ConfigError(f"constraints: the soft-constraint penalty must be > 0, got {self.penalty}")

    @classmethod
    def symmetric(cls, limits: np.ndarray) -> OcpConstraints:
        """Only ``|u| <= limits`` (the arm's torque limits), (nu,)."""
        lim = np.asarray(limits, dtype=float)
        return cls(-lim, lim)

    @property
    def nu(self) -> int:
        """Input dimension."""
        return int(self.u_lower.size)

    @property
    def n_soft_x(self) -> int:
        """Number of soft state bounds."""
        return len(self.x_index)

    @property
    def n_soft_g(self) -> int:
        """Number of soft linear constraints."""
        return int(self.g_lower.size)

    @property
    def has_soft(self) -> bool:
        """Whether any soft constraint exists."""
        return bool(self.n_soft_x or self.n_soft_g)

    def check_dims(self, nx: int, nu: int) -> None:
        """Raises ConfigError unless the constraints fit a model with ``nx`` states and ``nu`` inputs."""
        if self.nu != nu:
            raise ConfigError(f"constraints: {self.nu} input bounds for a model with {nu} inputs")
        if any(not 0 <= i < nx for i in self.x_index):
            raise ConfigError(f"constraints: x_index {self.x_index} outside 0..{nx - 1}")
        if self.n_soft_g and (self.g_c.shape[1] != nx or self.g_d.shape[1] != nu):  # type: ignore[union-attr]
            raise ConfigError(f"constraints: g_c must be (mg, {nx}) and g_d (mg, {nu})")

    def clip_input(self, u: np.ndarray) -> np.ndarray:
        """``u`` inside the hard input bounds, (..., nu)."""
        return np.clip(u, self.u_lower, self.u_upper)

    def key(self) -> dict[str, Any] | None:
        """What of these constraints shapes the generated solver (None without soft constraints:
        hard input bounds are run-time data)."""
        if not self.has_soft:
            return None
        return {
            "x": [list(self.x_index), self.x_lower.tolist(), self.x_upper.tolist()],
            "g": [] if not self.n_soft_g else [self.g_c.tolist(), self.g_d.tolist(), self.g_lower.tolist(), self.g_upper.tolist()],  # type: ignore[union-attr]
            "penalty": self.penalty,
        }

    def penalty_terms(self, x: np.ndarray, u: np.ndarray, stage_scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Gradient and Hessian of the soft penalties along a trajectory.

        Args:
            x: States x_0..x_N, (N + 1, nx).
            u: Inputs u_0..u_{N-1}, (N, nu).
            stage_scale: The stage cost's factor (the terminal stage has none).

        Returns:
            ``grad_x`` (N + 1, nx): d penalty / d x_k; ``hess`` (N, nz, nz):
            the stage Hessians in (x, u) of stages 0..N-1; ``hess_n`` (nx, nx):
            the terminal one. Zero where nothing is violated (a kink of the
            Hessian sits exactly at the bound).
        """
        n, nx = u.shape[0], x.shape[1]
        nz = nx + u.shape[1]
        grad = np.zeros((n + 1, nx))
        hess = np.zeros((n, nz, nz))
        hess_n = np.zeros((nx, nx))
        scales = np.full(n + 1, stage_scale)
        scales[n] = 1.0
        w = self.penalty * scales
        if self.n_soft_x:
            idx = np.asarray(self.x_index)
            y = x[:, idx]  # (N + 1, mx)
            v = y - np.clip(y, self.x_lower, self.x_upper)
            v[0] = 0.0  # x_0 is fixed: no bound there
            viol = v != 0.0
            grad[:, idx] += w[:, None] * v
            for j, i in enumerate(idx):
                hess[:n, i, i] += np.where(viol[:n, j], w[:n], 0.0)
                hess_n[i, i] += w[n] if viol[n, j] else 0.0
        if self.n_soft_g:
            cd = np.hstack([self.g_c, self.g_d])  # type: ignore[list-item]  # (mg, nz)
            g = x[:n] @ self.g_c.T + u @ self.g_d.T  # type: ignore[union-attr]  # (N, mg)
            v = g - np.clip(g, self.g_lower, self.g_upper)
            grad[:n] += (w[:n, None] * v) @ self.g_c  # type: ignore[operator]
            active = (v != 0.0) * w[:n, None]  # (N, mg)
            hess += np.einsum("km,mi,mj->kij", active, cd, cd)
        return grad, hess, hess_n


def as_constraints(limits: np.ndarray | OcpConstraints) -> OcpConstraints:
    """``limits`` as constraints: an array is the symmetric input bounds ``|u| <= limits``."""
    return limits if isinstance(limits, OcpConstraints) else OcpConstraints.symmetric(limits)
