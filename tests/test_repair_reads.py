"""Reads that repair lost callbacks: spent where a lost event would break the rule, on a schedule every process
shares (`Conference.read_at`), within the shared read budget; and what a read learns of calls it does not know.

A conference *at the threshold* (recording with exactly the minimum counted, or its only host, or paused one
short of a quorum) is read every REPAIR_INTERVAL_S; any other live conference every RECONCILE_INTERVAL_S.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import List, Optional

import pytest
import redis
import responses
from hypothesis import given, settings
from hypothesis import strategies as st

from app import create_app, services, shutdown
from config import RoomRule
from e2e_support import quorum_stack, wait_until
from emulator.faults import Faults
from emulator.scenarios import DEMO_NUMBER, Player
from quorum import policy, read_schedule
from quorum.command_queue import CommandQueue
from quorum.controller import REPAIR_TICK_S, ConferenceEvent, RecordingController, RecordingEvent
from quorum.gateway import MAX_READERS, Outcome, readers_for
from quorum.redis_store import RedisStore
from recording_state import PAUSED, RECORDING, Conference, MemoryStore
from support import API_BASE, SignedCallbacks, conference_form, make_config, recording_updates, sid

ROOM = "+15550004444"
CONF, REC = sid("conf"), sid("rec")
HOST, GUEST, OTHER = sid("host"), sid("guest"), sid("other")
HOST_NUMBER, GUEST_NUMBER = "+15557770001", "+15557770002"
T0 = 1_800_000_000.0
REPAIR_S, ROUTINE_S = 8.0, 60.0


# --- Which conferences are at the threshold: a pure function, checked against every single lost event -----


def _line_up(rule: RoomRule, calls) -> Conference:
    """A started conference under `rule` whose calls are (present, on hold, host) as drawn."""
    conf = policy.conference_started(policy.new_conference(ROOM, CONF, T0, rule))
    for i, (present, hold, host) in enumerate(calls):
        conf = policy.participant_event(conf, f"call-{i}", True, T0, known=True, hold=hold, host=host)
        if not present:
            conf = policy.participant_event(conf, f"call-{i}", False, T0 + 1)
    return conf


def _one_event_flips(conf: Conference) -> bool:
    """Whether some single participant event (a leave, hold or unhold of a call on the line, or a new call
    joining, as a guest or a host) would change what the rule wants: what a lost callback could hide."""
    at = T0 + 2
    afters = []
    for call in conf.present():
        held = conf.participants[call].hold
        afters.append(policy.participant_event(conf, call, False, at))
        afters.append(policy.participant_event(conf, call, True, at, hold=not held))
    for host in (False, True):
        afters.append(policy.participant_event(conf, "newcomer", True, at, known=True, host=host))
    return any(policy.quorum_wanted(after) != conf.wanted for after in afters)


@settings(max_examples=400, deadline=None)
@given(
    minimum=st.integers(1, 4),
    hold_counts=st.booleans(),
    hosts=st.booleans(),
    calls=st.lists(st.tuples(st.booleans(), st.booleans(), st.booleans()), max_size=6),
)
def test_at_the_threshold_exactly_when_one_lost_event_would_break_the_rule(minimum, hold_counts, hosts, calls):
    rule = RoomRule(
        min_participants=minimum, hold_counts_as_present=hold_counts, host_numbers=(HOST_NUMBER,) if hosts else ()
    )
    conf = _line_up(rule, [(present, hold, host and hosts) for present, hold, host in calls])
    assert read_schedule.at_threshold(conf) is _one_event_flips(conf)


def test_the_two_sides_of_the_threshold():
    two = _line_up(RoomRule(), [(True, False, False), (True, False, False)])
    three = _line_up(RoomRule(), [(True, False, False)] * 3)
    one = _line_up(RoomRule(), [(True, False, False), (False, False, False)])
    alone_held = _line_up(RoomRule(min_participants=3), [(True, True, False), (True, False, False)])
    assert (two.wanted, read_schedule.at_threshold(two)) == (RECORDING, True)  # a lost leave: recorded below quorum
    assert (three.wanted, read_schedule.at_threshold(three)) == (RECORDING, False)  # one lost leave breaks nothing
    assert (one.wanted, read_schedule.at_threshold(one)) == (PAUSED, True)  # a lost join: a quorum unrecorded
    assert (alone_held.wanted, read_schedule.at_threshold(alone_held)) == (PAUSED, False)  # two events short


def test_a_read_does_not_end_the_schedule():
    """Today's bug: one confirming read stopped every later read for the rest of the call."""
    conf = _line_up(RoomRule(), [(True, False, False), (True, False, False)])
    conf = policy.recording_status(conf, REC, "in-progress", T0)
    assert read_schedule.next_read_at(conf, REPAIR_S, ROUTINE_S) == conf.opened_at + REPAIR_S  # first: after it opened
    read = policy.recover(conf, policy.Snapshot("in-progress", tuple(conf.present()), {REC: "in-progress"}), T0 + 100)
    assert read.read_at == T0 + 100 and read.read_version == read.version + 1
    assert read_schedule.next_read_at(read, REPAIR_S, ROUTINE_S) == T0 + 100 + REPAIR_S
    busy = policy.participant_event(read, "third", True, T0 + 101, known=True)  # off the threshold: rarely
    assert read_schedule.next_read_at(busy, REPAIR_S, ROUTINE_S) == T0 + 100 + ROUTINE_S
    assert read_schedule.next_read_at(policy.conference_ended(read, T0 + 102), REPAIR_S, ROUTINE_S) == float("inf")


