"""The quorum policy and its transitions, without Flask, threads or HTTP."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config import RoomRule
from quorum import policy
from recording_state import ABANDONED, GONE, PAUSED, RECORDING, UNSURE, Conference

RULE = RoomRule()


def conference(minimum=2, sid="conf-1", at=100.0):
    """A fresh conference in room R, seen from its start."""
    return policy.conference_started(policy.new_conference("R", sid, at, RoomRule(min_participants=minimum)))


def joined(conf, *calls, at=101.0):
    """`conf` after the given calls joined."""
    for call in calls:
        conf = policy.participant_event(conf, call, True, at)
    return conf


@pytest.mark.parametrize(
    "present, minimum, wanted",
    [
        (0, 2, PAUSED),
        (1, 2, PAUSED),
        (2, 2, RECORDING),
        (5, 2, RECORDING),
        (2, 3, PAUSED),
        (3, 3, RECORDING),
        (1, 1, RECORDING),
        (0, 1, PAUSED),
    ],
)
def test_wanted_state(present, minimum, wanted):
    assert policy.wanted_state(present, minimum) == wanted


def test_duplicate_join_changes_nothing():
    conf = joined(conference(), "A", "B")
    assert joined(conf, "B") == conf


def test_leave_for_unknown_call_is_harmless():
    conf = joined(conference(), "A", "B")
    after = policy.participant_event(conf, "ghost", False, 102.0)
    assert after.present() == ["A", "B"] and after.wanted == RECORDING


def test_late_join_after_its_leave_is_ignored():
    conf = policy.participant_event(joined(conference(), "A", "B"), "B", False, 105.0)
    late_join = policy.participant_event(conf, "B", True, 101.0)
    assert late_join.present() == ["A"] and late_join.wanted == PAUSED


def test_a_same_second_conflict_follows_arrival_order_and_asks_for_a_confirmation_read():
    """SignalWire's Timestamp has one-second resolution: a leave and rejoin in one second cannot be ordered."""
    conf = policy.participant_event(joined(conference(), "A", "B", at=100.0), "B", False, 101.0)
    rejoined = policy.participant_event(conf, "B", True, 101.0)
    assert rejoined.present() == ["A", "B"] and rejoined.wanted == RECORDING
    assert rejoined.recheck and not conf.recheck
    duplicate = policy.participant_event(rejoined, "B", True, 101.0)
    assert duplicate is rejoined  # a duplicate is still a no-op


@pytest.mark.parametrize(
    "present, confirmed, expected",
    [
        (("A", "B"), RECORDING, None),
        (("A",), RECORDING, PAUSED),
        (("A", "B"), PAUSED, RECORDING),
        (("A",), PAUSED, None),
        (("A",), GONE, None),
        (("A",), ABANDONED, None),
    ],
)
def test_next_action(present, confirmed, expected):
    conf = joined(conference(), *present)
    conf = policy.recording_status(conf, "rec-1", "in-progress", 102.0)
    conf = policy.command_result(conf, "rec-1", confirmed, 103.0)
    action = policy.next_action(conf)
    assert (action.target if action else None) == expected
    if action:
        assert (action.conference_sid, action.recording_sid) == ("conf-1", "rec-1")


@pytest.mark.parametrize("present, target", [(("A",), PAUSED), (("A", "B"), RECORDING)])
def test_a_command_that_may_have_taken_effect_is_resent_whatever_is_wanted(present, target):
    """A pause that timed out may have paused: even if the quorum is back, say 'in-progress' again."""
    conf = policy.recording_status(joined(conference(), *present), "rec-1", "in-progress", 102.0)
    conf = policy.command_result(conf, "rec-1", UNSURE, 103.0)
    assert policy.next_action(conf) == policy.Action("conf-1", "rec-1", target)
    assert [t.state for t in conf.timeline if t.kind == "confirmed"] == [RECORDING]  # unsure is not drawn


def test_recording_started_below_threshold_is_paused_at_once():
    conf = policy.participant_event(joined(conference(), "A", "B"), "B", False, 102.0)
    conf = policy.recording_status(conf, "rec-1", "in-progress", 103.0)
    assert policy.next_action(conf) == policy.Action("conf-1", "rec-1", PAUSED)


def test_late_in_progress_does_not_override_confirmed_pause():
    conf = policy.recording_status(joined(conference(), "A"), "rec-1", "in-progress", 102.0)
    conf = policy.command_result(conf, "rec-1", PAUSED, 103.0)
    assert policy.recording_status(conf, "rec-1", "in-progress", 104.0).recordings["rec-1"] == PAUSED


