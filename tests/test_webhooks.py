"""The /voice routes through Flask's test client, with SignalWire's REST API faked over HTTP."""

import json
import time
import xml.etree.ElementTree as ET
from email.utils import formatdate
from urllib.parse import urlsplit

import pytest
import requests
import responses
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import create_app, services, shutdown
from support import (
    API_BASE,
    MEDIA_BASE,
    PUBLIC_URL,
    RECORDING_UPDATE,
    SignedCallbacks,
    make_config,
    recording_updates,
    sid,
)
from recording_state import ABANDONED, GONE, PAUSED, RECORDING

ROOM = "+15550001111"
CONF = "3b0f9c1e-8a61-4f0e-9d3c-1d2b9c0a7e11"
REC = "a7d1c2e3-5f60-4b8e-8c9d-0e1f2a3b4c5d"
NEXT_CONF = sid("next-conference")
A, B, C, D, X, STRANGER = (sid(label) for label in ("A", "B", "C", "D", "X", "stranger"))
UPDATE_PATH = f"/2010-04-01/Accounts/{API_BASE.rsplit('/', 1)[1]}/Conferences/{CONF}/Recordings/{REC}.json"


def status_form(event, call=None, at=1_800_000_000, conference=CONF, room=ROOM):
    """A conference status callback as SignalWire sends it."""
    form = {
        "AccountSid": "acct",
        "ConferenceSid": conference,
        "FriendlyName": room,
        "StatusCallbackEvent": event,
        "Timestamp": formatdate(at, usegmt=True),
    }
    if call:
        form["CallSid"] = call
    return form


class Events(SignedCallbacks):
    """Send callbacks and wait for the commands they cause."""

    def conference(self, event, call=None, **kwargs):
        response = self.post("/voice/conference-status", status_form(event, call, **kwargs))
        assert response.status_code == 204, response.data
        return response.headers["X-Quorum-Outcome"]

    def recording(self, status, sid=REC, room=ROOM):
        form = {
            "AccountSid": "acct",
            "RecordingSid": sid,
            "RecordingStatus": status,
            "RecordingUrl": f"{MEDIA_BASE}{sid}",
        }
        response = self.post("/voice/recording-status", form, query={"room": room})
        assert response.status_code == 204, response.data
        return response.headers["X-Quorum-Outcome"]

    def state(self, room=ROOM):
        return super().state(room)

    @property
    def controller(self):
        return services(self.app).controller


@pytest.fixture
def events(client, app):
    """Signed callbacks to the test's app."""
    return Events(app, client)


def two_on_the_line(events, at=1_800_000_000):
    """Start a conference with callers A and B and its recording."""
    events.conference("conference-start", at=at)
    events.conference("participant-join", A, at=at)
    events.conference("participant-join", B, at=at + 1)
    events.recording("in-progress")
    events.settle()


# --- LaML -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "attribute, expected",
    [
        ("record", "record-from-start"),
        ("startConferenceOnEnter", "true"),
        ("statusCallback", f"{PUBLIC_URL}/voice/conference-status"),
        ("statusCallbackEvent", "start end join leave hold"),
        ("recordingStatusCallback", f"{PUBLIC_URL}/voice/recording-status?room=%2B15550001111"),
        ("recordingStatusCallbackEvent", "in-progress completed failed"),
        ("trim", "do-not-trim"),
    ],
)
def test_inbound_laml_attributes(post_signed, attribute, expected):
    response = post_signed("/voice/inbound", {"CallSid": sid("c1"), "From": "+15559990000", "To": ROOM})
    conference = ET.fromstring(response.data).find("./Dial/Conference")
    assert response.mimetype == "text/xml"
    assert conference.get(attribute) == expected
    assert conference.text == ROOM


def test_each_dialed_number_gets_its_own_room(post_signed):
    rooms = {
        ET.fromstring(post_signed("/voice/inbound", {"CallSid": sid(f"c{i}"), "To": to}).data)
        .find("./Dial/Conference")
        .text
        for i, to in enumerate(["+15550000001", "+15550000002", "+15550000001"])
    }
    assert rooms == {"+15550000001", "+15550000002"}


@pytest.mark.parametrize(
    "overrides, attribute, expected",
    [
        ({"conference_room": "sales-floor"}, None, "sales-floor"),
        ({"trim": "trim-silence"}, "trim", "trim-silence"),
    ],
)
def test_inbound_follows_config(signalwire, overrides, attribute, expected):
    app = create_app(make_config(validate_signatures=False, **overrides))
    try:
        data = app.test_client().post("/voice/inbound", data={"CallSid": sid("c1"), "To": ROOM}).data
    finally:
        shutdown(app)
    conference = ET.fromstring(data).find("./Dial/Conference")
    assert (conference.get(attribute) if attribute else conference.text) == expected


