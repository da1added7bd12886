"""Settings of the sensitivity computation (``config/sensitivity.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from whatmatters.config import YamlConfig
from whatmatters.errors import ConfigError

__all__ = ["SensitivityConfig"]


@dataclass(frozen=True)
class SensitivityConfig(YamlConfig):
    """Settings (``config/sensitivity.yaml``).

    Attributes:
        eps: u_0 perturbation for the effective sensitivity, Nm.
        sqp_tol: KKT tolerance of the converged operating point.
        sqp_max_iter: SQP iteration limit (with second-order QP terms:
            :data:`~whatmatters.sensitivity.compute.NEWTON_MAX_ITER`, then this with Gauss-Newton's).
        active_tol: Relative distance to a limit below which a bound is active.
        derivatives: The stages' multiplier-weighted Hessians (A and B come
            from acados) from ``casadi`` (compiled C, or CasADi's
            VM for large models), ``torch`` (batched autograd on the model's
            torch form), ``structured`` (the learned model only: compiled
            nominal part, closed-form residual derivatives,
            :mod:`~whatmatters.sensitivity.learned_derivatives`) or ``auto``
            (compiled CasADi for small models such as the nominal one,
            structured for the learned model, torch for other large torch
            models). All give the same numbers (tested).
        resolve_start: Where the two ``u0* +- eps`` re-solves start:
            ``predictor`` (the operating point plus the tangential predictor
            of the fixed-u_0 problem from the exact-Hessian Riccati pass:
            second-order close, ~4 instead of ~6 SQP iterations with the
            learned model) or ``point`` (the operating point itself). Both
            converge to ``sqp_tol``: the same numbers to ~1e-10 (tested).
        resolve_hessian: The QP Hessians of the SQP solves: ``exact`` (the
            Gauss-Newton ones plus second-order dynamics terms ``W_k``: for
            the re-solves the operating point's, from du0/de's pass; for the
            operating point the previous step's, each at its stage, when the
            caller passes them, :func:`~whatmatters.sensitivity.point.warm_start`.
            Newton-like: 2 instead of 4 re-solve and 4 instead of 7
            operating-point iterations with the learned model; a solve that
            fails with them is repeated without) or ``gauss_newton``. The
            converged solutions are the same (the Hessian only shapes the
            iterates; tested).
        fallback: When an SQP solve fails (with Gauss-Newton QPs after the
            second-order ones): ``none`` (the sample fails) or
            ``exact_hessian`` (once more from the same start with acados'
            exact-Hessian SQP, a solver built on first use: slower, but it
            converges where Gauss-Newton's stalls on large residuals, e.g. a
            car sliding beyond the track bound). The converged point is the
            same KKT point either way.
        parallel: In :meth:`SensitivityComputer.compute` (one sample: the
            logger with ``batch`` 1), run the ``u0* + eps`` re-solve in a
            second thread while the ``u0* - eps`` one runs in the caller's
            (acados releases the GIL); the numbers are the same either way,
            bit for bit. Off on one-CPU machines.
    """

    yaml_file: ClassVar[str] = "sensitivity.yaml"

    eps: float = 0.5
    sqp_tol: float = 1e-10
    sqp_max_iter: int = 200
    active_tol: float = 1e-6
    derivatives: str = "auto"
    resolve_start: str = "predictor"
    resolve_hessian: str = "exact"
    fallback: str = "none"
    parallel: bool = True

    def __post_init__(self) -> None:
        if self.derivatives not in ("auto", "casadi", "torch", "structured"):
            raise ConfigError(f"sensitivity.derivatives must be auto, casadi, torch or structured, got {self.derivatives!r}")
        if self.resolve_start not in ("predictor", "point"):
            raise ConfigError(f"sensitivity.resolve_start must be predictor or point, got {self.resolve_start!r}")
        if self.resolve_hessian not in ("exact", "gauss_newton"):
            raise ConfigError(f"sensitivity.resolve_hessian must be exact or gauss_newton, got {self.resolve_hessian!r}")
        if self.resolve_hessian == "exact" and self.resolve_start != "predictor":
            raise ConfigError("sensitivity.resolve_hessian: exact needs resolve_start: predictor (both come from du0/de's pass)")
        if self.fallback not in ("none", "exact_hessian"):
            raise ConfigError(f"sensitivity.fallback must be none or exact_hessian, got {self.fallback!r}")
        if not self.eps > 0:
            raise ConfigError(f"sensitivity.eps must be > 0 Nm, got {self.eps}")
