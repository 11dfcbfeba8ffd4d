"""Never record a lone caller: each way the promise broke against SignalWire's documented behaviour.

SignalWire's REST API is faked at the HTTP level; callbacks are signed and posted as SignalWire
would, in the order its documentation gives (join, join, then conference-start).
"""

import json
import threading
import time
from email.utils import formatdate
from urllib.parse import urlsplit

import pytest
import responses

from app import create_app, services, shutdown
from support import API_BASE, RECORDING_UPDATE, SignedCallbacks, make_config, recording_updates
from recording_state import PAUSED, RECORDING

ROOM = "+15550002222"
CONF = "5d0a6f7e-1b2c-4d3e-8f90-a1b2c3d4e5f6"
NEXT_CONF = "6e1b7a8f-2c3d-4e5f-9a01-b2c3d4e5f6a7"
REC = "0c9d8e7f-6a5b-4c3d-9e2f-1a0b9c8d7e6f"
NEXT_REC = "1d0e9f8a-7b6c-4d5e-8f3a-2b1c0d9e8f7a"
CALL_A = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
CALL_B = "8b7c6d5e-4f3a-4b2c-9d1e-0f9a8b7c6d5e"
CALL_C = "7c6d5e4f-3a2b-4c1d-8e0f-9a8b7c6d5e4f"
T0 = int(time.time())  # callbacks carry SignalWire's Timestamp: recent, one-second resolution


class Line(SignedCallbacks):
    """Signed SignalWire callbacks to one app, and what its REST fake saw."""

    def __init__(self, app, fake):
        super().__init__(app)
        self.fake = fake

    def post(self, path, form, query=""):
        response = super().post(path, form, query)
        assert response.status_code in (200, 204), response.data
        return response

    def inbound(self, call):
        """The voice webhook: SignalWire asks what to do with a new call."""
        self.post(
            "/voice/inbound",
            {
                "CallSid": call,
                "From": f"+1555{call[:7].encode().hex()[:7]}",
                "To": ROOM,
                "AccountSid": "acct",
                "CallStatus": "ringing",
            },
        )

    def conference(self, event, call=None, at=T0, conference=CONF):
        form = {
            "AccountSid": "acct",
            "ConferenceSid": conference,
            "FriendlyName": ROOM,
            "StatusCallbackEvent": event,
            "Timestamp": formatdate(at, usegmt=True),
        }
        if call:
            form["CallSid"] = call
        return self.post("/voice/conference-status", form)

    def recording(self, status, sid=REC):
        form = {
            "AccountSid": "acct",
            "RecordingSid": sid,
            "RecordingStatus": status,
            "CallSid": "",
            "RecordingUrl": f"https://example.signalwire.com/recordings/{sid}",
        }
        return self.post("/voice/recording-status", form, query=f"room=%2B{ROOM[1:]}")

    def two_known_callers(self, *also):
        """Calls A and B (and `also`) come in through the voice webhook; A and B join, as documented:
        join, join, conference-start, then the recording's in-progress."""
        for call in (CALL_A, CALL_B, *also):
            self.inbound(call)
        self.conference("participant-join", CALL_A)
        self.conference("participant-join", CALL_B)
        self.conference("conference-start")
        self.recording("in-progress")

    def settle(self, timeout=15):
        super().settle(timeout)

    def state(self):
        return super().state(ROOM)

    def updates(self):
        return recording_updates(self.fake)

    def reads(self):
        return [urlsplit(c.request.url).path for c in self.fake.calls if c.request.method == "GET"]


@pytest.fixture
def line(config, signalwire):
    app = create_app(config)
    yield Line(app, signalwire)
    shutdown(app)


def update_path(conference, recording):
    return f"/2010-04-01/Accounts/{API_BASE.rsplit('/', 1)[1]}/Conferences/{conference}/Recordings/{recording}.json"


