"""Executor settings (config/executor.yaml, an experiment's executor: section, the command-line flags)."""

from __future__ import annotations

import argparse

import pytest

from whatmatters.cli.executor_args import add_executor_args, executor_config
from whatmatters.errors import ConfigError
from whatmatters.executor import ExecutorConfig, LocalExecutor, make_executor
from whatmatters.experiment.config import load_experiment_config


def _args(*flags: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_executor_args(p)
    return p.parse_args(list(flags))


def test_the_shipped_config_runs_locally():
    cfg = ExecutorConfig.from_yaml()
    assert cfg.engine == "local" and cfg.address == ""
    ex = make_executor(cfg)
    assert isinstance(ex, LocalExecutor) and ex.workers >= 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"engine": "dask"}, "executor.engine must be one of local, ray"), ({"address": "auto"}, "executor.address"), ({"max_retries": -1}, "max_retries")],
)
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ExecutorConfig(**kwargs)


def test_flags_override_the_file():
    cfg = executor_config(_args("--executor", "ray", "--ray-address", "10.0.0.5:6379", "--workers", "3"))
    assert (cfg.engine, cfg.address, cfg.workers) == ("ray", "10.0.0.5:6379", 3)
    assert executor_config(_args()) == ExecutorConfig.from_yaml()


def test_a_ray_address_without_the_ray_engine_is_refused():
    with pytest.raises(ConfigError, match="--ray-address needs --executor ray"):
        executor_config(_args("--ray-address", "auto"))


def test_an_experiments_executor_section_and_workers_apply(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("workers: 4\nexecutor:\n  engine: ray\n  address: auto\n")
    cfg = load_experiment_config(path)
    assert cfg.executor_config() == ExecutorConfig(engine="ray", address="auto", workers=4)
    assert cfg.executor_config(workers=2).workers == 2
    assert cfg.to_dict()["executor"] == {"engine": "ray", "address": "auto"}


def test_an_unknown_key_in_an_experiments_executor_section_is_named(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("executor:\n  nodes: 3\n")
    with pytest.raises(ConfigError, match=r"exp.yaml: experiment \(executor\): unknown key 'nodes'"):
        load_experiment_config(path)


def test_the_core_does_not_import_ray_unless_asked():
    import subprocess
    import sys

    code = (
        "import sys; import whatmatters.executor, whatmatters.experiment.sweep, whatmatters.cli.main; "
        "whatmatters.executor.make_executor(); assert 'ray' not in sys.modules, 'ray was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
