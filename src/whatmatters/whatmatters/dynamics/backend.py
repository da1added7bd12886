"""Array backends that let one rigid-body algorithm serve torch and CasADi.

The dynamics algorithms in :mod:`whatmatters.dynamics.rigid_body` are written
once against the small :class:`Backend` interface. Shapes, per backend:

=========  ==========================  ======================
kind       :class:`TorchBackend`       :class:`CasadiBackend`
=========  ==========================  ======================
scalar     ``(B,)`` tensor             ``SX`` 1x1
3-vector   ``(B, 3)`` (or ``(3,)``)    ``SX``/``DM`` 3x1
3x3 matrix ``(B, 3, 3)`` or ``(3, 3)`` ``SX``/``DM`` 3x3
=========  ==========================  ======================

Constants coming from numpy stay constants, so CasADi folds multiplications by
the many exact zeros of the Panda's joint frames and the generated code stays
small.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import casadi as ca
import numpy as np
import torch

__all__ = ["Backend", "CasadiBackend", "TorchBackend", "backend_for"]

Scalar = Any
Vec = Any
Mat = Any


class Backend(ABC):
    """Operations the rigid-body algorithms need."""

    @abstractmethod
    def const(self, value: np.ndarray) -> Any:
        """A numpy constant (vector or matrix) in backend form."""

    @abstractmethod
    def cos(self, x: Scalar) -> Scalar: ...

    @abstractmethod
    def sin(self, x: Scalar) -> Scalar: ...

    @abstractmethod
    def mv(self, a: Mat, v: Vec) -> Vec:
        """Matrix times vector, ``a @ v``."""

    @abstractmethod
    def mtv(self, a: Mat, v: Vec) -> Vec:
        """Transposed matrix times vector, ``a.T @ v``."""

    @abstractmethod
    def mm(self, a: Mat, b: Mat) -> Mat:
        """Matrix product ``a @ b``."""

    @abstractmethod
    def mmt(self, a: Mat, b: Mat) -> Mat:
        """``a @ b.T``."""

    @abstractmethod
    def cross(self, a: Vec, b: Vec) -> Vec: ...

    @abstractmethod
    def dot(self, a: Vec, b: Vec) -> Scalar: ...

    @abstractmethod
    def outer(self, a: Vec, b: Vec) -> Mat: ...

    @abstractmethod
    def comp(self, v: Vec, i: int) -> Scalar:
        """Component ``i`` of a vector."""

    @abstractmethod
    def z_vec(self, s: Scalar) -> Vec:
        """The vector ``(0, 0, s)``."""

    @abstractmethod
    def scale(self, s: Scalar, v: Vec) -> Vec:
        """Scalar times vector."""

    @abstractmethod
    def eye_scaled(self, s: Scalar) -> Mat:
        """``s * I3``."""

    @abstractmethod
    def rot_z(self, c: Scalar, s: Scalar) -> Mat:
        """Rotation about z from its cosine and sine."""

    @abstractmethod
    def column(self, x: Any, i: int) -> Scalar:
        """Entry ``i`` of an n-vector argument (``x[..., i]``)."""

    @abstractmethod
    def stack(self, scalars: list[Scalar]) -> Any:
        """Scalars to an n-vector (``(B, n)`` or ``n x 1``)."""

    @abstractmethod
    def split(self, x: Any, n: int) -> tuple[Any, Any]:
        """Splits an n-vector into its first ``n`` entries and the rest."""

    @abstractmethod
    def concat(self, a: Any, b: Any) -> Any:
        """Concatenates two n-vectors."""

    @abstractmethod
    def matrix(self, rows: list[list[Scalar]]) -> Any:
        """Scalars to an n x n matrix (``(B, n, n)`` or ``SX``)."""

    @abstractmethod
    def solve_spd(self, rows: list[list[Scalar]], rhs: list[Scalar]) -> Any:
        """Solves ``M x = rhs`` for a symmetric positive definite ``M``.

        Args:
            rows: The matrix as n lists of n scalars.
            rhs: The right-hand side as n scalars.

        Returns:
            ``x`` as an n-vector.
        """


class TorchBackend(Backend):
    """Batched torch tensors; differentiable, any float dtype."""

    #: Most constants kept as tensors; past it the cache starts over (the chain's constants are ~100).
    max_cached: ClassVar[int] = 4096

    def __init__(self, dtype: torch.dtype, device: torch.device) -> None:
        self.dtype = dtype
        self.device = device
        self._cache: dict[tuple[tuple[int, ...], bytes], torch.Tensor] = {}

    def const(self, value: np.ndarray) -> torch.Tensor:
        """The constant as a tensor, cached by content.

        The dynamics pass fresh arrays for the same constants on every call
        (views such as ``joint_rot[i]``, products such as ``m p p'``): a
        cache keyed by content stays as small as the set of constants, where
        one keyed by object identity grew with every call.
        """
        arr = np.ascontiguousarray(value, dtype=float)
        key = (arr.shape, arr.tobytes())
        out = self._cache.get(key)
        if out is None:
            if len(self._cache) >= self.max_cached:
                self._cache.clear()
            out = self._cache[key] = torch.tensor(arr, dtype=self.dtype, device=self.device)  # a copy: later changes to the array do not leak in
        return out

    def cos(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cos(x)

    def sin(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(x)

    def mv(self, a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return (a @ v.unsqueeze(-1)).squeeze(-1)

    def mtv(self, a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return (a.transpose(-1, -2) @ v.unsqueeze(-1)).squeeze(-1)

    def mm(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b

    def mmt(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b.transpose(-1, -2)

    def cross(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = torch.broadcast_tensors(a, b)
        return torch.linalg.cross(a, b, dim=-1)

    def dot(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a * b).sum(-1)

    def outer(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a.unsqueeze(-1) * b.unsqueeze(-2)

    def comp(self, v: torch.Tensor, i: int) -> torch.Tensor:
        return v[..., i]

    def z_vec(self, s: torch.Tensor) -> torch.Tensor:
        zero = torch.zeros_like(s)
        return torch.stack((zero, zero, s), dim=-1)

    def scale(self, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return s.unsqueeze(-1) * v

    def eye_scaled(self, s: torch.Tensor) -> torch.Tensor:
        return s.unsqueeze(-1).unsqueeze(-1) * torch.eye(3, dtype=self.dtype, device=self.device)

    def rot_z(self, c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        zero, one = torch.zeros_like(c), torch.ones_like(c)
        rows = (torch.stack((c, -s, zero), -1), torch.stack((s, c, zero), -1), torch.stack((zero, zero, one), -1))
        return torch.stack(rows, dim=-2)

    def column(self, x: torch.Tensor, i: int) -> torch.Tensor:
        return x[..., i]

    def stack(self, scalars: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(torch.broadcast_tensors(*scalars), dim=-1)

    def split(self, x: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return x[..., :n], x[..., n:]

    def concat(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.cat((a, b), dim=-1)

    def matrix(self, rows: list[list[torch.Tensor]]) -> torch.Tensor:
        return torch.stack([self.stack(r) for r in rows], dim=-2)

    def solve_spd(self, rows: list[list[torch.Tensor]], rhs: list[torch.Tensor]) -> torch.Tensor:
        mat = self.matrix(rows)  # (B, n, n)
        b = self.stack(rhs)  # (B, n)
        n = b.shape[-1]
        batch = torch.broadcast_shapes(mat.shape[:-2], b.shape[:-1])
        chol = torch.linalg.cholesky(mat.expand(*batch, n, n))
        return torch.cholesky_solve(b.expand(*batch, n).unsqueeze(-1), chol).squeeze(-1)


class CasadiBackend(Backend):
    """CasADi SX expressions: code-generation friendly, no Python callbacks."""

    def const(self, value: np.ndarray) -> ca.DM:
        return ca.DM(np.asarray(value, dtype=float))

    def cos(self, x: ca.SX) -> ca.SX:
        return ca.cos(x)

    def sin(self, x: ca.SX) -> ca.SX:
        return ca.sin(x)

    def mv(self, a: Any, v: Any) -> Any:
        return ca.mtimes(a, v)

    def mtv(self, a: Any, v: Any) -> Any:
        return ca.mtimes(a.T, v)

    def mm(self, a: Any, b: Any) -> Any:
        return ca.mtimes(a, b)

    def mmt(self, a: Any, b: Any) -> Any:
        return ca.mtimes(a, b.T)

    def cross(self, a: Any, b: Any) -> Any:
        a, b = ca.SX(a), ca.SX(b)
        return ca.vertcat(
            a[1] * b[2] - a[2] * b[1],
            a[2] * b[0] - a[0] * b[2],
            a[0] * b[1] - a[1] * b[0],
        )

    def dot(self, a: Any, b: Any) -> Any:
        return ca.dot(ca.SX(a), ca.SX(b))

    def outer(self, a: Any, b: Any) -> Any:
        return ca.mtimes(ca.SX(a), ca.SX(b).T)

    def comp(self, v: Any, i: int) -> Any:
        return v[i]

    def z_vec(self, s: Any) -> Any:
        return ca.vertcat(0, 0, s)

    def scale(self, s: Any, v: Any) -> Any:
        return s * v

    def eye_scaled(self, s: Any) -> Any:
        return s * ca.SX.eye(3)

    def rot_z(self, c: Any, s: Any) -> Any:
        return ca.vertcat(ca.horzcat(c, -s, 0), ca.horzcat(s, c, 0), ca.horzcat(0, 0, 1))

    def column(self, x: Any, i: int) -> Any:
        return x[i]

    def stack(self, scalars: list[Any]) -> Any:
        return ca.vertcat(*scalars)

    def split(self, x: Any, n: int) -> tuple[Any, Any]:
        return x[:n], x[n:]

    def concat(self, a: Any, b: Any) -> Any:
        return ca.vertcat(a, b)

    def matrix(self, rows: list[list[Any]]) -> Any:
        return ca.vertcat(*[ca.horzcat(*r) for r in rows])

    def solve_spd(self, rows: list[list[Any]], rhs: list[Any]) -> Any:
        return ca.vertcat(*self.ldl_solve(self.ldl_factor(rows), rhs))

    @staticmethod
    def ldl_factor(rows: list[list[Any]]) -> tuple[list[list[Any]], list[Any]]:
        """Square-root-free ``M = L D L^T`` written out entry by entry (no symbolic inverse).

        O(n^3 / 6) scalar operations that share the subexpressions of ``M``.

        Args:
            rows: A symmetric positive definite matrix as n lists of n scalars
                (only the lower triangle is read).

        Returns:
            The strictly lower part of ``L`` (``low[i][j]``, i > j) and ``D``'s diagonal.
        """
        n = len(rows)
        low: list[list[Any]] = [[None] * n for _ in range(n)]
        diag: list[Any] = [None] * n
        for j in range(n):
            d = rows[j][j]
            for k in range(j):
                d = d - low[j][k] * low[j][k] * diag[k]
            diag[j] = d
            for i in range(j + 1, n):
                s = rows[i][j]
                for k in range(j):
                    s = s - low[i][k] * low[j][k] * diag[k]
                low[i][j] = s / d
        return low, diag

    @staticmethod
    def ldl_solve(factor: tuple[list[list[Any]], list[Any]], rhs: list[Any]) -> list[Any]:
        """Solves ``M x = rhs`` with :meth:`ldl_factor`'s factors; ``rhs`` and ``x`` as n scalars."""
        low, diag = factor
        n = len(rhs)
        y = list(rhs)
        for i in range(n):
            for k in range(i):
                y[i] = y[i] - low[i][k] * y[k]
        x = [y[i] / diag[i] for i in range(n)]
        for i in reversed(range(n)):
            for k in range(i + 1, n):
                x[i] = x[i] - low[k][i] * x[k]
        return x


_CASADI = CasadiBackend()
_TORCH: dict[tuple[torch.dtype, torch.device], TorchBackend] = {}


def backend_for(x: Any) -> Backend:
    """Picks the backend from an input's type.

    Args:
        x: A torch tensor or a CasADi SX/MX/DM.

    Raises:
        TypeError: For any other type.
    """
    if isinstance(x, torch.Tensor):
        key = (x.dtype, x.device)
        if key not in _TORCH:
            _TORCH[key] = TorchBackend(x.dtype, x.device)
        return _TORCH[key]
    if isinstance(x, (ca.SX, ca.DM)):
        return _CASADI
    raise TypeError(f"dynamics inputs must be torch tensors or casadi SX/DM, got {type(x).__name__}")
