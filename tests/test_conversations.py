"""Per-participant recordings, the conversation record, the archive, the API and event callbacks,
through Flask's test client with SignalWire (REST and media) faked over HTTP."""

import hashlib
import hmac
import json
import re
from email.utils import formatdate
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

from app import create_app, services, shutdown
from support import API_BASE, MEDIA_BASE, SignedCallbacks, make_config, sid
from recording_state import PAUSED, RECORDING

ROOM = "+15550002222"
CONF = "5d6e7f80-1a2b-4c3d-8e9f-a0b1c2d3e4f5"
MIX = "0a1b2c3d-4e5f-4061-8273-94a5b6c7d8e9"
HOST, GUEST, OTHER = "+15551110001", "+15551110002", "+15551110003"
EVENTS_URL = "https://hooks.example.com/quorum"
CALL_RECORDINGS = re.compile(rf"{re.escape(API_BASE)}/Calls/([^/]+)/Recordings\.json")
CALL_RECORDING_UPDATE = re.compile(rf"{re.escape(API_BASE)}/Calls/([^/]+)/Recordings/([^/]+)\.json")
TOKEN = "s3cret-api-token"
A, B, C = sid("A"), sid("B"), sid("C")


class Phone(SignedCallbacks):
    """Drives one app through signed callbacks, like SignalWire would."""

    def __init__(self, app):
        super().__init__(app)
        self.clock = 1_800_000_000
        self.conference_sid = CONF

    def post(self, path, form, query=""):
        response = super().post(path, form, query)
        assert response.status_code < 300, response.data
        return response

    def dial(self, call, number):
        self.post("/voice/inbound", {"CallSid": call, "From": number, "To": ROOM})

    def conference(self, event, call=None):
        self.clock += 1
        form = {
            "ConferenceSid": self.conference_sid,
            "FriendlyName": ROOM,
            "StatusCallbackEvent": event,
            "Timestamp": formatdate(self.clock, usegmt=True),
        }
        self.post("/voice/conference-status", form | ({"CallSid": call} if call else {}))

    def recording(self, sid, status):
        self.post(
            "/voice/recording-status",
            {
                "RecordingSid": sid,
                "RecordingStatus": status,
                "RecordingUrl": MEDIA_BASE + sid,
                "RecordingDuration": "2",
            },
            query=f"room=%2B{ROOM[1:]}",
        )

    def state(self):
        return super().state(ROOM)

    def finish(self):
        """Everyone hangs up; every recording reports completed; processing runs."""
        for call in self.state().present():
            self.conference("participant-leave", call)
        self.conference("conference-end")
        self.settle()
        for recording_sid in list(self.state().recordings):
            self.recording(recording_sid, "completed")
        assert services(self.app).processor.wait_idle(20)


@pytest.fixture
def fake_calls(signalwire):
    """Call recordings: create answers a new sid per call; updates are accepted."""
    created = []

    def create(request):
        call = CALL_RECORDINGS.match(request.url).group(1)
        recording_sid = sid(f"rec-{len(created)}")
        created.append((call, recording_sid, {k: v[0] for k, v in parse_qs(request.body).items()}))
        return 201, {}, json.dumps({"sid": recording_sid, "call_sid": call, "status": "in-progress"})

    signalwire.add_callback(responses.POST, CALL_RECORDINGS, callback=create)
    signalwire.add(responses.POST, CALL_RECORDING_UPDATE, json={"status": "paused"})
    return created


@pytest.fixture
def received(signalwire):
    """The user's own server: keeps each event callback's body and signature."""
    bodies = []

    def receive(request):
        bodies.append((request.body, request.headers.get("X-Quorum-Signature")))
        return 200, {}, ""

    signalwire.add_callback(responses.POST, EVENTS_URL, callback=receive)
    return bodies


def make_phone(tmp_path, **settings):
    """A phone on an app with the given settings and an archive in tmp_path."""
    return Phone(create_app(make_config(recordings_dir=str(tmp_path), api_token=TOKEN, **settings)))


