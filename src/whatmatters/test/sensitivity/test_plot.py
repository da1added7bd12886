"""The S_hat map draws the mean |S_hat| of the finite samples."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from whatmatters.sensitivity.plot import draw_sensitivity_map  # noqa: E402


def test_map_is_the_mean_absolute_sensitivity_without_nan_samples() -> None:
    rng = np.random.default_rng(0)
    s = rng.normal(size=(5, 12, 14))
    s[2, 3, 4] = np.nan  # a failed sample is left out whole
    fig, ax = plt.subplots()
    draw_sensitivity_map(ax, s, tuple(f"x{i}" for i in range(14)))
    expected = np.abs(s[[0, 1, 3, 4]]).mean(0).T  # (nx, N): states down, horizon across
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), expected, rtol=1e-12)
    assert "4 samples" in ax.get_title()
    plt.close(fig)
