"""Tests of pretraining: it learns, it is seeded, and it resumes after an interruption."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from whatmatters.data.dataset import transitions_from_episodes
from whatmatters.dynamics.learned import LearnedDynamics
from whatmatters.train import pretrain as pretrain_mod
from whatmatters.train.pretrain import PretrainConfig, pretrain

from ..conftest import known_model_episodes


@pytest.fixture(scope="module")
def data(nominal, params):
    """Transitions of a known model (payload, armature, damping) under random torques."""
    return transitions_from_episodes(known_model_episodes(params, 5, 4, 80), nominal, 15)


CFG = PretrainConfig(epochs=6, batch_size=64, lr=3e-3, seed=1, val_fraction=0.25)


def test_pretraining_reduces_the_torque_loss(data, tmp_path):
    from dataclasses import replace

    res = pretrain(data, tmp_path / "m.pt", replace(CFG, epochs=40), progress=False)
    history = LearnedDynamics.load(res.path).metadata["history"]
    assert history[-1]["train"] < 0.5 * history[0]["train"]
    assert res.samples_per_s > 0


def test_interrupted_run_resumes_to_the_same_model(data, tmp_path, monkeypatch):
    ref = pretrain(data, tmp_path / "ref.pt", CFG, progress=False)
    real_save = pretrain_mod.atomic_torch_save
    calls = {"n": 0}

    def crash_after_three(obj, path):
        real_save(obj, path)
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(pretrain_mod, "atomic_torch_save", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        pretrain(data, tmp_path / "run.pt", CFG, progress=False)
    assert not (tmp_path / "run.pt").exists() and (tmp_path / "run.pt.state").exists()
    monkeypatch.setattr(pretrain_mod, "atomic_torch_save", real_save)
    res = pretrain(data, tmp_path / "run.pt", CFG, progress=False)
    a, b = LearnedDynamics.load(ref.path), LearnedDynamics.load(res.path)
    np.testing.assert_array_equal(a.residual.flat_parameters(), b.residual.flat_parameters())
    assert a.metadata["history"] == b.metadata["history"]
