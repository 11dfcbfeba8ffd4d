"""The call and conference simulator: callers dial, follow the LaML they get, and the
emulator reports what happens with the callbacks SignalWire would send.
"""

from __future__ import annotations

import threading
import time
import uuid
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import format_datetime
from functools import partial
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import requests

from emulator import audio, speech
from emulator.callbacks import Attempt, Callback, Dispatcher, signed_request
from emulator.faults import Behaviour
from emulator.model import Call, CallbackTarget, Conference, PhoneNumber, Recording, Verb

API_VERSION = "2010-04-01"
CONFERENCE_EVENTS = {
    "start": "conference-start",
    "end": "conference-end",
    "join": "participant-join",
    "leave": "participant-leave",
    "hold": "participant-hold",
    "unhold": "participant-unhold",
    speech.START: "participant-speech-start",
    speech.STOP: "participant-speech-stop",
}
# statusCallbackEvent table: `hold` covers "put on hold or put out of hold", `speaker` "begun or stopped speaking".
ASKED_AS = {"unhold": "hold", speech.START: "speaker", speech.STOP: "speaker"}
# <Conference> noun, recordingStatusCallbackEvent table: in-progress, completed, failed (the attribute's
# default is "completed failed"); the OpenAPI RecordingStatusCallbackPayload names a failure `absent`.
CONFERENCE_RECORDING_EVENTS = frozenset({"in-progress", "completed", "failed", "absent"})
FAILURE_NAMES = frozenset({"failed", "absent"})
# <Dial> page, "Values for DialCallStatus": "answered: When calling to a conference, the number that was
# dialed answered the call and was successfully connected to the caller."
CONFERENCE_DIAL_STATUS = "answered"
# InboundCallStatusCallbackPayload: "AudioInMos: A mean opinion score on a scale of 1–5"; the emulator's
# lines are clean, so every call gets the spec's own example.
AUDIO_IN_MOS = "4.5"
VOICE_TIMEOUTS = (2.0, 5.0)


class NotFound(LookupError):
    """No such resource: the REST API answers 404."""


class Unprocessable(ValueError):
    """It exists but cannot take this request (finished recording, completed conference, departed caller)."""


@dataclass(frozen=True)
class Event:
    """Something the emulator did, for live output and assertions."""

    at: float
    kind: str  # joined left held unheld conference-start conference-end announced announce-failed
    #            recording-started recording-paused recording-resumed recording-completed recording-deleted
    #            said laml-unsupported call-ended call-failed
    room: str
    label: str = ""
    present: int = 0
    detail: str = ""


def new_sid() -> str:
    """SignalWire sids are UUIDs."""
    return str(uuid.uuid4())


def rfc2822(at: float) -> str:
    """An RFC 2822 date at one-second resolution, as in SignalWire's Timestamps."""
    return format_datetime(datetime.fromtimestamp(int(at), timezone.utc))


def _flag(value: bool) -> str:
    """A form boolean."""
    return "true" if value else "false"


def _truthy(value: Optional[str], default: bool) -> bool:
    """A LaML boolean attribute."""
    return default if value is None else value.strip().lower() == "true"