def test_a_conference_stored_without_read_at_still_loads():
    """Redis JSON written before `read_at` existed."""
    stored = Conference(ROOM, CONF).to_dict()
    del stored["read_at"]
    assert Conference.from_dict(json.loads(json.dumps(stored))).read_at == 0.0


def test_readers_are_sized_from_the_budget():
    """Enough GETs in flight to spend the budget at SignalWire's answer time (Little's law), bounded."""
    assert readers_for(5) == 2
    assert readers_for(300) == 30
    assert readers_for(100_000) == MAX_READERS


# --- The repair round, on an injected clock -------------------------------------------------------------


class ReadingGateway:
    """SignalWire's REST API as the queue sees it: reads answer `present` (settable), commands succeed."""

    def __init__(self, present=(HOST, GUEST)):
        self.present, self.reads, self.updates = tuple(present), [], []

    def read_conference(self, conference_sid, call_recordings=()):
        self.reads.append(conference_sid)
        return Outcome.OK, policy.Snapshot("in-progress", self.present, {REC: "in-progress"})

    def set_recording(self, conference_sid, recording_sid, target, call_sid=None, pause_behavior="skip"):
        self.updates.append(target)
        return Outcome.OK

    def list_live_conferences(self):
        return Outcome.OK, []


class Clock:
    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now


class Process:
    """One Quorum process's recording core over `store`, wired as build_services does."""

    def __init__(self, store, gateway: ReadingGateway, clock: Clock):
        self.store, self.gateway = store, gateway
        self.commands = CommandQueue(
            store, gateway, lock_ttl_s=5, recording_callback=lambda r, c: "", clock=clock, reads_per_s=100
        )
        self.controller = RecordingController(
            store,
            self.commands,
            _Processor(),
            lambda room: RoomRule(),
            end_grace_s=60,
            reconcile_interval_s=ROUTINE_S,
            clock=clock,
            gateway=gateway,
            repair_interval_s=REPAIR_S,
        )

    def recording(self, *calls):
        """Known `calls` joined, the conference started and its recording running."""
        for call in calls:
            self.controller.inbound_call(call, GUEST_NUMBER, ROOM)
            self.controller.conference_event(ConferenceEvent("participant-join", ROOM, CONF, call, T0))
        self.controller.conference_event(ConferenceEvent("conference-start", ROOM, CONF, None, T0))
        self.controller.recording_event(RecordingEvent(ROOM, REC, "in-progress", T0))
        assert self.commands.wait_idle(5)


class _Processor:
    def submit(self, room):
        pass


@pytest.fixture
def process():
    clock = Clock()
    made = Process(MemoryStore(), ReadingGateway(), clock)
    made.clock = clock
    yield made
    made.commands.shutdown()


def test_a_confirmed_conference_at_the_threshold_is_read_every_repair_interval(process):
    process.recording(HOST, GUEST)
    process.clock.now = T0 + REPAIR_S - REPAIR_TICK_S - 0.1
    assert process.controller.repair() == 0  # nothing is due before its interval (less the tick to the next round)
    for round_ in range(1, 4):
        process.clock.now += REPAIR_S + 0.1
        assert process.controller.repair() == 1
        assert process.commands.wait_idle(5) and len(process.gateway.reads) == round_
        assert process.store.get(ROOM).read_at == process.clock.now
        assert process.controller.repair() == 0  # read just now


