"""The emulator against SignalWire's documentation: response codes, error and list shapes, the Standard
Request Parameters, and the second signal that a caller left (the number's call status callback and
`<Dial action>`), over HTTP with a recording sink standing in for the application.
"""

from __future__ import annotations

import time
import uuid
from email.utils import parsedate_to_datetime
from urllib.parse import parse_qs, urlsplit

import pytest
from twilio.request_validator import RequestValidator

from e2e_support import Sink, quorum_stack
from emulator.faults import Behaviour, Faults
from emulator.server import Emulator
from test_emulator import (
    CONFERENCE_CALLBACK_FIELDS,
    EVERY_EVENT,
    PARTICIPANT_CALLBACK_FIELDS,
    STANDARD_FIELDS,
    api_get,
    api_post,
    frozen_clock,
    hang_up,
    sdk,
    two_callers,
)

pytestmark = pytest.mark.slow

ROOM = Sink.ROOM
ERROR_FIELDS = {"code", "message", "more_info", "status"}
ENVELOPE_FIELDS = {"uri", "first_page_uri", "next_page_uri", "previous_page_uri", "page", "page_size"}
CALL_STATUS_FIELDS = STANDARD_FIELDS | {"CallDuration", "Timestamp", "SequenceNumber", "AudioInMos"}
DIAL_ACTION_FIELDS = STANDARD_FIELDS | {"DialCallStatus", "DialCallDuration"}
CALL_FIELDS = {
    "sid",
    "account_sid",
    "api_version",
    "date_created",
    "date_updated",
    "parent_call_sid",
    "to",
    "formatted_to",
    "to_formatted",
    "from",
    "formatted_from",
    "from_formatted",
    "phone_number_sid",
    "status",
    "start_time",
    "end_time",
    "duration",
    "price",
    "price_unit",
    "direction",
    "answered_by",
    "forwarded_from",
    "caller_name",
    "uri",
    "subresource_uris",
    "annotation",
    "group_sid",
    "audio_in_mos",
    "sip_result_code",
    "audio_rtt_avg",
    "audio_rtt_min",
    "audio_rtt_max",
    "audio_out_jitter_min",
    "audio_out_jitter_max",
    "audio_out_jitter_avg",
    "audio_out_lost",
}
HOST, GUEST = "+15551110001", "+15551110002"


@pytest.fixture
def sink():
    with Sink() as running:
        yield running


def conference_laml(sink: Sink, dial: str = "", after: str = "", **attrs: str) -> str:
    """A LaML document joining ROOM's conference (every callback to the sink) with `<Dial>` attributes `dial`."""
    conference = {
        "statusCallback": f"{sink.base}/status",
        "statusCallbackEvent": "start end join leave",
        "record": "record-from-start",
        "recordingStatusCallback": f"{sink.base}/recording",
        **attrs,
    }
    body = " ".join(f'{k}="{v}"' for k, v in conference.items())
    return f"<Response><Dial {dial}><Conference {body}>{ROOM}</Conference></Dial>{after}</Response>"


def emulator_for(
    sink: Sink,
    laml: str,
    *,
    behaviour: Behaviour = Behaviour(),
    faults: Faults = Faults(),
    status_callback: str = "/call-status",
    **options,
) -> Emulator:
    """An emulator (to use as a context manager) whose number answers `laml` and reports call ends to the sink."""
    sink.laml["/answer"] = laml
    emulator = Emulator(behaviour=behaviour, faults=faults, **options).start()
    emulator.add_number(ROOM, sink.base + "/answer", status_callback=status_callback and sink.base + status_callback)
    return emulator


def forms(sink: Sink, path: str) -> list:
    """The forms (or, for GET, the query parameters) the sink received at `path`."""
    return [r.form or {k: v[0] for k, v in parse_qs(urlsplit(r.url).query).items()} for r in sink.at(path)]


def status_events(sink: Sink) -> list:
    """(StatusCallbackEvent, CallSid, CallStatus) of every conference callback."""
    return [(f["StatusCallbackEvent"], f.get("CallSid"), f.get("CallStatus")) for f in forms(sink, "/status")]


