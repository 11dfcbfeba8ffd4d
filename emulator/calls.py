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
from typing import Callable, Dict, List, Optional, Tuple

import requests

from emulator import audio
from emulator.callbacks import Callback, Dispatcher, signed_request
from emulator.faults import Behaviour
from emulator.model import Call, CallbackTarget, Conference, PhoneNumber, Recording

API_VERSION = "2010-04-01"
CONFERENCE_EVENTS = {"start": "conference-start", "end": "conference-end",
                     "join": "participant-join", "leave": "participant-leave",
                     "hold": "participant-hold", "unhold": "participant-unhold"}
# <Conference> noun, recordingStatusCallbackEvent table: in-progress, completed, failed; the
# recordingStatusCallbackEvent attribute's default is "completed failed". `absent` is not among them.
CONFERENCE_RECORDING_EVENTS = frozenset({"in-progress", "completed", "failed"})
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
    #            call-failed
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

    def __init__(self, account_sid: str, signing_key: str, dispatcher: Dispatcher, media_base: Callable[[], str],
                 seed: int = 0, behaviour: Behaviour = Behaviour()):
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
        self.events: List[Event] = []
        self.listeners: List[Callable[[Event], None]] = []

    # Numbers

    def add_number(self, phone_number: str, voice_url: str, voice_method: str = "POST") -> PhoneNumber:
        """Provision a number whose calls fetch LaML from `voice_url`."""
        now = time.time()
        with self.lock:
            number = PhoneNumber(new_sid(), phone_number, voice_url, voice_method, now, now)
            self.numbers[number.sid] = number
            return number

    def number_for(self, phone_number: str) -> Optional[PhoneNumber]:
        """The provisioned number, or None."""
        with self.lock:
            return next((n for n in self.numbers.values() if n.phone_number == phone_number), None)

    # Calls

    def dial(self, to: str, from_: str, label: str = "") -> Call:
        """An inbound call to `to`: fetch its LaML, then do what it says (join a conference)."""
        number = self.number_for(to)
        with self.lock:
            call = Call(new_sid(), from_, to, label or from_, audio.voice_seed(self._seed, from_), time.time())
            self.calls[call.sid] = call
        if number is None or not number.voice_url:
            return self._fail(call, f"{to} has no voice URL")
        laml, why = self._fetch_laml(call, number)
        if laml is None:
            return self._fail(call, why)
        try:
            conference = _conference_verb(laml)
        except ElementTree.ParseError:
            return self._fail(call, "voice webhook answered something that is not LaML")
        with self.lock:
            if call.status != "ringing":
                return call  # hung up while the webhook was answering
            if conference is None:
                call.status = "completed"  # LaML without <Dial><Conference>: the call just ends
            else:
                self._join(call, conference)
            return call

    def _fetch_laml(self, call: Call, number: PhoneNumber) -> Tuple[Optional[str], str]:
        """POST the number's voice webhook, signed; (LaML, "") or (None, why it failed)."""
        params = {"AccountSid": self.account_sid, "CallSid": call.sid, "From": call.from_, "To": call.to,
                  "CallStatus": "ringing", "Direction": "inbound", "ApiVersion": API_VERSION}
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
        with self.lock:
            call = self.calls.get(call_sid)
            if call is None or call.status in ("completed", "failed"):
                return
            call.status = "completed"
            if call.conference_sid is not None and call.left_at is None:
                self._leave(call, time.time())

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
        """Mark a call failed and say why."""
        with self.lock:
            call.status = "failed"
            self._emit("call-failed", call.to, call.label, detail=why)
        return call

    # Conferences

    def _join(self, call: Call, attrs: Dict[str, str]) -> None:
        """Put a call in its room's live conference, creating it if need be, and start it once it may."""
        now = time.time()
        conf = self._live_conference(attrs, now)
        call.status = "in-progress"
        call.conference_sid = conf.sid
        call.joined_at = now
        call.start_conference_on_enter = _truthy(attrs.get("startConferenceOnEnter"), True)
        call.end_conference_on_exit = _truthy(attrs.get("endConferenceOnExit"), False)
        call.muted = _truthy(attrs.get("muted"), False)
        conf.call_sids.append(call.sid)
        conf.present.add(call.sid)
        self._conference_callback(conf, "join", now, call)
        self._emit("joined", conf.name, call.label, len(conf.present))
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
            sid=new_sid(), name=name, created_at=now, record=attrs.get("record", "do-not-record"),
            status_callback=_target(attrs, "statusCallback", set()),
            recording_callback=_recording_target(attrs), fault_key=f"{name}#{generation}",
            trim=attrs.get("trim", "trim-silence"))
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
            for sid in sorted(conf.present):
                self.calls[sid].status = "completed"
                self._depart(conf, self.calls[sid], now)
            self._end(conf, now)
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

    def _leave(self, call: Call, now: float) -> None:
        """Take a call out of its conference; the conference ends when nobody is left."""
        conf = self.conferences[call.conference_sid]
        self._depart(conf, call, now)
        if call.end_conference_on_exit:
            for sid in sorted(conf.present):
                self.calls[sid].status = "completed"
                self._depart(conf, self.calls[sid], now)
        if not conf.present:
            self._end(conf, now)

    def _depart(self, conf: Conference, call: Call, now: float) -> None:
        """One participant leaves: report it, then finish the call's own recordings (as SignalWire does)."""
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
        # <Conference> noun, "Request parameters for the statusCallback URL": AccountSid, CallSid,
        # ConferenceSid, FriendlyName, Muted, Hold, StartConferenceOnEnter, EndConferenceOnExit,
        # StatusCallbackEvent, Timestamp ("in RFC 2822 format"). No SequenceNumber is documented.
        target = conf.status_callback
        # statusCallbackEvent table: `hold` covers "put on hold or put out of hold".
        asked = "hold" if event == "unhold" else event
        if not target.url or asked not in target.events:
            return
        params = {"AccountSid": self.account_sid, "ConferenceSid": conf.sid, "FriendlyName": conf.name,
                  "StatusCallbackEvent": CONFERENCE_EVENTS[event], "Timestamp": rfc2822(now)}
        if call is not None:
            params.update(CallSid=call.sid, Muted=_flag(call.muted), Hold=_flag(call.hold),
                          StartConferenceOnEnter=_flag(call.start_conference_on_enter),
                          EndConferenceOnExit=_flag(call.end_conference_on_exit))
        self._dispatcher.send(Callback(target.url, params, conf.sid, CONFERENCE_EVENTS[event], target.method,
                                       conf.fault_key))

    # Recordings

    def _start_recording(self, conf: Conference, now: float) -> None:
        """record-from-start: the conference recording begins when the conference starts."""
        # OpenAPI ConferenceRecordingSource: Conference | StartConferenceRecording.
        rec = Recording(new_sid(), "Conference", conf.created_at, conf.recording_callback,
                        conference_sid=conf.sid, started_at=now, trim=conf.trim)
        rec.timeline.start(now)
        self.recordings[rec.sid] = rec
        conf.recording_sids.append(rec.sid)
        self._recording_callback(rec, "in-progress")
        self._emit("recording-started", conf.name, present=len(conf.present), detail=rec.sid)

    def record_call(self, call_sid: str, channels: str, track: str, callback: CallbackTarget,
                    trim: str = "do-not-trim") -> Recording:
        """Start recording one call (REST `POST /Calls/{CallSid}/Recordings`)."""
        with self.lock:
            call = self.calls.get(call_sid)
            if call is None or call.status != "in-progress":
                raise NotFound(call_sid)
            now = time.time()
            conf = self.conferences[call.conference_sid]
            # OpenAPI RecordingSource enum spells it StartCallRecordingApi.
            rec = Recording(new_sid(), "StartCallRecordingApi", conf.created_at, callback, call_sid=call_sid,
                            channels=2 if channels == "dual" else 1, track=track, started_at=now, trim=trim)
            rec.timeline.start(now)
            self.recordings[rec.sid] = rec
            call.recording_sids.append(rec.sid)
            self._recording_callback(rec, "in-progress")
            self._emit("recording-started", conf.name, call.label, detail=rec.sid)
            return rec

    def update_recording(self, recording_sid: str, status: str, behavior: str, *, conference_sid: str = "",
                         call_sid: str = "") -> Recording:
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
        if (rec is None or rec.deleted or (conference_sid and rec.conference_sid != conference_sid)
                or (call_sid and rec.call_sid != call_sid)):
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
        if not target.url or status not in target.events:
            return
        params = {"AccountSid": self.account_sid, "CallSid": rec.call_sid or "", "RecordingSid": rec.sid,
                  "RecordingUrl": self.recording_url(rec.sid), "RecordingStatus": status,
                  "RecordingDuration": str(round(rec.duration())) if rec.finished else "0",
                  "RecordingChannels": str(rec.channels), "RecordingSource": rec.source}
        conf = self._conference_of(rec)
        self._dispatcher.send(Callback(target.url, params, conf.sid, f"recording:{status}", target.method,
                                       conf.fault_key))

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

    @staticmethod
    def _part(call: Call, origin: float) -> audio.Part:
        """A caller's voice over the time they were on the line."""
        end = None if call.left_at is None else round((call.left_at - origin) * audio.RATE)
        return audio.Part(audio.Voice(call.voice_seed), round((call.joined_at - origin) * audio.RATE), end)

    # Live output

    def _emit(self, kind: str, room: str, label: str = "", present: int = 0, detail: str = "") -> None:
        """Record an event and tell the listeners (lock held, so listeners see events in order)."""
        event = Event(time.time(), kind, room, label, present, detail)
        self.events.append(event)
        for listener in self.listeners:
            listener(event)


def _conference_verb(laml: str) -> Optional[Dict[str, str]]:
    """The attributes (plus `name`, the room) of `<Dial><Conference>` in a LaML document, or None."""
    root = ElementTree.fromstring(laml)
    for dial in root.iter("Dial"):
        for conference in dial.iter("Conference"):
            return {**conference.attrib, "name": (conference.text or "").strip()}
    return None


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
    return CallbackTarget(url=attrs.get(prefix, ""), method=attrs.get(prefix + "Method", "POST").upper(),
                          events=frozenset(events.split() if events is not None else default_events))
