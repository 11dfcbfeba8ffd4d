"""The SignalWire emulator on its own: REST API through the real SDK, signed callbacks,
recordings and their audio, fault knobs, scenario helpers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import time
import types
import uuid
import wave
from email.utils import parsedate_to_datetime

import numpy as np
import pytest
import requests
from signalwire.rest import Client
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator

from e2e_support import Sink
from emulator import audio, calls as calls_module
from emulator.__main__ import parse_behaviour, parse_faults
from emulator.faults import Behaviour, FaultInjector, Faults
from emulator.scenarios import (
    Player,
    expected_writes,
    hang_up_everyone,
    on_the_line,
    quorum_spans,
    random_session,
    span_problems,
)
from emulator.server import Emulator

ROOM = Sink.ROOM


@pytest.fixture
def sink():
    with Sink() as running:
        yield running


@pytest.fixture
def emulator(sink):
    with Emulator(seed=1) as running:
        running.add_number(ROOM, sink.base + "/voice")
        yield running


def sdk(emulator: Emulator, token: str = "") -> Client:
    """The real SignalWire SDK pointed at the emulator, the way Quorum points it."""
    client = Client(emulator.project, token or emulator.token, signalwire_space_url="emulator.invalid")
    client.api.base_url = emulator.url
    return client


def conference_recording(emulator, host):
    """The SDK handle of the room's conference recording, in the conference `host` is in."""
    sid = emulator.conferences(ROOM)[0].recording_sids[0]
    return sdk(emulator).conferences(host.conference_sid).recordings(sid)


def two_callers(emulator: Emulator):
    """Host and guest dial in; returns both calls once the recording has started."""
    host = emulator.dial(ROOM, "+15551110001", "host")
    guest = emulator.dial(ROOM, "+15551110002", "guest")
    assert emulator.settle()
    return host, guest


def hang_up(emulator: Emulator, *calls) -> None:
    """Hang up the calls and wait for the callbacks."""
    for call in calls:
        emulator.hangup(call.sid)
    assert emulator.settle()


def independent_signature(key: str, url: str, form: dict) -> str:
    """SignalWire's scheme, written out here rather than imported from the emulator."""
    data = url + "".join(k + form[k] for k in sorted(form))
    return base64.b64encode(hmac.new(key.encode(), data.encode(), hashlib.sha1).digest()).decode()


# REST API through the SDK


def test_conference_participants_and_recordings_through_the_sdk(emulator):
    host, guest = two_callers(emulator)
    conference = sdk(emulator).conferences(host.conference_sid)
    fetched = conference.fetch()
    assert (fetched.friendly_name, fetched.status, fetched.sid) == (ROOM, "in-progress", host.conference_sid)
    assert sorted(p.call_sid for p in conference.participants.list()) == sorted([host.sid, guest.sid])
    (recording,) = conference.recordings.list()
    assert recording.status == "in-progress" and recording.conference_sid == host.conference_sid
    uuid.UUID(recording.sid)
    hang_up(emulator, host, guest)
    assert conference.fetch().status == "completed"
    assert conference.participants.list() == []
    (finished,) = conference.recordings.list()
    assert finished.status == "completed" and int(finished.duration) >= 0


def test_recording_pause_is_idempotent_resume_works_unknown_is_404_and_finished_is_422(emulator):
    host, guest = two_callers(emulator)
    conference = sdk(emulator).conferences(host.conference_sid)
    sid = conference.recordings.list()[0].sid
    for _ in range(2):
        conference.recordings(sid).update(status="paused", pause_behavior="skip")
        assert conference.recordings(sid).fetch().status == "paused"
    assert [s.state for s in emulator.recording(sid).timeline.spans] == ["recording", "paused"]
    conference.recordings(sid).update(status="in-progress")
    assert conference.recordings(sid).fetch().status == "in-progress"
    with pytest.raises(TwilioRestException) as unknown:
        conference.recordings(str(uuid.uuid4())).update(status="paused")
    assert (unknown.value.status, unknown.value.code) == (404, 20404)
    hang_up(emulator, host, guest)
    with pytest.raises(TwilioRestException) as finished:
        conference.recordings(sid).update(status="paused")
    assert finished.value.status == 422


@pytest.mark.parametrize("form", [{"Status": "bogus"}, {"Status": "paused", "PauseBehavior": "bogus"}, {}])
def test_bad_recording_update_is_a_400_with_signalwire_error_body(emulator, form):
    host, guest = two_callers(emulator)
    sid = emulator.conferences(ROOM)[0].recording_sids[0]
    url = (
        f"{emulator.url}/2010-04-01/Accounts/{emulator.project}/Conferences/{host.conference_sid}/Recordings/{sid}.json"
    )
    response = requests.post(url, data=form, auth=(emulator.project, emulator.token), timeout=5)
    assert response.status_code == 400
    assert set(response.json()) == {"code", "message", "more_info", "status"}
    assert emulator.recording(sid).status == "in-progress"


@pytest.mark.parametrize("prefix", ["/api/laml/2010-04-01", "/2010-04-01"])
@pytest.mark.parametrize("suffix", ["", ".json"])
def test_both_api_prefixes_with_or_without_json(emulator, prefix, suffix):
    host, _ = two_callers(emulator)
    url = f"{emulator.url}{prefix}/Accounts/{emulator.project}/Conferences/{host.conference_sid}{suffix}"
    response = requests.get(url, auth=(emulator.project, emulator.token), timeout=5)
    assert response.status_code == 200 and response.json()["sid"] == host.conference_sid


@pytest.mark.parametrize("auth", ["wrong token", "wrong project", "none"])
def test_basic_auth_is_checked(emulator, auth):
    host, _ = two_callers(emulator)
    credentials = {
        "wrong token": (emulator.project, "nope"),
        "wrong project": (str(uuid.uuid4()), emulator.token),
        "none": None,
    }[auth]
    url = f"{emulator.url}/2010-04-01/Accounts/{emulator.project}/Conferences/{host.conference_sid}.json"
    response = requests.get(url, auth=credentials, timeout=5)
    assert response.status_code == 401 and response.json()["code"] == 20003


def test_sdk_sees_a_401_as_a_rest_exception(emulator):
    host, _ = two_callers(emulator)
    with pytest.raises(TwilioRestException) as refused:
        sdk(emulator, token="wrong").conferences(host.conference_sid).fetch()
    assert refused.value.status == 401


