"""Typed exceptions raised by the whatmatters core library."""

from __future__ import annotations


class WhatmattersError(Exception):
    """Base class of every error raised on purpose by whatmatters."""


class ConfigError(WhatmattersError, ValueError):
    """A configuration file or value is missing, malformed or out of range.

    The message names the file and the key at fault.
    """


class InvalidTorqueError(WhatmattersError, ValueError):
    """A torque command is not finite or has the wrong shape."""


class TrajectoryError(WhatmattersError, RuntimeError):
    """A reference trajectory could not be generated within its limits."""