def kinds(emulator: Emulator, *wanted: str) -> list:
    """(kind, label, detail) of the emulator's events of the kinds wanted, in order."""
    return [(e.kind, e.label, e.detail) for e in emulator.sim.events if e.kind in wanted]


# 1-3: response codes, error bodies, list envelopes


def test_creating_a_call_recording_answers_200(sink):
    with emulator_for(sink, conference_laml(sink)) as emulator:
        host, guest = two_callers(emulator)
        created = api_post(emulator, f"/Calls/{host.sid}/Recordings.json", RecordingChannels="mono")
        assert created.status_code == 200 and created.json()["call_sid"] == host.sid
        hang_up(emulator, host, guest)


def test_422_bodies_are_signalwire_errors_but_a_conference_recording_update_keeps_its_errors_list(sink):
    with emulator_for(sink, conference_laml(sink)) as emulator:
        host, guest = two_callers(emulator)
        call_recording = sdk(emulator).calls(host.sid).recordings.create()
        conference, recording = host.conference_sid, emulator.conferences(ROOM)[0].recording_sids[0]
        hang_up(emulator, host, guest)
        refused = {
            "call recording": api_post(
                emulator, f"/Calls/{host.sid}/Recordings/{call_recording.sid}.json", Status="paused"
            ),
            "conference": api_post(emulator, f"/Conferences/{conference}.json", Status="completed"),
            "participant": api_post(emulator, f"/Conferences/{conference}/Participants/{guest.sid}.json", Hold="true"),
            "conference recording": api_post(
                emulator, f"/Conferences/{conference}/Recordings/{recording}.json", Status="paused"
            ),
        }
        assert {what: r.status_code for what, r in refused.items()} == dict.fromkeys(refused, 422)
        for what in ("call recording", "conference", "participant"):
            body = refused[what].json()
            assert set(body) == ERROR_FIELDS and body["status"] == 422, what
        errors = refused["conference recording"].json()
        assert set(errors) == {"errors"} and all(isinstance(e, str) for e in errors["errors"])


def test_list_envelopes_carry_only_the_documented_keys(sink):
    with emulator_for(sink, conference_laml(sink)) as emulator:
        host, guest = two_callers(emulator)
        sdk(emulator).calls(host.sid).recordings.create()
        conference = host.conference_sid
        for path, key in [
            ("/Conferences.json", "conferences"),
            (f"/Conferences/{conference}/Participants.json", "participants"),
            (f"/Conferences/{conference}/Recordings.json", "recordings"),
            ("/IncomingPhoneNumbers.json", "incoming_phone_numbers"),
            (f"/Calls/{host.sid}/Recordings.json", "recordings"),
        ]:
            page = api_get(emulator, path, PageSize=1).json()
            assert set(page) == ENVELOPE_FIELDS | {key}, path
        hang_up(emulator, host, guest)


def test_the_sdk_still_pages_through_lists_without_start_and_end(sink):
    with emulator_for(sink, conference_laml(sink)) as emulator:
        calls = [emulator.dial(ROOM, f"+1555111000{i}") for i in range(5)]
        assert emulator.settle()
        participants = sdk(emulator).conferences(calls[0].conference_sid).participants
        assert sorted(p.call_sid for p in participants.stream(page_size=2)) == sorted(c.sid for c in calls)
        assert len(participants.list(page_size=1)) == 5
        pages = [c for c in emulator.rest_log.calls if c.path.endswith("/Participants.json")]
        assert len(pages) == 3 + 5
        hang_up(emulator, *calls)


# 4: Standard Request Parameters in conference status callbacks


def test_participant_callbacks_carry_their_calls_standard_request_parameters(sink):
    with emulator_for(sink, conference_laml(sink)) as emulator:
        host, guest = two_callers(emulator)
        hang_up(emulator, guest)
        sdk(emulator).conferences(host.conference_sid).update(status="completed")  # the host is still on the line
        assert emulator.settle()
        callbacks = forms(sink, "/status")
        for form in callbacks:
            event = form["StatusCallbackEvent"]
            participant = event.startswith("participant-")
            assert set(form) == (PARTICIPANT_CALLBACK_FIELDS if participant else CONFERENCE_CALLBACK_FIELDS), event
            if participant:
                caller = host if form["CallSid"] == host.sid else guest
                assert (form["From"], form["To"], form["Direction"], form["ApiVersion"]) == (
                    caller.from_,
                    ROOM,
                    "inbound",
                    "2010-04-01",
                )
        assert status_events(sink) == [
            ("participant-join", host.sid, "in-progress"),
            ("participant-join", guest.sid, "in-progress"),
            ("conference-start", None, None),
            ("participant-leave", guest.sid, "completed"),  # hung up
            ("participant-leave", host.sid, "in-progress"),  # dropped out of the conference, still on the call
            ("conference-end", None, None),
        ]