# --- the quorum rule over HTTP ---------------------------------------------------------------


def test_pause_when_below_quorum_and_resume_when_back(events, signalwire):
    two_on_the_line(events)
    assert recording_updates(signalwire) == []  # two present: already recording, nothing to send
    events.conference("participant-leave", B, at=1_800_000_010)
    events.settle()
    events.conference("participant-join", C, at=1_800_000_020)
    events.settle()
    assert recording_updates(signalwire) == [
        (UPDATE_PATH, {"Status": "paused", "PauseBehavior": "skip"}),
        (UPDATE_PATH, {"Status": "in-progress"}),
    ]
    assert events.state().recordings == {REC: RECORDING}


def test_recording_that_starts_below_quorum_is_paused_at_once(events, signalwire):
    events.conference("conference-start")
    events.conference("participant-join", A)
    events.conference("participant-join", B, at=1_800_000_001)
    events.conference("participant-leave", B, at=1_800_000_002)
    assert events.recording("in-progress") == "queued"
    events.settle()
    assert recording_updates(signalwire) == [(UPDATE_PATH, {"Status": "paused", "PauseBehavior": "skip"})]


def test_duplicates_and_unknown_leaves_send_nothing(events, signalwire):
    two_on_the_line(events)
    for _ in range(3):
        events.conference("participant-join", B, at=1_800_000_001)
        events.recording("in-progress")
    events.conference("participant-leave", STRANGER, at=1_800_000_005)
    events.settle()
    assert recording_updates(signalwire) == []
    assert events.state().present() == [A, B]


def fake_conference_reads(signalwire, present, recording_status="in-progress", status="in-progress"):
    """Answer the three REST reads that rebuild a conference."""
    conference = f"{API_BASE}/Conferences/{CONF}"
    signalwire.add(responses.GET, f"{conference}.json", json={"sid": CONF, "friendly_name": ROOM, "status": status})
    signalwire.add(
        responses.GET,
        f"{conference}/Participants.json",
        json={
            "participants": [{"call_sid": call, "conference_sid": CONF} for call in present],
            "page": 0,
            "page_size": 50,
            "next_page_uri": None,
            "uri": "/p",
        },
    )
    signalwire.add(
        responses.GET,
        f"{conference}/Recordings.json",
        json={
            "recordings": [{"sid": REC, "conference_sid": CONF, "status": recording_status}],
            "page": 0,
            "page_size": 50,
            "next_page_uri": None,
            "uri": "/r",
        },
    )
    signalwire.add(
        responses.GET,
        f"{API_BASE}/Conferences.json",
        json={
            "conferences": [{"sid": CONF, "friendly_name": ROOM, "status": status}] if status == "in-progress" else [],
            "page": 0,
            "page_size": 100,
            "next_page_uri": None,
            "uri": "/c",
        },
    )


def rest_reads(signalwire):
    """Paths of the GETs sent to SignalWire."""
    return [urlsplit(c.request.url).path.rsplit("/", 1)[-1] for c in signalwire.calls if c.request.method == "GET"]


def test_state_begun_mid_conference_is_rebuilt_from_the_api_once(events, signalwire):
    """After a restart the first callback is a leave: read the conference once, then decide."""
    fake_conference_reads(signalwire, present=[A])
    events.conference("participant-leave", B)
    events.settle()
    events.conference("participant-join", C, at=1_800_000_005)
    events.settle()
    assert rest_reads(signalwire) == ["Participants.json", "Recordings.json"]
    assert recording_updates(signalwire) == [
        (UPDATE_PATH, {"Status": "paused", "PauseBehavior": "skip"}),
        (UPDATE_PATH, {"Status": "in-progress"}),
    ]
    assert events.state().present() == [A, C]


def test_recording_event_before_any_conference_event_is_kept(events, signalwire):
    fake_conference_reads(signalwire, present=[A])
    events.recording("in-progress")
    events.conference("participant-join", A)
    events.settle()
    assert recording_updates(signalwire) == [(UPDATE_PATH, {"Status": "paused", "PauseBehavior": "skip"})]


def test_no_rest_reads_for_a_conference_seen_from_its_start(events, signalwire):
    two_on_the_line(events)
    events.conference("participant-leave", B, at=1_800_000_010)
    events.settle()
    assert rest_reads(signalwire) == []


def test_pause_behavior_from_config(signalwire, post_signed):
    app = create_app(make_config(pause_behavior="silence", validate_signatures=False))
    client = app.test_client()
    try:
        client.post("/voice/conference-status", data=status_form("conference-start"))
        client.post("/voice/conference-status", data=status_form("participant-join", A))
        client.post(
            "/voice/recording-status?room=%2B15550001111", data={"RecordingSid": REC, "RecordingStatus": "in-progress"}
        )
        assert services(app).commands.wait_idle(10)
    finally:
        shutdown(app)
    assert recording_updates(signalwire) == [(UPDATE_PATH, {"Status": "paused", "PauseBehavior": "silence"})]