def test_a_lost_leave_is_repaired_by_the_next_scheduled_read(process):
    process.recording(HOST, GUEST)
    process.gateway.present = (HOST,)  # the guest hung up; that callback never came
    process.clock.now = T0 + REPAIR_S + 0.1
    assert process.controller.repair() == 1
    assert process.commands.wait_idle(5)
    assert process.gateway.updates == [PAUSED] and process.store.get(ROOM).present() == [HOST]


def test_a_conference_off_the_threshold_is_read_at_the_routine_interval(process):
    process.gateway.present = (HOST, GUEST, OTHER)
    process.recording(HOST, GUEST, OTHER)
    process.clock.now = T0 + ROUTINE_S - REPAIR_TICK_S - 0.1
    assert process.controller.repair() == 0
    process.clock.now = T0 + ROUTINE_S - REPAIR_TICK_S + 0.1  # due by the next round: asked for now
    assert process.controller.repair() == 1


@pytest.mark.slow
def test_processes_on_one_redis_share_the_schedule(redis_url):
    """Each conference is read by one process per interval, whichever reads it; the others see `read_at`."""
    namespace, clock = f"t{uuid.uuid4().hex[:8]}", Clock()
    stores = [RedisStore(redis.Redis.from_url(redis_url), namespace) for _ in range(2)]
    first, second = (Process(store, ReadingGateway(), clock) for store in stores)
    try:
        first.recording(HOST, GUEST)
        clock.now = T0 + REPAIR_S + 0.1
        assert first.controller.repair() == 1
        assert second.controller.repair() == 0  # the first one asked for it: not twice
        assert first.commands.wait_idle(5) and len(first.gateway.reads) == 1
        clock.now += REPAIR_S / 2
        assert second.controller.repair() == 0  # read by the first process half an interval ago
        clock.now += REPAIR_S / 2 + 0.2
        assert second.controller.repair() == 1
        assert second.commands.wait_idle(5) and len(second.gateway.reads) == 1
        assert stores[0].get(ROOM).read_at == clock.now
    finally:
        first.commands.shutdown()
        second.commands.shutdown()


@pytest.mark.slow
def test_two_stores_on_one_redis_share_the_read_budget(redis_url):
    namespace = f"t{uuid.uuid4().hex[:8]}"
    one, other = (RedisStore(redis.Redis.from_url(redis_url), namespace) for _ in range(2))
    time.sleep(1.02 - time.time() % 1)  # early in a second, so the checks below fall in one window
    assert one.take_reads(3, 5)
    assert not other.take_reads(3, 5)  # 6 would pass this second's 5
    assert other.take_reads(2, 5)
    assert not one.take_reads(1, 5)


# --- Hosts after a flush: the Call resource's From ------------------------------------------------------


def _calls_fetched(fake) -> List[str]:
    """Sids of the calls fetched (`GET /Calls/{sid}`)."""
    return [
        c.request.url.rsplit("/", 1)[1].removesuffix(".json")
        for c in fake.calls
        if c.request.method == "GET" and "/Calls/" in c.request.url
    ]


def _answer_conference(fake, present, recordings: Optional[dict] = None, held=()):
    """Answer reads of CONF (participants, recordings) and fetches of the calls on its line."""
    base = f"{API_BASE}/Conferences/{CONF}"
    fake.add(
        responses.GET,
        f"{base}/Participants.json",
        json={
            "participants": [
                {"call_sid": call, "conference_sid": CONF, "status": "in-progress", "hold": call in held}
                for call in present
            ],
            "page": 0,
            "page_size": 50,
            "next_page_uri": None,
            "uri": "/p",
        },
    )
    fake.add(
        responses.GET,
        f"{base}/Recordings.json",
        json={
            "recordings": [
                {"sid": s, "conference_sid": CONF, "status": v} for s, v in (recordings or {REC: "in-progress"}).items()
            ],
            "page": 0,
            "page_size": 50,
            "next_page_uri": None,
            "uri": "/r",
        },
    )
    for call, number in ((HOST, HOST_NUMBER), (GUEST, GUEST_NUMBER)):
        fake.add(
            responses.GET,
            f"{API_BASE}/Calls/{call}.json",
            json={"sid": call, "from": number, "to": ROOM, "status": "in-progress"},
        )


