"""The per-bag figure (whatmatters.data.episode_plot, ``whatmatters plot-episode``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from whatmatters.cli.main import main
from whatmatters.data.bags import read_episode
from whatmatters.data.collect import CollectConfig, collect
from whatmatters.data.episode_plot import plot_episode
from whatmatters.sensitivity.batch import compute_bag_dir


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    out = tmp_path_factory.mktemp("plot")
    return collect("nominal", [31], out, CollectConfig(seconds=0.6), workers=1, progress=False)[0]


def test_the_figure_and_its_figures_come_from_the_bag(bag, tmp_path, params):
    png = tmp_path / "a.png"
    res = plot_episode(bag, png, params.torque_limits)
    ep = read_episode(bag)
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 20_000
    assert res["steps"] == len(ep.tau) == 30 and res["s_hat_steps"] == 0
    assert np.isfinite(ep.x_ref[:-1]).all() and np.isnan(ep.x_ref[-1]).all()  # the last state has no reference
    rms = np.sqrt(np.mean((ep.x[:-1, :7] - ep.x_ref[:-1, :7]) ** 2, axis=0))
    np.testing.assert_allclose(res["rms_tracking_rad"], rms, rtol=1e-12)
    assert res["at_bound_steps"] == (np.abs(ep.tau) >= params.torque_limits * (1 - 1e-6)).sum(axis=0).tolist()


def test_s_hat_is_drawn_where_the_bag_has_it(bag, tmp_path, params, capsys):
    compute_bag_dir(bag.parent, "nominal", workers=1, max_steps=4, progress=False)
    assert main(["plot-episode", str(bag), "--out", str(tmp_path / "s.png"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["s_hat_steps"] == 4


def test_the_default_figure_goes_beside_the_bag(bag, capsys):
    assert main(["plot-episode", str(bag)]) == 0
    assert (bag.parent / f"{bag.name}.png").is_file()


def test_a_damaged_bag_is_named(tmp_path, capsys):
    broken = tmp_path / "env_0099"
    broken.mkdir()
    (broken / "env_0099.mcap").write_bytes(b"not an mcap file")
    assert main(["plot-episode", str(broken)]) == 2
    assert "env_0099" in capsys.readouterr().err