def test_call_recording_create_update_and_dual_channel_media(emulator, sink):
    host, guest = two_callers(emulator)
    calls = sdk(emulator).calls(host.sid)
    created = calls.recordings.create(
        recording_channels="dual",
        recording_track="both",
        recording_status_callback=sink.base + "/call-rec?who=host",
        recording_status_callback_event="in-progress completed",
    )
    assert created.status == "in-progress" and created.call_sid == host.sid
    time.sleep(0.2)
    calls.recordings(created.sid).update(status="paused", pause_behavior="silence")
    assert calls.recordings(created.sid).fetch().status == "paused"
    hang_up(emulator, host, guest)
    callbacks = sink.at("/call-rec")
    assert [c.form["RecordingStatus"] for c in callbacks] == ["in-progress", "completed"]
    assert all(c.url.endswith("/call-rec?who=host") and c.form["CallSid"] == host.sid for c in callbacks)
    samples = emulator.audio(created.sid)
    assert samples.shape[1] == 2 and not np.array_equal(samples[:, 0], samples[:, 1])


def test_incoming_phone_numbers_list_and_update_through_the_sdk(emulator, sink):
    client = sdk(emulator)
    (number,) = client.incoming_phone_numbers.list(phone_number=ROOM, limit=1)
    assert number.voice_url == sink.base + "/voice"
    assert client.incoming_phone_numbers.list(phone_number="+19999999999") == []
    number.update(voice_url=sink.base + "/voice-two", voice_method="POST")
    emulator.dial(ROOM, "+15551110001")
    assert [r.path for r in sink.received][:1] == ["/voice-two"]


# Callbacks


def test_every_webhook_is_signed_like_signalwire(emulator, sink):
    hang_up(emulator, *two_callers(emulator))
    assert len(sink.received) >= 8
    validator = RequestValidator(emulator.signing_key)
    for received in sink.received:
        signature = received.headers["X-Signalwire-Signature"]
        assert signature == independent_signature(emulator.signing_key, received.url, received.form)
        assert validator.validate(received.url, received.form, signature)


def test_conference_callbacks_go_to_the_first_participants_url_in_order(sink):
    first_url = {"statusCallback": "{base}/status", "statusCallbackEvent": "start end join leave"}
    sink.attrs = (
        lambda form: first_url
        if form["From"] == "+15551110001"
        else {"statusCallback": "{base}/other", "statusCallbackEvent": "start end join leave"}
    )
    with Emulator() as emulator:
        emulator.add_number(ROOM, sink.base + "/voice")
        hang_up(emulator, *two_callers(emulator))
        received = sink.at("/status")
        assert sink.at("/other") == []
        assert [r.form["StatusCallbackEvent"] for r in received] == [
            "participant-join",
            "participant-join",
            "conference-start",
            "participant-leave",
            "participant-leave",
            "conference-end",
        ]
        for r in received:
            assert r.form["AccountSid"] == emulator.project and r.form["FriendlyName"] == ROOM
            uuid.UUID(r.form["ConferenceSid"])
            assert parsedate_to_datetime(r.form["Timestamp"]).tzinfo is not None
            assert ("CallSid" in r.form) == r.form["StatusCallbackEvent"].startswith("participant-")


def test_only_the_events_asked_for_are_sent(sink):
    sink.attrs = lambda form: {"statusCallback": "{base}/status", "statusCallbackEvent": "join"}
    with Emulator() as emulator:
        emulator.add_number(ROOM, sink.base + "/voice")
        hang_up(emulator, *two_callers(emulator))
        assert [r.form["StatusCallbackEvent"] for r in sink.at("/status")] == ["participant-join"] * 2


def test_recording_callbacks_keep_the_query_string_and_carry_no_conference_sid(emulator, sink):
    host, guest = two_callers(emulator)
    time.sleep(0.2)
    hang_up(emulator, host, guest)
    received = sink.at("/recording")
    assert [r.form["RecordingStatus"] for r in received] == ["in-progress", "completed"]
    for r in received:
        assert r.url == sink.base + "/recording?room=%2B15550100&x=1"
        assert "ConferenceSid" not in r.form
        assert r.form["RecordingSource"] == "Conference" and r.form["CallSid"] == ""
    completed = received[-1].form
    assert int(completed["RecordingDuration"]) == round(emulator.recording(completed["RecordingSid"]).duration())
    media = requests.get(completed["RecordingUrl"] + ".wav", timeout=5)  # no auth, like SignalWire's
    assert media.status_code == 200 and media.content[:4] == b"RIFF"


def test_record_from_start_waits_for_the_second_caller(emulator):
    host = emulator.dial(ROOM, "+15551110001")
    time.sleep(0.3)
    assert emulator.conferences(ROOM)[0].recording_sids == []
    guest = emulator.dial(ROOM, "+15551110002")
    (sid,) = emulator.conferences(ROOM)[0].recording_sids
    assert emulator.recording(sid).started_at == pytest.approx(guest.joined_at, abs=0.01)
    hang_up(emulator, host, guest)


def test_without_record_from_start_nothing_is_recorded(sink):
    sink.attrs = lambda form: {"statusCallback": "{base}/status", "statusCallbackEvent": "start end"}
    with Emulator() as emulator:
        emulator.add_number(ROOM, sink.base + "/voice")
        hang_up(emulator, *two_callers(emulator))
        assert emulator.conferences(ROOM)[0].recording_sids == [] and sink.at("/recording") == []


@pytest.mark.parametrize("answers, attempts", [([500, 500], 3), ([503, 503, 503, 503], 3), ([404], 1), ([200], 1)])
def test_failed_callbacks_are_retried_up_to_three_times(sink, answers, attempts):
    sink.answers["/status"] = list(answers)
    sink.attrs = lambda form: {"statusCallback": "{base}/status", "statusCallbackEvent": "start"}
    with Emulator(callback_retry_after_s=0.05) as emulator:
        emulator.add_number(ROOM, sink.base + "/voice")
        two_callers(emulator)
        assert len(sink.at("/status")) == attempts
        tried = [a for a in emulator.callback_attempts() if a.callback.event == "conference-start"]
        assert [a.number for a in tried] == list(range(1, attempts + 1))