# --- SignalWire errors ----------------------------------------------------------------------


def replace_update(signalwire, *replies):
    """Make the recording update answer with `replies` in turn (the last one repeats)."""
    signalwire.remove(responses.POST, RECORDING_UPDATE)
    for reply in replies:
        if isinstance(reply, Exception):
            signalwire.add(responses.POST, RECORDING_UPDATE, body=reply)
        else:
            signalwire.add(
                responses.POST,
                RECORDING_UPDATE,
                status=reply,
                json={"code": 20000 + reply, "message": "nope", "status": reply},
            )


@pytest.mark.parametrize(
    "replies, posts, final",
    [
        ((503, 500, 200), 3, PAUSED),
        ((requests.exceptions.ReadTimeout("slow"), 200), 2, PAUSED),
        ((requests.exceptions.ConnectionError("reset"), 429, 200), 3, PAUSED),
        ((400,), 1, ABANDONED),
        ((401,), 1, ABANDONED),
    ],
)
def test_api_errors(events, signalwire, replies, posts, final):
    replace_update(signalwire, *replies)
    events.conference("conference-start")
    events.conference("participant-join", A)
    events.recording("in-progress")
    events.settle()
    assert len(recording_updates(signalwire)) == posts
    assert events.state().recordings == {REC: final}


@pytest.mark.parametrize("status", [404, 422])
def test_gone_recording_is_not_acted_on_again(events, signalwire, status):
    """A 404 (or 422) is checked by a read; the recording listed `completed`, it is gone for good."""
    replace_update(signalwire, status)
    fake_conference_reads(signalwire, present=[A], recording_status="completed")
    events.conference("conference-start")
    events.conference("participant-join", A)
    events.recording("in-progress")
    events.settle()
    events.conference("participant-join", B, at=1_800_000_005)
    events.conference("participant-leave", B, at=1_800_000_006)
    events.settle()
    assert len(recording_updates(signalwire)) == 1
    assert events.state().recordings == {REC: GONE}


@pytest.mark.slow
def test_reconciler_catches_a_lost_leave_callback(events, signalwire, app):
    two_on_the_line(events)
    fake_conference_reads(signalwire, present=[A])  # B hung up; that callback never came
    assert services(app).controller.reconcile() == 1  # a process's first round reads what it holds
    events.settle()
    assert recording_updates(signalwire) == [(UPDATE_PATH, {"Status": "paused", "PauseBehavior": "skip"})]
    assert events.state().present() == [A]


@pytest.mark.slow
def test_after_the_first_round_the_reconciler_reads_only_what_its_list_finds(events, signalwire, app):
    """Reads that find lost callbacks in held conferences are the repair rounds' (tests/test_repair_reads.py)."""
    two_on_the_line(events)
    fake_conference_reads(signalwire, present=[A, B])
    controller = services(app).controller
    assert controller.reconcile() == 1
    events.settle()
    events.conference("participant-leave", B, at=1_800_000_010)  # a change after that read
    events.settle()
    assert [controller.reconcile() for _ in range(12)] == [0] * 12


@pytest.mark.slow
def test_reconciler_retries_a_failed_command(events, signalwire):
    replace_update(signalwire, 400, 200)
    events.conference("conference-start")
    events.conference("participant-join", A)
    events.recording("in-progress")
    events.settle()
    assert events.state().recordings == {REC: ABANDONED}
    fake_conference_reads(signalwire, present=[A])
    events.controller.reconcile()
    events.settle()
    assert events.state().recordings == {REC: PAUSED}
    assert len(recording_updates(signalwire)) == 2


# --- end of a conference --------------------------------------------------------------------


def test_state_is_dropped_after_end_and_completed_and_late_callbacks_cannot_revive_it(events, app):
    two_on_the_line(events)
    events.conference("participant-leave", A, at=1_800_000_050)
    events.conference("participant-leave", B, at=1_800_000_051)
    events.conference("conference-end", at=1_800_000_051)
    events.settle()
    assert events.state().ended
    assert events.recording("completed") == "processing"
    assert services(app).processor.wait_idle(10)
    assert events.state() is None
    assert services(app).archive.find(CONF)["status"] == "ready"
    assert events.conference("participant-join", A) == "stale"  # a retried callback, late
    assert services(app).store.rooms() == []


