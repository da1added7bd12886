"""Tests of whatmatters.realtime.torque: the time-weighted mean of the applied torque over a step."""

from __future__ import annotations

import numpy as np
from whatmatters.realtime.torque import mean_applied_torque, mean_applied_torque_of

MS = 1_000_000


def test_a_command_switching_mid_step_counts_for_its_share():
    stamps = np.arange(0, 41, 2) * MS  # efforts every 2 ms, each over the 2 ms before its stamp
    old, new = np.full(7, 1.0), np.full(7, 4.0)
    efforts = np.array([old if s <= 26 * MS else new for s in stamps])  # the new command applied from 26 ms on
    mean = mean_applied_torque(stamps, efforts, 20 * MS, 40 * MS)
    np.testing.assert_allclose(mean, (6 * 1.0 + 14 * 4.0) / 20)


def test_partial_samples_are_weighted_by_their_overlap():
    stamps = np.array([0, 5, 10, 15]) * MS
    efforts = np.array([[0.0], [1.0], [2.0], [3.0]])
    np.testing.assert_allclose(mean_applied_torque(stamps, efforts, 7 * MS, 13 * MS), [(3 * 2.0 + 3 * 3.0) / 6])


def test_uncovered_steps_are_refused():
    stamps = np.array([0, 2, 4]) * MS
    efforts = np.ones((3, 7))
    assert mean_applied_torque(stamps, efforts, 0, 6 * MS) is None  # past the last sample
    assert mean_applied_torque(stamps, efforts, -3 * MS, 4 * MS) is None  # before the first one's interval


def test_the_buffered_form_reads_only_the_recent_samples(rng):
    stamps = np.arange(100) * 2 * MS
    efforts = rng.normal(size=(100, 7))
    samples = [(int(s), np.zeros(14), e) for s, e in zip(stamps, efforts)]
    np.testing.assert_allclose(mean_applied_torque_of(samples, 150 * MS, 170 * MS), mean_applied_torque(stamps, efforts, 150 * MS, 170 * MS))