# Documented behaviour (SignalWire's <Conference> noun page and the Compatibility OpenAPI)

EVERY_EVENT = {
    "statusCallback": "{base}/status",
    "statusCallbackEvent": "start end join leave hold",
    "record": "record-from-start",
    "recordingStatusCallback": "{base}/recording",
    "recordingStatusCallbackEvent": "in-progress completed failed absent",
}
STANDARD_FIELDS = {"AccountSid", "CallSid", "From", "To", "CallStatus", "ApiVersion", "Direction"}
PARTICIPANT_CALLBACK_FIELDS = STANDARD_FIELDS | {
    "ConferenceSid",
    "FriendlyName",
    "Timestamp",
    "Muted",
    "Hold",
    "StartConferenceOnEnter",
    "EndConferenceOnExit",
    "StatusCallbackEvent",
}
CONFERENCE_CALLBACK_FIELDS = {"AccountSid", "ConferenceSid", "FriendlyName", "Timestamp", "StatusCallbackEvent"}
RECORDING_CALLBACK_FIELDS = {
    "AccountSid",
    "CallSid",
    "RecordingSid",
    "RecordingUrl",
    "RecordingStatus",
    "RecordingDuration",
    "RecordingChannels",
    "RecordingSource",
}
CONFERENCE_FIELDS = {
    "sid",
    "account_sid",
    "date_created",
    "date_updated",
    "friendly_name",
    "status",
    "api_version",
    "region",
    "uri",
    "subresource_uris",
}
PARTICIPANT_FIELDS = {
    "account_sid",
    "call_sid",
    "call_sid_to_coach",
    "coaching",
    "conference_sid",
    "date_created",
    "status",
    "date_updated",
    "end_conference_on_exit",
    "muted",
    "hold",
    "start_conference_on_enter",
    "uri",
}
RECORDING_FIELDS = {
    "sid",
    "account_sid",
    "api_version",
    "call_sid",
    "conference_sid",
    "channel",
    "channels",
    "date_created",
    "date_updated",
    "start_time",
    "end_time",
    "duration",
    "price",
    "price_unit",
    "source",
    "status",
    "error_code",
    "uri",
    "subresource_uris",
    "encryption_details",
    "trim",
}
NUMBER_FIELDS = {
    "account_id",
    "account_sid",
    "address_requirements",
    "address_sid",
    "api_version",
    "beta",
    "capabilities",
    "country_code",
    "date_created",
    "date_updated",
    "emergency_address_sid",
    "emergency_status",
    "friendly_name",
    "identity_sid",
    "origin",
    "phone_number",
    "sid",
    "sms_application_sid",
    "sms_fallback_method",
    "sms_fallback_url",
    "sms_method",
    "sms_url",
    "status_callback",
    "status_callback_method",
    "trunk_sid",
    "uri",
    "voice_application_sid",
    "voice_caller_id_lookup",
    "voice_fallback_method",
    "voice_fallback_url",
    "voice_method",
    "voice_url",
}


def started_emulator(sink, behaviour: Behaviour = Behaviour(), attrs: dict = EVERY_EVENT) -> Emulator:
    """An emulator (to use as a context manager) whose calls get `attrs`."""
    sink.attrs = lambda form: attrs
    emulator = Emulator(behaviour=behaviour).start()
    emulator.add_number(ROOM, sink.base + "/voice")
    return emulator


def api_get(emulator: Emulator, path: str, **params) -> requests.Response:
    """GET an API path under SignalWire's documented base."""
    url = f"{emulator.url}/api/laml/2010-04-01/Accounts/{emulator.project}{path}"
    return requests.get(url, params=params, auth=(emulator.project, emulator.token), timeout=5)


def status_events(sink) -> list:
    """The StatusCallbackEvent of every conference callback, in arrival order."""
    return [r.form["StatusCallbackEvent"] for r in sink.at("/status")]


def frozen_clock(monkeypatch) -> None:
    """Stop the simulator's clock, so a recording that starts and ends now holds no media."""
    now = time.time()
    monkeypatch.setattr(calls_module, "time", types.SimpleNamespace(time=lambda: now))


def test_a_lone_caller_joins_but_the_conference_neither_starts_nor_records(sink):
    with started_emulator(sink) as emulator:
        host = emulator.dial(ROOM, "+15551110001")
        assert emulator.settle()
        assert status_events(sink) == ["participant-join"]
        assert api_get(emulator, f"/Conferences/{host.conference_sid}.json").json()["status"] == "init"
        assert emulator.conferences(ROOM)[0].recording_sids == [] and sink.at("/recording") == []


def test_the_documented_order_is_join_join_start_and_recording_begins_at_start(sink):
    with started_emulator(sink) as emulator:
        host, guest = two_callers(emulator)
        assert status_events(sink) == ["participant-join", "participant-join", "conference-start"]
        conf = emulator.conferences(ROOM)[0]
        assert api_get(emulator, f"/Conferences/{conf.sid}.json").json()["status"] == "in-progress"
        assert emulator.recording(conf.recording_sids[0]).started_at == conf.started_at
        assert [r.form["RecordingStatus"] for r in sink.at("/recording")] == ["in-progress"]
        hang_up(emulator, host, guest)


def test_callers_without_start_conference_on_enter_wait_for_one_with_it(sink):
    waiting = {**EVERY_EVENT, "startConferenceOnEnter": "false"}
    sink.attrs = lambda form: EVERY_EVENT if form["From"] == "+15551110003" else waiting
    with Emulator() as emulator:
        emulator.add_number(ROOM, sink.base + "/voice")
        first, second = two_callers(emulator)
        assert "conference-start" not in status_events(sink) and emulator.conferences(ROOM)[0].status == "init"
        assert emulator.conferences(ROOM)[0].recording_sids == []
        moderator = emulator.dial(ROOM, "+15551110003")
        assert emulator.settle()
        assert status_events(sink)[-2:] == ["participant-join", "conference-start"]
        assert len(emulator.conferences(ROOM)[0].recording_sids) == 1
        hang_up(emulator, first, second, moderator)


