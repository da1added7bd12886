"""The experiment: the full code path on a tiny sweep, its report, and resuming."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from whatmatters.cli.main import main
from whatmatters.config import config_dir
from whatmatters.errors import ConfigError
from whatmatters.experiment.config import ExperimentConfig, load_experiment_config
from whatmatters.experiment.report import fig2_data
from whatmatters.executor import LocalExecutor
from whatmatters.experiment.signatures import DATA_SIGNATURE, base_eval_signature, data_signature, run_signature
from whatmatters.experiment.sweep import prepare_data
from whatmatters.dynamics.registry import base_checkpoint
from whatmatters.mpc.config import MpcConfig

TINY = """
base: base
data_envs: 1
data_seconds: 0.5
weightings: [ones, stand, norm, mpc_cost, ours, ours_avg]
rollouts: [1, 4]
seeds: [0]
eval_set: eval
eval_envs: 2
eval_seconds: 0.2
select_envs: 1
epoch_eval_envs: 1
workers: 1
finetune:
  epochs: 2
  batch_size: 8
"""


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("exp")
    (root / "exp.yaml").write_text(TINY)
    args = ["experiment", "--config", str(root / "exp.yaml"), "--out", str(root / "out"), "--docs", str(root / "docs"), "--json"]
    assert main(args) == 0
    return root, args


def test_fig2_json_has_the_documented_shape(sweep):
    root, _ = sweep
    fig = json.loads((root / "docs" / "results" / "fig2.json").read_text())
    assert set(fig) == {"selected", "selected_first", "final", "best5", "paired", "raw"}
    for kind in ("selected", "selected_first", "final", "best5"):
        assert set(fig[kind]) == {"ones", "stand", "norm", "mpc_cost", "ours", "ours_avg"}
        for w, per_p in fig[kind].items():
            assert set(per_p) == {"1", "4"}
            for entry in per_p.values():
                assert set(entry) == {"mean", "std", "runs"} and np.isfinite(entry["mean"])
        assert all(fig[kind]["stand"][p]["mean"] == pytest.approx(1.0) for p in ("1", "4"))
    assert set(fig["paired"]["ours"]["4"]) == {"ratio", "low", "high", "wins", "envs"} and fig["paired"]["ours"]["4"]["envs"] == 2
    assert len(fig["raw"]) == 12 and all(len(r["j_track"]) == 2 for r in fig["raw"])
    assert (root / "docs" / "figures" / "fig2.png").stat().st_size > 10_000
    md = (root / "docs" / "results.md").read_text()
    assert "whatmatters experiment --config" in md and "| ours |" in md
    assert "## Main result: selected checkpoints on the 2 `eval` environments" in md and "Secondary: best5, selection on the evaluation set" in md
    assert "How unequal the `ours` weights are" in md and "| 4 | " in md  # weight statistics per p
    assert "share of samples with u0 at a bound" in md  # the factors of S_hat


def test_the_report_shows_per_environment_costs(sweep):
    root, _ = sweep
    fig = json.loads((root / "docs" / "results" / "fig2.json").read_text())
    assert all(len(r["j_track_per_env"]) == len(r["j_track"]) and all(len(e) == 1 for e in r["j_track_per_env"]) for r in fig["raw"])
    md = (root / "docs" / "results.md").read_text()
    assert "## Per environment" in md and "of the sum" in md and "Closed-loop failures" in md
    assert "ours beats stand at p = 4" in md  # the claims with their intervals


def test_the_sweep_evaluates_the_exact_model_as_the_floor(sweep):
    root, _ = sweep
    exact = json.loads((root / "out" / "exact_eval.json").read_text())
    base = json.loads((root / "out" / "base_eval.json").read_text())
    assert exact["model"] == "exact" and set(exact["j_track_per_env"]) == set(base["j_track_per_env"])
    assert set(exact["bound_share_per_env"]) == set(base["bound_share_per_env"])
    md = (root / "docs" / "results.md").read_text()
    assert "## The achievable floor" in md and "Torque-bound" in md
    validation = json.loads((root / "out" / "exact_validation.json").read_text())
    assert validation["model"] == "exact" and set(validation["bound_share_per_env"]) == {"1000"}  # the selection environments
    assert "## Torque bounds: what the `ours` weights do there" in md and "| ours vs stand | 4 |" in md


def test_final_values_are_last_epochs_over_stand(sweep):
    root, _ = sweep
    fig = json.loads((root / "docs" / "results" / "fig2.json").read_text())
    raw = {(r["weighting"], r["p"]): r["j_track"] for r in fig["raw"]}
    for p in (1, 4):
        expected = raw[("ours", p)][-1] / raw[("stand", p)][-1]
        assert fig["final"]["ours"][str(p)]["mean"] == pytest.approx(expected, rel=1e-12)


def test_a_finished_sweep_is_not_recomputed_and_a_damaged_run_is(sweep, capsys):
    root, args = sweep
    (root / "out" / "runs" / "ours_p4_s0" / "result.json").write_text("{ truncated")
    capsys.readouterr()
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["computed"] == 1 and out["runs"] == 12


def test_report_only_labels_a_partial_sweep(sweep, capsys):
    root, args = sweep
    (root / "out" / "runs" / "ones_p1_s0" / "result.json").unlink()
    capsys.readouterr()
    assert main([*args, "--report-only"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["computed"] == 0 and out["runs"] == 11
    md = (root / "docs" / "results.md").read_text()
    assert "Partial sweep: 11 of 12 runs finished" in md
    fig = json.loads((root / "docs" / "results" / "fig2.json").read_text())
    assert "1" not in fig["selected"]["ones"] and fig["selected"]["ones"]["4"]["runs"] == 1


def test_each_run_selects_its_checkpoint_on_validation_and_evaluates_it_on_every_evaluation_environment(sweep):
    from whatmatters.dynamics.learned import LearnedDynamics
    from whatmatters.eval.evaluate import evaluate

    root, _ = sweep
    folder = root / "out" / "runs" / "ours_p4_s0"
    result = json.loads((folder / "result.json").read_text())
    validation = [e["validation"]["j_track_per_env"] for e in result["epochs"]]
    assert all(set(v) == {"1000"} for v in validation)  # select_envs: 1
    expected = int(np.argmin([v["1000"] for v in validation])) + 1
    sel = result["selected"]
    assert sel["epoch"] == expected
    assert set(sel["j_track_per_env"]) == {"2000", "2001"}  # all eval_envs, the first one reused from the epoch's evaluation
    assert sel["j_track_per_env"]["2000"] == result["epochs"][expected - 1]["j_track_per_env"]["2000"]
    chosen = LearnedDynamics.load(folder / "selected.pt")
    same = LearnedDynamics.load(folder / "checkpoints" / f"epoch_{expected}.pt")
    assert all(torch_equal(a, b) for a, b in zip(chosen.state_dict().values(), same.state_dict().values()))
    again = evaluate(str(folder / "selected.pt"), [2000, 2001], 0.2, workers=1).summary()["j_track_per_env"]
    assert again == sel["j_track_per_env"]  # a fresh evaluator reproduces both, the reused one included


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_selection_never_reads_the_evaluation_set(sweep, monkeypatch):
    """With evaluation-set costs that favour the last epoch and validation costs that favour the first,
    the run selects the first: only the validation environments decide."""
    from whatmatters.experiment import run as run_module
    from whatmatters.sim.simulator import SimConfig
    from whatmatters.trajectory.fourier import FourierConfig

    root, _ = sweep
    cfg = load_experiment_config(root / "exp.yaml")
    run_module.init_worker(cfg, str(root / "out" / "data"), str(base_checkpoint()), SimConfig.from_yaml(), FourierConfig.from_yaml())
    validation = {str(s) for s in cfg.select_seeds()}

    def fake(model, label, seeds):
        epoch = label.rsplit("@", 1)[1]
        e = 0 if epoch == "selected" else int(epoch)
        j = {str(s): (1.0 + e if str(s) in validation else 10.0 - e) for s in seeds}  # validation: epoch 1 best; eval: last best
        asked.append((epoch, list(seeds)))
        return {"j_track_mean": float(np.mean(list(j.values()))), "j_track_std": 0.0, "j_track_per_env": j,
                "bound_share_per_env": dict.fromkeys(j, 0.0), "fallbacks_per_env": dict.fromkeys(j, 0), "fallbacks": 0}

    asked: list = []
    monkeypatch.setattr(run_module, "evaluate_model", fake)
    monkeypatch.setattr(run_module, "report", lambda msg: None)
    result = run_module.run_one("stand", 1, 0, str(root / "fake_out"))
    assert [e["epoch"] for e in result["epochs"]] == [1, 2]
    assert result["selected"]["epoch"] == 1
    assert result["selected"]["j_track_per_env"] == {"2000": 9.0, "2001": 10.0}  # epoch 1's 2000, the selected run's 2001
    assert asked[-1] == ("selected", [2001])  # the first evaluation environment is not run again


def test_with_validation_as_the_evaluation_set_the_selection_episodes_are_reused(sweep, monkeypatch):
    from dataclasses import replace

    from whatmatters.experiment import run as run_module
    from whatmatters.sim.simulator import SimConfig
    from whatmatters.trajectory.fourier import FourierConfig

    root, _ = sweep
    cfg = replace(load_experiment_config(root / "exp.yaml"), eval_set="validation", eval_envs=2, epoch_eval_envs=0)
    run_module.init_worker(cfg, str(root / "out" / "data"), str(base_checkpoint()), SimConfig.from_yaml(), FourierConfig.from_yaml())
    asked: list = []

    def fake(model, label, seeds):
        asked.append((label.rsplit("@", 1)[1], list(seeds)))
        j = {str(s): 1.0 for s in seeds}
        return {"j_track_mean": 1.0, "j_track_std": 0.0, "j_track_per_env": j, "bound_share_per_env": dict.fromkeys(j, 0.0),
                "fallbacks_per_env": dict.fromkeys(j, 1), "fallbacks": len(j)}

    monkeypatch.setattr(run_module, "evaluate_model", fake)
    monkeypatch.setattr(run_module, "report", lambda msg: None)
    result = run_module.run_one("stand", 1, 0, str(root / "fake_out_validation"))
    assert asked[-1] == ("selected", [1001])  # 1000 was the selection environment: reused
    assert set(result["selected"]["j_track_per_env"]) == {"1000", "1001"} and result["selected"]["fallbacks"] == 2


def test_best5_takes_the_five_lowest_evaluations():
    def run(w, js):
        return {"weighting": w, "p": 1, "seed": 0, "epochs": [{"j_track_mean": j, "train_loss": 0.0} for j in js]}

    results = [run("stand", [10.0, 9.0, 8.0, 7.0, 6.0, 50.0]), run("ours", [5.0, 4.0, 3.0, 2.0, 1.0, 0.5])]
    fig = fig2_data(results, ["stand", "ours"], [1])
    assert fig["best5"]["ours"]["1"]["mean"] == pytest.approx(np.mean([0.5, 1, 2, 3, 4]) / 8.0)
    assert fig["best5"]["ours"]["1"]["runs"] == 5
    assert fig["final"]["ours"]["1"]["mean"] == pytest.approx(0.5 / 50.0)


@pytest.mark.parametrize(
    "text, key",
    [
        ("weightings: [ones, ours]\n", "stand"),
        ("epochs: 3\n", "epochs"),
        ("finetune:\n  objective: torque\n", "objective"),
        ("mpc:\n  horizn: 10\n", "horizn"),  # the mpc: overrides are checked key by key
        ("mpc:\n  rk4_jacobian: frozen\n", "rk4_jacobian"),
    ],
)
def test_config_errors_name_the_key(tmp_path, text, key):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match=key):
        load_experiment_config(bad)


def _config_with_mpc(tmp_path, monkeypatch, values: dict[str, str]) -> None:
    cfg_dir = tmp_path / "config"
    shutil.copytree(config_dir(), cfg_dir)
    mpc_yaml = cfg_dir / "mpc.yaml"
    text = mpc_yaml.read_text()
    for key, value in values.items():
        text = re.sub(rf"(?m)^{key}: .*$", f"{key}: {value}", text)
    mpc_yaml.write_text(text)
    monkeypatch.setenv("WHATMATTERS_CONFIG_DIR", str(cfg_dir))


def test_run_signatures_hold_the_mpc_settings_that_differ_from_the_reference(tmp_path, monkeypatch):
    """The default controller's settings (approximate RTI Jacobian, SPEED_ABS condensed QPs) are in the
    signature; those of the runs made before signatures held MPC settings add nothing, and compiler
    flags (same numbers to round-off) never do."""
    default = ExperimentConfig()
    assert run_signature(default, "ours")["mpc"] == {"rk4_jacobian": "first_stage", "hpipm_mode": "SPEED_ABS", "qp_cond_n": 4}
    _config_with_mpc(tmp_path, monkeypatch, {"rk4_jacobian": "exact", "hpipm_mode": "SPEED", "qp_cond_n": "0", "compile_flags": '"-O1"'})
    assert "mpc" not in run_signature(default, "stand")
    assert "mpc" not in base_eval_signature(default) and "mpc" not in data_signature(default)


def test_data_made_with_other_settings_is_refused_before_anything_is_collected(tmp_path, monkeypatch):
    cfg = ExperimentConfig(data_envs=1, data_seconds=0.5)
    data = tmp_path / "data"
    data.mkdir()
    other = {**data_signature(cfg), "mpc": {"rk4_jacobian": "exact"}, "data_envs": 3}
    (data / DATA_SIGNATURE).write_text(json.dumps(other))
    with pytest.raises(ConfigError, match=r"data_envs, mpc differ"):
        prepare_data(cfg, data, LocalExecutor(1), progress=False)
    assert sorted(p.name for p in data.iterdir()) == [DATA_SIGNATURE]  # nothing collected, nothing lost
    assert json.loads((data / DATA_SIGNATURE).read_text()) == other


def test_the_sweep_records_what_its_data_and_base_evaluation_were_made_with(sweep):
    root, _ = sweep
    cfg = load_experiment_config(root / "exp.yaml")
    assert json.loads((root / "out" / "data" / DATA_SIGNATURE).read_text()) == data_signature(cfg)
    assert json.loads((root / "out" / "base_eval.json").read_text())["signature"] == base_eval_signature(cfg)


def test_run_signatures_hold_what_each_run_depends_on(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text("finetune:\n  ours_scaling: global\n")
    default = load_experiment_config(path)
    path.write_text("finetune:\n  ours_scaling: per_state\n")
    per_state = load_experiment_config(path)
    assert run_signature(per_state, "ours")["finetune"]["ours_scaling"] == "per_state"
    assert run_signature(per_state, "ours") != run_signature(default, "ours")
    # stand does not use the setting, and runs made before it existed (global) stay valid
    assert run_signature(per_state, "stand") == run_signature(default, "stand")
    assert "ours_scaling" not in run_signature(default, "ours_avg")["finetune"]
    path.write_text("finetune:\n  ours_action: per_joint\n")
    assert run_signature(load_experiment_config(path), "ours")["finetune"]["ours_action"] == "per_joint"
    assert run_signature(load_experiment_config(path), "stand") == run_signature(default, "stand")
    path.write_text("finetune:\n  ours_scaling: per_joint\n")
    with pytest.raises(ConfigError, match="ours_scaling"):
        load_experiment_config(path)
    path.write_text("finetune:\n  ours_action: bogus\n")
    with pytest.raises(ConfigError, match="ours_action"):
        load_experiment_config(path)


def test_the_shipped_config_and_its_quick_section_load():
    full, quick = load_experiment_config(), load_experiment_config(quick=True)
    assert len(full.runs()) == 6 * 3 * 3
    assert quick.eval_envs < full.eval_envs and len(quick.runs()) < len(full.runs())
    # the committed results (docs/results.md) were made with the controller's defaults: no mpc: overrides, --quick neither
    assert full.mpc_config() == quick.mpc_config() == MpcConfig.from_yaml()


@pytest.mark.parametrize(
    "text, key",
    [("eval_envs: 101\n", "eval_envs"), ("select_envs: 21\n", "select_envs"), ("epoch_eval_envs: 101\n", "epoch_eval_envs"), ("select_envs: 0\n", "select_envs")],
)
def test_environment_counts_beyond_their_sets_are_named(tmp_path, text, key):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match=key):
        load_experiment_config(bad)


def test_mpc_overrides_are_applied(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text("mpc:\n  rk4_jacobian: exact\n  hpipm_mode: SPEED\n  qp_cond_n: 0\n  horizon: 10\n")
    cfg = load_experiment_config(path)
    assert (cfg.mpc_config().rk4_jacobian, cfg.mpc_config().horizon) == ("exact", 10)
    assert run_signature(cfg, "stand")["mpc"] == {"horizon": 10}


def test_only_the_shipped_sweep_writes_docs_by_default(tmp_path):
    """A probe with another config, --quick or the validation set must not overwrite docs/results.md."""
    from argparse import Namespace
    from dataclasses import replace

    from whatmatters.cli.experiment_cmd import _is_shipped_sweep

    cfg = load_experiment_config()
    (tmp_path / "exp.yaml").write_text(TINY)
    shipped = str(config_dir() / "experiment.yaml")
    assert _is_shipped_sweep(Namespace(quick=False, config=None), cfg)
    assert _is_shipped_sweep(Namespace(quick=False, config=shipped), cfg)
    assert not _is_shipped_sweep(Namespace(quick=False, config=str(tmp_path / "exp.yaml")), cfg)
    assert not _is_shipped_sweep(Namespace(quick=True, config=None), cfg)
    assert not _is_shipped_sweep(Namespace(quick=False, config=None), replace(cfg, eval_set="validation", eval_envs=20, epoch_eval_envs=20))