def answer_reads(fake, present, recordings=None, status="in-progress", conference=CONF, during=None, participants=None):
    """Answer a conference read: the conference, its participants (calling `during` first), its recordings."""
    base = f"{API_BASE}/Conferences/{conference}"
    fake.add(responses.GET, f"{base}.json", json={"sid": conference, "friendly_name": ROOM, "status": status})
    listed = participants or [
        {"call_sid": call, "conference_sid": conference, "status": "in-progress", "hold": False, "muted": False}
        for call in present
    ]

    def participants_page(request):
        if during is not None:
            during()
        return (
            200,
            {},
            json.dumps({"participants": listed, "page": 0, "page_size": 50, "next_page_uri": None, "uri": "/p"}),
        )

    fake.add_callback(responses.GET, f"{base}/Participants.json", callback=participants_page)
    fake.add(
        responses.GET,
        f"{base}/Recordings.json",
        json={
            "recordings": [
                {"sid": sid, "conference_sid": conference, "status": state}
                for sid, state in (recordings if recordings is not None else {REC: "in-progress"}).items()
            ],
            "page": 0,
            "page_size": 50,
            "next_page_uri": None,
            "uri": "/r",
        },
    )


def answer_list(fake, conferences):
    """Answer the list of in-progress conferences."""
    fake.add(
        responses.GET,
        f"{API_BASE}/Conferences.json",
        json={
            "conferences": [
                {
                    "sid": sid,
                    "friendly_name": room,
                    "status": "in-progress",
                    "date_created": formatdate(T0 - 60, usegmt=True),
                }
                for sid, room in conferences
            ],
            "page": 0,
            "page_size": 100,
            "next_page_uri": None,
            "uri": "/c",
        },
    )


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


# 1. A REST read must not undo a callback that arrived while it was in flight.


def test_a_leave_during_a_read_is_not_undone_by_the_read(line):
    """Calls we never saw come in (after a restart) make Quorum read; the guest leaves during that read."""
    answer_reads(
        line.fake, present=[CALL_A, CALL_B], during=lambda: line.conference("participant-leave", CALL_B, at=T0 + 1)
    )
    line.conference("participant-join", CALL_A)
    line.conference("participant-join", CALL_B)
    line.recording("in-progress")
    line.settle()
    assert line.state().present() == [CALL_A]
    assert line.updates() == [(update_path(CONF, REC), {"Status": "paused", "PauseBehavior": "skip"})]


# 2. The room's next conference's recording must not attach to the ended one.


def test_a_new_conference_recording_never_binds_to_the_ended_conference(line):
    line.two_known_callers(CALL_C)
    line.conference("participant-leave", CALL_A, at=T0 + 1)
    line.conference("participant-leave", CALL_B, at=T0 + 1)
    line.conference("conference-end", at=T0 + 1)  # its recording's `completed` is still to come
    line.settle()
    line.recording("in-progress", sid=NEXT_REC)  # the next conference's recording, before its first event
    line.conference("participant-join", CALL_C, at=T0 + 2, conference=NEXT_CONF)
    line.conference("participant-join", CALL_A, at=T0 + 2, conference=NEXT_CONF)
    line.conference("participant-leave", CALL_A, at=T0 + 3, conference=NEXT_CONF)
    line.settle()
    assert line.state().conference_sid == NEXT_CONF and NEXT_REC in line.state().recordings
    assert (update_path(NEXT_CONF, NEXT_REC), {"Status": "paused", "PauseBehavior": "skip"}) in line.updates()


# 3. State the store lost is found again.


def test_a_conference_the_store_lost_is_found_and_paused(line):
    """A fresh store (restart or flushed Redis) while a caller sits alone in a recorded conference."""
    answer_list(line.fake, [(CONF, ROOM)])
    answer_reads(line.fake, present=[CALL_A])
    services(line.app).controller.reconcile()
    line.settle()
    assert line.updates() == [(update_path(CONF, REC), {"Status": "paused", "PauseBehavior": "skip"})]
    assert line.state().present() == [CALL_A]