def test_ended_conference_without_completed_callback_is_swept_after_grace(signalwire):
    app = create_app(make_config(end_grace_s=0.2, validate_signatures=False))
    client, store = app.test_client(), services(app).store
    try:
        client.post("/voice/conference-status", data=status_form("participant-join", A))
        client.post(
            "/voice/recording-status?room=%2B15550001111", data={"RecordingSid": REC, "RecordingStatus": "in-progress"}
        )
        client.post("/voice/conference-status", data=status_form("conference-end", at=1_800_000_009))
        assert store.rooms() == [ROOM]  # ended, but its recording has not reported completed yet
        deadline = time.monotonic() + 5
        while store.rooms() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.rooms() == []
    finally:
        shutdown(app)


def test_new_conference_in_same_room_replaces_the_ended_one(events):
    two_on_the_line(events)
    events.conference("conference-end", at=1_800_000_030)
    events.conference("participant-join", D, at=1_800_000_100, conference=NEXT_CONF)
    assert events.state().conference_sid == NEXT_CONF
    assert events.state().present() == [D]
    assert events.conference("participant-leave", A, at=1_800_000_040) == "stale"


# --- input checking ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, form, query, status, error",
    [
        (
            "/voice/conference-status",
            {"StatusCallbackEvent": "participant-join"},
            None,
            400,
            "missing field: ConferenceSid",
        ),
        ("/voice/conference-status", {"ConferenceSid": CONF}, None, 400, "missing field: StatusCallbackEvent"),
        (
            "/voice/conference-status",
            {"ConferenceSid": " ", "StatusCallbackEvent": "x"},
            None,
            400,
            "missing field: ConferenceSid",
        ),
        (
            "/voice/recording-status",
            {"RecordingStatus": "in-progress"},
            {"room": ROOM},
            400,
            "missing field: RecordingSid",
        ),
        ("/voice/recording-status", {"RecordingSid": REC}, {"room": ROOM}, 400, "missing field: RecordingStatus"),
        (
            "/voice/recording-status",
            {"RecordingSid": REC, "RecordingStatus": "in-progress"},
            None,
            400,
            "missing query parameter: room",
        ),
        ("/voice/inbound", {"CallSid": sid("c1")}, None, 400, "missing field: To"),
    ],
)
def test_bad_input_is_refused_with_the_field_named(post_signed, path, form, query, status, error):
    response = post_signed(path, form, query=query)
    assert (response.status_code, response.get_json()) == (status, {"error": error})


@pytest.mark.parametrize("event", ["participant-mute", "announcement-end", "conference-record-start"])
def test_unknown_events_are_ignored(post_signed, app, event):
    response = post_signed("/voice/conference-status", status_form(event, A))
    assert response.status_code == 204
    assert services(app).store.rooms() == []


def test_healthz(client, events):
    events.conference("conference-start")  # seen started: A's join is trusted, nothing is queued (no read)
    events.conference("participant-join", A)
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "store": "ok", "archive": "ok", "queue_depth": 0, "conferences": 1}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from(["/voice/inbound", "/voice/conference-status", "/voice/recording-status"]),
    form=st.dictionaries(
        st.sampled_from(
            [
                "ConferenceSid",
                "FriendlyName",
                "StatusCallbackEvent",
                "CallSid",
                "Timestamp",
                "RecordingSid",
                "RecordingStatus",
                "RecordingUrl",
                "RecordingDuration",
                "To",
                "From",
                "Junk",
            ]
        ),
        st.text(max_size=40),
        max_size=8,
    ),
    query=st.dictionaries(st.sampled_from(["room", "call", "x"]), st.text(max_size=20), max_size=2),
)
def test_no_signed_input_makes_a_500(post_signed, signalwire, path, form, query):
    assert post_signed(path, form, query=query).status_code < 500


def test_a_read_answered_after_the_room_moved_on_is_not_applied_to_the_next_conference(events, signalwire, app):
    """A recovery read of conference A is in flight when A ends and B starts in the same room."""

    def answer_late(request):
        events.conference("conference-end", at=1_800_000_020)
        events.conference("participant-join", D, at=1_800_000_030, conference=NEXT_CONF)
        return (
            200,
            {},
            json.dumps(
                {"participants": [{"call_sid": A}, {"call_sid": B}], "page": 0, "page_size": 50, "next_page_uri": None}
            ),
        )

    conference = f"{API_BASE}/Conferences/{CONF}"
    signalwire.add(responses.GET, f"{conference}.json", json={"sid": CONF, "status": "in-progress"})
    signalwire.add_callback(responses.GET, f"{conference}/Participants.json", callback=answer_late)
    signalwire.add(
        responses.GET,
        f"{conference}/Recordings.json",
        json={"recordings": [{"sid": REC, "status": "in-progress"}], "page": 0, "page_size": 50, "next_page_uri": None},
    )
    events.conference("participant-leave", X)  # state begun mid-conference: read it first
    events.settle()
    assert events.state().conference_sid == NEXT_CONF
    assert events.state().present() == [D] and events.state().recordings == {}