@pytest.mark.parametrize("sends_end", [True, False])
def test_unstarted_conference_end_knob(sink, sends_end):
    with started_emulator(sink, Behaviour(unstarted_conference_end=sends_end)) as emulator:
        host = emulator.dial(ROOM, "+15551110001")
        hang_up(emulator, host)
        expected = ["participant-join", "participant-leave"] + (["conference-end"] if sends_end else [])
        assert status_events(sink) == expected
        assert api_get(emulator, f"/Conferences/{host.conference_sid}.json").json()["status"] == "completed"


def test_conference_and_participant_callbacks_carry_the_documented_fields_only(sink):
    with started_emulator(sink) as emulator:
        hang_up(emulator, *two_callers(emulator))
        for received in sink.at("/status"):
            event = received.form["StatusCallbackEvent"]
            fields = PARTICIPANT_CALLBACK_FIELDS if event.startswith("participant-") else CONFERENCE_CALLBACK_FIELDS
            assert set(received.form) == fields, event
            assert received.form["Timestamp"].endswith("+0000") and "." not in received.form["Timestamp"]


def test_conference_recording_events_default_to_completed_failed(sink):
    attrs = {key: value for key, value in EVERY_EVENT.items() if key != "recordingStatusCallbackEvent"}
    with started_emulator(sink, attrs=attrs) as emulator:
        time.sleep(0.1)
        hang_up(emulator, *two_callers(emulator))
        (completed,) = sink.at("/recording")
        assert completed.form["RecordingStatus"] == "completed"
        assert set(completed.form) == RECORDING_CALLBACK_FIELDS


@pytest.mark.parametrize("empty", ["completed", "failed"])
def test_empty_conference_recording_knob_and_absent_is_never_sent(sink, monkeypatch, empty):
    frozen_clock(monkeypatch)
    with started_emulator(sink, Behaviour(empty_conference_recording=empty)) as emulator:
        host, guest = two_callers(emulator)
        hang_up(emulator, host, guest)
        received = [r.form for r in sink.at("/recording")]
        assert [form["RecordingStatus"] for form in received] == ["in-progress", empty]
        assert received[-1]["RecordingDuration"] == "0"
        media = requests.get(received[-1]["RecordingUrl"] + ".wav", timeout=5)
        assert media.status_code == (200 if empty == "completed" else 404)
        (listed,) = sdk(emulator).conferences(host.conference_sid).recordings.list()
        assert listed.status == ("completed" if empty == "completed" else "absent")


def test_call_recordings_can_still_report_absent(sink, monkeypatch):
    frozen_clock(monkeypatch)
    with started_emulator(sink) as emulator:
        host, guest = two_callers(emulator)
        sdk(emulator).calls(host.sid).recordings.create(
            recording_status_callback=sink.base + "/call-rec", recording_status_callback_event="completed absent"
        )
        hang_up(emulator, host, guest)
        (absent,) = sink.at("/call-rec")
        assert absent.form["RecordingStatus"] == "absent" and absent.form["RecordingSource"] == "StartCallRecordingApi"


@pytest.mark.parametrize("departed_listed", [False, True])
def test_participants_have_the_documented_fields_and_departed_ones_follow_the_knob(sink, departed_listed):
    with started_emulator(sink, Behaviour(departed_participants_listed=departed_listed)) as emulator:
        host, guest = two_callers(emulator)
        third = emulator.dial(ROOM, "+15551110003")
        hang_up(emulator, guest)
        items = api_get(emulator, f"/Conferences/{host.conference_sid}/Participants.json").json()["participants"]
        assert all(set(item) == PARTICIPANT_FIELDS for item in items)
        statuses = {item["call_sid"]: item["status"] for item in items}
        expected = {host.sid: "in-progress", third.sid: "in-progress"}
        assert statuses == ({**expected, guest.sid: "completed"} if departed_listed else expected)
        item = items[0]
        assert (item["conference_sid"], item["hold"], item["muted"], item["coaching"]) == (
            host.conference_sid,
            False,
            False,
            False,
        )
        assert item["start_conference_on_enter"] is True and item["end_conference_on_exit"] is False
        parsedate_to_datetime(item["date_created"])
        hang_up(emulator, host, third)


@pytest.mark.parametrize("queued", [True, False])
def test_update_answer_knob_says_queued_like_the_doc_example(sink, queued):
    with started_emulator(sink, Behaviour(update_answers_queued=queued)) as emulator:
        host, guest = two_callers(emulator)
        sid = emulator.conferences(ROOM)[0].recording_sids[0]
        path = f"/Conferences/{host.conference_sid}/Recordings/{sid}.json"
        answer = requests.post(
            f"{emulator.url}/api/laml/2010-04-01/Accounts/{emulator.project}{path}",
            data={"Status": "paused", "PauseBehavior": "skip"},
            auth=(emulator.project, emulator.token),
            timeout=5,
        ).json()
        if queued:
            assert answer["status"] == "queued" and answer["end_time"] is not None and answer["duration"] >= 0
        else:
            assert (answer["status"], answer["end_time"], answer["duration"]) == ("paused", None, -1)
        assert sdk(emulator).conferences(host.conference_sid).recordings(sid).fetch().status == "paused"
        hang_up(emulator, host, guest)


@pytest.mark.parametrize("resumed", ["in-progress", "resumed"])
def test_resumed_status_knob(sink, resumed):
    with started_emulator(sink, Behaviour(resumed_status=resumed)) as emulator:
        host, guest = two_callers(emulator)
        recording = conference_recording(emulator, host)
        recording.update(status="paused")
        recording.update(status="in-progress")
        assert recording.fetch().status == resumed
        recording.update(status="paused")  # a resumed recording can be paused again
        assert recording.fetch().status == "paused"
        hang_up(emulator, host, guest)


@pytest.mark.parametrize("stopped", ["completed", "stopped"])
def test_stopped_status_knob(sink, stopped):
    with started_emulator(sink, Behaviour(stopped_status=stopped)) as emulator:
        host, guest = two_callers(emulator)
        recording = conference_recording(emulator, host)
        time.sleep(0.1)
        recording.update(status="stopped")
        assert emulator.settle()
        assert recording.fetch().status == stopped
        assert [r.form["RecordingStatus"] for r in sink.at("/recording")] == ["in-progress", "completed"]
        with pytest.raises(TwilioRestException) as finished:
            recording.update(status="in-progress")
        assert finished.value.status == 422
        hang_up(emulator, host, guest)