# 5: a failed conference recording says `failed` or `absent`


@pytest.mark.parametrize("subscribed", ["in-progress completed failed", "in-progress completed absent"])
@pytest.mark.parametrize("reported", ["failed", "absent"])
def test_failed_recording_status_knob(sink, monkeypatch, reported, subscribed):
    frozen_clock(monkeypatch)  # the recording holds no media, so it fails
    behaviour = Behaviour(empty_conference_recording="failed", failed_recording_status=reported)
    laml = conference_laml(sink, recordingStatusCallbackEvent=subscribed)
    with emulator_for(sink, laml, behaviour=behaviour) as emulator:
        host, guest = two_callers(emulator)
        hang_up(emulator, host, guest)
        assert [f["RecordingStatus"] for f in forms(sink, "/recording")] == ["in-progress", reported]
        (listed,) = sdk(emulator).conferences(host.conference_sid).recordings.list()
        assert listed.status == "absent"  # OpenAPI RecordingStatus has no `failed`, either way


def test_the_default_still_reports_failed_and_refuses_other_values():
    assert Behaviour().failed_recording_status == "failed"
    with pytest.raises(ValueError):
        Behaviour(failed_recording_status="lost")


# 6: the number's StatusCallback


def test_a_number_takes_status_callback_and_reports_it(sink):
    with emulator_for(sink, conference_laml(sink), status_callback="/first") as emulator:
        client = sdk(emulator)
        (number,) = client.incoming_phone_numbers.list(phone_number=ROOM)
        assert (number.status_callback, number.status_callback_method) == (sink.base + "/first", "POST")
        updated = number.update(status_callback=sink.base + "/call-status?x=1", status_callback_method="GET")
        assert (updated.status_callback, updated.status_callback_method) == (sink.base + "/call-status?x=1", "GET")
        raw = api_get(emulator, f"/IncomingPhoneNumbers/{number.sid}.json").json()
        assert (raw["status_callback"], raw["status_callback_method"]) == (sink.base + "/call-status?x=1", "GET")
        assert (
            api_post(emulator, f"/IncomingPhoneNumbers/{number.sid}.json", StatusCallbackMethod="PUT").status_code
            == 400
        )
        caller = emulator.dial(ROOM, HOST)
        hang_up(emulator, caller)
        (received,) = sink.at("/call-status")
        assert RequestValidator(emulator.signing_key).validate(
            received.url, {}, received.headers["X-Signalwire-Signature"]
        )
        assert parse_qs(urlsplit(received.url).query)["CallSid"] == [caller.sid]


def test_the_call_status_callback_reports_a_completed_call(sink):
    with emulator_for(sink, conference_laml(sink)) as emulator:
        host, guest = two_callers(emulator)
        time.sleep(1.1)
        hang_up(emulator, host)
        (form,) = forms(sink, "/call-status")
        assert set(form) == CALL_STATUS_FIELDS
        assert {k: form[k] for k in STANDARD_FIELDS} == {
            "AccountSid": emulator.project,
            "CallSid": host.sid,
            "From": HOST,
            "To": ROOM,
            "CallStatus": "completed",
            "ApiVersion": "2010-04-01",
            "Direction": "inbound",
        }
        assert int(form["CallDuration"]) == round(host.ended_at - host.answered_at) >= 1
        assert (form["SequenceNumber"], form["AudioInMos"]) == ("0", "4.5")
        assert abs(parsedate_to_datetime(form["Timestamp"]).timestamp() - host.ended_at) < 1
        assert [a.callback.event for a in emulator.callback_attempts() if a.callback.url.endswith("/call-status")] == [
            "call-status"
        ]
        hang_up(emulator, guest)


