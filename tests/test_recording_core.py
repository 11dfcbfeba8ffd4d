"""The controller and the command queue on their own: MemoryStore, a scripted gateway, an injected clock."""

import time

import pytest

from config import RoomRule
from quorum import policy
from quorum.command_queue import CommandQueue
from quorum.delayed_kicks import FIRST_BACKOFF_S, MAX_BACKOFF_S, backoff
from quorum.controller import ConferenceEvent, Decision, RecordingController, RecordingEvent
from quorum.gateway import LiveConference, Outcome
from quorum.state_file import FileBackedStore, StateFile
from recording_state import PAUSED, PROCESSING, RECORDING, STALE_AFTER_S, UNSURE, MemoryStore
from support import sid

ROOM = "+15550003333"
CONF, REC, NEXT_REC, A, B = sid("conf"), sid("rec"), sid("next-rec"), sid("A"), sid("B")
T0 = 1_800_000_000.0


class FakeGateway:
    """SignalWire's REST API as the queue sees it: outcomes scripted in order, every call kept."""

    def __init__(self, *outcomes: Outcome, live=()):
        self.outcomes, self.live = list(outcomes), list(live)
        self.updates, self.reads = [], []

    def set_recording(self, conference_sid, recording_sid, target, call_sid=None, pause_behavior="skip"):
        self.updates.append((recording_sid, target))
        return self.outcomes.pop(0) if self.outcomes else Outcome.OK

    def record_call(self, call_sid, callback_url):
        return Outcome.REJECTED, None

    def read_conference(self, conference_sid, call_recordings=()):
        self.reads.append(conference_sid)
        return Outcome.GONE, None

    def list_live_conferences(self):
        return Outcome.OK, self.live


class FakeProcessor:
    """Keeps the rooms handed over for processing."""

    def __init__(self):
        self.submitted = []

    def submit(self, room):
        self.submitted.append(room)


class Clock:
    """Our clock, moved by hand."""

    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now


@pytest.fixture
def core():
    """A controller and its queue over a memory store; stopped afterwards."""
    parts = Core()
    yield parts
    parts.commands.shutdown()


class Core:
    """The recording core wired by hand, as build_services does, with fakes at its edges; a memory store by default."""

    def __init__(self, gateway=None, store=None):
        self.store, self.clock, self.processor = store or MemoryStore(), Clock(), FakeProcessor()
        self.gateway, self.crossings = gateway or FakeGateway(), []
        self.commands = CommandQueue(
            self.store,
            self.gateway,
            lock_ttl_s=5,
            recording_callback=lambda r, c: "",
            clock=self.clock,
            sleep=lambda s: None,
            observe_crossing=self.crossings.append,
        )
        self.controller = RecordingController(
            self.store,
            self.commands,
            self.processor,
            lambda room: RoomRule(),
            end_grace_s=60,
            reconcile_interval_s=1,
            clock=self.clock,
            gateway=self.gateway,
        )

    def event(self, kind, call=None, at=T0):
        """A conference event, applied directly (no HTTP), arriving now."""
        return self.controller.conference_event(
            ConferenceEvent(kind, ROOM, CONF, call, at, received=time.perf_counter())
        )

    def two_recording(self):
        """Known callers A and B on the line and the recording confirmed running."""
        for call in (A, B):
            self.controller.inbound_call(call, "+15551110000", ROOM)
            self.event("participant-join", call)
        self.event("conference-start")
        return self.controller.recording_event(RecordingEvent(ROOM, REC, "in-progress", T0))

    def settle(self):
        assert self.commands.wait_idle(10)