def test_after_a_restart_a_hold_of_a_call_from_before_is_read_at_once(line):
    """A fresh store (restart without the state file, or a flushed Redis); A and B were recorded, A is put on
    hold. A's call is one Quorum never saw dial in, in a conference it never saw start: read it now, not at
    the reconciler's next round, or B is recorded alone until then."""
    held = [
        {"call_sid": CALL_A, "conference_sid": CONF, "status": "in-progress", "hold": True},
        {"call_sid": CALL_B, "conference_sid": CONF, "status": "in-progress", "hold": False},
    ]
    answer_reads(line.fake, present=[], participants=held)
    line.post(
        "/voice/conference-status",
        {
            "AccountSid": "acct",
            "ConferenceSid": CONF,
            "FriendlyName": ROOM,
            "StatusCallbackEvent": "participant-hold",
            "CallSid": CALL_A,
            "Hold": "true",
            "Timestamp": formatdate(T0, usegmt=True),
        },
    )
    line.settle()
    assert line.updates() == [(update_path(CONF, REC), {"Status": "paused", "PauseBehavior": "skip"})]
    assert line.state().counted() == [CALL_B] and line.state().verified


# 4. A few seconds of REST errors never abandon a live recording.


@pytest.mark.slow
def test_after_many_failed_commands_a_new_wanted_state_is_still_sent(line):
    line.fake.remove(responses.POST, RECORDING_UPDATE)
    for _ in range(5):
        line.fake.add(responses.POST, RECORDING_UPDATE, status=503, json={"code": 503, "message": "busy"})
    line.fake.add(responses.POST, RECORDING_UPDATE, json={"sid": REC, "status": "in-progress"})
    line.two_known_callers(CALL_C)
    line.conference("participant-leave", CALL_B, at=T0 + 1)
    assert wait_for(lambda: len(line.updates()) >= 4, timeout=30)  # the pause failed again and again
    line.conference("participant-join", CALL_C, at=T0 + 2)
    line.settle()
    assert line.updates()[-1] == (update_path(CONF, REC), {"Status": "in-progress"})
    assert line.state().recordings == {REC: RECORDING}


# 5. A leave and rejoin within one second (one-second Timestamps) keeps the call on the line.


def test_a_leave_and_rejoin_in_the_same_second_keeps_the_call(line):
    line.two_known_callers()
    line.settle()
    answer_reads(line.fake, present=[CALL_A, CALL_B])
    line.conference("participant-leave", CALL_B, at=T0 + 1)
    line.conference("participant-join", CALL_B, at=T0 + 1)
    line.settle()
    assert line.state().present() == sorted([CALL_A, CALL_B])
    assert all(form["Status"] != "paused" for _, form in line.updates()[-1:])
    assert line.state().recordings == {REC: RECORDING}


# 6. Reads never delay commands.


def test_a_pause_is_not_held_up_behind_a_slow_read(signalwire):
    app = create_app(make_config(signalwire_concurrency=1))
    line = Line(app, signalwire)
    release, reading = threading.Event(), threading.Event()
    other_room, other_conf, other_rec = "+15550003333", NEXT_CONF, NEXT_REC
    try:
        answer_reads(signalwire, present=[CALL_A, CALL_B], during=lambda: (reading.set(), release.wait(8)))
        line.conference("participant-join", CALL_A)  # calls we never saw come in: Quorum reads, slowly
        line.conference("participant-join", CALL_B)
        line.recording("in-progress")
        assert reading.wait(5)
        for event, call in (("conference-start", None), ("participant-join", CALL_A), ("participant-join", CALL_C)):
            line.post(
                "/voice/conference-status",
                {
                    "AccountSid": "acct",
                    "ConferenceSid": other_conf,
                    "FriendlyName": other_room,
                    "StatusCallbackEvent": event,
                    "Timestamp": formatdate(T0, usegmt=True),
                    **({"CallSid": call} if call else {}),
                },
            )
        line.post(
            "/voice/recording-status",
            {"RecordingSid": other_rec, "RecordingStatus": "in-progress"},
            query="room=%2B15550003333",
        )
        line.post(
            "/voice/conference-status",
            {
                "AccountSid": "acct",
                "ConferenceSid": other_conf,
                "FriendlyName": other_room,
                "CallSid": CALL_C,
                "StatusCallbackEvent": "participant-leave",
                "Timestamp": formatdate(T0 + 1, usegmt=True),
            },
        )
        paused = wait_for(
            lambda: (update_path(other_conf, other_rec), {"Status": "paused", "PauseBehavior": "skip"})
            in line.updates(),
            timeout=3,
        )
        release.set()
        assert paused, "the other room's pause waited for the read"
        line.settle()
    finally:
        release.set()
        shutdown(app)