@pytest.mark.parametrize("stamp", ["event", "created"])
def test_call_status_timestamp_knob(sink, stamp):
    with emulator_for(sink, conference_laml(sink), behaviour=Behaviour(call_status_timestamp=stamp)) as emulator:
        caller = emulator.dial(ROOM, HOST)
        time.sleep(1.1)
        hang_up(emulator, caller)
        (form,) = forms(sink, "/call-status")
        expected = caller.ended_at if stamp == "event" else caller.created_at
        assert int(parsedate_to_datetime(form["Timestamp"]).timestamp()) == int(expected)


def test_a_failed_call_reports_failed(sink):
    with Emulator() as emulator:
        emulator.add_number(ROOM, sink.base + "/no-laml-here", status_callback=sink.base + "/call-status")
        caller = emulator.dial(ROOM, HOST)
        assert emulator.settle()
        assert caller.status == "failed"
        (form,) = forms(sink, "/call-status")
        assert (form["CallStatus"], form["CallDuration"], form["CallSid"]) == ("failed", "0", caller.sid)


def test_calls_of_a_number_without_status_callback_send_none(sink):
    with emulator_for(sink, conference_laml(sink), status_callback="") as emulator:
        hang_up(emulator, *two_callers(emulator))
        assert not any(a.callback.event == "call-status" for a in emulator.callback_attempts())


@pytest.mark.parametrize("dropped, kept", [("participant-leave", "call-status"), ("call-status", "participant-leave")])
def test_the_call_status_callback_and_the_conference_are_independent_of_each_other(sink, dropped, kept):
    with emulator_for(
        sink, conference_laml(sink), faults=Faults(callback_drop_events=frozenset({dropped}))
    ) as emulator:
        host, guest = two_callers(emulator)
        hang_up(emulator, host)
        sent = {
            "call-status": [f["CallSid"] for f in forms(sink, "/call-status")],
            "participant-leave": [s for e, s, _ in status_events(sink) if e == "participant-leave"],
        }
        assert sent == {dropped: [], kept: [host.sid]}
        hang_up(emulator, guest)


def test_a_slow_conference_lane_does_not_hold_up_the_call_status_callback(sink):
    with emulator_for(sink, conference_laml(sink), callback_retry_after_s=0.4) as emulator:
        host, guest = two_callers(emulator)
        sink.answers["/status"] = [500, 500]  # the participant-leave succeeds at its third attempt
        hang_up(emulator, host)
        (call_status,) = sink.at("/call-status")
        leaves = [r for r in sink.at("/status") if r.form["StatusCallbackEvent"] == "participant-leave"]
        assert len(leaves) == 3 and call_status.at < leaves[-1].at - 0.5
        assert {a.callback.lane for a in emulator.callback_attempts() if a.callback.event == "call-status"} == {
            f"{host.sid}/call-status"
        }
        hang_up(emulator, guest)


# 7: <Dial action>


def test_a_caller_who_hangs_up_gets_the_dial_action_requested_and_its_answer_ignored(sink):
    sink.laml["/dial-action"] = "<Response><Say>Never heard</Say></Response>"
    dial = f'action="{sink.base}/dial-action?room=%2B15550100" method="POST"'
    with emulator_for(sink, conference_laml(sink, dial)) as emulator:
        host, guest = two_callers(emulator)
        time.sleep(1.1)
        hang_up(emulator, host)
        (request,) = sink.at("/dial-action")
        assert request.url == sink.base + "/dial-action?room=%2B15550100"
        assert RequestValidator(emulator.signing_key).validate(
            request.url, request.form, request.headers["X-Signalwire-Signature"]
        )
        assert set(request.form) == DIAL_ACTION_FIELDS
        assert {k: request.form[k] for k in ("CallSid", "CallStatus", "From", "To", "Direction", "DialCallStatus")} == {
            "CallSid": host.sid,
            "CallStatus": "completed",
            "From": HOST,
            "To": ROOM,
            "Direction": "inbound",
            "DialCallStatus": "answered",
        }
        assert int(request.form["DialCallDuration"]) == round(host.left_at - host.joined_at) >= 1
        assert kinds(emulator, "said") == []
        # One reading of the order: the conference reports the leave, then the call its end.
        assert [k for k, label, _ in kinds(emulator, "left", "call-ended") if label == host.label] == [
            "left",
            "call-ended",
        ]
        hang_up(emulator, guest)