def until(condition, timeout=5.0):
    """Wait for a condition a worker thread makes true."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.005)


class ReadableGateway(FakeGateway):
    """A SignalWire that answers reads: A and B on the line, no recording yet."""

    def read_conference(self, conference_sid, call_recordings=()):
        self.reads.append(conference_sid)
        return Outcome.OK, policy.Snapshot("in-progress", (A, B), {})


def test_a_crossing_is_timed_from_its_own_callback_to_its_command():
    core = Core(ReadableGateway())
    try:
        assert core.store.take_reads(5, 5)  # this second's read budget is spent: the read below waits for the next
        core.event("participant-join", A)
        core.event("participant-join", B)  # calls we never saw dial in: the read path decides, not a command
        core.event("conference-start")  # ... and this settles it before the read goes: no read, no command
        core.controller.recording_event(RecordingEvent(ROOM, REC, "in-progress", T0))
        assert core.commands.wait_idle(5) and core.gateway.reads == [] and core.gateway.updates == []
        time.sleep(0.3)
        core.event("participant-leave", B, at=T0 + 2)  # the crossing
        assert core.commands.wait_idle(5) and core.gateway.updates == [(REC, PAUSED)]
        (seconds,) = core.crossings
        assert seconds < 0.3  # from the leave, not from the join whose decision went to the read
    finally:
        core.commands.shutdown()


def test_backoff_doubles_and_is_capped():
    assert [backoff(n) for n in (1, 2, 3)] == [FIRST_BACKOFF_S, 2 * FIRST_BACKOFF_S, 4 * FIRST_BACKOFF_S]
    assert backoff(50) == MAX_BACKOFF_S


def test_a_confirmed_recording_needs_no_command(core):
    assert core.two_recording() == Decision.APPLIED
    core.settle()
    assert core.gateway.updates == []


def test_falling_below_the_quorum_pauses_once(core):
    core.two_recording()
    assert core.event("participant-leave", B) == Decision.QUEUED
    core.settle()
    assert core.gateway.updates == [(REC, PAUSED)]
    assert core.store.get(ROOM).recordings[REC] == PAUSED


def test_a_retryable_failure_is_retried_after_the_backoff():
    core = Core(FakeGateway(Outcome.RETRY))
    try:
        core.two_recording()
        core.event("participant-leave", B)
        core.settle()
        assert core.gateway.updates == [(REC, PAUSED), (REC, PAUSED)]
    finally:
        core.commands.shutdown()


def test_an_unsure_recording_is_sent_the_old_state_again():
    core = Core(FakeGateway(Outcome.RETRY))
    try:
        core.two_recording()
        core.event("participant-leave", B)
        until(lambda: core.store.get(ROOM).recordings[REC] == UNSURE)
        core.event("participant-join", B, at=T0 + 1)  # wanted is the confirmed state again
        core.settle()
        assert core.gateway.updates[:2] == [(REC, PAUSED), (REC, RECORDING)]
        assert core.store.get(ROOM).recordings[REC] == RECORDING
    finally:
        core.commands.shutdown()


def test_an_ended_conference_waits_out_its_grace_then_is_handed_over(core):
    core.two_recording()
    for call in (A, B):
        core.event("participant-leave", call)
    core.event("conference-end")
    core.settle()
    core.clock.now += 59
    assert core.controller.sweep() == 0
    core.clock.now += 1
    assert core.controller.sweep() == 1
    assert core.processor.submitted == [ROOM] and core.store.get(ROOM).status == PROCESSING


def test_parking_a_conference_known_only_from_recordings_leaves_the_state_file_writing(tmp_path, caplog):
    """A recording's callback with no conference event makes a conference without a sid; swept as stale, then
    displaced by the room's next recording, it is parked: the state file (no NULL sid) must keep taking changes."""
    path = str(tmp_path / "state.sqlite3")
    core = Core(store=FileBackedStore(StateFile(path)))
    try:
        core.controller.recording_event(RecordingEvent(ROOM, REC, "in-progress", T0))
        core.clock.now += STALE_AFTER_S  # no event since: its end was lost
        assert core.controller.sweep() == 1
        core.controller.recording_event(RecordingEvent(ROOM, NEXT_REC, "in-progress", core.clock.now))
        core.settle()
    finally:
        core.commands.shutdown()
        core.store.close()
    assert "not written" not in caplog.text
    again = FileBackedStore(StateFile(path))
    assert dict(again.conferences()) == dict(core.store.conferences())
    assert NEXT_REC in again.get(ROOM).recordings
    again.close()


def test_the_round_adopts_a_listed_conference_the_store_lost():
    core = Core(FakeGateway(live=[LiveConference(CONF, ROOM, T0)]))
    try:
        assert core.controller.reconcile() == 1  # adopted and read at once
        core.settle()
        assert set(core.gateway.reads) == {CONF}
    finally:
        core.commands.shutdown()


def test_a_stale_event_of_a_retired_conference_changes_nothing(core):
    core.store.retire(CONF)
    assert core.event("participant-join", A) == Decision.STALE
    assert core.store.get(ROOM) is None