@pytest.fixture
def hosted(signalwire, config):
    """A fresh app whose room has a host (its store empty: a restart without state, or a flushed Redis)."""
    app = create_app(
        make_config(host_numbers=HOST_NUMBER, redis_url=config.redis_url, redis_namespace=config.redis_namespace)
    )
    yield SignedCallbacks(app)
    shutdown(app)


def test_after_a_flush_the_host_is_known_again_from_the_call_resource(hosted, signalwire):
    """Host and guest were recorded when the store was lost; the guest goes on hold and comes back. Without
    the host's From the conference would stay paused for the rest of the call."""
    _answer_conference(signalwire, [HOST, GUEST], held=(GUEST,))
    hosted.post(
        "/voice/conference-status", {**conference_form("participant-hold", CONF, ROOM, GUEST, T0), "Hold": "true"}
    )
    hosted.settle()
    conf = hosted.state(ROOM)
    assert conf.participants[HOST].host and not conf.participants[GUEST].host
    assert sorted(_calls_fetched(signalwire)) == sorted([HOST, GUEST])  # each once, in the read budget
    store = services(hosted.app).store
    assert store.recall_call(HOST) == {"from": HOST_NUMBER, "to": ROOM}  # later reads need no fetch
    hosted.post("/voice/conference-status", conference_form("participant-unhold", CONF, ROOM, GUEST, T0 + 1))
    hosted.settle()
    assert [form["Status"] for _, form in recording_updates(signalwire)] == ["paused", "in-progress"]
    store.mutate(ROOM, policy.ask_confirmation)
    services(hosted.app).commands.read(ROOM)
    hosted.settle()
    assert len(_calls_fetched(signalwire)) == 2


def test_a_call_that_cannot_be_fetched_is_fetched_again_at_the_next_read(hosted, signalwire):
    """A transient failure must not lose the host for the rest of the call."""
    _answer_conference(signalwire, [HOST, GUEST])
    signalwire.replace(responses.GET, f"{API_BASE}/Calls/{HOST}.json", status=503, json={"status": 503})
    hosted.post("/voice/conference-status", conference_form("participant-leave", CONF, ROOM, OTHER, T0))
    hosted.settle()
    assert not hosted.state(ROOM).participants[HOST].host
    signalwire.replace(
        responses.GET,
        f"{API_BASE}/Calls/{HOST}.json",
        json={"sid": HOST, "from": HOST_NUMBER, "to": ROOM, "status": "in-progress"},
    )
    services(hosted.app).store.mutate(ROOM, policy.ask_confirmation)
    services(hosted.app).commands.read(ROOM)
    hosted.settle()
    assert hosted.state(ROOM).participants[HOST].host
    assert hosted.state(ROOM).wanted == RECORDING


# --- End to end: a lost callback at the threshold, after a confirming read ------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("lost", ["participant-leave", "participant-hold", "participant-join"])
def test_a_lost_event_at_the_threshold_is_repaired_by_a_read_after_a_confirming_one(lost):
    """The reconciler's first round confirms the conference; then a callback that would cross the threshold
    is lost. The next read, within the repair interval (here the 1 s reconcile interval), repairs it."""
    with quorum_stack(reconcile_interval_s=1.0) as stack:
        player = Player(stack.emulator)
        player.play([("call", "host", DEMO_NUMBER), ("wait", 0.3), ("call", "guest", DEMO_NUMBER), ("wait", 0.3)])
        if lost == "participant-join":
            player.play([("hangup", "guest"), ("wait", 0.3)])  # paused, one short
        assert stack.settle()
        reads = lambda: sum(c.path.endswith("/Participants.json") for c in stack.emulator.rest_log.calls)  # noqa
        assert wait_until(lambda: reads() >= 1, 5)  # a confirming read
        assert stack.settle()
        stack.emulator.set_faults(Faults(callback_drop_events=frozenset({lost})))
        step = {
            "participant-leave": ("hangup", "guest"),
            "participant-hold": ("hold", "guest"),
            "participant-join": ("call", "guest", DEMO_NUMBER),
        }[lost]
        player.play([step])
        (conf,) = stack.emulator.conferences(DEMO_NUMBER)
        recording = stack.emulator.recording(conf.recording_sids[0])
        repaired = "in-progress" if lost == "participant-join" else "paused"
        assert wait_until(lambda: recording.status == repaired, 6), f"{lost} was not repaired"
        stack.emulator.set_faults(Faults())
        assert stack.log.errors() == []
