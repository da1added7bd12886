"""Tests of closed-loop episodes and the evaluation harness."""

from __future__ import annotations

import numpy as np
import pytest
from whatmatters.eval.evaluate import Evaluator, evaluate
from whatmatters.mpc.config import MpcConfig
from whatmatters.sim.environments import environment_seeds, make_environment
from whatmatters.sim.simulator import SimConfig
from whatmatters.trajectory.fourier import FourierConfig, sample_fourier_trajectory


@pytest.fixture(scope="module")
def evaluator():
    return Evaluator("nominal", MpcConfig.from_yaml(), SimConfig.from_yaml(), FourierConfig.from_yaml())


def test_j_track_recomputed_independently(evaluator, mpc_config):
    res = evaluator.episode(2004, 4.0)
    env = make_environment(2004)
    ref = sample_fourier_trajectory(env.reference_seed, FourierConfig.from_yaml())
    total = 0.0
    for i, t in enumerate(res.t):
        q_ref, qd_ref, _ = ref.evaluate(t)
        eq, eqd = res.x[i, :7] - q_ref, res.x[i, 7:] - qd_ref
        total += sum(mpc_config.q_weights[j] * eq[j] ** 2 + mpc_config.qd_weights[j] * eqd[j] ** 2 for j in range(7))
    assert len(res.t) == 201 and res.t[-1] == pytest.approx(4.0)
    assert res.j_track == pytest.approx(total / len(res.t), rel=1e-12)


def test_episode_runs_at_50hz_and_records_everything(evaluator):
    res = evaluator.episode(2005, 1.0)
    assert res.tau.shape == (50, 7) and res.x.shape == (51, 14) and res.predictions.shape == (50, 13, 14)
    np.testing.assert_allclose(np.diff(res.t), 0.02)
    np.testing.assert_allclose(res.x[0], res.x_ref[0], atol=1e-12)  # starts on the reference, at rest


def test_the_bound_share_counts_the_steps_with_a_torque_at_the_datasheet_limit(evaluator):
    """Environment 2008 (a heavy payload far out) drives the base model's wrist into its 12 Nm limit; the Panda's datasheet limits are the truth."""
    res = Evaluator("base", MpcConfig.from_yaml(), SimConfig.from_yaml(), FourierConfig.from_yaml()).episode(2008, 4.0)
    limits = np.array([87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0])
    by_hand = np.mean([any(abs(t[j]) >= 0.999 * limits[j] for j in range(7)) for t in res.tau])
    assert 0.0 < res.bound_share == pytest.approx(by_hand, abs=1e-12)
    assert res.summary()["bound_share"] == res.bound_share
    assert evaluator.episode(2004, 1.0).bound_share < res.bound_share


def test_exact_model_tracks_clearly_better_than_nominal(evaluator):
    env_seed = 2001  # 2.6 kg payload
    nominal = evaluator.episode(env_seed, 10.0)
    exact = Evaluator("exact", MpcConfig.from_yaml(), SimConfig.from_yaml(), FourierConfig.from_yaml()).episode(env_seed, 10.0)
    assert exact.fallbacks == 0
    assert exact.j_track < 0.1 * nominal.j_track


def test_nominal_has_zero_fallbacks_on_the_evaluation_set():
    result = evaluate("nominal", environment_seeds("eval:20"), seconds=10.0, workers=2)
    summary = result.summary()
    assert summary["envs"] == 20
    assert summary["fallbacks"] == 0
    assert np.isfinite(summary["j_track_mean"]) and summary["j_track_mean"] > 0


def test_evaluation_is_reproducible_in_process_and_in_workers():
    a = evaluate("nominal", [2006, 2007], seconds=2.0, workers=1).summary()
    b = evaluate("nominal", [2006, 2007], seconds=2.0, workers=2).summary()
    assert a["j_track_per_env"] == b["j_track_per_env"]
