"""Tests of the batch computation over bags, its sidecar files, and Fig. 1."""

from __future__ import annotations

import numpy as np
import pytest
from whatmatters.cli.main import main
from whatmatters.data.bags import read_episode
from whatmatters.data.collect import CollectConfig, collect
from whatmatters.sensitivity.batch import STATE_LABELS, compute_episode, load_sidecar
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


def test_cli_writes_sidecars_and_the_figure(bags, tmp_path, capsys):
    assert main(["sensitivities", "--data", str(bags), "--model", "nominal", "--max-steps", "3", "--workers", "1", "--json"]) == 0
    assert __import__("json").loads(capsys.readouterr().out)["converged"] == 6
    side = load_sidecar(bags / "env_0012")
    assert side["s_hat"].shape == (3, 12, 14) and side["dj_du0_eff"].shape == (3, 7)
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
