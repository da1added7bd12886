"""Entry point of the ``whatmatters`` console script: ``whatmatters <command> ...``."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from whatmatters.cli import bench_cmd, build_cmd, data_cmd, episode_cmd, experiment_cmd, finetune_cmd, sens_cmd, sim_cmd
from whatmatters.errors import WhatmattersError

_COMMANDS = (sim_cmd, episode_cmd, data_cmd, sens_cmd, finetune_cmd, experiment_cmd, bench_cmd, build_cmd)


def _plugin_commands() -> list[Any]:
    """Sub-commands of optional packages, found without importing ROS.

    ``whatmatters up`` comes from ``whatmatters_ros`` and is offered only where
    both it and ``rclpy`` are installed (the core never imports ROS itself).
    """
    if importlib.util.find_spec("rclpy") is None or importlib.util.find_spec("whatmatters_ros") is None:
        return []
    return [importlib.import_module("whatmatters_ros.up_cmd")]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-command per module in ``_COMMANDS`` (and plugins)."""
    parser = argparse.ArgumentParser(prog="whatmatters", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (*_COMMANDS, *_plugin_commands()):
        module.add_parser(sub)
    return parser


def emit(result: dict[str, Any], as_json: bool) -> None:
    """Prints a command's result: one JSON object, or ``key: value`` lines."""
    if as_json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # SIGTERM stops a command as Ctrl-C does: the executor stops its workers, finished work is kept
    previous = signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread() else None
    try:
        emit(args.run(args), getattr(args, "json", False))
    except WhatmattersError as exc:
        print(f"whatmatters {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"whatmatters {args.command}: interrupted (finished work is kept; resumable commands continue from it)", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    sys.exit(main())