@pytest.fixture
def phone(tmp_path, signalwire, fake_calls, received, request):
    settings = getattr(request, "param", {})
    app_phone = make_phone(
        tmp_path,
        participant_recording="inbound",
        event_callback_url=EVENTS_URL,
        event_callback_secret="hook-secret",
        **settings,
    )
    yield app_phone
    shutdown(app_phone.app)


def updates(signalwire, pattern):
    """(path, form) of every POST matching `pattern`."""
    return [
        (
            urlsplit(c.request.url).path.split("/Accounts/")[1].split("/", 1)[1],
            {k: v[0] for k, v in parse_qs(c.request.body).items()},
        )
        for c in signalwire.calls
        if c.request.method == "POST" and pattern.fullmatch(c.request.url)
    ]


def start_call(phone, *callers):
    """conference-start, then each (call, number) dials in and joins."""
    phone.conference("conference-start")
    for call, number in callers:
        phone.dial(call, number)
        phone.conference("participant-join", call)
        phone.settle()


def test_participant_recordings_start_with_the_quorum_and_follow_it(phone, signalwire, fake_calls):
    start_call(phone, (A, HOST))
    assert fake_calls == []  # alone: nothing may be recorded
    start_call(phone, (B, GUEST))
    phone.recording(MIX, "in-progress")
    phone.settle()
    assert sorted(call for call, _, _ in fake_calls) == [A, B]
    assert fake_calls[0][2] == {
        "RecordingChannels": "mono",
        "RecordingTrack": "inbound",
        "Trim": "do-not-trim",
        "RecordingStatusCallback": "https://quorum.example.com/voice/recording-status?room=%2B15550002222&call=" + A,
        "RecordingStatusCallbackMethod": "POST",
        "RecordingStatusCallbackEvent": "in-progress completed absent",
    }
    phone.conference("participant-leave", B)
    phone.settle()
    a_recording = next(sid for call, sid, _ in fake_calls if call == A)
    assert updates(signalwire, CALL_RECORDING_UPDATE) == [
        (f"Calls/{A}/Recordings/{a_recording}.json", {"Status": "paused", "PauseBehavior": "skip"})
    ]
    assert phone.state().recordings[MIX] == PAUSED and phone.state().recordings[a_recording] == PAUSED
    phone.dial(C, OTHER)
    phone.conference("participant-join", C)
    phone.settle()
    assert phone.state().recordings[MIX] == RECORDING and phone.state().recordings[a_recording] == RECORDING
    assert [call for call, _, _ in fake_calls] == [A, B, C]


@pytest.mark.parametrize("phone", [{"record_participants": f"{HOST}, +15559999999"}], indirect=True)
def test_only_listed_numbers_get_their_own_recording(phone, fake_calls):
    start_call(phone, (A, HOST), (B, GUEST), (C, OTHER))
    assert [call for call, _, _ in fake_calls] == [A]


def test_rejoin_gives_a_second_channel_with_the_same_connection_id(phone, tmp_path):
    start_call(phone, (A, HOST), (B, GUEST))
    phone.recording(MIX, "in-progress")
    phone.conference("participant-leave", B)
    start_call(phone, (sid("B2"), GUEST))
    phone.finish()
    conversation = services(phone.app).archive.find(CONF)
    channels = conversation["channels"]
    assert [c["connection_id"] for c in channels] == [HOST, GUEST, GUEST]
    assert channels[1]["end_ms"] <= channels[2]["start_ms"]
    assert all(c["start_ms"] <= c["end_ms"] for c in channels)


