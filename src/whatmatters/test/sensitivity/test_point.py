"""Warm starts: a solution shifted by the steps between two control steps."""

from __future__ import annotations

import numpy as np
import pytest
from whatmatters.sensitivity.point import shifted


def test_shifted_by_one_stage_repeats_the_last():
    x, u = np.arange(5.0)[:, None] * [1.0, 10.0], np.arange(4.0)[:, None]
    x_init, u_init = shifted(x, u)
    np.testing.assert_array_equal(x_init[:, 0], [1, 2, 3, 4, 4])
    np.testing.assert_array_equal(u_init[:, 0], [1, 2, 3, 3])


def test_shifted_by_several_stages_and_past_the_horizon():
    x, u = np.arange(5.0)[:, None], np.arange(4.0)[:, None]
    x_init, u_init = shifted(x, u, stages=2)
    np.testing.assert_array_equal(x_init[:, 0], [2, 3, 4, 4, 4])
    np.testing.assert_array_equal(u_init[:, 0], [2, 3, 3, 3])
    x_far, u_far = shifted(x, u, stages=9)  # every stage from the last one
    np.testing.assert_array_equal(x_far[:, 0], [4] * 5)
    np.testing.assert_array_equal(u_far[:, 0], [3] * 4)
    with pytest.raises(ValueError, match=">= 1"):
        shifted(x, u, stages=0)
