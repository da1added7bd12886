"""Model specs (whatmatters.dynamics.registry): names stay names, checkpoint paths become absolute."""

from __future__ import annotations

from pathlib import Path

from whatmatters.dynamics.registry import MODEL_NAMES, absolute_model_spec


def test_model_names_are_kept():
    assert [absolute_model_spec(n) for n in MODEL_NAMES] == list(MODEL_NAMES)


def test_checkpoint_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model").write_bytes(b"")
    assert absolute_model_spec("runs/ours.pt") == str(tmp_path / "runs" / "ours.pt")  # not yet written: by its suffix
    assert absolute_model_spec("model") == str(tmp_path / "model")  # an existing file without the suffix
    assert Path(absolute_model_spec(str(tmp_path / "model"))) == tmp_path / "model"
