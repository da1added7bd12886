"""File utilities: atomic writes (a reader sees the old file or the new one,
never half of either), the cache folder for generated code, and a file lock
that serialises first builds across processes."""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

__all__ = ["atomic_torch_save", "atomic_write_bytes", "atomic_write_npz", "atomic_write_text", "cache_root", "file_lock", "machine_id"]


def _atomic(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file ordinary permissions
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``."""
    _atomic(Path(path), lambda fh: torch.save(obj, fh))


def atomic_write_text(text: str, path: str | Path) -> None:
    """Writes a text file atomically."""
    _atomic(Path(path), lambda fh: fh.write(text.encode()))


def atomic_write_bytes(data: bytes, path: str | Path) -> None:
    """Writes a binary file atomically."""
    _atomic(Path(path), lambda fh: fh.write(data))


def atomic_write_npz(path: str | Path, **arrays: Any) -> Path:
    """``numpy.savez`` of ``arrays`` written atomically to ``path``; returns the path."""
    import numpy as np

    _atomic(Path(path), lambda fh: np.savez(fh, **arrays))
    return Path(path)


def machine_id() -> str:
    """CPU model and architecture: code built with -march=native must not move to another CPU."""
    model = ""
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "")
    except OSError:
        pass
    return f"{platform.machine()} {model}"


def cache_root() -> Path:
    """The cache folder for generated code (``$WHATMATTERS_CACHE`` or ``~/.cache/whatmatters``)."""
    env = os.environ.get("WHATMATTERS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "whatmatters"


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Holds an exclusive ``flock`` on ``path`` (created if missing) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