# Documented REST values.


def test_a_listed_participant_that_has_left_is_not_counted(line):
    """Participants lists may carry `status: completed` for calls that left."""
    left = [
        {"call_sid": CALL_A, "conference_sid": CONF, "status": "in-progress"},
        {"call_sid": CALL_B, "conference_sid": CONF, "status": "completed"},
    ]
    answer_reads(line.fake, present=[], participants=left)
    line.conference("participant-leave", CALL_C)  # a call we never saw join: read before deciding
    line.recording("in-progress")
    line.settle()
    assert line.state().present() == [CALL_A]
    assert line.updates() == [(update_path(CONF, REC), {"Status": "paused", "PauseBehavior": "skip"})]


def test_a_queued_recording_is_not_taken_for_recording(line):
    """SignalWire's update example answers `queued` with end_time set: the wanted state is sent again."""
    answer_reads(line.fake, present=[CALL_A, CALL_B], recordings={REC: "queued"})
    line.recording("in-progress")  # first, so the read (of calls we never saw come in) begins after it
    line.conference("participant-join", CALL_A)
    line.conference("participant-join", CALL_B)
    line.settle()
    assert line.updates() == [(update_path(CONF, REC), {"Status": "in-progress"})]


def test_documented_order_with_known_calls_reads_nothing(line):
    """join, join, conference-start for calls that came through the voice webhook: no REST read."""
    line.two_known_callers()
    line.conference("participant-leave", CALL_B, at=T0 + 1)
    line.settle()
    assert line.reads() == []
    assert line.updates() == [(update_path(CONF, REC), {"Status": "paused", "PauseBehavior": "skip"})]
    assert line.state().recordings == {REC: PAUSED}


def test_an_update_answering_422_means_the_recording_is_over_once_a_read_says_so(line):
    line.fake.remove(responses.POST, RECORDING_UPDATE)
    line.fake.add(responses.POST, RECORDING_UPDATE, status=422, json={"code": 422, "message": "finished"})
    line.two_known_callers()
    line.settle()
    answer_reads(line.fake, present=[CALL_A], recordings={REC: "completed"})
    line.conference("participant-leave", CALL_B, at=T0 + 1)
    line.settle()
    assert line.state().recordings == {REC: "gone"}
    assert len(line.updates()) == 1


@pytest.mark.slow
def test_the_reconciler_runs_at_its_own_interval_not_the_sweeps(signalwire):
    """A 0.2 s reconcile interval with the default 300 s grace (a 30 s sweep) still lists every 0.2 s."""
    answer_list(signalwire, [])
    app = create_app(make_config(reconcile_interval_s=0.2, end_grace_s=300.0))
    try:

        def lists() -> int:
            """How many conference listings SignalWire has answered so far."""
            return sum(1 for c in signalwire.calls if urlsplit(c.request.url).path.endswith("/Conferences.json"))

        assert wait_for(lambda: lists() >= 3, timeout=3)
    finally:
        shutdown(app)
