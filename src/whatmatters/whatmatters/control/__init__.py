"""Simple model-based controllers: the hold controller used for safe holds and checks."""

from whatmatters.control.hold import HoldController, HoldResult, run_hold

__all__ = ["HoldController", "HoldResult", "run_hold"]
