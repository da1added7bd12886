"""Tests of the whatmatters command-line interface."""

from __future__ import annotations

import json

import pytest
from whatmatters.cli.main import main
from whatmatters.sim.environments import make_environment


def test_sim_prints_one_json_object(capsys):
    assert main(["sim", "--env-seed", "2003", "--seconds", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("sim_seconds", "wall_seconds", "realtime_factor", "final_q", "payload_mass"):
        assert key in out
    assert out["sim_seconds"] == pytest.approx(1.0)
    assert len(out["final_q"]) == 7
    assert out["payload_mass"] == pytest.approx(make_environment(2003).payload.mass, abs=1e-6)
    assert out["realtime_factor"] > 0


def test_bad_argument_gives_exit_code_and_message(capsys):
    assert main(["sim", "--seconds", "-1"]) == 2
    assert "--seconds" in capsys.readouterr().err


def test_bench_reports_realtime_factor(capsys):
    assert main(["bench", "--sim-seconds", "0.5", "--mpc-seconds", "0.5", "--skip-build", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sim_realtime_factor"] > 0


def test_episode_in_real_time_without_latency_is_the_lock_step_episode(capsys):
    assert main(["episode", "--model", "nominal", "--env-seed", "2002", "--seconds", "0.5", "--latency", "0", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["j_track"] == pytest.approx(out["j_track_lockstep"], rel=1e-12)  # the same loop (sums in another order)


def test_episode_options_of_the_real_time_loop_need_a_latency():
    assert main(["episode", "--seconds", "0.1", "--delay-compensation"]) == 2


def test_episode_prints_one_json_object(capsys):
    assert main(["episode", "--model", "nominal", "--env-seed", "2002", "--seconds", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("j_track", "rms_q", "rms_dq", "solve_ms_median", "solve_ms_p99", "fallbacks", "steps"):
        assert key in out
    assert out["steps"] == 50


def test_evaluate_prints_one_json_object(capsys):
    assert main(["evaluate", "--model", "nominal", "--envs", "2000,2001", "--seconds", "0.5", "--workers", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("j_track_mean", "j_track_std", "j_track_per_env", "fallbacks", "wall_s"):
        assert key in out
    assert set(out["j_track_per_env"]) == {"2000", "2001"}


def test_unknown_model_is_named(capsys):
    assert main(["episode", "--model", "bogus", "--seconds", "0.1"]) == 2
    assert "bogus" in capsys.readouterr().err


def test_collect_then_pretrain_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "bags"
    assert main(["collect", "--envs", "3,4", "--out", str(out), "--seconds", "0.6", "--workers", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bags"] == 2
    ckpt = tmp_path / "m.pt"
    assert main(["pretrain", "--data", str(out), "--out", str(ckpt), "--epochs", "2", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["transitions"] == 60 and ckpt.is_file()
    assert main(["episode", "--model", str(ckpt), "--env-seed", "3", "--seconds", "0.2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 10


def test_missing_checkpoint_is_named(tmp_path, capsys):
    assert main(["episode", "--model", str(tmp_path / "nope.pt"), "--seconds", "0.1"]) == 2
    assert "nope.pt" in capsys.readouterr().err


def test_pretrain_on_an_empty_folder_is_named(tmp_path, capsys):
    assert main(["pretrain", "--data", str(tmp_path), "--out", str(tmp_path / "m.pt")]) == 2
    assert str(tmp_path) in capsys.readouterr().err


def test_finetune_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "bags"
    assert main(["collect", "--envs", "5", "--out", str(out), "--seconds", "0.4", "--workers", "1", "--json"]) == 0
    capsys.readouterr()
    ckpt = tmp_path / "ft.pt"
    assert main(["finetune", "--data", str(out), "--out", str(ckpt), "--weighting", "stand", "--p", "2", "--epochs", "1", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["epochs"] == 1 and res["windows"] == 19 and ckpt.is_file()
    assert main(["finetune", "--data", str(out), "--out", str(ckpt), "--weighting", "ours", "--json"]) == 2
    assert "sensitivity.npz" in capsys.readouterr().err


def test_sigterm_stops_a_parallel_command_and_its_workers(tmp_path):
    """SIGTERM acts as Ctrl-C: the command exits with 130 and its worker processes are gone."""
    import os
    import signal
    import subprocess
    import sys
    import time

    cmd = [sys.executable, "-c", "from whatmatters.cli.main import main; raise SystemExit(main())",
           "evaluate", "--model", "nominal", "--envs", "eval:20", "--seconds", "10", "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def children() -> list[int]:
        try:
            with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as fh:
                return [int(p) for p in fh.read().split()]
        except OSError:
            return []

    deadline = time.monotonic() + 120
    while len(children()) < 2:  # the pool's workers (and the spawn resource tracker) are up
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() is not None else "no workers"
        time.sleep(0.1)
    time.sleep(1.0)
    workers = children()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 130
    assert "interrupted" in proc.stderr.read()
    time.sleep(1.0)
    alive = [p for p in workers if os.path.exists(f"/proc/{p}") and open(f"/proc/{p}/stat").read().split()[2] != "Z"]
    assert not alive, f"worker processes left running: {alive}"