class Simulator:
    """Numbers, calls, conferences and recordings of one project, driven in wall-clock time."""

    def __init__(
        self,
        account_sid: str,
        signing_key: str,
        dispatcher: Dispatcher,
        media_base: Callable[[], str],
        seed: int = 0,
        behaviour: Behaviour = Behaviour(),
    ):
        self.account_sid = account_sid
        self.behaviour = behaviour
        self._key = signing_key
        self._dispatcher = dispatcher
        self._media_base = media_base
        self._seed = seed
        self.lock = threading.RLock()
        self.numbers: Dict[str, PhoneNumber] = {}
        self.calls: Dict[str, Call] = {}
        self.conferences: Dict[str, Conference] = {}
        self.recordings: Dict[str, Recording] = {}
        self._live: Dict[str, str] = {}  # room name -> sid of its live conference
        self._generations: Dict[str, int] = {}
        self._dialled: Dict[Tuple[str, str], int] = {}  # (to, from) -> calls so far, for the calls' fault keys
        self.events: List[Event] = []
        self.listeners: List[Callable[[Event], None]] = []
        self.speakers = speech.Speakers(self.lock, self._speech)

    # Numbers

    def add_number(
        self, phone_number: str, voice_url: str, voice_method: str = "POST", status_callback: str = ""
    ) -> PhoneNumber:
        """Provision a number whose calls fetch LaML from `voice_url` (and report their end to `status_callback`)."""
        now = time.time()
        with self.lock:
            number = PhoneNumber(new_sid(), phone_number, voice_url, voice_method, now, now, status_callback)
            self.numbers[number.sid] = number
            return number

    def number_for(self, phone_number: str) -> Optional[PhoneNumber]:
        """The provisioned number, or None."""
        with self.lock:
            return next((n for n in self.numbers.values() if n.phone_number == phone_number), None)

    # Calls

    def dial(self, to: str, from_: str, label: str = "", talk: Sequence[Tuple[float, float]] = ()) -> Call:
        """An inbound call to `to`: fetch its LaML, then do what it says (e.g. join a conference).

        `talk`: when the caller talks, (start, end) seconds after joining; empty: its voice's own turns."""
        with self.lock:
            number = self.number_for(to)
            call = Call(
                new_sid(),
                from_,
                to,
                label or from_,
                audio.voice_seed(self._seed, from_),
                time.time(),
                fault_key=self._call_fault_key(to, from_),
                phone_number_sid=number.sid if number else None,
                status_callback=_status_target(number),
                talk=tuple(map(tuple, talk)),
            )
            self.calls[call.sid] = call
        if number is None or not number.voice_url:
            return self._fail(call, f"{to} has no voice URL")
        laml, why = self._fetch_laml(call, number)
        if laml is None:
            return self._fail(call, why)
        try:
            verbs = laml_verbs(laml)
        except ElementTree.ParseError:
            return self._fail(call, "voice webhook answered something that is not LaML")
        with self.lock:
            if call.status != "ringing":
                return call  # hung up while the webhook was answering
            now = time.time()
            call.status, call.answered_at = "in-progress", now
            self._run(call, verbs, now)
            return call

    def _call_fault_key(self, to: str, from_: str) -> str:
        """A fault stream name for a new call that a replayed scenario gives the same call again (lock held)."""
        count = self._dialled[(to, from_)] = self._dialled.get((to, from_), 0) + 1
        return f"{to}<{from_}#{count}"

    def _call_params(self, call: Call) -> Dict[str, str]:
        """A call's Standard Request Parameters (cXML voice overview, "Request parameters")."""
        # ParentCallSid is "A unique identifier for the call that created this call": an inbound call has none.
        return {
            "AccountSid": self.account_sid,
            "CallSid": call.sid,
            "From": call.from_,
            "To": call.to,
            "CallStatus": call.status,
            "ApiVersion": API_VERSION,
            "Direction": "inbound",
        }

    def _fetch_laml(self, call: Call, number: PhoneNumber) -> Tuple[Optional[str], str]:
        """POST the number's voice webhook, signed; (LaML, "") or (None, why it failed)."""
        params = self._call_params(call)
        return self._request_laml(Callback(number.voice_url, params, call.sid, "voice", number.voice_method))

    def _request_laml(self, callback: Callback) -> Tuple[Optional[str], str]:
        """Fetch LaML once, signed like every webhook; (LaML, "") or (None, why it failed)."""
        url, form, headers = signed_request(self._key, callback.method, callback.url, callback.params)
        try:
            response = requests.request(callback.method, url, data=form, headers=headers, timeout=VOICE_TIMEOUTS)
        except requests.RequestException as error:
            self._dispatcher.log_attempt(callback, None, type(error).__name__)
            return None, f"{callback.event} webhook: {type(error).__name__}"
        self._dispatcher.log_attempt(callback, response.status_code)
        if response.status_code != 200:
            return None, f"{callback.event} webhook answered {response.status_code}"
        return response.text, ""

    def hangup(self, call_sid: str) -> None:
        """The caller hangs up (a no-op for a call that is over)."""
        # Order (one reading; the docs give none): the conference reports the departure, then the <Dial>,
        # which ended with it, requests its action, then the call, now over, reports its end. Each goes to
        # its own lane, so a fault on one does not hold up the others.
        with self.lock:
            call = self.calls.get(call_sid)
            if call is None or call.ended_at is not None:
                return
            now = time.time()
            call.status, call.ended_at = "completed", now  # gone: its participant-leave says completed
            if call.conference_sid is not None and call.left_at is None:
                for gone in self._leave(call, now):
                    self._dial_over(gone, now)
            self._end_call(call, now, "completed", "hung up")

    def hold(self, call_sid: str, on: bool, conference_sid: str = "") -> Call:
        """Put a participant on hold or take them off it (REST `Hold=true|false`)."""
        # <Conference> statusCallbackEvent table: "hold: When a participant has been put on hold or
        # put out of hold"; StatusCallbackEvent values participant-hold and participant-unhold.
        with self.lock:
            call = self.participant(call_sid, conference_sid)
            if call.left_at is not None:
                raise Unprocessable(call_sid)
            if call.hold != on:
                now = time.time()
                call.hold, call.updated_at = on, now
                conf = self.conferences[call.conference_sid]
                self._conference_callback(conf, "hold" if on else "unhold", now, call)
                self._emit("held" if on else "unheld", conf.name, call.label, len(conf.present))
            return call

    def participant(self, call_sid: str, conference_sid: str = "") -> Call:
        """A call that joined the conference named (any, when empty); else NotFound."""
        call = self.calls.get(call_sid)
        if call is None or call.conference_sid is None or conference_sid not in ("", call.conference_sid):
            raise NotFound(call_sid)
        return call

    def _fail(self, call: Call, why: str) -> Call:
        """End a call as failed (unless it is over already) and say why."""
        with self.lock:
            if call.ended_at is None:
                self._end_call(call, time.time(), "failed", why)
        return call

    def _end_call(self, call: Call, now: float, status: str, why: str = "") -> None:
        """The call is over (lock held): its state, an event, and the number's status callback."""
        call.status, call.ended_at = status, now
        self._emit(
            "call-failed" if status == "failed" else "call-ended", self._room_of_call(call), call.label, detail=why
        )
        self._call_status_callback(call, now)

    def _call_status_callback(self, call: Call, now: float) -> None:
        """Report the call's end to its number's StatusCallback, if the number has one."""
        # OpenAPI webhook incoming_call_status_callback: "By default, the webhook fires only when the call is
        # `completed` or `failed`"; InboundCallStatusCallbackPayload: CallSid, AccountSid, From, To, Timestamp,
        # CallStatus, CallDuration, AudioInMos. cXML voice overview, "Status callbacks": "the Standard Request
        # Parameters plus" CallDuration, Timestamp, SequenceNumber ("Starts at 0"). Both lists are sent.
        target = call.status_callback
        if not target.url:
            return
        stamp = now if self.behaviour.call_status_timestamp == "event" else call.created_at
        params = {
            **self._call_params(call),
            "CallDuration": str(call_duration(call)),
            "Timestamp": rfc2822(stamp),
            "SequenceNumber": "0",
            "AudioInMos": AUDIO_IN_MOS,
        }  # its first and only event: number 0
        self._dispatcher.send(
            Callback(
                target.url,
                params,
                f"{call.sid}/call-status",
                "call-status",
                target.method,
                f"{call.fault_key}/call-status",
            )
        )

    def _room_of_call(self, call: Call) -> str:
        """The room of the conference a call joined, else the number it dialled."""
        return self.conferences[call.conference_sid].name if call.conference_sid else call.to

    # LaML

    def _run(self, call: Call, verbs: Sequence[Verb], now: float) -> None:
        """Follow LaML verbs (lock held) until a conference takes the call or the document ends it."""
        # cXML voice overview: "SignalWire starts at the top of your Compatibility XML document and executes
        # your XML commands in order, from top to bottom"; <Dial> page, action: "SignalWire will end the call
        # if there are no more verbs following the <Dial> verb in the document".
        for at, verb in enumerate(verbs):
            conference = _conference_noun(verb)
            if verb.name == "Say":
                self._emit("said", self._room_of_call(call), call.label, detail=verb.text)
            elif verb.name == "Hangup":
                break
            elif conference is not None and call.conference_sid is None:
                self._join(call, verb, conference, tuple(verbs[at + 1 :]), now)
                return
            else:  # the emulator plays one conference per call, and no other verb
                self._emit("laml-unsupported", self._room_of_call(call), call.label, detail=verb.name)
                break
        self._end_call(call, now, "completed", "end of its LaML")

    def _dial_over(self, call: Call, now: float) -> None:
        """A call's <Dial> ended as it left the conference: request the action, or go on with the document."""
        # <Dial> page, action: "SignalWire will make a GET or POST request to this URL after the dialed call
        # ends. If no action is provided, SignalWire will continue to the next verb in the document."
        if call.dial_action.url:
            self._send_dial_action(call)
        elif call.on_the_line:
            self._run(call, call.after_dial, now)

    def _send_dial_action(self, call: Call) -> None:
        """Request the <Dial action> URL; its LaML is followed only while the caller is on the line."""
        # "Request parameters for the action URL": the Standard Request Parameters, then DialCallStatus,
        # DialCallSid ("of the new call leg": Behaviour.conference_dial_call_sid), DialCallDuration
        # ("of the dialed call": the time in the conference) and RecordingUrl (only with <Dial record>).
        params = {
            **self._call_params(call),
            "DialCallStatus": CONFERENCE_DIAL_STATUS,
            "DialCallDuration": str(round(call.left_at - call.joined_at)),
        }
        if self.behaviour.conference_dial_call_sid:
            params["DialCallSid"] = call.sid
        on_answer = partial(self._dial_answered, call.sid) if call.on_the_line else None
        target = call.dial_action
        self._dispatcher.send(
            Callback(
                target.url,
                params,
                f"{call.sid}/dial-action",
                "dial-action",
                target.method,
                f"{call.fault_key}/dial-action",
                on_answer,
            )
        )

    def _dial_answered(self, call_sid: str, attempt: Attempt, body: str) -> None:
        """Follow the LaML the <Dial action> answered; no LaML (an error, a drop, not XML) ends the call."""
        verbs: Optional[Tuple[Verb, ...]] = None
        if attempt.ok:
            try:
                verbs = laml_verbs(body) if body.strip() else ()  # no content: nothing more to do
            except ElementTree.ParseError:
                pass
        with self.lock:
            call = self.calls[call_sid]
            if not call.on_the_line:
                return  # hung up while the action was requested: "its answer ignored"
            now = time.time()
            if verbs is None:
                self._end_call(call, now, "completed", f"dial action answered {attempt.status or attempt.error}")
            else:
                self._run(call, verbs, now)

    # Conferences

    def _join(self, call: Call, dial: Verb, conference: Verb, after: Tuple[Verb, ...], now: float) -> None:
        """Put a call in its room's live conference, creating it if need be, and start it once it may."""
        attrs = {**dict(conference.attrs), "name": conference.text}
        # <Dial> page: action "takes in an absolute URL"; method "Default value is POST".
        call.dial_action = CallbackTarget(dial.attr("action"), dial.attr("method", "POST").upper())
        call.after_dial = after
        conf = self._live_conference(attrs, now)
        call.conference_sid = conf.sid
        call.joined_at = now
        call.start_conference_on_enter = _truthy(attrs.get("startConferenceOnEnter"), True)
        call.end_conference_on_exit = _truthy(attrs.get("endConferenceOnExit"), False)
        call.muted = _truthy(attrs.get("muted"), False)
        conf.call_sids.append(call.sid)
        conf.present.add(call.sid)
        self._conference_callback(conf, "join", now, call)
        self._emit("joined", conf.name, call.label, len(conf.present))
        if "speaker" in conf.status_callback.events:
            voice = self._voice(call, conf.created_at)
            turns = voice.speech(round((now - conf.created_at) * audio.RATE))
            self.speakers.follow(call.sid, speech.wall_turns(turns, conf.created_at, audio.RATE))
        self._maybe_start(conf, now, call)

    def _maybe_start(self, conf: Conference, now: float, call: Call) -> None:
        """Start the conference once the documented condition holds (after the join that met it)."""
        # <Conference> noun, statusCallbackEvent table: "start: The conference has started as long as
        # there are at least two people in the conference room and one of the participant's
        # startConferenceOnEnter is set to true". The docs are silent on ordering within the second:
        # the second join and the start share one-second Timestamps anyway.
        if conf.status != "init" or len(conf.present) < 2:
            return
        if not any(self.calls[sid].start_conference_on_enter for sid in conf.present):
            return  # startConferenceOnEnter: "... hear background music and stay muted until" one joins
        conf.status = "in-progress"
        conf.started_at = now
        self._conference_callback(conf, "start", now)
        self._emit("conference-start", conf.name, call.label, len(conf.present))
        # record attribute: "record-from-start will begin recording the conference call once the
        # first two participants join in on the call. Wait music is not recorded."
        if conf.record == "record-from-start":
            self._start_recording(conf, now)

    def _live_conference(self, attrs: Dict[str, str], now: float) -> Conference:
        """The room's live conference; a new one (new sid) when none is live."""
        name = attrs["name"]
        sid = self._live.get(name)
        if sid is not None:
            return self.conferences[sid]
        generation = self._generations.get(name, 0) + 1
        self._generations[name] = generation
        conf = Conference(
            sid=new_sid(),
            name=name,
            created_at=now,
            record=attrs.get("record", "do-not-record"),
            status_callback=_target(attrs, "statusCallback", set()),
            recording_callback=_recording_target(attrs),
            fault_key=f"{name}#{generation}",
            trim=attrs.get("trim", "trim-silence"),
        )
        self.conferences[conf.sid] = conf
        self._live[name] = conf.sid
        return conf

    def live_conference(self, conference_sid: str) -> Conference:
        """A conference that can still be updated: NotFound when unknown, Unprocessable when over."""
        conf = self.conferences.get(conference_sid)
        if conf is None:
            raise NotFound(conference_sid)
        if conf.status == "completed":
            raise Unprocessable(conference_sid)
        return conf

    def end_conference(self, conference_sid: str) -> Conference:
        """REST `Status=completed`: everyone drops out, as when an endConferenceOnExit participant leaves."""
        # UpdateConferenceRequest: "Only 'completed' is allowed to end the conference."
        with self.lock:
            conf = self.live_conference(conference_sid)
            now = time.time()
            gone = self._drop_everyone(conf, now)
            self._end(conf, now)
            for call in gone:  # still on the line: each call's <Dial> is over, its document goes on
                self._dial_over(call, now)
            return conf

    def announce(self, conference_sid: str, url: str, method: str) -> None:
        """REST `AnnounceUrl`: fetch LaML from it (signed) and play it to the room; records `announced`."""
        # The docs are silent on the request's parameters: the conference's own (AccountSid,
        # ConferenceSid, FriendlyName) are sent.
        with self.lock:
            conf = self.live_conference(conference_sid)
            params = {"AccountSid": self.account_sid, "ConferenceSid": conf.sid, "FriendlyName": conf.name}
        laml, why = self._request_laml(Callback(url, params, conf.sid, "announce", method))
        with self.lock:
            if laml is None:
                self._emit("announce-failed", conf.name, detail=why)
                return
            try:
                said = _said(laml)
            except ElementTree.ParseError:
                self._emit("announce-failed", conf.name, detail="AnnounceUrl answered something that is not LaML")
                return
            self._emit("announced", conf.name, present=len(conf.present), detail=said)

    def _leave(self, call: Call, now: float) -> List[Call]:
        """Take a call out of its conference, which ends when nobody is left; every call that left."""
        conf = self.conferences[call.conference_sid]
        self._depart(conf, call, now)
        gone = [call]
        if call.end_conference_on_exit:  # "the conference terminates and all participants drop out"
            gone += self._drop_everyone(conf, now)
        if not conf.present:
            self._end(conf, now)
        return gone

    def _drop_everyone(self, conf: Conference, now: float) -> List[Call]:
        """Every participant leaves the conference (they stay on their calls); who left."""
        gone = [self.calls[sid] for sid in sorted(conf.present)]
        for call in gone:
            self._depart(conf, call, now)
        return gone

    def _depart(self, conf: Conference, call: Call, now: float) -> None:
        """One participant leaves: report it, then finish the call's own recordings (as SignalWire does)."""
        if self.speakers.forget(call.sid) and self.behaviour.speech_stop_on_leave:
            self._conference_callback(conf, speech.STOP, now, call)  # talking as it left: its turn ends first
        call.left_at = call.updated_at = now
        conf.present.discard(call.sid)
        self._conference_callback(conf, "leave", now, call)
        self._emit("left", conf.name, call.label, len(conf.present))
        for sid in call.recording_sids:
            self._finish(self.recordings[sid], now)

    def _end(self, conf: Conference, now: float) -> None:
        """End the conference and finish its recordings."""
        started = conf.started_at is not None
        conf.status = "completed"
        conf.ended_at = now
        self._live.pop(conf.name, None)
        # statusCallbackEvent table, "end: ... when the last participant ... leaves"; silent on a
        # conference that never started: Behaviour.unstarted_conference_end decides.
        if started or self.behaviour.unstarted_conference_end:
            self._conference_callback(conf, "end", now)
        self._emit("conference-end", conf.name)
        for sid in conf.recording_sids:
            self._finish(self.recordings[sid], now)

    def _conference_callback(self, conf: Conference, event: str, now: float, call: Optional[Call] = None) -> None:
        """Send a conference status callback if the first participant asked for this event."""
        # <Conference> noun, "Request parameters for the statusCallback URL": "First, you have the Standard
        # Request Parameters" (a participant's call's: CallSid, AccountSid, From, To, CallStatus, ApiVersion,
        # Direction; a conference event has no call, so only AccountSid), then ConferenceSid, FriendlyName,
        # Muted, Hold, StartConferenceOnEnter, EndConferenceOnExit, StatusCallbackEvent, Timestamp ("in RFC
        # 2822 format"). No SequenceNumber is documented.
        target = conf.status_callback
        asked = ASKED_AS.get(event, event)
        if not target.url or asked not in target.events:
            return
        params = self._call_params(call) if call is not None else {"AccountSid": self.account_sid}
        params.update(
            ConferenceSid=conf.sid,
            FriendlyName=conf.name,
            StatusCallbackEvent=CONFERENCE_EVENTS[event],
            Timestamp=rfc2822(now),
        )
        if call is not None:
            params.update(
                Muted=_flag(call.muted),
                Hold=_flag(call.hold),
                StartConferenceOnEnter=_flag(call.start_conference_on_enter),
                EndConferenceOnExit=_flag(call.end_conference_on_exit),
            )
        self._dispatcher.send(
            Callback(target.url, params, conf.sid, CONFERENCE_EVENTS[event], target.method, conf.fault_key)
        )

    # Recordings

    def _start_recording(self, conf: Conference, now: float) -> None:
        """record-from-start: the conference recording begins when the conference starts."""
        # OpenAPI ConferenceRecordingSource: Conference | StartConferenceRecording.
        rec = Recording(
            new_sid(),
            "Conference",
            conf.created_at,
            conf.recording_callback,
            conference_sid=conf.sid,
            started_at=now,
            trim=conf.trim,
        )
        rec.timeline.start(now)
        self.recordings[rec.sid] = rec
        conf.recording_sids.append(rec.sid)
        self._recording_callback(rec, "in-progress")
        self._emit("recording-started", conf.name, present=len(conf.present), detail=rec.sid)

    def record_call(
        self, call_sid: str, channels: str, track: str, callback: CallbackTarget, trim: str = "do-not-trim"
    ) -> Recording:
        """Start recording one call (REST `POST /Calls/{CallSid}/Recordings`)."""
        with self.lock:
            call = self.calls.get(call_sid)
            if call is None or not call.on_the_line or call.conference_sid is None or call.left_at is not None:
                raise NotFound(call_sid)  # recorded here: what the conference hears of it and from it
            now = time.time()
            conf = self.conferences[call.conference_sid]
            # OpenAPI RecordingSource enum spells it StartCallRecordingApi.
            rec = Recording(
                new_sid(),
                "StartCallRecordingApi",
                conf.created_at,
                callback,
                call_sid=call_sid,
                channels=2 if channels == "dual" else 1,
                track=track,
                started_at=now,
                trim=trim,
            )
            rec.timeline.start(now)
            self.recordings[rec.sid] = rec
            call.recording_sids.append(rec.sid)
            self._recording_callback(rec, "in-progress")
            self._emit("recording-started", conf.name, call.label, detail=rec.sid)
            return rec

    def update_recording(
        self, recording_sid: str, status: str, behavior: str, *, conference_sid: str = "", call_sid: str = ""
    ) -> Recording:
        """Pause, resume or stop a recording: unknown ones are not found, finished ones unprocessable."""
        with self.lock:
            rec = self.owned_recording(recording_sid, conference_sid=conference_sid, call_sid=call_sid)
            if rec.finished:
                # OpenAPI update_conference_recording documents 404 and 422; a recording that exists
                # but is over is "could not be processed due to validation errors".
                raise Unprocessable(recording_sid)
            now = time.time()
            room = self._room_of(rec)
            # UpdateConferenceRecordingRequest: PauseBehavior is "What to do while recording is paused".
            if status == "paused" and rec.timeline.pause(now, behavior):
                rec.status = "paused"
                self._emit("recording-paused", room, detail=f"{rec.sid} PauseBehavior={behavior}")
            elif status == "in-progress" and rec.timeline.resume(now):
                rec.status = self.behaviour.resumed_status
                self._emit("recording-resumed", room, detail=rec.sid)
            elif status == "stopped":
                self._finish(rec, now)
                if rec.status == "completed":
                    rec.status = self.behaviour.stopped_status
            return rec

    def owned_recording(self, recording_sid: str, *, conference_sid: str = "", call_sid: str = "") -> Recording:
        """A live (not deleted) recording that belongs to the conference or call named; else NotFound."""
        rec = self.recordings.get(recording_sid)
        if (
            rec is None
            or rec.deleted
            or (conference_sid and rec.conference_sid != conference_sid)
            or (call_sid and rec.call_sid != call_sid)
        ):
            raise NotFound(recording_sid)
        return rec

    def delete_recording(self, recording_sid: str, conference_sid: str = "") -> None:
        """REST DELETE: the recording is gone from the API and its media from then on."""
        # The docs are silent on deleting a recording still running: that is refused (400, "cannot be
        # processed"), as its end would have nothing to report to.
        with self.lock:
            rec = self.owned_recording(recording_sid, conference_sid=conference_sid)
            if not rec.finished:
                raise Unprocessable(recording_sid)
            rec.deleted = True
            self._emit("recording-deleted", self._room_of(rec), detail=rec.sid)

    def _finish(self, rec: Recording, now: float) -> None:
        """Close a recording: completed with its media, else as documented for an empty one."""
        if rec.finished:
            return
        rec.timeline.close(now)
        rec.ended_at = now
        reported = "completed" if rec.duration() > 0 else self._empty_status(rec)
        # OpenAPI RecordingStatus has no `failed`: the resource of a failed recording reads `absent`.
        rec.failed = reported == "failed"
        rec.status = "absent" if rec.failed else reported
        if rec.failed:  # the <Conference> page says `failed`, the RecordingStatusCallbackPayload `absent`
            reported = self.behaviour.failed_recording_status
        self._recording_callback(rec, reported)
        self._emit("recording-completed", self._room_of(rec), detail=rec.sid)

    def _empty_status(self, rec: Recording) -> str:
        """The final status of a recording without media."""
        if rec.call_sid is not None:
            # CreateCallRecordingRequest, RecordingStatusCallbackEvent: "Valid values: completed,
            # in-progress, absent"; RecordingStatusCallbackPayload: "absent: Recording was too short".
            return "absent"
        # <Conference> recordingStatusCallbackEvent table has no `absent`; silent on empty media.
        return self.behaviour.empty_conference_recording

    def _recording_callback(self, rec: Recording, status: str) -> None:
        """Send a recording status callback to the URL exactly as given, if that event was asked for."""
        # OpenAPI RecordingStatusCallbackPayload: AccountSid, CallSid, RecordingSid, RecordingUrl,
        # RecordingStatus, RecordingDuration, RecordingChannels, RecordingSource, and nothing else
        # (no ConferenceSid, no RecordingStartTime).
        target = rec.callback
        if not target.url or not _asked(rec, status):
            return
        params = {
            "AccountSid": self.account_sid,
            "CallSid": rec.call_sid or "",
            "RecordingSid": rec.sid,
            "RecordingUrl": self.recording_url(rec.sid),
            "RecordingStatus": status,
            "RecordingDuration": str(round(rec.duration())) if rec.finished else "0",
            "RecordingChannels": str(rec.channels),
            "RecordingSource": rec.source,
        }
        conf = self._conference_of(rec)
        self._dispatcher.send(
            Callback(target.url, params, conf.sid, f"recording:{status}", target.method, conf.fault_key)
        )

    def recording_url(self, recording_sid: str) -> str:
        """The media URL, without extension, as in RecordingUrl."""
        return f"{self._media_base()}/api/laml/{API_VERSION}/Accounts/{self.account_sid}/Recordings/{recording_sid}"

    def _conference_of(self, rec: Recording) -> Conference:
        """The conference a recording hears."""
        sid = rec.conference_sid or self.calls[rec.call_sid].conference_sid
        return self.conferences[sid]

    def _room_of(self, rec: Recording) -> str:
        """The room name of a recording's conference."""
        return self._conference_of(rec).name

    # Media

    def media(self, recording_sid: str):
        """A finished recording's audio, shaped (frames, channels); NotFound before it finishes."""
        with self.lock:
            rec = self.recordings.get(recording_sid)
            # "failed: The recording is not accessible because of a failure."
            if rec is None or rec.deleted or not rec.finished or rec.failed:
                raise NotFound(recording_sid)
            pieces = rec.timeline.pieces(rec.origin)
            tracks = self._tracks(rec)
        return audio.render(pieces, tracks)

    def _tracks(self, rec: Recording) -> List[List[audio.Part]]:
        """The voices each channel hears: the room's mix, or a call's own (inbound) and others' (outbound)."""
        conf = self._conference_of(rec)
        parts = {sid: self._part(self.calls[sid], rec.origin) for sid in conf.call_sids}
        if rec.call_sid is None:
            return [list(parts.values())]
        inbound = [parts[rec.call_sid]] if rec.track in ("inbound", "both") else []
        outbound = [p for sid, p in parts.items() if sid != rec.call_sid] if rec.track in ("outbound", "both") else []
        return [inbound, outbound] if rec.channels == 2 else [inbound + outbound]

    @classmethod
    def _part(cls, call: Call, origin: float) -> audio.Part:
        """A caller's voice over the time they were on the line."""
        end = None if call.left_at is None else round((call.left_at - origin) * audio.RATE)
        return audio.Part(cls._voice(call, origin), round((call.joined_at - origin) * audio.RATE), end)

    @staticmethod
    def _voice(call: Call, origin: float) -> audio.Voice:
        """A caller's voice, its script (if the call has one) in samples from `origin`, as recordings count them."""
        if not call.talk:
            return audio.Voice(call.voice_seed)
        at = lambda seconds: round((call.joined_at + seconds - origin) * audio.RATE)  # noqa: E731
        return audio.Voice(call.voice_seed, [(at(start), at(end)) for start, end in call.talk])

    def _speech(self, call_sid: str, kind: str, at: float) -> None:
        """A followed call began or stopped talking (lock held): its speaker event."""
        call = self.calls[call_sid]
        if call.conference_sid is not None and call.left_at is None:
            self._conference_callback(self.conferences[call.conference_sid], kind, at, call)

    # Live output

    def _emit(self, kind: str, room: str, label: str = "", present: int = 0, detail: str = "") -> None:
        """Record an event and tell the listeners (lock held, so listeners see events in order)."""
        event = Event(time.time(), kind, room, label, present, detail)
        self.events.append(event)
        for listener in self.listeners:
            listener(event)