@pytest.mark.parametrize("answer", ["<Response><Hangup/></Response>", "<Response/>", "", "not LaML"])
def test_a_caller_still_on_the_line_follows_the_dial_actions_answer_and_the_call_ends(sink, answer):
    sink.laml["/dial-action"] = answer
    with emulator_for(sink, conference_laml(sink, f'action="{sink.base}/dial-action"')) as emulator:
        host, guest = two_callers(emulator)
        sdk(emulator).conferences(host.conference_sid).update(status="completed")
        assert emulator.settle()
        actions = forms(sink, "/dial-action")
        assert sorted((f["CallSid"], f["CallStatus"], f["DialCallStatus"]) for f in actions) == sorted(
            [(host.sid, "in-progress", "answered"), (guest.sid, "in-progress", "answered")]
        )
        assert (host.status, guest.status) == ("completed", "completed")
        ended = {f["CallSid"]: f["CallStatus"] for f in forms(sink, "/call-status")}
        assert ended == {host.sid: "completed", guest.sid: "completed"}
        call_status = {r.form["CallSid"]: r.at for r in sink.at("/call-status")}
        assert all(call_status[r.form["CallSid"]] > r.at for r in sink.at("/dial-action"))


def test_the_dial_actions_laml_is_followed_before_the_call_ends(sink):
    sink.laml["/dial-action"] = "<Response><Say>The meeting is over.</Say><Hangup/><Say>Unheard</Say></Response>"
    with emulator_for(
        sink, conference_laml(sink, f'action="{sink.base}/dial-action"', endConferenceOnExit="true")
    ) as emulator:
        host, guest = two_callers(emulator)
        hang_up(emulator, host)  # endConferenceOnExit: the guest drops out of the conference, still on the call
        (action_for_guest,) = [f for f in forms(sink, "/dial-action") if f["CallSid"] == guest.sid]
        assert action_for_guest["CallStatus"] == "in-progress"
        assert kinds(emulator, "said", "call-ended") == [
            ("call-ended", host.label, "hung up"),
            ("said", guest.label, "The meeting is over."),
            ("call-ended", guest.label, "end of its LaML"),
        ]
        assert guest.status == "completed"


@pytest.mark.parametrize("answers", [[404], [500, 500, 500]])
def test_a_dial_action_that_fails_ends_the_call_and_is_logged(sink, answers):
    sink.answers["/dial-action"] = answers * 2  # Quorum without the route, or broken: for both callers
    with emulator_for(
        sink, conference_laml(sink, f'action="{sink.base}/dial-action"'), callback_retry_after_s=0.05
    ) as emulator:
        host, guest = two_callers(emulator)
        sdk(emulator).conferences(host.conference_sid).update(status="completed")
        assert emulator.settle()
        assert (host.status, guest.status) == ("completed", "completed")
        tried = [a for a in emulator.callback_attempts() if a.callback.event == "dial-action"]
        assert [a.status for a in tried] == answers * 2  # a 5xx is retried like any webhook, a 404 is final
        assert {f["CallSid"] for f in forms(sink, "/call-status")} == {host.sid, guest.sid}
        assert [d for _, _, d in kinds(emulator, "call-ended")] == [f"dial action answered {answers[0]}"] * 2


def test_a_dropped_dial_action_still_ends_the_call(sink):
    laml = conference_laml(sink, f'action="{sink.base}/dial-action"')
    with emulator_for(sink, laml, faults=Faults(callback_drop_events=frozenset({"dial-action"}))) as emulator:
        host, guest = two_callers(emulator)
        sdk(emulator).conferences(host.conference_sid).update(status="completed")
        assert emulator.settle()
        assert sink.at("/dial-action") == [] and (host.status, guest.status) == ("completed", "completed")
        assert {f["CallSid"] for f in forms(sink, "/call-status")} == {host.sid, guest.sid}
        assert [a.number for a in emulator.callback_attempts() if a.callback.event == "dial-action"] == [0, 0]