def test_no_action_without_conference_sid_or_after_end():
    placeholder = policy.recording_status(policy.new_conference("R", None, 1.0, RULE), "rec-1", "in-progress", 2.0)
    assert policy.next_action(placeholder) is None
    ended = policy.conference_ended(policy.recording_status(joined(conference(), "A"), "r", "in-progress", 2.0), 3.0)
    assert policy.next_action(ended) is None


@pytest.mark.parametrize("status", ["completed", "absent", "failed"])
def test_finished_once_ended_and_recordings_done(status):
    conf = policy.recording_status(joined(conference(), "A", "B"), "rec-1", "in-progress", 102.0)
    ended = policy.conference_ended(conf, 110.0)
    assert not policy.finished(ended)
    assert policy.finished(policy.recording_status(ended, "rec-1", status, 111.0))


@pytest.mark.parametrize("event_at, expect_sid", [(99.0, "conf-1"), (200.0, "conf-2")])
def test_adopt_ignores_older_and_replaces_with_newer_conference(event_at, expect_sid):
    conf = joined(conference(at=100.0), "A")
    adopted = policy.adopt(conf, "R", "conf-2", event_at, RULE)
    assert (adopted or conf).conference_sid == expect_sid


@pytest.mark.parametrize(
    "events, needs",
    [
        # A join of a call that never came through the voice webhook, before conference-start: a new conference,
        # or one from before a restart (others may be on the line, recorded): read, as for any unknown call.
        ([("A", True)], True),
        ([("A", True), ("A", False)], True),  # someone left a conference we never saw start
        ([("rec", None)], True),  # a recording we cannot place without knowing who is on the line
        ([("A", "known")], False),  # a first join of a call our voice webhook saw: a new conference, trusted
        ([("A", "known"), ("B", "known")], False),
    ],
)
def test_state_begun_mid_conference_is_recovered_before_deciding(events, needs):
    conf = policy.new_conference("R", "conf-1", 100.0, RULE)
    for i, (what, joined_now) in enumerate(events):
        if joined_now is None:
            conf = policy.recording_status(conf, "rec-1", "in-progress", 101.0 + i)
        else:
            conf = policy.participant_event(conf, what, bool(joined_now), 101.0 + i, known=joined_now == "known")
    assert policy.needs_recovery(conf) is needs
    assert (policy.next_action(conf) == policy.Action("conf-1", None, policy.RECOVER)) is needs
    assert not policy.needs_recovery(policy.conference_started(conf))


def test_recover_merges_the_api_view():
    conf = policy.participant_event(policy.new_conference("R", "conf-1", 100.0, RULE), "X", False, 101.0)
    snapshot = policy.Snapshot("in-progress", ("A", "B"), {"rec-1": "in-progress", "rec-0": "completed"})
    recovered = policy.recover(conf, snapshot, 102.0)
    assert recovered.present() == ["A", "B"] and recovered.wanted == RECORDING and recovered.verified
    assert recovered.recordings == {"rec-1": RECORDING, "rec-0": GONE}
    assert policy.next_action(recovered) is None
    paused = policy.recover(conf, policy.Snapshot("in-progress", ("A",), {"rec-1": "in-progress"}), 102.0)
    assert policy.next_action(paused) == policy.Action("conf-1", "rec-1", PAUSED)


def test_a_leave_in_the_same_second_as_a_rest_read_still_counts():
    """The read happens at 101.6 on our clock; the guest leaves at 101 on SignalWire's (same second)."""
    conf = policy.participant_event(policy.new_conference("R", "conf-1", 100.0, RULE), "A", True, 100.0)
    conf = policy.recording_status(conf, "rec-1", "in-progress", 101.2)
    recovered = policy.recover(conf, policy.Snapshot("in-progress", ("A", "B"), {"rec-1": "in-progress"}), 101.6)
    assert recovered.present() == ["A", "B"]
    left = policy.participant_event(recovered, "B", False, 101.0)
    assert left.present() == ["A"] and policy.next_action(left) == policy.Action("conf-1", "rec-1", PAUSED)


@pytest.mark.parametrize("snapshot", [None, policy.Snapshot("completed", (), {})])
def test_recover_of_a_finished_conference_ends_it(snapshot):
    conf = policy.recording_status(policy.new_conference("R", "conf-1", 100.0, RULE), "rec-1", "in-progress", 101.0)
    recovered = policy.recover(conf, snapshot, 102.0)
    assert recovered.ended and policy.next_action(recovered) is None


