"""Holds, hosts, the consent announcement and per-number rules, end to end through the emulator.

What should have been recorded is worked out from the emulator's own event log (`logged_quorum`),
and compared with what its recordings did.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from e2e_support import live_reads, quorum_stack
from emulator.faults import Faults
from emulator.scenarios import DEMO_NUMBER, Player, caller_number, logged_quorum, recorded_spans, span_problems

TOLERANCE_S = 0.3
NOTICE = "This call is recorded."
OTHER_NUMBER = "+15550199"


def archived(stack) -> list:
    """Every archived conversation record, once the store is empty."""
    assert stack.wait_for_empty_store(10)
    return [json.loads(p.read_text()) for p in Path(stack.config.recordings_dir).glob("*/*/*/conversation.json")]


def check_recording(stack, room, minimum=2, hosts=(), hold_counts=False):
    """The room's one recording ran exactly while the rule was met; Quorum wrote once per crossing."""
    (conf,) = stack.emulator.conferences(room)
    (recording_sid,) = conf.recording_sids
    expected, writes = logged_quorum(stack.emulator.sim.events, room, minimum, hosts, hold_counts)
    assert span_problems(recorded_spans(stack.emulator.recording(recording_sid)), expected, TOLERANCE_S) == []
    status_writes = [w for w in stack.emulator.rest_log.writes() if conf.sid in w.path and "Status" in w.form]
    assert len(status_writes) == writes
    return expected


HOLD = [
    ("call", "host", DEMO_NUMBER),
    ("wait", 0.6),
    ("call", "guest", DEMO_NUMBER),
    ("wait", 1.2),
    ("hold", "guest"),
    ("wait", 1.2),
    ("unhold", "guest"),
    ("wait", 1.2),
    ("hangup", "guest"),
    ("wait", 0.3),
    ("hangup", "host"),
]


@pytest.mark.parametrize("hold_counts", [False, True])
def test_a_caller_on_hold_is_not_on_the_line(hold_counts):
    with quorum_stack(hold_counts_as_present=hold_counts) as stack:
        Player(stack.emulator).play(HOLD)
        assert stack.settle()
        spans = check_recording(stack, DEMO_NUMBER, hold_counts=hold_counts)
        assert len(spans) == (1 if hold_counts else 2)  # paused while the guest heard hold music
        assert live_reads(stack) == 0  # hold events need no read
        (record,) = archived(stack)
        guest = next(c for c in record["channels"] if c["from"] == caller_number("guest"))
        (hold,) = guest["holds"]
        assert 1000 <= hold["end_ms"] - hold["start_ms"] <= 1600
        assert stack.log.errors() == []


HOSTS = [
    ("call", "guest", DEMO_NUMBER),
    ("wait", 0.6),
    ("call", "other", DEMO_NUMBER),
    ("wait", 1.2),
    ("call", "host", DEMO_NUMBER),
    ("wait", 1.2),
    ("hangup", "host"),
    ("wait", 1.2),
    ("hangup", "other"),
    ("wait", 0.3),
    ("hangup", "guest"),
]


def test_guests_wait_for_a_host_and_the_recording_runs_only_with_one():
    with quorum_stack(host_numbers=caller_number("host")) as stack:
        player = Player(stack.emulator)
        player.play(HOSTS[:4])
        assert stack.settle()
        (conf,) = stack.emulator.conferences(DEMO_NUMBER)
        assert conf.status == "init" and not conf.recording_sids  # two guests: music, nothing recorded
        player.play(HOSTS[4:])
        assert stack.settle()
        (span,) = check_recording(stack, DEMO_NUMBER, hosts=("host",))
        assert 1.0 <= span[1] - span[0] <= 1.5  # from the host's arrival to the host's departure
        (record,) = archived(stack)
        assert {c["from"]: c["host"] for c in record["channels"]} == {
            caller_number("host"): True,
            caller_number("guest"): False,
            caller_number("other"): False,
        }
        assert stack.log.errors() == []


REJOIN = [
    ("call", "host", DEMO_NUMBER),
    ("wait", 0.6),
    ("call", "guest", DEMO_NUMBER),
    ("wait", 1.2),
    ("hangup", "guest"),
    ("wait", 1.2),
    ("call", "guest", DEMO_NUMBER),
    ("wait", 1.2),
    ("hangup", "guest"),
    ("wait", 0.3),
    ("hangup", "host"),
]


def test_the_announcement_plays_after_the_start_and_each_resume():
    with quorum_stack(recording_announcement=NOTICE) as stack:
        Player(stack.emulator).play(REJOIN)
        assert stack.settle()
        spans = check_recording(stack, DEMO_NUMBER)
        assert len(spans) == 2
        events = stack.emulator.sim.events
        starts = [e.at for e in events if e.kind in ("recording-started", "recording-resumed")]
        played = [e for e in events if e.kind == "announced"]
        assert [e.detail for e in played] == [NOTICE, NOTICE]
        for started, announced in zip(starts, played):
            assert 0 <= announced.at - started < TOLERANCE_S  # right after it: the recording carries it
        announces = [w for w in stack.emulator.rest_log.writes() if "AnnounceUrl" in w.form]
        assert [w.form["AnnounceUrl"] for w in announces] == [
            f"{stack.config.public_url}/voice/announce?room=%2B15550100"
        ] * 2
        (record,) = archived(stack)
        assert [a["outcome"] for a in record["announcements"]] == ["played", "played"]
        assert stack.log.errors() == []


def test_a_failed_announcement_is_tried_once_more_and_never_holds_the_recording_back():
    with quorum_stack(recording_announcement=NOTICE, faults=Faults(announce_error=True)) as stack:
        Player(stack.emulator).play(REJOIN)
        assert stack.settle()
        check_recording(stack, DEMO_NUMBER)  # paused and resumed on time all the same
        announces = [w for w in stack.emulator.rest_log.writes() if "AnnounceUrl" in w.form]
        assert len(announces) == 4  # twice per start or resume
        (record,) = archived(stack)
        assert [a["outcome"] for a in record["announcements"]] == ["failed", "failed"]


def test_a_rules_file_gives_two_numbers_their_own_rules(tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text(
        f'["{DEMO_NUMBER}"]\nrecording_announcement = "{NOTICE}"\n'
        f'["{OTHER_NUMBER}"]\nmin_participants = 3\npause_behavior = "silence"\n'
    )
    with quorum_stack(room_rules_file=str(rules), numbers=(DEMO_NUMBER, OTHER_NUMBER)) as stack:
        steps = []
        for number, tag in ((DEMO_NUMBER, "a"), (OTHER_NUMBER, "b")):
            steps += [("call", f"{tag}1", number), ("call", f"{tag}2", number), ("call", f"{tag}3", number)]
        Player(stack.emulator).play(
            steps
            + [
                ("wait", 1.2),
                ("hangup", "a3"),
                ("hangup", "b3"),
                ("wait", 1.2),
                ("hangup", "a1"),
                ("hangup", "b1"),
                ("wait", 0.3),
                ("hangup", "a2"),
                ("hangup", "b2"),
            ]
        )
        assert stack.settle()
        check_recording(stack, DEMO_NUMBER, minimum=2)
        check_recording(stack, OTHER_NUMBER, minimum=3)
        writes = stack.emulator.rest_log.writes()
        (other,) = stack.emulator.conferences(OTHER_NUMBER)
        assert {
            w.form.get("PauseBehavior") for w in writes if other.sid in w.path and w.form.get("Status") == "paused"
        } == {"silence"}
        assert [e.room for e in stack.emulator.sim.events if e.kind == "announced"] == [DEMO_NUMBER]
