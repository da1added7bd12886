"""Tests of whatmatters.realtime.clock: absolute deadlines, lag and late steps."""

from __future__ import annotations

import time

import numpy as np
from whatmatters.realtime.clock import PacedClock


class FakeTime:
    """A clock whose sleeps overshoot by a fixed amount."""

    def __init__(self, overshoot_ns: int) -> None:
        self.t, self.overshoot = 0, overshoot_ns

    def now(self) -> int:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += int(round(s * 1e9)) + self.overshoot


def test_sleep_overshoot_does_not_accumulate():
    fake = FakeTime(overshoot_ns=300_000)  # 0.3 ms late after every sleep
    clock = PacedClock(0.002, now_ns=fake.now, sleep=fake.sleep)
    clock.start()
    stamps = [clock.wait() for _ in range(1000)]
    assert stamps[-1] == 999 * 2_000_000  # the schedule, not the sum of the sleeps
    assert fake.t - stamps[-1] == 300_000  # the lag stays one overshoot
    assert clock.late_steps == 0


def test_a_stall_is_caught_up_and_counted():
    fake = FakeTime(overshoot_ns=0)
    clock = PacedClock(0.002, now_ns=fake.now, sleep=fake.sleep)
    clock.start()
    for _ in range(10):
        clock.wait()
    fake.t += 7_000_000  # held for 7 ms after tick 9 (due at 18 ms): tick 10 (due at 20 ms) is processed at 25 ms
    for _ in range(10):
        clock.wait()
    assert clock.figures()["lag_ms_max"] == 5.0
    assert clock.late_steps == 2  # ticks processed more than one period late: 5 and 3 ms (then 1 ms, then on time)
    assert clock.ticks == 20


def test_simulated_time_stays_within_2_ms_of_wall_time_over_5_s():
    clock = PacedClock(0.002)
    origin = clock.start()
    offsets = []
    while clock.ticks < 2500:  # 5 s of 2 ms ticks
        stamp = clock.wait()
        offsets.append(time.time_ns() - stamp)  # wall time minus simulated time at this tick
        assert stamp == origin + (clock.ticks - 1) * 2_000_000
    offsets_ms = np.array(offsets) * 1e-6
    # the schedule is absolute: lags do not add up, so the offset at the end of 5 s is a single tick's
    # (a single tick can be late on a busy machine: the median of the last 0.2 s is taken)
    assert np.median(offsets_ms[-100:]) < 2.0
    assert np.median(offsets_ms) < 1.0
    assert abs((time.time_ns() - origin) * 1e-9 - 5.0) < 0.1
