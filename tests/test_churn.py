"""The churn benchmark's measurement: wrong seconds on hand-made timelines, the scenario's shape,
and a short run whose ground truth (read from the emulator) must match the scenario played."""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import churn_bench  # noqa: E402
from churn_bench import on_line_seconds, presence, room_schedule, seconds_of, wrong_stretches  # noqa: E402

GRACE = 0.4
# A host alone from 0, a guest from 1 to 5 (record-from-start begins at 1), the host leaves at 10.
HOST_AND_GUEST = [(0.0, 1), (1.0, 2), (5.0, 1), (10.0, 0)]


def wrong(changes, recorded, kind=None):
    """Wrong seconds with MIN_PARTICIPANTS=2 and the default grace."""
    return seconds_of(wrong_stretches(changes, recorded, 2, GRACE), kind)


def test_a_recording_left_running_with_a_lone_caller_counts_its_time_minus_the_grace():
    assert wrong(HOST_AND_GUEST, [(1.0, 8.0)], "below") == pytest.approx(3.0 - GRACE)
    assert wrong(HOST_AND_GUEST, [(1.0, 8.0)], "paused") == 0


def test_a_recording_running_to_the_end_with_a_lone_caller_counts_until_the_end():
    assert wrong(HOST_AND_GUEST, [(1.0, 10.0)]) == pytest.approx(5.0 - GRACE)


def test_a_change_answered_within_the_grace_counts_nothing():
    assert wrong(HOST_AND_GUEST, [(1.0, 5.3)]) == 0
    assert wrong(HOST_AND_GUEST, [(1.0, 5.0)]) == 0


def test_a_lone_caller_with_no_recording_is_right():
    assert wrong([(0.0, 1), (3.0, 0)], []) == 0


def test_no_recording_at_quorum_counts_as_paused_at_quorum():
    assert wrong([(0.0, 1), (1.0, 2), (4.0, 0)], [], "paused") == pytest.approx(3.0 - GRACE)


def test_a_late_resume_counts_as_paused_at_quorum():
    changes = [(0.0, 1), (1.0, 2), (5.0, 1), (6.0, 2), (9.0, 0)]
    assert wrong(changes, [(1.0, 5.1), (7.0, 9.0)], "paused") == pytest.approx(1.0 - GRACE)
    assert wrong(changes, [(1.0, 5.1), (7.0, 9.0)], "below") == 0


def test_the_grace_starts_again_at_each_change_of_the_rule():
    # The guest leaves at 5 and is back at 5.3; paused at 5.2, resumed at 5.9: only 5.7-5.9 is wrong.
    changes = [(0.0, 1), (1.0, 2), (5.0, 1), (5.3, 2), (8.0, 0)]
    assert wrong(changes, [(1.0, 5.2), (5.9, 8.0)], "paused") == pytest.approx(0.2)
    assert wrong(changes, [(1.0, 5.2), (5.9, 8.0)], "below") == 0


def test_a_change_of_head_count_that_keeps_the_rule_opens_no_grace():
    # 3 -> 2 is still a quorum: a pause at 6 is wrong from 6 on, no allowance.
    changes = [(0.0, 1), (1.0, 2), (2.0, 3), (6.0, 2), (9.0, 0)]
    assert wrong(changes, [(1.0, 6.0)], "paused") == pytest.approx(3.0)


def test_presence_counts_joins_and_leaves_and_closes_calls_still_on_the_line():
    assert presence([(0.0, 4.0), (1.0, None)], end=6.0) == [(0.0, 1), (1.0, 2), (4.0, 1), (6.0, 0)]
    assert on_line_seconds([(0.0, 1), (1.0, 2), (4.0, 1), (6.0, 0), (7.0, 1), (8.0, 0)]) == pytest.approx(7.0)


def _counts(steps):
    """Callers on the line after each step of a schedule."""
    out, count = [], 0
    for step in steps:
        count += 1 if step.kind == "call" else -1
        out.append(count)
    return out


def test_the_scenario_is_seeded_and_churns_as_the_issue_says():
    steps = room_schedule(random.Random(7), 0, 250)
    assert steps == room_schedule(random.Random(7), 0, 250)
    counts = _counts(steps)
    assert min(counts) == 0 and counts[-1] == 0 and max(counts) == churn_bench.MAX_ON_LINE
    assert counts.count(1) > 20 and counts.count(4) > 3 and counts[:-1].count(0) > 2
    gaps = [b.at - a.at for a, b in zip(steps, steps[1:])]
    assert all(0.2 <= gap <= 1.2 for gap in gaps)
    rejoins = [a for a, b in zip(steps, steps[1:])
               if a.kind == "hangup" and b.kind == "call" and a.label == b.label and b.at - a.at < 1.0]
    assert len(rejoins) > 5


def test_a_short_run_reads_back_exactly_the_scenario_it_played(tmp_path):
    schedule = churn_bench.scenario(seed=3, conferences=3, seconds=10)
    args = argparse.Namespace(seed=3, latency_ms=80, grace_ms=400, quorum_dir=str(churn_bench.ROOT), quorum_env=[])
    emulator, calls, end = churn_bench.play_against("seed", schedule, args, tmp_path / "seed.log")

    for room, steps in schedule.items():
        measured = churn_bench.measure_room(emulator, calls[room], end, GRACE)
        assert [count for _, count in measured["changes"]] == _counts(steps)
        played = [at - measured["changes"][0][0] for at, _ in measured["changes"]]
        # Each join lands a voice webhook round trip after its step (the first one too); leaves at once.
        assert all(abs(at - (step.at - steps[0].at)) < 0.2 for at, step in zip(played, steps))
        assert measured["spans"], "record-from-start made a recording"
    row = churn_bench.summarize("seed", emulator, calls, end, args, tmp_path / "seed.log")
    assert row["callbacks_not_2xx"] == 0 and row["callbacks_delivered"] > 0
    assert row["wrong_s"] == pytest.approx(row["recorded_below_quorum_s"] + row["paused_at_quorum_s"], abs=0.02)
    assert row["worst_conference_s"] <= row["wrong_s"] + 0.01
