"""The churn benchmark's measurement: wrong seconds on hand-made timelines (holds and hosts too), the
scenario's shape, and a short run whose ground truth (read from the emulator) must match the scenario
played."""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import churn_bench  # noqa: E402
import churn_scenario  # noqa: E402
from churn_measure import Stay, on_line_seconds, presence, seconds_of, secure_windows, wrong_stretches  # noqa: E402
from churn_scenario import live_spans, room_schedule, secure_schedule  # noqa: E402

GRACE = 0.4


def line(*counts):
    """Changes of a room without hosts: (time, callers counted) pairs."""
    return [(at, count, True) for at, count in counts]


# A host alone from 0, a guest from 1 to 5 (record-from-start begins at 1), the host leaves at 10.
HOST_AND_GUEST = line((0.0, 1), (1.0, 2), (5.0, 1), (10.0, 0))


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
    assert wrong(line((0.0, 1), (3.0, 0)), []) == 0


def test_no_recording_at_quorum_counts_as_paused_at_quorum():
    assert wrong(line((0.0, 1), (1.0, 2), (4.0, 0)), [], "paused") == pytest.approx(3.0 - GRACE)


def test_a_late_resume_counts_as_paused_at_quorum():
    changes = line((0.0, 1), (1.0, 2), (5.0, 1), (6.0, 2), (9.0, 0))
    assert wrong(changes, [(1.0, 5.1), (7.0, 9.0)], "paused") == pytest.approx(1.0 - GRACE)
    assert wrong(changes, [(1.0, 5.1), (7.0, 9.0)], "below") == 0


def test_the_grace_starts_again_at_each_change_of_the_rule():
    # The guest leaves at 5 and is back at 5.3; paused at 5.2, resumed at 5.9: only 5.7-5.9 is wrong.
    changes = line((0.0, 1), (1.0, 2), (5.0, 1), (5.3, 2), (8.0, 0))
    assert wrong(changes, [(1.0, 5.2), (5.9, 8.0)], "paused") == pytest.approx(0.2)
    assert wrong(changes, [(1.0, 5.2), (5.9, 8.0)], "below") == 0


def test_a_change_of_head_count_that_keeps_the_rule_opens_no_grace():
    # 3 -> 2 is still a quorum: a pause at 6 is wrong from 6 on, no allowance.
    changes = line((0.0, 1), (1.0, 2), (2.0, 3), (6.0, 2), (9.0, 0))
    assert wrong(changes, [(1.0, 6.0)], "paused") == pytest.approx(3.0)


def test_presence_counts_joins_and_leaves_and_closes_calls_still_on_the_line():
    assert presence([Stay(0.0, 4.0), Stay(1.0, None)], end=6.0) == line((0.0, 1), (1.0, 2), (4.0, 1), (6.0, 0))
    assert on_line_seconds(line((0.0, 1), (1.0, 2), (4.0, 1), (6.0, 0), (7.0, 1), (8.0, 0))) == pytest.approx(7.0)


# A and B from 0 to 10; B on hold from 2 to 5 and again from 7 until it hangs up.
HELD = [Stay(0.0, 10.0), Stay(0.0, 10.0, ((2.0, 5.0), (7.0, 10.0)))]


def test_a_caller_on_hold_is_not_counted_unless_holds_count():
    assert [count for _, count, _ in presence(HELD, end=12.0)] == [1, 2, 1, 2, 1, 0]
    assert presence(HELD, end=12.0, hold_counts=True) == line((0.0, 1), (0.0, 2), (10.0, 1), (10.0, 0))


def test_a_recording_running_through_a_hold_counts_the_hold_minus_the_grace():
    changes = presence(HELD, end=12.0)
    assert wrong(changes, [(0.0, 10.0)], "below") == pytest.approx(3.0 - GRACE + 3.0 - GRACE)
    assert wrong(changes, [(0.0, 2.2), (5.1, 7.3)], "paused") == 0


