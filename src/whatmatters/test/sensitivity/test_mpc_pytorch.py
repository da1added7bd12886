"""mpc.pytorch's LQR-layer du0/de equals our Riccati pass without the second-order terms."""

from __future__ import annotations

import numpy as np
from whatmatters.sensitivity.compute import SensitivityComputer
from whatmatters.sensitivity.kkt import active_set, first_input_sensitivity
from whatmatters.sensitivity.mpc_pytorch import du0_de_mpc_pytorch
from whatmatters.trajectory.fourier import sample_fourier_trajectory


def test_gauss_newton_sensitivity_matches_mpc_pytorch(nominal, mpc_config, params):
    computer = SensitivityComputer(nominal, mpc_config, params.torque_limits)
    tr = sample_fourier_trajectory(3)
    ref = tr.state(1.0 + 0.02 * np.arange(13))
    x0 = tr.state(1.0)
    x0[:7] += 0.02
    s = computer.compute(x0, ref)
    f, a, b = computer.derivatives.jacobians(s.x[:12], s.u, np.zeros(0))
    u0, theirs = du0_de_mpc_pytorch(s.x, s.u, ref, f, a, b, mpc_config, params.torque_limits)
    np.testing.assert_allclose(u0, s.u[0], atol=1e-8)
    active = active_set(s.u, params.torque_limits)
    gn = first_input_sensitivity(a, b, np.zeros((12, 21, 21)), computer.q_w, computer.r_w, computer.qn_w, active).du0_de
    np.testing.assert_allclose(theirs, gn, rtol=1e-8, atol=1e-9 * np.abs(gn).max())
    # the exact Hessian's second-order dynamics terms matter: the two differ clearly
    assert np.abs(s.du0_de - gn).max() > 1e-2 * np.abs(gn).max()