def test_behaviour_refuses_undocumented_values():
    for knob in ("empty_conference_recording", "resumed_status", "stopped_status"):
        with pytest.raises(ValueError):
            Behaviour(**{knob: "bogus"})


def test_pause_behavior_applies_to_paused_only(emulator):
    host, guest = two_callers(emulator)
    recording = conference_recording(emulator, host)
    recording.update(status="in-progress", pause_behavior="skip")
    recording.update(status="paused")
    (_, paused) = emulator.recording(emulator.conferences(ROOM)[0].recording_sids[0]).timeline.spans
    assert paused.behavior == "silence"  # UpdateConferenceRecordingRequest: "Default is `silence`"
    hang_up(emulator, host, guest)


def test_unknown_call_recording_is_404_and_finished_one_is_422(emulator):
    host, guest = two_callers(emulator)
    calls = sdk(emulator).calls(host.sid)
    created = calls.recordings.create()
    with pytest.raises(TwilioRestException) as unknown:
        calls.recordings(str(uuid.uuid4())).update(status="paused")
    assert unknown.value.status == 404
    hang_up(emulator, host, guest)
    url = f"{emulator.url}/2010-04-01/Accounts/{emulator.project}/Calls/{host.sid}/Recordings/{created.sid}.json"
    finished = requests.post(url, data={"Status": "paused"}, auth=(emulator.project, emulator.token), timeout=5)
    assert finished.status_code == 422 and set(finished.json()) == {"code", "message", "more_info", "status"}


def test_resources_have_the_openapi_fields_and_types(emulator):
    host, guest = two_callers(emulator)
    conference = api_get(emulator, f"/Conferences/{host.conference_sid}.json").json()
    assert set(conference) == CONFERENCE_FIELDS
    (recording,) = api_get(emulator, f"/Conferences/{host.conference_sid}/Recordings.json").json()["recordings"]
    assert set(recording) == RECORDING_FIELDS
    assert (recording["source"], recording["channels"], recording["duration"]) == ("Conference", "1", -1)
    assert recording["trim"] == "trim-silence"  # <Conference trim> "default: trim-silence"
    call_recording = sdk(emulator).calls(host.sid).recordings.create()
    fetched = api_get(emulator, f"/Calls/{host.sid}/Recordings/{call_recording.sid}.json").json()
    assert set(fetched) == RECORDING_FIELDS and fetched["trim"] == "do-not-trim"
    (number,) = api_get(emulator, "/IncomingPhoneNumbers.json", PhoneNumber=ROOM).json()["incoming_phone_numbers"]
    assert NUMBER_FIELDS <= set(number)
    hang_up(emulator, host, guest)
    (finished,) = api_get(emulator, f"/Conferences/{host.conference_sid}/Recordings.json").json()["recordings"]
    assert isinstance(finished["duration"], int) and finished["end_time"] is not None


def test_conferences_list_filters_by_status_and_the_sdk_pages_through_it(sink):
    with started_emulator(sink) as emulator:
        for room in ("+15550001", "+15550002", "+15550003"):
            sink.ROOM = room
            hang_up(emulator, emulator.dial(ROOM, "+15551110001"))
        sink.ROOM = "+15550004"
        lone = emulator.dial(ROOM, "+15551110001")
        sink.ROOM = "+15550005"
        live = two_callers(emulator)
        client = sdk(emulator)
        assert [c.sid for c in client.conferences.list(status="in-progress")] == [live[0].conference_sid]
        assert [c.sid for c in client.conferences.list(status="init")] == [lone.conference_sid]
        assert len(list(client.conferences.stream(status="completed", page_size=2))) == 3
        assert len(client.conferences.list(page_size=2)) == 5
        pages = [c.path for c in emulator.rest_log.calls if c.path.endswith("/Conferences.json")]
        assert len(pages) >= 3 + 3  # 2 + 1 completed, then 2 + 2 + 1 of all, each a request
        raw = api_get(emulator, "/Conferences", Status="in-progress", PageSize=1).json()
        assert raw["next_page_uri"] is None and raw["first_page_uri"].endswith("Status=in-progress&Page=0&PageSize=1")
        bad = api_get(emulator, "/Conferences", Status="bogus")
        assert bad.status_code == 400
        hang_up(emulator, lone, *live)


# Update Conference, recording deletion, participant hold


def api_post(emulator: Emulator, path: str, **form) -> requests.Response:
    """POST a form to an API path under SignalWire's documented base."""
    url = f"{emulator.url}/api/laml/2010-04-01/Accounts/{emulator.project}{path}"
    return requests.post(url, data=form, auth=(emulator.project, emulator.token), timeout=5)


def test_update_conference_status_completed_ends_it_for_everyone(sink):
    with started_emulator(sink) as emulator:
        host, guest = two_callers(emulator)
        ended = sdk(emulator).conferences(host.conference_sid).update(status="completed")
        assert emulator.settle()
        assert ended.status == "completed" and (host.status, guest.status) == ("completed", "completed")
        assert status_events(sink)[-3:] == ["participant-leave", "participant-leave", "conference-end"]
        assert [r.form["RecordingStatus"] for r in sink.at("/recording")][-1] == "completed"
        again = api_post(emulator, f"/Conferences/{host.conference_sid}.json", Status="completed")
        assert again.status_code == 422 and set(again.json()) == {"code", "message", "more_info", "status"}
        assert api_post(emulator, f"/Conferences/{uuid.uuid4()}.json", Status="completed").status_code == 404
        assert api_post(emulator, f"/Conferences/{host.conference_sid}.json", Status="init").status_code == 400


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_announce_url_is_fetched_signed_and_its_say_is_recorded(sink, method):
    sink.laml["/announce"] = "<Response><Say>The meeting ends in five minutes.</Say><Pause/></Response>"
    with started_emulator(sink) as emulator:
        host, guest = two_callers(emulator)
        sdk(emulator).conferences(host.conference_sid).update(
            announce_url=sink.base + "/announce?x=1", announce_method=method
        )
        (fetched,) = sink.at("/announce")
        signature = fetched.headers["X-Signalwire-Signature"]
        assert RequestValidator(emulator.signing_key).validate(fetched.url, fetched.form, signature)
        assert fetched.url.startswith(sink.base + "/announce?x=1")
        (announced,) = [e for e in emulator.sim.events if e.kind.startswith("announce")]
        assert (announced.kind, announced.room, announced.present) == ("announced", ROOM, 2)
        assert announced.detail == "The meeting ends in five minutes."
        hang_up(emulator, host, guest)


