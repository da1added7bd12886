"""The centre line's curvature as a function of arc length: a Fourier series in ``s``.

``kappa(s) = a_0 + sum_{k=1..K} a_k cos(k w s) + b_k sin(k w s)``, ``w = 2 pi / L``,
is a closed form of ``s`` alone: the MPC's model evaluates it on CasADi
symbols (no interpolant, no ``theta(s)`` inversion) and on torch batches, and
it is periodic in ``s`` with the track's length ``L``. The coefficients are
fitted by :meth:`whatmatters.car.track.Track.curvature_series` from the exact
curvature sampled at evenly spaced ``s``.

Evaluation takes one cosine and one sine of ``w s``; the harmonics follow by
the angle-addition recurrence ``cos((k+1) t) = cos(k t) cos(t) - sin(k t) sin(t)``,
``sin((k+1) t) = sin(k t) cos(t) + cos(k t) sin(t)`` (round-off grows like
``k`` times the machine epsilon: ~1e-14 at ``K = 64``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import casadi as ca
import numpy as np
import torch

__all__ = ["CurvatureSeries"]


@dataclass(frozen=True, eq=False)
class CurvatureSeries:
    """A Fourier series of the curvature over one lap.

    Attributes:
        length: Track length ``L``, m: the period in ``s``.
        a0: Mean curvature, 1/m.
        a, b: Cosine and sine coefficients of harmonics 1..K, 1/m, (K,) each, K >= 1.

    Raises:
        ValueError: For a length <= 0 or coefficient arrays that are not two (K,) arrays, K >= 1.
    """

    length: float
    a0: float
    a: np.ndarray
    b: np.ndarray

    def __post_init__(self) -> None:
        a, b = np.asarray(self.a, dtype=float), np.asarray(self.b, dtype=float)
        if not self.length > 0:
            raise ValueError(f"the period must be > 0 m, got {self.length}")
        if a.ndim != 1 or a.shape != b.shape or a.size < 1:
            raise ValueError(f"coefficients must be two (K,) arrays with K >= 1, got {a.shape} and {b.shape}")
        object.__setattr__(self, "length", float(self.length))
        object.__setattr__(self, "a0", float(self.a0))
        object.__setattr__(self, "a", a)
        object.__setattr__(self, "b", b)

    @classmethod
    def from_samples(cls, kappa: np.ndarray, length: float, harmonics: int) -> CurvatureSeries:
        """The series through curvature samples at ``s_j = j L / M``, j = 0..M-1 (FFT, truncated).

        Args:
            kappa: Curvature, 1/m, (M,), M > 2 * harmonics.
            length: ``L``, m.
            harmonics: ``K``, the harmonics kept.

        Raises:
            ValueError: If the samples cannot resolve ``harmonics``.
        """
        kappa = np.asarray(kappa, dtype=float)
        m = kappa.size
        if kappa.ndim != 1 or not 1 <= harmonics < m / 2:
            raise ValueError(f"{harmonics} harmonics need (M,) samples with M > {2 * harmonics}, got shape {kappa.shape}")
        spec = np.fft.rfft(kappa) / m  # kappa_j = sum_k c_k e^{2 pi i k j / M}
        return cls(length, spec[0].real, 2.0 * spec.real[1 : harmonics + 1], -2.0 * spec.imag[1 : harmonics + 1])

    @property
    def harmonics(self) -> int:
        """``K``, the number of harmonics."""
        return int(self.a.size)

    def __call__(self, s: Any) -> Any:
        """``kappa(s)``, 1/m, in ``s``'s form.

        Args:
            s: Arc length, m, any value (periodic with ``length``): a numpy array
                or float (any shape), a torch tensor (any shape, its dtype and
                device kept) or a CasADi SX/MX/DM (elementwise).

        Returns:
            The curvature in the same form and shape as ``s``.
        """
        if isinstance(s, torch.Tensor):
            cos, sin = torch.cos, torch.sin
        elif isinstance(s, (ca.SX, ca.MX, ca.DM)):
            cos, sin = ca.cos, ca.sin
        else:
            s = np.asarray(s, dtype=float)
            cos, sin = np.cos, np.sin
        t = s * (2.0 * np.pi / self.length)
        c1, s1 = cos(t), sin(t)
        ck, sk = c1, s1
        a, b = self.a.tolist(), self.b.tolist()  # Python floats: constants in every form
        out = self.a0 + a[0] * c1 + b[0] * s1
        for k in range(1, len(a)):
            ck, sk = ck * c1 - sk * s1, sk * c1 + ck * s1
            out = out + a[k] * ck + b[k] * sk
        return out