def test_without_the_host_guests_are_no_quorum():
    # Two guests from 0, the host from 3 to 6 (on hold from 4 to 5): the rule records 3-4 and 5-6 only.
    stays = [Stay(0.0, 9.0), Stay(0.0, 9.0), Stay(3.0, 6.0, ((4.0, 5.0),), host=True)]
    changes = presence(stays, end=9.0, hosts=True)
    assert [(at, hosted) for at, _, hosted in changes] == [
        (0.0, False),
        (0.0, False),
        (3.0, True),
        (4.0, False),
        (5.0, True),
        (6.0, False),
        (9.0, False),
        (9.0, False),
    ]
    stretches = wrong_stretches(changes, [(0.0, 9.0)], 2, GRACE)
    assert seconds_of(stretches, "below") == pytest.approx(3.0 + (1.0 - GRACE) + (3.0 - GRACE))
    assert {(w.on_line, w.hosted) for w in stretches} == {(2, False)}  # the host on hold is not counted
    assert seconds_of(wrong_stretches(changes, [(3.1, 4.2), (5.3, 6.1)], 2, GRACE)) == 0


def test_a_conference_start_the_rule_did_not_ask_for_opens_the_grace():
    # A guest on hold from 1; the host joins at 3 and SignalWire's record-from-start records until the pause.
    changes = presence([Stay(0.0, 9.0, ((1.0, 9.0),)), Stay(3.0, 9.0, host=True)], end=9.0, hosts=True)
    assert wrong_stretches(changes, [(3.0, 3.3)], 2, GRACE, starts=[3.0]) == []
    assert seconds_of(wrong_stretches(changes, [(3.0, 3.3)], 2, GRACE)) == pytest.approx(0.3)


def test_a_secure_pause_holds_from_its_request_to_its_resume_timeout_or_the_room_emptying():
    line_up = line((0.0, 1), (1.0, 2), (9.0, 1), (10.0, 0), (12.0, 1), (20.0, 0))
    asked = [
        (2.0, "secure-pause"),
        (3.0, "secure-pause"),
        (4.0, "secure-resume"),  # a second pause changes nothing
        (5.0, "secure-pause"),  # times out at 8
        (9.5, "secure-pause"),  # the room empties at 10: its conference ends with it
        (11.0, "secure-pause"),  # nobody on the line: no conference to pause
        (13.0, "secure-pause"),
        (14.0, "secure-resume"),
        (15.0, "secure-resume"),
    ]
    assert secure_windows(asked, line_up, 3.0) == [(2.0, 4.0), (5.0, 8.0), (9.5, 10.0), (13.0, 14.0)]


def test_recording_in_a_secure_pause_is_wrong_beyond_the_grace_and_pausing_in_one_is_right():
    changes = line((0.0, 1), (1.0, 2), (10.0, 0))
    windows = [(3.0, 6.0)]
    assert wrong_stretches(changes, [(1.0, 3.2), (6.3, 10.0)], 2, GRACE, windows=windows) == []
    assert seconds_of(wrong_stretches(changes, [(1.0, 10.0)], 2, GRACE, windows=windows), "secure") == (
        pytest.approx(3.0 - GRACE)
    )
    late = wrong_stretches(changes, [(1.0, 3.2), (7.0, 10.0)], 2, GRACE, windows=windows)
    assert [(w.kind, w.start, w.end) for w in late] == [("paused", 6.0 + GRACE, 7.0)]  # the resume was late


def test_secure_pauses_are_asked_only_in_a_live_room_and_never_overlap():
    steps = room_schedule(random.Random(7), 0, 250)
    asked = secure_schedule(random.Random(7), steps, 3.0)
    pauses = [step.at for step in asked if step.kind == "secure-pause"]
    live = live_spans(steps)
    assert len(pauses) > 10 and any(step.kind == "secure-resume" for step in asked)
    assert all(any(start + 1.5 <= at < end - 0.5 for start, end in live) for at in pauses)
    ends = [
        b.at if b.kind == "secure-resume" else a.at + 3.0
        for a, b in zip(asked, asked[1:] + [asked[-1]])
        if a.kind == "secure-pause"
    ]
    assert all(end < next_at for end, next_at in zip(ends, pauses[1:]))
    assert asked == secure_schedule(random.Random(7), steps, 3.0)