def test_an_announce_url_that_fails_is_recorded_as_such(sink):
    with started_emulator(sink) as emulator:
        host, guest = two_callers(emulator)
        assert (
            api_post(
                emulator, f"/Conferences/{host.conference_sid}.json", AnnounceUrl=sink.base + "/nothing-here"
            ).status_code
            == 200
        )
        (failed,) = [e for e in emulator.sim.events if e.kind.startswith("announce")]
        assert failed.kind == "announce-failed" and "204" in failed.detail
        hang_up(emulator, host, guest)


def test_deleted_recording_answers_204_then_its_media_and_resource_404(emulator):
    hang_up(emulator, *two_callers(emulator))
    sid = emulator.conferences(ROOM)[0].recording_sids[0]
    media = emulator.sim.recording_url(sid) + ".wav"
    assert requests.get(media, timeout=5).status_code == 200
    deleted = requests.delete(
        f"{emulator.url}/api/laml/2010-04-01/Accounts/{emulator.project}/Recordings/{sid}",
        auth=(emulator.project, emulator.token),
        timeout=5,
    )
    assert deleted.status_code == 204 and deleted.content == b""
    assert requests.get(media, timeout=5).status_code == 404
    assert api_get(emulator, f"/Recordings/{sid}.json").status_code == 404
    conference_sid = emulator.conferences(ROOM)[0].sid
    assert api_get(emulator, f"/Conferences/{conference_sid}/Recordings.json").json()["recordings"] == []


def test_conference_recording_delete_through_the_sdk_and_running_ones_are_refused(emulator):
    host, guest = two_callers(emulator)
    recordings = sdk(emulator).conferences(host.conference_sid).recordings
    sid = emulator.conferences(ROOM)[0].recording_sids[0]
    with pytest.raises(TwilioRestException) as running:
        recordings(sid).delete()
    assert running.value.status == 400
    hang_up(emulator, host, guest)
    assert recordings(sid).delete() is True
    with pytest.raises(TwilioRestException) as gone:
        recordings(sid).delete()
    assert gone.value.status == 404


def test_recording_delete_through_the_sdk_s_own_path_removes_both_media_kinds(emulator):
    hang_up(emulator, *two_callers(emulator))
    sid = emulator.conferences(ROOM)[0].recording_sids[0]
    media = emulator.sim.recording_url(sid)
    assert sdk(emulator).recordings(sid).delete() is True  # DELETE /2010-04-01/Accounts/{P}/Recordings/{R}.json
    assert emulator.rest_log.calls[-1].method == "DELETE" and emulator.rest_log.calls[-1].status == 204
    with pytest.raises(TwilioRestException) as gone:
        sdk(emulator).recordings(sid).delete()
    assert gone.value.status == 404
    assert [requests.get(media + ext, timeout=5).status_code for ext in ("", ".wav", ".mp3")] == [404, 404, 404]


def test_hold_and_unhold_send_callbacks_with_hold_flag(sink):
    with started_emulator(sink) as emulator:
        host, guest = two_callers(emulator)
        participant = sdk(emulator).conferences(host.conference_sid).participants(guest.sid)
        assert participant.update(hold=True).hold is True
        assert participant.fetch().hold is True
        participant.update(hold=True)  # already on hold: no second callback
        assert participant.update(hold=False).hold is False
        assert emulator.settle()
        held = [r.form for r in sink.at("/status") if r.form["StatusCallbackEvent"].endswith("hold")]
        assert [(f["StatusCallbackEvent"], f["Hold"], f["CallSid"]) for f in held] == [
            ("participant-hold", "true", guest.sid),
            ("participant-unhold", "false", guest.sid),
        ]
        assert all(set(f) == PARTICIPANT_CALLBACK_FIELDS for f in held)
        assert (
            api_post(
                emulator, f"/Conferences/{host.conference_sid}/Participants/{guest.sid}.json", Hold="maybe"
            ).status_code
            == 400
        )
        hang_up(emulator, guest)
        assert (
            api_post(
                emulator, f"/Conferences/{host.conference_sid}/Participants/{guest.sid}.json", Hold="true"
            ).status_code
            == 422
        )
        hang_up(emulator, host)


def test_hold_events_are_sent_only_when_asked_for(sink):
    attrs = {**EVERY_EVENT, "statusCallbackEvent": "start end join leave"}
    with started_emulator(sink, attrs=attrs) as emulator:
        host, guest = two_callers(emulator)
        emulator.hold(guest.sid)
        emulator.hold(guest.sid, on=False)
        hang_up(emulator, host, guest)
        assert not any(event.endswith("hold") for event in status_events(sink))


def test_hold_and_unhold_scenario_steps(sink):
    with started_emulator(sink) as emulator:
        player = Player(emulator)
        player.play(
            [
                ("call", "host", ROOM),
                ("call", "guest", ROOM),
                ("hold", "guest"),
                ("unhold", "guest"),
                ("hangup", "guest"),
                ("hangup", "host"),
            ]
        )
        assert emulator.settle()
        assert [e.kind for e in emulator.sim.events if e.kind in ("held", "unheld")] == ["held", "unheld"]
        assert "participant-hold" in status_events(sink) and "participant-unhold" in status_events(sink)


# Recordings and audio


@pytest.mark.parametrize("behavior", ["skip", "silence"])
def test_paused_span_is_dropped_by_skip_and_kept_as_silence(emulator, behavior):
    host, guest = two_callers(emulator)
    conference = sdk(emulator).conferences(host.conference_sid)
    sid = emulator.conferences(ROOM)[0].recording_sids[0]
    time.sleep(0.3)
    conference.recordings(sid).update(status="paused", pause_behavior=behavior)
    time.sleep(0.4)
    conference.recordings(sid).update(status="in-progress")
    time.sleep(0.3)
    hang_up(emulator, host, guest)
    timeline = emulator.recording(sid).timeline
    assert [s.state for s in timeline.spans] == ["recording", "paused", "recording"]
    recorded, paused = timeline.seconds("recording"), timeline.seconds("paused")
    with wave.open(io.BytesIO(emulator.wav(sid))) as wav:
        assert (wav.getframerate(), wav.getsampwidth(), wav.getnchannels()) == (8000, 2, 1)
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    expected = recorded if behavior == "skip" else recorded + paused
    assert abs(len(samples) / 8000 - expected) < 0.002
    if behavior == "silence":
        first, silent, _ = timeline.pieces(emulator.recording(sid).origin)
        assert silent.silent and not samples[first.end - first.start :][: silent.end - silent.start].any()


