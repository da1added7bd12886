"""Tests of locating acados: the wheel, a user's own build, and a bad export."""

from __future__ import annotations

import shutil

import pytest
from whatmatters.mpc import acados_env
from whatmatters.mpc.acados_env import configure_acados_environment


def test_wheel_is_configured_and_libraries_load():
    paths = configure_acados_environment()
    assert (paths.lib_dir / "libacados.so").is_file()
    assert paths.tera_path.is_file()
    assert acados_env.import_acados_template().AcadosOcp is not None


def _fake_user_build(tmp_path, wheel):
    """A source-tree layout (as `make install` of acados leaves it) built from the wheel's files."""
    root = tmp_path / "acados"
    shutil.copytree(wheel.source_dir / "lib", root / "lib")
    shutil.copytree(wheel.source_dir / "include", root / "include")
    (root / "bin").mkdir()
    shutil.copy2(wheel.tera_path, root / "bin" / "t_renderer")
    shutil.copytree(wheel.interface_path, root / "interfaces" / "acados_template" / "acados_template")
    return root


def test_users_own_build_is_preferred(tmp_path, monkeypatch):
    wheel = configure_acados_environment()
    root = _fake_user_build(tmp_path, wheel)
    for var in ("ACADOS_PYTHON_INTERFACE_PATH", "TERA_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ACADOS_SOURCE_DIR", str(root))
    paths, note = acados_env._user_build_candidate()
    assert paths is not None, note
    assert paths.source_dir == root.resolve()
    assert paths.template_module == "acados_template"


def test_broken_export_is_reported_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("ACADOS_SOURCE_DIR", str(tmp_path / "nowhere"))
    paths, note = acados_env._user_build_candidate()
    assert paths is None
    assert "nowhere" in note


def test_error_type_names_what_was_searched():
    err = acados_env.AcadosNotFoundError("searched: x")
    assert isinstance(err, RuntimeError)
    with pytest.raises(RuntimeError, match="searched"):
        raise err