def test_timeline_logs_each_change_once():
    conf = joined(conference(), "A", "B")
    conf = policy.participant_event(conf, "B", False, 103.0)
    wanted = [t.state for t in conf.timeline if t.kind == "wanted"]
    assert wanted == [PAUSED, RECORDING, PAUSED]


# A call's true life: joins at `start`, leaves at `end` (None: still on the line).
calls = st.lists(
    st.tuples(st.integers(0, 50), st.one_of(st.none(), st.integers(0, 30))),
    min_size=0,
    max_size=6,
)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(lives=calls, minimum=st.integers(1, 4), data=st.data())
def test_any_delivery_order_ends_in_the_policy_state(lives, minimum, data):
    """Duplicated, reordered callbacks interleaved with commands still end where the policy says."""
    events = []
    for i, (start, duration) in enumerate(lives):
        events.append((f"call-{i}", True, float(start)))
        if duration is not None:
            events.append((f"call-{i}", False, float(start + duration + 1)))
    delivered = data.draw(
        st.permutations(events + data.draw(st.lists(st.sampled_from(events or [None]).filter(bool), max_size=8)))
    )
    conf = policy.recording_status(conference(minimum), "rec-1", "in-progress", 0.0)
    for call, is_join, at in delivered:
        conf = policy.participant_event(conf, call, is_join, at)
        if data.draw(st.booleans()):  # sometimes the command queue runs between callbacks
            conf = _run_commands(conf)
    conf = _run_commands(conf)
    still_on = sum(1 for start, duration in lives if duration is None)
    assert len(conf.present()) == still_on
    assert conf.recordings["rec-1"] == policy.wanted_state(still_on, minimum)


def _run_commands(conf: Conference) -> Conference:
    """Apply every command the policy asks for, as if the API accepted each."""
    while (action := policy.next_action(conf)) is not None:
        conf = policy.command_result(conf, action.recording_sid, action.target, 999.0)
    return conf


def test_a_failed_participant_recording_is_commanded_again_after_a_read():
    """The REST read lists conference recordings only, so a participant's own is re-sent, not trusted."""
    conf = policy.recording_created(joined(conference(), "A"), "A", "own-1", 101.0)
    conf = policy.command_result(conf, "own-1", ABANDONED, 102.0)
    assert policy.next_action(conf) is None
    recovered = policy.recover(policy.ask_confirmation(conf), policy.Snapshot("in-progress", ("A",), {}), 103.0)
    assert policy.next_action(recovered) == policy.Action("conf-1", "own-1", PAUSED, "A")


def test_a_routine_re_read_waits_behind_a_due_command():
    conf = policy.recording_status(joined(conference(), "A", "B"), "rec-1", "in-progress", 102.0)
    conf = policy.ask_confirmation(policy.participant_event(conf, "B", False, 103.0))
    assert policy.next_action(conf) == policy.Action("conf-1", "rec-1", PAUSED)
    conf = policy.command_result(conf, "rec-1", PAUSED, 104.0)
    assert policy.next_action(conf) == policy.Action("conf-1", None, policy.RECOVER)
    settled = policy.recover(conf, policy.Snapshot("in-progress", ("A",), {"rec-1": "paused"}), 105.0)
    assert policy.next_action(settled) is None and not settled.recheck


def test_a_first_join_and_its_leave_in_one_second_ask_for_a_confirmation():
    """A same-second rejoin delivered before the leave would look just like this: never guess silently."""
    conf = policy.participant_event(joined(conference(), "A", "B", at=100.0), "C", True, 101.0)
    left = policy.participant_event(conf, "C", False, 101.0)
    assert left.present() == ["A", "B"] and left.recheck


def test_a_later_same_state_event_makes_a_same_second_conflict_visible():
    """join@100, then (rejoin story) join@101 arrives before leave@101: the leave is a tie, not news."""
    conf = policy.participant_event(joined(conference(), "A", "B", at=100.0), "B", True, 101.0)
    left = policy.participant_event(conf, "B", False, 101.0)
    assert left.present() == ["A"] and left.recheck


def test_evolve_gives_what_dataclasses_replace_gives():
    from dataclasses import replace

    from recording_state import Presence, evolve

    conf = joined(conference(), "A", "B")
    assert conf.present() == ["A", "B"]  # computes and caches the line-up
    changes = {"participants": {"A": Presence(True, 101.0)}, "wanted": PAUSED}
    assert evolve(conf, **changes) == replace(conf, **changes)
    assert evolve(conf, **changes).present() == ["A"]  # the cached line-up of the old state is not carried over
    with pytest.raises(TypeError, match="no field 'wantd'"):
        evolve(conf, wantd=PAUSED)