def test_media_is_not_served_before_the_recording_ends(emulator):
    two_callers(emulator)
    sid = emulator.conferences(ROOM)[0].recording_sids[0]
    assert requests.get(emulator.sim.recording_url(sid) + ".wav", timeout=5).status_code == 404


def test_mp3_is_served_when_an_encoder_is_installed_and_refused_otherwise(emulator, monkeypatch):
    hang_up(emulator, *two_callers(emulator))
    sid = emulator.conferences(ROOM)[0].recording_sids[0]
    url = emulator.sim.recording_url(sid) + ".mp3"
    if audio.mp3_encoder():
        response = requests.get(url, timeout=30)
        assert response.headers["Content-Type"] == "audio/mpeg"
        assert response.content[:3] == b"ID3" or response.content[0] == 0xFF
    monkeypatch.setattr(audio, "mp3_encoder", lambda: None)
    refused = requests.get(url, timeout=5)
    assert refused.status_code == 404 and refused.json()["code"] == 20404


def _pitch(samples: np.ndarray) -> float:
    """Fundamental frequency of voiced audio by autocorrelation over 70-300 Hz."""
    x = samples - samples.mean()
    corr = np.correlate(x, x, mode="full")[len(x) - 1 :]
    lags = np.arange(8000 // 300, 8000 // 70)
    return 8000 / lags[np.argmax(corr[lags])]


def test_voices_are_speech_like_distinct_and_repeatable():
    voices = [audio.Voice(audio.voice_seed(0, caller)) for caller in ("+15551110001", "+15551110002")]
    for voice in voices:
        speech = voice.render(0, 8000 * 6)
        assert np.array_equal(speech, voice.render(0, 8000 * 6))
        assert np.allclose(speech[4000:6000], voice.render(4000, 2000), atol=1e-5)  # spans render on their own
        frames = np.sqrt((speech[: len(speech) // 160 * 160].reshape(-1, 160) ** 2).mean(axis=1))
        assert 0.1 < (frames < 0.01).mean() < 0.9  # pauses between syllables, words and turns
        loud = np.flatnonzero(frames > frames.max() / 2)[0] * 160
        assert _pitch(speech[loud : loud + 800]) == pytest.approx(voice.f0, rel=0.15)
        envelope = np.abs(np.fft.rfft(frames - frames.mean()))
        rates = np.fft.rfftfreq(len(frames), d=0.02)
        band = (rates > 2) & (rates < 12)
        assert rates[band][np.argmax(envelope[band])] == pytest.approx(1 / voice.syllable_s, abs=0.3)  # syllables
    assert abs(voices[0].f0 - voices[1].f0) > 1


@pytest.mark.parametrize("caller", ["+15551110001", "+15551110002"])
def test_each_callers_room_and_line_noise_are_measurable(caller):
    from conversations.audio_quality import analyze  # Quorum's own blind estimator, as the archive uses it

    voice = audio.Voice(audio.voice_seed(0, caller))
    quality = analyze((np.clip(voice.render(0, 8000 * 20), -1, 1) * 32767).astype(np.int16), 8000)
    assert quality.rt60 == pytest.approx(voice.rt60, abs=0.1)
    assert quality.snr >= 15


# Fault knobs


def _starts_and_joins(emulator: Emulator, callers: int = 4):
    """Dial several callers and hang them all up."""
    calls = [emulator.dial(ROOM, f"+1555111000{i}") for i in range(callers)]
    hang_up(emulator, *calls)


@pytest.mark.parametrize(
    "knob, check",
    [
        ({"callback_duplicate": 1.0}, lambda sent, got: len(got) == 2 * len(sent)),
        ({"callback_drop": 1.0}, lambda sent, got: got == []),
        ({"callback_delay_s": 0.2}, lambda sent, got: got == sent),
        (
            {"callback_reorder": 0.5, "callback_reorder_hold_s": 0.3},
            lambda sent, got: sorted(got) == sorted(sent) and got != sent,
        ),
    ],
)
def test_callback_knobs(sink, knob, check):
    with Emulator(faults=Faults(seed=3, **knob)) as emulator:
        emulator.add_number(ROOM, sink.base + "/voice")
        _starts_and_joins(emulator)
        sent = [(e.kind, e.label) for e in emulator.sim.events if e.kind in ("joined", "left")]
        got = [
            (r.form["StatusCallbackEvent"], r.form["CallSid"])
            for r in sink.at("/status")
            if r.form["StatusCallbackEvent"].startswith("participant-")
        ]
        calls = {c.sid: c.label for c in emulator.sim.calls.values()}
        got = [("joined" if kind == "participant-join" else "left", calls[sid]) for kind, sid in got]
        assert check(sent, got)
        injected = emulator.injector.injected
        assert set(injected) == {
            "callback_" + next(k for k in knob if not k.endswith("hold_s")).removeprefix("callback_").removesuffix("_s")
        }


def test_drop_events_knob_loses_only_those_events(sink):
    with Emulator(faults=Faults(callback_drop_events=frozenset({"conference-start"}))) as emulator:
        emulator.add_number(ROOM, sink.base + "/voice")
        hang_up(emulator, *two_callers(emulator))
        events = [r.form["StatusCallbackEvent"] for r in sink.at("/status")]
        assert "conference-start" not in events and events.count("participant-join") == 2
        assert emulator.injector.injected == {"callback_drop": 1}


@pytest.mark.parametrize(
    "pairs, expected",
    [
        (["callback_duplicate=0.2"], Faults(seed=4, callback_duplicate=0.2)),
        (["rest_timeout_applies=true", "rest_hang_s=1"], Faults(seed=4, rest_timeout_applies=True, rest_hang_s=1.0)),
        (
            ["callback_drop_events=conference-start,participant-leave"],
            Faults(seed=4, callback_drop_events=frozenset({"conference-start", "participant-leave"})),
        ),
    ],
)
def test_command_line_fault_knobs(pairs, expected):
    assert parse_faults(pairs, seed=4) == expected
    with pytest.raises(SystemExit):
        parse_faults(["no_such_knob=1"], seed=4)


def test_command_line_behaviour_knobs():
    assert parse_behaviour(["unstarted_conference_end=false", "empty_conference_recording=failed"]) == Behaviour(
        unstarted_conference_end=False, empty_conference_recording="failed"
    )
    with pytest.raises(SystemExit):
        parse_behaviour(["no_such_knob=1"])


def test_rest_latency_knob_delays_answers(sink):
    with Emulator(faults=Faults(rest_latency_s=0.3)) as emulator:
        emulator.add_number(ROOM, sink.base + "/voice")
        caller = emulator.dial(ROOM, "+15551110001")
        started = time.time()
        sdk(emulator).conferences(caller.conference_sid).fetch()
        assert time.time() - started >= 0.3
        assert emulator.rest_log.calls[-1].elapsed_s >= 0.3


@pytest.mark.parametrize("applies", [False, True])
def test_rest_timeout_knob_hangs_and_applies_only_when_told(sink, applies):
    faults = Faults(rest_timeout=1.0, rest_hang_s=0.5, rest_timeout_applies=applies)
    with Emulator(faults=faults) as emulator:
        emulator.add_number(ROOM, sink.base + "/voice")
        host, guest = two_callers(emulator)
        sid = emulator.conferences(ROOM)[0].recording_sids[0]
        url = (
            f"{emulator.url}/2010-04-01/Accounts/{emulator.project}/Conferences/{host.conference_sid}"
            f"/Recordings/{sid}.json"
        )
        with pytest.raises(requests.Timeout):
            requests.post(url, data={"Status": "paused"}, auth=(emulator.project, emulator.token), timeout=0.2)
        assert emulator.settle()
        assert emulator.recording(sid).status == ("paused" if applies else "in-progress")
        assert emulator.rest_log.calls[-1].injected == "timeout"


def test_rest_error_knob_answers_5xx_without_applying(sink):
    with Emulator(faults=Faults(rest_error=1.0)) as emulator:
        emulator.add_number(ROOM, sink.base + "/voice")
        host, guest = two_callers(emulator)
        sid = emulator.conferences(ROOM)[0].recording_sids[0]
        with pytest.raises(TwilioRestException) as failed:
            sdk(emulator).conferences(host.conference_sid).recordings(sid).update(status="paused")
        assert failed.value.status in (500, 503)
        assert emulator.recording(sid).status == "in-progress"
        assert emulator.rest_log.counts() == {"POST": 1} and emulator.injector.injected["rest_error"] == 1


def test_rest_error_methods_confine_the_errors_and_an_outage_can_end(sink):
    with Emulator(faults=Faults(rest_error=1.0, rest_error_methods=frozenset({"DELETE"}))) as emulator:
        emulator.add_number(ROOM, sink.base + "/voice")
        hang_up(emulator, *two_callers(emulator))
        sid = emulator.conferences(ROOM)[0].recording_sids[0]
        recording = sdk(emulator).recordings(sid)
        assert recording.fetch().status == "completed"  # a GET is not a DELETE: answered
        with pytest.raises(TwilioRestException) as failed:
            recording.delete()
        assert failed.value.status in (500, 503) and not emulator.recording(sid).deleted
        emulator.set_faults(Faults())  # the outage ends
        assert recording.delete() is True and emulator.recording(sid).deleted
        assert emulator.injector.injected["rest_error"] == 1


def test_media_error_knob_fails_downloads_but_not_the_api(sink):
    with Emulator(faults=Faults(media_error=1.0)) as emulator:
        emulator.add_number(ROOM, sink.base + "/voice")
        hang_up(emulator, *two_callers(emulator))
        sid = emulator.conferences(ROOM)[0].recording_sids[0]
        assert requests.get(emulator.sim.recording_url(sid) + ".wav", timeout=5).status_code in (500, 503)
        assert sdk(emulator).recordings(sid).fetch().status == "completed"  # the metadata is API, not media
        assert emulator.injector.injected["media_error"] == 1


def test_fault_decisions_are_seeded_per_stream():
    def plans(seed, key):
        injector = FaultInjector(Faults(seed=seed, callback_duplicate=0.5, callback_reorder=0.5))
        return [injector.plan_callback(key) for _ in range(50)]

    assert plans(1, "room#1") == plans(1, "room#1")
    assert plans(1, "room#1") != plans(2, "room#1")
    assert plans(1, "room#1") != plans(1, "room#2")


# Scenario helpers


@pytest.mark.parametrize(
    "counts, minimum, spans, writes",
    [
        ([1, 2, 1, 2, 3, 2, 1, 0], 2, [(1, 2), (3, 6)], 3),
        ([1, 2, 1, 2, 3, 2, 1, 0], 3, [(4, 5)], 3),
        ([1, 2, 3, 2, 1, 0], 1, [(1, 5)], 0),
        ([1, 0], 2, [], 0),
    ],
)
def test_expected_spans_and_writes(counts, minimum, spans, writes):
    changes = list(enumerate(counts))
    assert quorum_spans(changes, minimum) == spans
    assert expected_writes(changes, minimum) == writes


@pytest.mark.parametrize(
    "actual, expected, ok",
    [
        ([(1.0, 2.0)], [(1.1, 2.2)], True),
        ([(1.0, 2.0)], [(1.5, 2.0)], False),
        ([(0.0, 0.1), (1.0, 2.0)], [(1.0, 2.0)], True),  # the record-from-start sliver
        ([(1.0, 2.0), (3.0, 4.0)], [(1.0, 4.0)], False),
    ],
)
def test_span_comparison(actual, expected, ok):
    assert (span_problems(actual, expected, 0.25) == []) is ok


def test_random_sessions_and_hanging_up_everyone():
    import random

    steps = random_session(random.Random(5), ROOM, 12, people=3)
    assert {step[0] for step in steps} <= {"call", "hangup", "wait"}
    assert on_the_line(steps + hang_up_everyone(steps)) == []
    with pytest.raises(ValueError):
        Player(None).play([("dance", "host")])