def test_a_dial_action_can_be_requested_with_get(sink):
    with emulator_for(sink, conference_laml(sink, f'action="{sink.base}/dial-action?room=r" method="GET"')) as emulator:
        caller = emulator.dial(ROOM, HOST)
        hang_up(emulator, caller)
        (request,) = sink.at("/dial-action")
        assert request.form == {}
        assert RequestValidator(emulator.signing_key).validate(
            request.url, {}, request.headers["X-Signalwire-Signature"]
        )
        query = parse_qs(urlsplit(request.url).query)
        assert query["room"] == ["r"] and query["CallSid"] == [caller.sid] and query["DialCallStatus"] == ["answered"]


@pytest.mark.parametrize("sent", [False, True])
def test_conference_dial_call_sid_knob(sink, sent):
    behaviour = Behaviour(conference_dial_call_sid=sent)
    with emulator_for(
        sink, conference_laml(sink, f'action="{sink.base}/dial-action"'), behaviour=behaviour
    ) as emulator:
        caller = emulator.dial(ROOM, HOST)
        hang_up(emulator, caller)
        (form,) = forms(sink, "/dial-action")
        assert form.get("DialCallSid") == (caller.sid if sent else None)


def test_without_an_action_the_document_goes_on_after_the_dial(sink):
    laml = conference_laml(sink, after="<Say>Goodbye.</Say>")
    with emulator_for(sink, laml) as emulator:
        host, guest = two_callers(emulator)
        sdk(emulator).conferences(host.conference_sid).update(status="completed")
        assert emulator.settle()
        assert [(k, d) for k, label, d in kinds(emulator, "said", "call-ended") if label == host.label] == [
            ("said", "Goodbye."),
            ("call-ended", "end of its LaML"),
        ]
        assert {f["CallSid"]: f["CallStatus"] for f in forms(sink, "/call-status")} == {
            host.sid: "completed",
            guest.sid: "completed",
        }


def test_a_caller_who_hangs_up_while_the_action_is_requested_keeps_the_hang_up(sink):
    sink.answers["/dial-action"] = [500, 500]  # both callers' actions retried after a pause: time to hang up
    with emulator_for(
        sink, conference_laml(sink, f'action="{sink.base}/dial-action"'), callback_retry_after_s=0.5
    ) as emulator:
        host, guest = two_callers(emulator)
        emulator.sim.end_conference(host.conference_sid)
        time.sleep(0.2)
        emulator.hangup(host.sid)
        assert emulator.settle()
        assert [f["CallStatus"] for f in forms(sink, "/call-status") if f["CallSid"] == host.sid] == ["completed"]
        assert [d for _, label, d in kinds(emulator, "call-ended") if label == host.label] == ["hung up"]


# 8: REST resources of calls


def test_a_call_resource_through_the_sdk_and_raw(sink):
    with emulator_for(sink, conference_laml(sink)) as emulator:
        host, guest = two_callers(emulator)
        raw = api_get(emulator, f"/Calls/{host.sid}.json").json()
        assert set(raw) == CALL_FIELDS
        (number,) = emulator.sim.numbers.values()
        assert (raw["status"], raw["direction"], raw["parent_call_sid"], raw["end_time"], raw["duration"]) == (
            "in-progress",
            "inbound",
            None,
            None,
            0,
        )
        assert (raw["from"], raw["to"], raw["phone_number_sid"]) == (HOST, ROOM, number.sid)
        assert raw["formatted_from"] == "(555) 111-0001" and raw["subresource_uris"]["recordings"].endswith(
            f"/Calls/{host.sid}/Recordings.json"
        )
        time.sleep(1.1)
        hang_up(emulator, host)
        fetched = sdk(emulator).calls(host.sid).fetch()
        assert (fetched.status, fetched.direction, fetched.from_, fetched.to) == ("completed", "inbound", HOST, ROOM)
        assert fetched.end_time is not None and fetched.start_time <= fetched.end_time and int(fetched.duration) >= 1
        missing = api_get(emulator, f"/Calls/{uuid.uuid4()}.json")
        assert missing.status_code == 404 and set(missing.json()) == ERROR_FIELDS
        hang_up(emulator, guest)