def test_finished_conversation_is_archived_with_audio_and_figures(phone, tmp_path):
    start_call(phone, (A, HOST), (B, GUEST))
    phone.recording(MIX, "in-progress")
    phone.settle()
    phone.finish()
    assert phone.state() is None
    conversation = services(phone.app).archive.find(CONF)
    directory = next(tmp_path.glob(f"*/*/{CONF}"))
    assert directory.relative_to(tmp_path).parts[0] == "+15550002222"
    assert conversation["status"] == "ready" and conversation["id"] == CONF and conversation["room"] == ROOM
    assert conversation["audio"]["wav_file"] == "mix.wav" and conversation["audio"]["mp3_file"] is None
    assert conversation["audio"]["duration_ms"] == 2000
    assert isinstance(conversation["audio"]["snr"], float)
    assert [c["audio"]["wav_file"] for c in conversation["channels"]] == ["channel-01.wav", "channel-02.wav"]
    assert sorted(p.name for p in directory.iterdir()) == [
        "channel-01.wav",
        "channel-02.wav",
        "conversation.json",
        "mix.wav",
    ]  # and no temp files left behind
    assert conversation["recording_timeline"][0]["state"] == "recording"


def test_event_callbacks_are_signed_and_carry_ids(phone, received):
    start_call(phone, (A, HOST), (B, GUEST))
    phone.recording(MIX, "in-progress")
    phone.conference("participant-leave", B)
    phone.settle()
    phone.finish()
    assert services(phone.app).events.wait_idle(10)
    events = []
    for body, signature in received:
        assert signature == hmac.new(b"hook-secret", body, hashlib.sha256).hexdigest()
        events.append(json.loads(body))
    assert [e["type"] for e in events] == ["recording.paused", "conversation.ready"]
    assert events[0]["data"]["conversation_id"] == CONF and events[0]["data"]["recording_sid"] == MIX
    assert events[1]["id"] == f"{CONF}.ready" and events[1]["data"]["status"] == "ready"
    assert len({e["id"] for e in events}) == 2


def test_event_callbacks_are_retried_until_accepted(tmp_path, signalwire):
    attempts = []

    def flaky(request):
        attempts.append(json.loads(request.body)["id"])
        return (503, {}, "") if len(attempts) < 3 else (200, {}, "")

    signalwire.add_callback(responses.POST, EVENTS_URL, callback=flaky)
    app = create_app(
        make_config(recordings_dir=str(tmp_path), event_callback_url=EVENTS_URL, event_callback_secret="k")
    )
    try:
        services(app).events._first_backoff_s = 0.05  # keep the test short
        services(app).events.send("test.event", "evt-1", {})
        assert services(app).events.wait_idle(10)
    finally:
        shutdown(app)
    assert attempts == ["evt-1"] * 3


# --- the API ----------------------------------------------------------------------------------


@pytest.fixture
def api(tmp_path, signalwire, fake_calls):
    """A phone with one archived conversation and one live one."""
    app_phone = make_phone(tmp_path)
    start_call(app_phone, (A, HOST), (B, GUEST))
    app_phone.recording(MIX, "in-progress")
    app_phone.finish()
    yield app_phone
    shutdown(app_phone.app)


def get(phone, path, token=TOKEN):
    """GET with a bearer token."""
    return phone.client.get(path, headers={"Authorization": f"Bearer {token}"} if token else {})


@pytest.mark.parametrize("token, status", [(None, 401), ("wrong", 401), (TOKEN, 200)])
def test_api_requires_the_bearer_token(api, token, status):
    assert get(api, "/api/conversations", token).status_code == status


def test_api_is_off_without_a_token(tmp_path, signalwire):
    app = create_app(make_config(recordings_dir=str(tmp_path)))
    try:
        response = app.test_client().get("/api/conversations", headers={"Authorization": "Bearer x"})
    finally:
        shutdown(app)
    assert response.status_code == 503 and "set API_TOKEN" in response.get_json()["error"]


