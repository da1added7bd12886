"""Locating and reading the project's YAML configuration files.

The YAML files in the repository's top-level ``config/`` folder feed both the
command-line interface and (later) the ROS parameters. They are found, in order:

1. the folder named by the environment variable ``WHATMATTERS_CONFIG_DIR``;
2. the ``config/`` folder of the source checkout this package runs from
   (editable installs and ``colcon build --symlink-install``);
3. ``share/whatmatters/config`` of the prefix this package is installed in
   (``colcon build``: ``install/whatmatters/``);
4. ``<sys.prefix>/share/whatmatters/config`` (regular pip installs).
"""

from __future__ import annotations

import os
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from whatmatters.errors import ConfigError

__all__ = ["YamlConfig", "config_dir", "dataclass_from_mapping", "load_node_parameters", "load_yaml", "require"]

T = TypeVar("T")

_ENV_VAR = "WHATMATTERS_CONFIG_DIR"


def _candidates() -> list[Path]:
    out: list[Path] = []
    env = os.environ.get(_ENV_VAR)
    if env:
        out.append(Path(env))
    # src/whatmatters/whatmatters/config.py -> repository root is parents[3]
    here = Path(__file__).resolve()
    out.append(here.parents[3] / "config")
    # <prefix>/lib/pythonX.Y/site-packages/whatmatters/config.py -> <prefix> is parents[4]
    if len(here.parents) > 4:
        out.append(here.parents[4] / "share" / "whatmatters" / "config")
    out.append(Path(sys.prefix) / "share" / "whatmatters" / "config")
    return out


def config_dir() -> Path:
    """Returns the configuration folder in use.

    Raises:
        ConfigError: If none of the searched folders exists; the message lists them.
    """
    searched = _candidates()
    for path in searched:
        if (path / "environments.yaml").is_file():
            return path
    raise ConfigError(
        "no whatmatters config folder found (looked for environments.yaml in: "
        + ", ".join(str(p) for p in searched)
        + f"); set {_ENV_VAR}"
    )


def load_yaml(name_or_path: str | os.PathLike[str]) -> dict[str, Any]:
    """Loads a YAML mapping from ``config/`` (bare file name) or from a path.

    Args:
        name_or_path: ``"environments.yaml"`` style name inside the config folder,
            or a path to any YAML file.

    Returns:
        The parsed mapping.

    Raises:
        ConfigError: If the file is missing, does not parse, or is not a mapping.
    """
    path = Path(name_or_path)
    if not path.is_absolute() and not path.exists():
        path = config_dir() / path
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at top level")
    return data


def load_node_parameters(name_or_path: str | os.PathLike[str], node_name: str) -> dict[str, Any]:
    """Reads a ROS 2 parameter file (``node_name: ros__parameters: {...}``) without ROS.

    The node's own section wins over a ``/**`` wildcard section; both are merged.
    The same files are the ROS nodes' parameters and the command line's defaults.

    Args:
        name_or_path: File name inside the config folder, or a path.
        node_name: The node whose parameters are wanted (with or without a leading ``/``).

    Returns:
        The ``ros__parameters`` mapping (empty if the file has no section for the node).

    Raises:
        ConfigError: If the file cannot be read, or a section is not a mapping.
    """
    data = load_yaml(name_or_path)
    out: dict[str, Any] = {}
    for key in ("/**", node_name.lstrip("/"), "/" + node_name.lstrip("/")):
        section = data.get(key)
        if section is None:
            continue
        params = section.get("ros__parameters") if isinstance(section, dict) else None
        if not isinstance(params, dict):
            raise ConfigError(f"{name_or_path}: section '{key}' needs a 'ros__parameters' mapping")
        out.update(params)
    return out


def require(mapping: dict[str, Any], key: str, source: str) -> Any:
    """Returns ``mapping[key]`` or raises a :class:`ConfigError` naming both.

    Args:
        mapping: The parsed YAML mapping.
        key: The key that must be present.
        source: Where the mapping came from (file name, section), for the message.
    """
    if key not in mapping:
        raise ConfigError(f"{source}: missing key '{key}'")
    return mapping[key]


def _integer(value: Any) -> int:
    """``value`` as an int, if it is one (``4`` or ``4.0``, not ``4.5`` or ``True``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise TypeError(f"expected integers, got {value!r}")
    return int(value)


def dataclass_from_mapping(cls: type[T], mapping: dict[str, Any], source: str) -> T:
    """Builds a config dataclass from a YAML mapping, checking keys and types.

    Missing keys keep the dataclass default. Lists become tuples where the
    default is a tuple: of integers where the default's entries are integers
    (ids, seeds, lengths; any number of them), else of floats (a vector of
    floats needs as many as the default has, if it has any; names any number).

    Args:
        cls: A dataclass type whose fields all have defaults.
        mapping: The parsed YAML mapping.
        source: File (and section) name for messages.

    Raises:
        ConfigError: Naming the key for an unknown key or a value of the wrong type.
    """
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    defaults = cls()
    kwargs: dict[str, Any] = {}
    for key, value in mapping.items():
        if key not in known:
            raise ConfigError(f"{source}: unknown key '{key}' (known: {', '.join(sorted(known))})")
        default = getattr(defaults, key)
        try:
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise TypeError("expected true or false")
            elif isinstance(default, int):
                if isinstance(value, bool) or int(value) != value:
                    raise TypeError("expected an integer")
                value = int(value)
            elif isinstance(default, float):
                if isinstance(value, bool):
                    raise TypeError("expected a number")
                value = float(value)
            elif isinstance(default, tuple) and default and all(isinstance(d, int) and not isinstance(d, bool) for d in default):
                value = tuple(_integer(v) for v in value)  # ids, seeds, lengths: any number of them
            elif isinstance(default, tuple):
                value = tuple(float(v) if isinstance(v, (int, float)) else v for v in value)
                if len(default) and all(isinstance(d, float) for d in default) and len(value) != len(default):
                    raise TypeError(f"expected {len(default)} values")
            elif isinstance(default, str) and not isinstance(value, str):
                raise TypeError("expected a string")
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: key '{key}': {exc} (got {value!r})") from exc
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {exc}") from exc


class YamlConfig:
    """Mixin for config dataclasses: ``Cls.from_yaml()`` reads ``config/<yaml_file>``.

    The dataclass defaults are the documented defaults; the YAML file (which
    also feeds the ROS parameters) overrides them, keys and types checked.
    """

    yaml_file: ClassVar[str] = ""

    @classmethod
    def from_yaml(cls: type[T], path: str | os.PathLike[str] | None = None) -> T:
        """Reads ``config/<yaml_file>`` (or the file at ``path``)."""
        source = path if path is not None else cls.yaml_file  # type: ignore[attr-defined]
        return dataclass_from_mapping(cls, load_yaml(source), str(source))