def laml_verbs(laml: str) -> Tuple[Verb, ...]:
    """The verbs of a LaML `<Response>`, in order; ParseError when it is not XML."""
    return tuple(_verb(element) for element in ElementTree.fromstring(laml))


def _verb(element: ElementTree.Element) -> Verb:
    """One LaML element as a Verb, its children as its nouns."""
    return Verb(
        element.tag,
        tuple(element.attrib.items()),
        (element.text or "").strip(),
        tuple(_verb(child) for child in element),
    )


def _conference_noun(verb: Verb) -> Optional[Verb]:
    """The `<Conference>` of a `<Dial>`, or None."""
    if verb.name != "Dial":
        return None
    return next((noun for noun in verb.nouns if noun.name == "Conference"), None)


def _status_target(number: Optional[PhoneNumber]) -> CallbackTarget:
    """The StatusCallback of a number, which its calls keep from the moment they arrive."""
    # OpenAPI update_incoming_phone_number: "StatusCallback: The URL to request to pass status updates to";
    # silent on calls already in progress when it changes: they keep the one they arrived with.
    if number is None:
        return CallbackTarget()
    return CallbackTarget(number.status_callback, number.status_callback_method)


def call_duration(call: Call) -> int:
    """Seconds from answer to end ("The duration, in seconds, of the finished call"); 0 if never answered."""
    if call.answered_at is None or call.ended_at is None:
        return 0
    return round(call.ended_at - call.answered_at)


def _asked(rec: Recording, status: str) -> bool:
    """Whether the recording's callback asked for `status`; either name of a failure asks for a conference's."""
    if rec.conference_sid is not None and status in FAILURE_NAMES:
        return bool(rec.callback.events & FAILURE_NAMES)
    return status in rec.callback.events


def _said(laml: str) -> str:
    """The text of every <Say> in a LaML document, joined by spaces."""
    root = ElementTree.fromstring(laml)
    return " ".join((say.text or "").strip() for say in root.iter("Say"))


def _recording_target(attrs: Dict[str, str]) -> CallbackTarget:
    """The conference recording's callback: documented events only, default "completed failed"."""
    target = _target(attrs, "recordingStatusCallback", {"completed", "failed"})
    return CallbackTarget(target.url, target.method, target.events & CONFERENCE_RECORDING_EVENTS)


def _target(attrs: Dict[str, str], prefix: str, default_events: set) -> CallbackTarget:
    """A callback URL, method and event set from `<Conference>` attributes."""
    events = attrs.get(prefix + "Event")
    return CallbackTarget(
        url=attrs.get(prefix, ""),
        method=attrs.get(prefix + "Method", "POST").upper(),
        events=frozenset(events.split() if events is not None else default_events),
    )
