"""The array backends' shared state."""

from __future__ import annotations

import numpy as np
import torch

from whatmatters.dynamics.backend import backend_for
from whatmatters.dynamics.nominal import nominal_model


def test_torch_constants_cache_stays_bounded_over_repeated_dynamics_calls() -> None:
    """Every call passes fresh arrays for the same constants; the cache must not grow with the calls."""
    model = nominal_model()
    rng = np.random.default_rng(0)
    q, qd = (torch.as_tensor(rng.normal(size=(4, 7))) for _ in range(2))
    be = backend_for(q)
    model.mass_matrix_and_bias(q, qd)
    size = len(be._cache)
    for _ in range(5):
        model.mass_matrix_and_bias(q, qd)
    assert len(be._cache) == size


def test_torch_constant_is_a_copy_keyed_by_value() -> None:
    be = backend_for(torch.zeros(1, dtype=torch.float64))
    a = np.array([1.0, 2.0, 3.0])
    t = be.const(a)
    assert be.const(a.copy()) is t  # the same content: the same tensor
    a[0] = 5.0  # a later change of the array reaches neither the tensor nor its cache entry
    assert t[0].item() == 1.0
    assert be.const(a)[0].item() == 5.0