def test_a_calls_recordings_list_keeps_finished_ones_and_drops_deleted_ones(sink):
    with emulator_for(sink, conference_laml(sink)) as emulator:
        host, guest = two_callers(emulator)
        recordings = sdk(emulator).calls(host.sid).recordings
        first = recordings.create()
        time.sleep(0.1)
        recordings(first.sid).update(status="stopped")
        second = recordings.create()
        assert [(r.sid, r.call_sid) for r in recordings.list()] == [(first.sid, host.sid), (second.sid, host.sid)]
        assert sdk(emulator).calls(guest.sid).recordings.list() == []
        hang_up(emulator, host, guest)
        assert sdk(emulator).recordings(first.sid).delete() is True
        assert [r.sid for r in recordings.list()] == [second.sid]
        assert api_get(emulator, f"/Calls/{uuid.uuid4()}/Recordings.json").status_code == 404


def test_the_projects_recordings_list_filters_by_call_and_conference(sink):
    # List all Recordings (OpenAPI list_all_recordings): CallSid and ConferenceSid filters; deleted ones are gone.
    with emulator_for(sink, conference_laml(sink)) as emulator:
        host, guest = two_callers(emulator)
        own = sdk(emulator).calls(host.sid).recordings.create()
        (conference,) = emulator.conferences(ROOM)
        assert [r.sid for r in sdk(emulator).recordings.list(call_sid=host.sid)] == [own.sid]
        assert sdk(emulator).recordings.list(call_sid=guest.sid) == []
        assert [
            r.sid for r in sdk(emulator).recordings.list(conference_sid=conference.sid)
        ] == conference.recording_sids
        hang_up(emulator, host, guest)
        assert sdk(emulator).recordings(own.sid).delete() is True
        assert sdk(emulator).recordings.list(call_sid=host.sid) == []


def test_a_recordings_json_names_its_conference_or_its_call(sink):
    with emulator_for(sink, conference_laml(sink)) as emulator:
        host, guest = two_callers(emulator)
        call_recording = sdk(emulator).calls(host.sid).recordings.create()
        conference_recording = emulator.conferences(ROOM)[0].recording_sids[0]
        hang_up(emulator, host, guest)
        of_conference = api_get(emulator, f"/Recordings/{conference_recording}.json").json()
        assert (of_conference["conference_sid"], of_conference["call_sid"]) == (host.conference_sid, None)
        of_call = api_get(emulator, f"/Recordings/{call_recording.sid}.json").json()
        assert (of_call["conference_sid"], of_call["call_sid"]) == (None, host.sid)
        fetched = sdk(emulator).recordings(call_recording.sid).fetch()
        assert (fetched.call_sid, fetched.conference_sid) == (host.sid, None)


def test_every_event_still_works_with_a_sink_that_answers_laml(sink):
    """The classic Sink voice answer (no action) still joins, records and ends calls with no call-status URL."""
    sink.attrs = lambda form: EVERY_EVENT
    with Emulator() as emulator:
        emulator.add_number(ROOM, sink.base + "/voice")
        host, guest = two_callers(emulator)
        hang_up(emulator, host, guest)
        assert (host.status, guest.status) == ("completed", "completed")
        assert not any(a.callback.event in ("call-status", "dial-action") for a in emulator.callback_attempts())


def test_quorum_answers_both_signals_and_nothing_breaks():
    with quorum_stack() as stack:
        (number,) = stack.emulator.sim.numbers.values()
        sdk(stack.emulator).incoming_phone_numbers(number.sid).update(
            status_callback=f"{stack.config.public_url}/voice/call-status"
        )
        host, guest = (stack.emulator.dial(ROOM, caller) for caller in (HOST, GUEST))
        assert stack.settle()
        hang_up(stack.emulator, host, guest)
        assert stack.settle()
        answered = [a for a in stack.emulator.callback_attempts() if a.callback.event == "call-status"]
        assert sorted(a.callback.params["CallSid"] for a in answered) == sorted([host.sid, guest.sid])
        assert {a.status for a in answered} == {204}
        assert (host.status, guest.status) == ("completed", "completed")
        assert all(a.ok for a in stack.emulator.callback_attempts())  # the <Dial action>s too
        assert stack.log.errors() == []
