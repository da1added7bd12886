"""The fine-tuning trainer: its loss, that it learns, seeding and resuming."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from whatmatters.data.dataset import transitions_from_episodes
from whatmatters.dynamics.learned import LearnedDynamics
from whatmatters.dynamics.registry import base_checkpoint
from whatmatters.train.finetune import FinetuneConfig, finetune, rollout_loss, tensors
from whatmatters.train.weighting import make_windows, weights

from ..conftest import known_model_episodes


@pytest.fixture(scope="module")
def windows(nominal, params):
    """4-step windows of a known model (2 kg payload, armature, damping) under random torques."""
    return make_windows(transitions_from_episodes(known_model_episodes(params, 7, 2, 40), nominal, 15), 4)


def _batch(win, s):
    return tensors(win, s, torch.float64)


def test_loss_is_zero_on_the_models_own_rollout_and_quadratic_in_s(windows):
    model = LearnedDynamics.load(base_checkpoint())
    s = weights("stand", windows, "position")
    batch = _batch(windows, s)
    with torch.no_grad():
        own = model.rollout(batch["x0"], batch["u"], model.encoder(batch["history"]), 0.02)
        assert float(rollout_loss(model, {**batch, "x_true": own}, 0.02)) == pytest.approx(0.0, abs=1e-20)
        loss = float(rollout_loss(model, batch, 0.02))
        loss2 = float(rollout_loss(model, {**batch, "s": 2.0 * batch["s"]}, 0.02))
    err = (own - batch["x_true"]).numpy()
    expected = np.mean(np.sum((s * err) ** 2, axis=(1, 2))) / (4 * 7)  # 7 position states in the objective
    assert loss == pytest.approx(expected, rel=1e-10)
    assert loss2 == pytest.approx(4.0 * loss, rel=1e-12)


CFG = FinetuneConfig(epochs=3, batch_size=16, lr=1e-3)


def test_finetuning_reduces_the_weighted_loss(windows, tmp_path):
    s = weights("stand", windows, "position")
    history = finetune(base_checkpoint(), windows, s, tmp_path / "run", CFG, 0, 0.02)
    model = LearnedDynamics.load(tmp_path / "run" / "model.pt")
    base = LearnedDynamics.load(base_checkpoint())
    with torch.no_grad():
        after = float(rollout_loss(model, _batch(windows, s), 0.02))
        before = float(rollout_loss(base, _batch(windows, s), 0.02))
    assert len(history) == 3
    assert after < 0.7 * before


def test_an_interrupted_run_resumes_to_the_same_result(windows, tmp_path):
    s = weights("norm", windows, "position")
    full = finetune(base_checkpoint(), windows, s, tmp_path / "full", CFG, 3, 0.02, lambda m, e: {"probe": float(m.residual.flat_parameters()[0])})

    def crash(model, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return {"probe": float(model.residual.flat_parameters()[0])}

    with pytest.raises(KeyboardInterrupt):
        finetune(base_checkpoint(), windows, s, tmp_path / "cut", CFG, 3, 0.02, crash)
    resumed = finetune(base_checkpoint(), windows, s, tmp_path / "cut", CFG, 3, 0.02, lambda m, e: {"probe": float(m.residual.flat_parameters()[0])})
    assert [h["probe"] for h in resumed] == [h["probe"] for h in full]
    a = LearnedDynamics.load(tmp_path / "full" / "model.pt").residual.flat_parameters()
    b = LearnedDynamics.load(tmp_path / "cut" / "model.pt").residual.flat_parameters()
    np.testing.assert_array_equal(a, b)


def test_weights_of_the_wrong_shape_are_rejected(windows, tmp_path):
    with pytest.raises(ValueError, match="do not match"):
        finetune(base_checkpoint(), windows, np.ones((3, 4, 14)), tmp_path / "bad", CFG, 0, 0.02)