def _counts(steps):
    """Callers counted after each step that changes the count (a held caller's hang-up does not)."""
    out, count, held = [], 0, set()
    for step in steps:
        if step.kind == "hangup" and step.label in held:
            held.discard(step.label)
            continue
        (held.add if step.kind == "hold" else held.discard)(step.label)
        count += 1 if step.kind in ("call", "unhold") else -1
        out.append((step, count))
    return out


def test_the_scenario_is_seeded_and_churns_as_the_issue_says():
    steps = room_schedule(random.Random(7), 0, 250, holds=False)
    assert steps == room_schedule(random.Random(7), 0, 250, holds=False)
    counts = [count for _, count in _counts(steps)]
    assert min(counts) == 0 and counts[-1] == 0 and max(counts) == churn_scenario.MAX_ON_LINE
    assert counts.count(1) > 20 and counts.count(4) > 3 and counts[:-1].count(0) > 2
    gaps = [b.at - a.at for a, b in zip(steps, steps[1:])]
    assert all(0.2 <= gap <= 1.2 for gap in gaps)
    rejoins = [
        a
        for a, b in zip(steps, steps[1:])
        if a.kind == "hangup" and b.kind == "call" and a.label == b.label and b.at - a.at < 1.0
    ]
    assert len(rejoins) > 5


def test_holds_come_and_go_among_callers_on_the_line():
    steps = room_schedule(random.Random(7), 0, 250)
    on, held = set(), set()
    for step in steps:
        if step.kind == "hold":
            assert step.label in on - held
            held.add(step.label)
        elif step.kind == "unhold":
            assert step.label in held
            held.discard(step.label)
        elif step.kind == "call":
            on.add(step.label)
        else:
            on.discard(step.label)
            held.discard(step.label)
    kinds = [step.kind for step in steps]
    assert kinds.count("hold") > 20 and kinds.count("unhold") > 10 and not on and not held
    assert churn_scenario.host_label(0) in {step.label for step in steps if step.kind == "call"}


def test_a_short_run_reads_back_exactly_the_scenario_it_played(tmp_path):
    schedule = churn_bench.scenario(seed=3, conferences=3, seconds=10)
    args = argparse.Namespace(
        seed=3, latency_ms=80, grace_ms=400, quorum_dir=str(churn_bench.ROOT), quorum_env=[], plain=False, conferences=3
    )
    emulator, calls, end = churn_bench.play_against("seed", schedule, args, tmp_path / "seed.log")
    assert sum(step.kind == "hold" for steps in schedule.values() for step in steps) > 0

    for n, (room, steps) in enumerate(schedule.items()):
        measured = churn_bench.measure_room(emulator, room, calls[room], end, GRACE, churn_bench.rule_hosts(args))
        expected = _counts(steps)
        assert [count for _, count, _ in measured["changes"]] == [count for _, count in expected]
        assert [hosted for *_, hosted in measured["changes"]] == _hosted(expected, churn_scenario.host_label(n))
        played = [at - measured["changes"][0][0] for at, _, _ in measured["changes"]]
        # Each join lands a voice webhook round trip after its step (the first one too); the rest at once.
        assert all(abs(at - (step.at - steps[0].at)) < 0.2 for at, (step, _) in zip(played, expected))
        assert measured["spans"], "record-from-start made a recording"
    row = churn_bench.summarize("seed", emulator, calls, end, args, tmp_path / "seed.log")
    assert row["callbacks_not_2xx"] == 0 and row["callbacks_delivered"] > 0
    assert row["wrong_s"] == pytest.approx(row["recorded_below_quorum_s"] + row["paused_at_quorum_s"], abs=0.02)
    assert row["worst_conference_s"] <= row["wrong_s"] + 0.01


def _hosted(counted, host):
    """After each counting step: whether the host is counted."""
    out, on = [], False
    for step, _ in counted:
        if step.label == host:
            on = step.kind in ("call", "unhold")
        out.append(on)
    return out
