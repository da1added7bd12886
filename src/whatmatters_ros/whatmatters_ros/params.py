"""Node parameters: one frozen dataclass per node, declared, loaded and validated at start.

Each node's parameters are a :class:`NodeParams` dataclass whose fields carry
their default, unit, documentation and range (:func:`param`). The defaults are
overridden by ``config/<node>.yaml`` (``node_name: ros__parameters: {...}``),
then by whatever ROS passes (``--params-file``, ``-p key:=value``, launch
files). The result is type-checked and range-checked once at start: a wrong
type or an out-of-range value raises :class:`ParameterError` naming the key,
and the node stops. The same YAML files are the command line's defaults
(:meth:`NodeParams.defaults` needs no ROS).
"""

from __future__ import annotations

import logging
from dataclasses import MISSING, Field, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from whatmatters.config import config_dir, dataclass_from_mapping, load_node_parameters
from whatmatters.errors import ConfigError

__all__ = ["NodeParams", "ParameterError", "declare_parameters", "param"]

log = logging.getLogger(__name__)

P = TypeVar("P", bound="NodeParams")

# Parameters rclpy declares itself; allowed in the YAML files, not in the dataclasses.
ROS_RESERVED = frozenset({"use_sim_time", "start_type_description_service", "qos_overrides"})


class ParameterError(ConfigError):
    """A node parameter has the wrong type or is out of range; the message names the key."""


def param(
    default: Any,
    doc: str,
    lo: float | None = None,
    hi: float | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A dataclass field with its documentation and allowed range.

    Args:
        default: Default value (its type is the parameter's type; a tuple is a double array).
        doc: One-line description with the unit (shown by ``ros2 param describe``).
        lo: Inclusive lower bound (numbers; every element of a tuple).
        hi: Inclusive upper bound.
        choices: Allowed values of a string parameter.
    """
    return field(default=default, metadata={"doc": doc, "lo": lo, "hi": hi, "choices": choices})


class NodeParams:
    """Mixin of the parameter dataclasses: ``node_name`` names the YAML file and section,
    ``config_subdir`` the folder of ``config/`` it is in (``car`` for the race car's nodes)."""

    node_name: ClassVar[str] = ""
    config_subdir: ClassVar[str] = ""

    @classmethod
    def yaml_path(cls) -> Path:
        """``config/[<config_subdir>/]<node_name>.yaml`` in the configuration folder in use."""
        return config_dir() / cls.config_subdir / f"{cls.node_name}.yaml"

    @classmethod
    def defaults(cls: type[P], path: str | Path | None = None, **overrides: Any) -> P:
        """Dataclass defaults overridden by the node's YAML file (and ``overrides``), validated.

        Args:
            path: Parameter file; ``config/<node_name>.yaml`` if None (missing: dataclass defaults).
            overrides: Values that win over the file.

        Raises:
            ParameterError: Naming the key, for an unknown key, a wrong type or a bad range.
        """
        source = Path(path) if path is not None else cls.yaml_path()
        mapping: dict[str, Any] = {}
        if path is not None or source.is_file():
            mapping = load_node_parameters(source, cls.node_name)
        mapping = {k: v for k, v in {**mapping, **overrides}.items() if k not in ROS_RESERVED}
        return cls.from_mapping(mapping, f"{source.name} ({cls.node_name})")

    @classmethod
    def from_mapping(cls: type[P], mapping: dict[str, Any], source: str) -> P:
        """Builds and validates the parameters from a plain mapping.

        Raises:
            ParameterError: Naming the key at fault.
        """
        try:
            values = dataclass_from_mapping(cls, mapping, source)
        except ParameterError:
            raise
        except ConfigError as exc:
            raise ParameterError(str(exc)) from exc
        values.validate(source)
        return values

    def validate(self, source: str) -> None:
        """Checks every field against its range and choices.

        Raises:
            ParameterError: ``"<source>: parameter '<key>' = <value>: <reason>"``.
        """
        for f in fields(self):  # type: ignore[arg-type]
            value, meta = getattr(self, f.name), f.metadata
            items = value if isinstance(value, tuple) else (value,)
            lo, hi, choices = meta.get("lo"), meta.get("hi"), meta.get("choices")
            for item in items:
                if isinstance(item, (int, float)) and not isinstance(item, bool):
                    if item != item:  # NaN
                        raise ParameterError(f"{source}: parameter '{f.name}' = {value!r}: not a number")
                    if (lo is not None and item < lo) or (hi is not None and item > hi):
                        raise ParameterError(f"{source}: parameter '{f.name}' = {value!r}: outside [{lo}, {hi}]")
            if choices is not None and value not in choices:
                raise ParameterError(f"{source}: parameter '{f.name}' = {value!r}: expected one of {', '.join(choices)}")

    def as_ros(self) -> dict[str, Any]:
        """The values as ROS parameter values (tuples become lists)."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}  # type: ignore[arg-type]


def _field_doc(f: Field[Any]) -> str:
    doc = f.metadata.get("doc", "")
    lo, hi = f.metadata.get("lo"), f.metadata.get("hi")
    if lo is not None or hi is not None:
        doc += f" [{lo}, {hi}]"
    return doc


def declare_parameters(node: Any, cls: type[P]) -> P:
    """Declares every field of ``cls`` on ``node`` and returns the validated values.

    Defaults are the dataclass defaults overridden by ``config/<node>.yaml``;
    values given to ROS win over both. Parameters are declared with dynamic
    typing so that a wrong type reaches the validation here (a message naming
    the key) instead of an rclpy exception.

    Args:
        node: An ``rclpy.node.Node``.
        cls: The node's parameter dataclass.

    Raises:
        ParameterError: Naming the key, for a wrong type or an out-of-range value.
    """
    from rcl_interfaces.msg import ParameterDescriptor  # ROS import kept local: core tests need no ROS

    base = cls.defaults()
    ros_defaults = base.as_ros()
    for f in fields(cls):  # type: ignore[arg-type]
        if f.default is MISSING:
            raise TypeError(f"{cls.__name__}.{f.name} needs a default")
        descriptor = ParameterDescriptor(description=_field_doc(f), dynamic_typing=True)
        node.declare_parameter(f.name, ros_defaults[f.name], descriptor)
    mapping: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        value = node.get_parameter(f.name).value
        if value is not None and not isinstance(value, (str, bool, int, float)):
            value = list(value)  # array.array and lists from ROS
        mapping[f.name] = value
    values = cls.from_mapping(mapping, f"node '{node.get_name()}'")
    log.debug("%s parameters: %s", node.get_name(), values)
    return values
