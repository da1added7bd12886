"""Tests of closed-loop collection into bags."""

from __future__ import annotations

import numpy as np
from whatmatters.data.bags import read_episode
from whatmatters.data.collect import CollectConfig, collect
from whatmatters.eval.evaluate import Evaluator
from whatmatters.mpc.config import MpcConfig
from whatmatters.sim.environments import make_environment
from whatmatters.sim.simulator import SimConfig
from whatmatters.trajectory.fourier import FourierConfig


def test_collected_bag_matches_the_closed_loop_and_resumes(tmp_path):
    cfg = CollectConfig(seconds=1.0, noise_std=(0.5,) * 7, noise_seed=3)
    paths = collect("nominal", [7, 8], tmp_path, cfg, workers=1, progress=False)
    assert [p.name for p in paths] == ["env_0007", "env_0008"]
    ep = read_episode(paths[0])
    assert ep.x.shape == (51, 14) and ep.tau.shape == (50, 7)
    assert ep.payload == make_environment(7).payload
    # the bag holds what the simulator did: replaying the recorded torques reproduces the states
    ev = Evaluator("nominal", MpcConfig.from_yaml(), SimConfig.from_yaml(), FourierConfig.from_yaml())
    sim = ev.sim
    sim.reset(make_environment(7), ep.x[0, :7], ep.x[0, 7:])
    for t in range(50):
        st = sim.step(ep.tau[t])
        np.testing.assert_allclose(np.concatenate([st.q, st.qd]), ep.x[t + 1], atol=1e-12)
    assert np.all(np.isfinite(ep.x_ref[:-1]))
    # a finished bag's MCAP file has the bag's name, as its metadata says; no temporary folder is left
    assert sorted(f.name for f in paths[0].iterdir()) == ["env_0007.mcap", "metadata.yaml"]
    assert "env_0007.mcap" in (paths[0] / "metadata.yaml").read_text() and "partial" not in (paths[0] / "metadata.yaml").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["env_0007", "env_0008"]
    # a second call keeps the finished bags untouched
    mtime = (paths[0] / "metadata.yaml").stat().st_mtime_ns
    collect("nominal", [7, 8], tmp_path, cfg, workers=1, progress=False)
    assert (paths[0] / "metadata.yaml").stat().st_mtime_ns == mtime


def test_noise_is_seeded_and_applied(tmp_path):
    quiet = collect("nominal", [9], tmp_path / "a", CollectConfig(seconds=0.5, noise_std=(0.0,) * 7), workers=1, progress=False)
    noisy = collect("nominal", [9], tmp_path / "b", CollectConfig(seconds=0.5, noise_std=(2.0,) * 7), workers=1, progress=False)
    again = collect("nominal", [9], tmp_path / "c", CollectConfig(seconds=0.5, noise_std=(2.0,) * 7), workers=1, progress=False)
    a, b, c = (read_episode(p[0]).tau for p in (quiet, noisy, again))
    assert np.abs(a[0] - b[0]).max() > 0.1
    np.testing.assert_array_equal(b, c)
