"""The lock-step rules both simulators share: when to start, step, finish, and give up waiting."""

from __future__ import annotations

from whatmatters_ros.lockstep import LockstepGate, LockstepSettings


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _gate(wait: bool = True, lag: int = 2) -> tuple[LockstepGate, dict[str, int], Clock]:
    counts = {"steps": 0, "sensitivities": 0}
    clock = Clock()
    return LockstepGate(LockstepSettings(wait, lag, 10.0, 1.0, 0.5), counts, clock), counts, clock


def test_it_starts_once_the_graph_has_been_ready_for_the_start_delay() -> None:
    gate, _, clock = _gate()
    assert not gate.may_start(False)
    assert not gate.may_start(True)  # ready from now
    clock.t = 0.4
    assert not gate.may_start(True)
    clock.t = 0.6
    assert gate.may_start(True) and gate.started
    assert not gate.may_start(True)  # once


def test_a_step_needs_the_command_and_the_sensitivities_within_the_lag() -> None:
    gate, counts, _ = _gate(lag=2)
    gate.may_start(True)
    gate.started = True
    gate.published()
    assert not gate.may_step()  # no command yet
    gate.answered = True
    counts["steps"] = 3  # states 0..3 out, samples of 0..1 needed
    counts["sensitivities"] = 1
    assert not gate.may_step()
    counts["sensitivities"] = 2
    assert gate.may_step()
    gate.ending = True
    assert not gate.may_step() and not gate.may_finish()  # at the end: all of them
    counts["sensitivities"] = 3
    assert gate.may_finish()


def test_without_waiting_for_sensitivities_only_the_command_counts() -> None:
    gate, counts, _ = _gate(wait=False)
    gate.started, gate.answered = True, True
    counts["steps"] = 100
    assert gate.may_step()


def test_timeouts_hold_without_a_command_and_give_up_on_sensitivities() -> None:
    gate, _, clock = _gate()
    assert gate.timeout() is None  # not started
    gate.started = True
    gate.published()
    clock.t = 0.9
    assert gate.timeout() is None
    clock.t = 1.1
    assert gate.timeout() == "command"
    gate.published()
    gate.answered = True  # answered, but the logger is behind
    clock.t = 11.0
    assert gate.timeout() is None
    clock.t = 11.2
    assert gate.timeout() == "sensitivities"
