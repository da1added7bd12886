"""Tests of the batch computation over bags, its sidecar files, and Fig. 1."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from whatmatters.cli.main import main
from whatmatters.data.bags import read_episode
from whatmatters.data.collect import CollectConfig, collect
from whatmatters.executor import TaskError
from whatmatters.sensitivity import batch
from whatmatters.sensitivity.batch import STATE_LABELS, compute_bag_dir, compute_episode, factor_statistics, load_sidecar, segments
from whatmatters.sensitivity.compute import SensitivityComputer


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    out = tmp_path_factory.mktemp("bags")
    collect("nominal", [11, 12], out, CollectConfig(seconds=0.3), workers=1, progress=False)
    return out


def test_episode_samples_equal_single_computations(bags, nominal, mpc_config, params):
    computer = SensitivityComputer(nominal, mpc_config, params.torque_limits)
    ep = read_episode(bags / "env_0011")
    res = compute_episode(computer, ep, max_steps=4)
    assert res["ok"].all() and res["s_hat"].shape == (4, 12, 14)
    for t in (0, 3):
        single = computer.compute(ep.x[t], ep.x_ref_horizon[t])
        np.testing.assert_allclose(res["s_hat"][t], single.s_hat, rtol=1e-8, atol=1e-8 * np.abs(single.s_hat).max())
    assert tuple(res["labels"]) == STATE_LABELS


def test_segments_cover_the_steps_in_order():
    assert segments(250, 100) == [(0, 100), (100, 200), (200, 250)]
    assert segments(100, 100) == [(0, 100)] and segments(3, 100) == [(0, 3)]
    assert segments(0, 100) == [(0, 0)]  # an empty episode still gets its (empty) sidecar
    with pytest.raises(ValueError, match="segment"):
        segments(10, 0)


def test_a_bag_in_segments_equals_the_bag_whole(bags, tmp_path, nominal, mpc_config, params):
    """Segments (each first step cold) give the whole episode's samples to the SQP's tolerance."""
    shutil.copytree(bags / "env_0011", tmp_path / "env_0011", ignore=shutil.ignore_patterns("sensitivity.npz"))
    [(_, ok, n)] = compute_bag_dir(tmp_path, "nominal", workers=1, max_steps=10, progress=False, segment_steps=4)
    assert ok == n == 10
    side = load_sidecar(tmp_path / "env_0011")
    whole = compute_episode(SensitivityComputer(nominal, mpc_config, params.torque_limits), read_episode(bags / "env_0011"), max_steps=10)
    for key in ("s_hat", "du0_de", "dj_du0_eff"):
        scale = np.abs(whole[key]).max()
        np.testing.assert_allclose(side[key], whole[key], rtol=0, atol=1e-8 * scale, err_msg=key)
    assert tuple(side["labels"]) == STATE_LABELS


def test_a_failed_segment_is_named_and_the_other_bags_are_written(bags, tmp_path, monkeypatch):
    for name in ("env_0011", "env_0012"):
        shutil.copytree(bags / name, tmp_path / name, ignore=shutil.ignore_patterns("sensitivity.npz"))
    real = batch.compute_episode

    def failing(computer, ep, stop=None, start=0):
        if ep.path.name == "env_0012" and start == 2:
            raise RuntimeError("solver exploded")
        return real(computer, ep, stop, start)

    monkeypatch.setattr(batch, "compute_episode", failing)
    with pytest.raises(TaskError, match=r"env_0012\[2:4\]"):
        compute_bag_dir(tmp_path, "nominal", workers=1, max_steps=4, progress=False, segment_steps=2)
    assert load_sidecar(tmp_path / "env_0011")["ok"].all()
    assert not (tmp_path / "env_0012" / "sensitivity.npz").exists()  # never half a bag


def test_cli_writes_sidecars_and_the_figure(bags, tmp_path, capsys):
    assert main(["sensitivities", "--data", str(bags), "--model", "nominal", "--max-steps", "3", "--workers", "1", "--json"]) == 0
    assert __import__("json").loads(capsys.readouterr().out)["converged"] == 6
    side = load_sidecar(bags / "env_0012")
    assert side["s_hat"].shape == (3, 12, 14) and side["dj_du0_eff"].shape == (3, 7)
    assert side["du0_de_relaxed"].shape == side["du0_de"].shape == (3, 7, 12, 14)
    png = tmp_path / "fig1.png"
    assert main(["plot-sensitivity", "--data", str(bags), "--out", str(png), "--json"]) == 0
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_missing_sidecar_is_named(tmp_path, bags, capsys):
    other = tmp_path / "fresh"
    collect("nominal", [13], other, CollectConfig(seconds=0.1), workers=1, progress=False)
    assert main(["plot-sensitivity", "--data", str(other), "--out", str(tmp_path / "x.png")]) == 2
    assert "sensitivity.npz" in capsys.readouterr().err


def test_dataset_builder_reads_the_sidecars(bags, nominal):
    from whatmatters.data.dataset import load_transitions

    main(["sensitivities", "--data", str(bags), "--model", "nominal", "--max-steps", "2", "--workers", "1"])
    data = load_transitions(bags, nominal, 15, sensitivities=True)
    assert data.s_hat is not None and data.s_hat.shape == (len(data), 12, 14)
    first = data.step == 0
    np.testing.assert_array_equal(data.s_hat[first & (data.episode == 0)][0], load_sidecar(bags / "env_0011")["s_hat"][0])
    assert np.isnan(data.s_hat[data.step >= 2]).all()  # steps beyond --max-steps have none
    # no bound active in these episodes: eq. 5 with released bound rows is S_hat itself
    relaxed = load_transitions(bags, nominal, 15, sensitivities=True, action_weights="bound_relaxed").s_hat
    ok = ~np.isnan(data.s_hat).any(axis=(1, 2))
    np.testing.assert_allclose(relaxed[ok], data.s_hat[ok], rtol=1e-12, atol=0)


def test_factor_statistics_of_synthetic_sidecars(tmp_path):
    rng = np.random.default_rng(4)
    effs, rows = [], []
    for i, steps in enumerate((5, 7)):
        bag = tmp_path / f"env_{i}"
        bag.mkdir()
        eff = rng.uniform(0.1, 1.0, (steps, 7))
        du = rng.normal(size=(steps, 7, 12, 14))
        du[0, 5] = 0.0  # joint 6 at a bound in the first step of each bag
        ok = np.ones(steps, dtype=bool)
        ok[-1] = False  # a step that did not converge is not counted
        np.savez(bag / "sensitivity.npz", dj_du0_eff=eff, du0_de=du, ok=ok, s_hat=np.zeros((steps, 12, 14)))
        effs.append(eff[ok])
        rows.append(du[ok])
    st = factor_statistics(tmp_path)
    eff = np.concatenate(effs)
    np.testing.assert_allclose(st["eff_mean"], eff.mean(0), rtol=1e-12)
    np.testing.assert_allclose(st["eff_cv"], eff.std(0) / eff.mean(0), rtol=1e-12)
    assert st["at_bound"][5] == pytest.approx(2 / 10) and st["at_bound"][0] == 0.0
    first = np.abs(np.concatenate(rows)[:, :, 0, :7])
    assert st["du0_de_cv_median"][0] == pytest.approx(np.median(first.std(0) / first.mean(0)))
    assert factor_statistics(tmp_path / "env_0" / "none") == {}