def test_api_lists_and_fetches(api):
    listing = get(api, "/api/conversations").get_json()
    assert listing["total"] == 1 and listing["conversations"][0]["id"] == CONF
    assert get(api, f"/api/conversations/{CONF}").get_json()["status"] == "ready"
    assert get(api, "/api/conversations?room=%2B19999999999").get_json()["total"] == 0
    assert get(api, "/api/conversations?status=live").get_json()["total"] == 0
    assert get(api, "/api/conversations?status=ready&per_page=1&page=1").get_json()["next_page"] is None


@pytest.mark.parametrize("query", ["status=bogus", "page=0", "per_page=1000", "page=x"])
def test_api_refuses_bad_queries(api, query):
    assert get(api, f"/api/conversations?{query}").status_code == 400


@pytest.mark.parametrize(
    "path, status",
    [
        ("/api/conversations/..%2F..%2Fetc%2Fpasswd", 404),
        ("/api/conversations/../../etc/passwd", 404),
        ("/api/conversations/%2e%2e", 404),
        ("/api/conversations/" + "a" * 65, 400),
        ("/api/conversations/" + "a" * 5000, 400),
        ("/api/conversations/5d6e7f80-0000-0000-0000-000000000000", 404),
    ],
)
def test_api_refuses_hostile_ids(api, path, status):
    assert get(api, path).status_code == status


def test_archive_survives_a_restart(api, tmp_path, signalwire):
    shutdown(api.app)  # first: the state file is held by one process at a time
    again = create_app(make_config(recordings_dir=str(tmp_path), api_token=TOKEN))
    try:
        listing = again.test_client().get("/api/conversations", headers={"Authorization": f"Bearer {TOKEN}"})
    finally:
        shutdown(again)
    assert [c["id"] for c in listing.get_json()["conversations"]] == [CONF]


def test_live_conversation_is_listed_while_it_runs(tmp_path, signalwire, fake_calls):
    phone = make_phone(tmp_path)
    try:
        start_call(phone, (A, HOST), (B, GUEST))
        phone.recording(MIX, "in-progress")
        live = get(phone, f"/api/conversations/{CONF}").get_json()
    finally:
        shutdown(phone.app)
    assert live["status"] == "live" and live["ended_at"] is None
    assert [c["from"] for c in live["channels"]] == [HOST, GUEST]
    assert live["recording_timeline"][0]["state"] == "recording"


def test_next_call_in_the_room_does_not_swallow_the_previous_conversation(phone, tmp_path):
    """A ends; B starts in the same room before A's recording reports completed."""
    start_call(phone, (A, HOST), (B, GUEST))
    phone.recording(MIX, "in-progress")
    for call in (A, B):
        phone.conference("participant-leave", call)
    phone.conference("conference-end")
    phone.settle()
    previous, phone.conference_sid = CONF, "7e8f9a0b-1c2d-4e3f-8a4b-5c6d7e8f9a0b"
    start_call(phone, (C, OTHER))  # the room's next conference
    assert phone.state().conference_sid == phone.conference_sid and phone.state().recordings == {}
    parked = services(phone.app).store.get(f"{ROOM}#{previous}")
    assert parked.ended and MIX in parked.recordings
    for recording_sid in parked.recordings:  # A's recordings report completed late: they must still find A
        phone.recording(recording_sid, "completed")
    assert services(phone.app).processor.wait_idle(20)
    archived = services(phone.app).archive.find(previous)
    assert archived["status"] == "ready" and archived["audio"]["wav_file"] == "mix.wav"
    assert phone.state().recordings == {} and phone.state().present() == [C]


def test_late_callback_for_an_archived_recording_changes_nothing(phone):
    start_call(phone, (A, HOST), (B, GUEST))
    phone.recording(MIX, "in-progress")
    phone.finish()
    for status in ("in-progress", "completed"):
        response = phone.post(
            "/voice/recording-status", {"RecordingSid": MIX, "RecordingStatus": status}, query=f"room=%2B{ROOM[1:]}"
        )
        assert response.headers["X-Quorum-Outcome"] == "stale"
    assert services(phone.app).store.rooms() == []
