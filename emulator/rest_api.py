"""The Compatibility REST API subset Quorum uses, plus recording media, as a Flask app.

Served under both `/api/laml/2010-04-01/Accounts/{project}` (SignalWire's documented
base) and `/2010-04-01/Accounts/{project}` (what the 2.1.1 SDK calls), with or
without `.json`, HTTP Basic auth, twilio-shaped JSON and SignalWire-style errors.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional
from urllib.parse import urlencode

from flask import Blueprint, Flask, Response, abort, g, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BaseConverter

from emulator import audio
from emulator.calls import AUDIO_IN_MOS, API_VERSION, NotFound, Simulator, Unprocessable, call_duration, rfc2822
from emulator.faults import FaultInjector
from emulator.model import Call, CallbackTarget, Conference, PhoneNumber, Recording

PREFIXES = {"laml": f"/api/laml/{API_VERSION}/Accounts/<project>", "sdk": f"/{API_VERSION}/Accounts/<project>"}
PAGE_SIZE = 50  # OpenAPI list parameters: "PageSize ... The default is 50, and the maximum is 1000."
MAX_PAGE_SIZE = 1000
CONFERENCE_STATUSES = ("init", "in-progress", "completed")
MEDIA_TYPES = {"wav": "audio/wav", "mp3": "audio/mpeg"}
STATUS_CHOICES = ("paused", "in-progress", "stopped")
CALLBACK_METHODS = ("GET", "POST")
PAUSE_BEHAVIORS = ("skip", "silence")
ERROR_TEXT = {
    400: "Bad Request",
    401: "Authentication Error - invalid username",
    404: "Not Found",
    405: "Method Not Allowed",
    422: "Unprocessable Entity",
    500: "Internal Server Error",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class SidConverter(BaseConverter):
    """A path segment up to a dot, so `{sid}.json` and `{sid}` both route."""

    regex = r"[^/.]+"


@dataclass(frozen=True)
class RestCall:
    """One API request as the emulator saw it."""

    at: float
    method: str
    path: str
    form: Dict[str, str]
    status: int
    elapsed_s: float  # from arrival to answer, injected latency included
    injected: str = ""  # "", "error", "timeout" or "late"


@dataclass
class RestLog:
    """Every API request (media downloads excluded), with counters and an in-flight gauge."""

    calls: List[RestCall] = field(default_factory=list)
    _in_flight: int = 0
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def counts(self) -> Counter:
        """Requests by HTTP method: reads are GET, writes POST."""
        with self._cond:
            return Counter(call.method for call in self.calls)

    def writes(self) -> List[RestCall]:
        """The POSTs, in order."""
        with self._cond:
            return [call for call in self.calls if call.method == "POST"]

    def wait_idle(self, timeout: float) -> bool:
        """Block until no request is being served; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._in_flight == 0, timeout)

    def begin(self) -> None:
        """A request arrived."""
        with self._cond:
            self._in_flight += 1

    def end(self, call: Optional[RestCall]) -> None:
        """A request was answered (`call` is None for requests not logged)."""
        with self._cond:
            self._in_flight -= 1
            if call is not None:
                self.calls.append(call)
            self._cond.notify_all()


def error(status: int, message: str = "", code: Optional[int] = None) -> Response:
    """SignalWire's error body: code, message, more_info, status (OpenAPI CompatibilityErrorResponse)."""
    code = code or 20000 + status
    body = jsonify(
        code=code,
        message=message or ERROR_TEXT.get(status, "Error"),
        more_info=f"https://www.signalwire.com/docs/errors/{code}",
        status=status,
    )
    body.status_code = status
    return body


def create_rest_app(sim: Simulator, project: str, token: str, injector: FaultInjector, log: RestLog) -> Flask:
    """The REST API and media server for one project."""
    app = Flask("emulator.rest_api")
    app.url_map.converters["sid"] = SidConverter
    views = _Views(sim, project, injector)
    bp = Blueprint("api", __name__)

    def route(rule: str, view, methods=("GET",), json_suffix: bool = True) -> None:
        """Register `rule` and, for API resources, `rule.json`."""
        bp.add_url_rule(rule, view.__name__, view, methods=list(methods))
        if json_suffix:
            bp.add_url_rule(rule + ".json", view.__name__, view, methods=list(methods))

    route("/Conferences", views.conferences)
    route("/Conferences/<sid:conference_sid>", views.conference, ("GET", "POST"))
    route("/Conferences/<sid:conference_sid>/Participants", views.participants)
    route("/Conferences/<sid:conference_sid>/Participants/<sid:call_sid>", views.participant, ("GET", "POST"))
    route("/Conferences/<sid:conference_sid>/Recordings", views.conference_recordings)
    route(
        "/Conferences/<sid:conference_sid>/Recordings/<sid:recording_sid>",
        views.conference_recording,
        ("GET", "POST", "DELETE"),
    )
    route("/Calls/<sid:call_sid>", views.call)
    route("/Calls/<sid:call_sid>/Recordings", views.create_call_recording, ("POST",))
    route("/Calls/<sid:call_sid>/Recordings", views.call_recordings)
    route("/Calls/<sid:call_sid>/Recordings/<sid:recording_sid>", views.call_recording, ("GET", "POST"))
    route("/IncomingPhoneNumbers", views.numbers)
    route("/IncomingPhoneNumbers/<sid:number_sid>", views.number, ("GET", "POST"))
    route("/Recordings", views.recordings)
    route("/Recordings/<sid:recording_sid>", views.delete_recording, ("DELETE",))
    route("/Recordings/<sid:recording_sid>", views.recording_media, json_suffix=False)
    route("/Recordings/<sid:recording_sid>.<any(json, wav, mp3):ext>", views.recording_media, json_suffix=False)

    @bp.url_value_preprocessor
    def take_project(endpoint, values):
        g.project = values.pop("project")

    @bp.before_request
    def guard():
        """Auth and injected faults for API calls; media is public (its URL is the secret)."""
        if _is_media():
            return None
        auth = request.authorization
        if not auth or auth.type != "basic" or auth.username != project or auth.password != token:
            return error(401, code=20003)
        if g.project != project:
            return error(404, f"The requested resource /Accounts/{g.project} was not found", 20404)
        if injector.faults.announce_error and request.form.get("AnnounceUrl"):
            g.injected = "error"
            return error(500)
        plan = injector.plan_rest(views.fault_key(request.view_args), request.method, request.path, request.form)
        return _inject(plan, injector.faults.rest_timeout_applies)

    @app.before_request
    def count_in():
        log.begin()
        g.logged = False
        g.arrived = time.time()

    @bp.after_request
    def remember(response: Response) -> Response:
        if g.get("late_by"):
            time.sleep(g.late_by)  # applied, but the client has given up by now
        if not _is_media():
            g.logged = True
            now = time.time()
            log.end(
                RestCall(
                    now,
                    request.method,
                    request.path,
                    request.form.to_dict(),
                    response.status_code,
                    now - g.arrived,
                    g.get("injected", ""),
                )
            )
        return response

    @app.teardown_request
    def count_out(_exc):
        if not g.get("logged"):
            log.end(None)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if exc.response is not None:
            return exc.response  # a view's own SignalWire-style error
        return error(exc.code or 500, exc.description if exc.code != 404 else "")

    for name, prefix in PREFIXES.items():
        app.register_blueprint(bp, url_prefix=prefix, name=name)
    return app


def _is_media() -> bool:
    """Whether the request downloads recording media (anything but `.json` under /Recordings)."""
    args = request.view_args or {}
    return request.endpoint is not None and request.endpoint.endswith(".recording_media") and args.get("ext") != "json"


def _inject(plan, timeout_applies: bool) -> Optional[Response]:
    """Apply a REST fault plan: latency, then maybe a timeout or a 5xx instead of the answer."""
    if plan.latency_s:
        time.sleep(plan.latency_s)
    if plan.late_s:
        g.injected = "late"
        g.late_by = plan.late_s  # served normally, answered late
        return None
    if plan.hang_s:
        g.injected = "timeout"
        if timeout_applies:
            g.late_by = plan.hang_s  # served normally, answered too late
            return None
        time.sleep(plan.hang_s)  # the client gives up before this answer comes
        return error(504)
    if plan.error:
        g.injected = "error"
        return _injected_error(plan.error)
    return None


def _injected_error(status: int) -> Response:
    """An injected error with the body SignalWire answers that status with (see the views' own errors)."""
    if status == 404:
        return error(404, f"The requested resource {request.path} was not found", 20404)
    if status == 422 and request.endpoint is not None and request.endpoint.endswith(".conference_recording"):
        return _unprocessable(f"Recording {(request.view_args or {}).get('recording_sid')} can no longer be updated")
    return error(status)


class _Views:
    """The API's handlers and JSON shapes."""

    def __init__(self, sim: Simulator, project: str, injector: FaultInjector):
        self.sim = sim
        self.project = project
        self.injector = injector
        self.base = f"/api/laml/{API_VERSION}/Accounts/{project}"

    def fault_key(self, args: Optional[dict]) -> str:
        """The fault stream of a request: its conference's (so a scenario replays), else its path."""
        args = args or {}
        with self.sim.lock:
            conf = self.sim.conferences.get(args.get("conference_sid", ""))
            call = self.sim.calls.get(args.get("call_sid", ""))
            if conf is None and call is not None and call.conference_sid:
                conf = self.sim.conferences[call.conference_sid]
            return conf.fault_key if conf is not None else request.path

    # Conferences

    def conferences(self):
        """List conferences, filtered by `Status` and `FriendlyName` (OpenAPI list_all_conferences)."""
        status, name = request.args.get("Status"), request.args.get("FriendlyName")
        if status is not None and status not in CONFERENCE_STATUSES:
            return error(400, "Status must be init|in-progress|completed", 20001)
        with self.sim.lock:
            items = [
                self._conference_json(c)
                for c in self.sim.conferences.values()
                if (status is None or c.status == status) and (name is None or c.name == name)
            ]
        return self._page("conferences", items)

    def conference(self, conference_sid: str):
        """Fetch, or update (Status=completed, AnnounceUrl/AnnounceMethod), a conference."""
        if request.method == "POST":
            failed = self._update_conference(conference_sid)
            if failed is not None:
                return failed
        with self.sim.lock:
            return jsonify(self._conference_json(self._conference(conference_sid)))

    def _update_conference(self, conference_sid: str) -> Optional[Response]:
        """Apply an Update Conference request; an error response, or None when applied."""
        status, url = request.form.get("Status"), request.form.get("AnnounceUrl")
        method = request.form.get("AnnounceMethod", "POST").upper()  # "Default is `POST`"
        if status not in (None, "completed") or method not in ("GET", "POST"):
            return error(400, "Status must be completed and AnnounceMethod GET|POST", 20001)
        try:
            if url:
                self.sim.announce(conference_sid, url, method)
            if status == "completed":
                self.sim.end_conference(conference_sid)
        except NotFound:
            return error(404, f"The requested resource /Conferences/{conference_sid} was not found", 20404)
        except Unprocessable:
            # OpenAPI update_conference: 422 CompatibilityErrorResponse; silent on which cases: a completed
            # conference is one.
            return error(422, f"Conference {conference_sid} is completed")
        return None

    def participants(self, conference_sid: str):
        """List the participants: active ones, plus departed ones when the Behaviour says so."""
        listed = self.sim.behaviour.departed_participants_listed
        with self.sim.lock:
            conf = self._conference(conference_sid)
            items = [
                self._participant_json(self.sim.calls[sid], conf)
                for sid in conf.call_sids
                if listed or sid in conf.present
            ]
        return self._page("participants", items)

    def participant(self, conference_sid: str, call_sid: str):
        """Fetch a participant, or put them on hold / take them off it (`Hold=true|false`)."""
        hold = request.form.get("Hold") if request.method == "POST" else None
        if hold is not None and hold.lower() not in ("true", "false"):
            return error(400, "Hold must be true or false", 20001)
        try:
            call = (
                self.sim.hold(call_sid, hold.lower() == "true", conference_sid)
                if hold is not None
                else self._listed_participant(call_sid, conference_sid)
            )
        except NotFound:
            return error(404, f"The requested resource /Participants/{call_sid} was not found", 20404)
        except Unprocessable:  # OpenAPI update_participant: 422 CompatibilityErrorResponse
            return error(422, f"Participant {call_sid} has left the conference")
        with self.sim.lock:
            return jsonify(self._participant_json(call, self.sim.conferences[call.conference_sid]))

    def _listed_participant(self, call_sid: str, conference_sid: str) -> Call:
        """A participant the list would show (active, or departed when the Behaviour lists those)."""
        with self.sim.lock:
            call = self.sim.participant(call_sid, conference_sid)
            if call.left_at is not None and not self.sim.behaviour.departed_participants_listed:
                raise NotFound(call_sid)
            return call

    def conference_recordings(self, conference_sid: str):
        """List a conference's recordings, finished ones included, deleted ones not."""
        with self.sim.lock:
            conf = self._conference(conference_sid)
            items = [
                self._recording_json(self.sim.recordings[sid])
                for sid in conf.recording_sids
                if not self.sim.recordings[sid].deleted
            ]
        return self._page("recordings", items)

    def conference_recording(self, conference_sid: str, recording_sid: str):
        """Fetch, pause/resume/stop, or delete a conference recording."""
        if request.method == "DELETE":
            return self._delete_recording(recording_sid, conference_sid)
        return self._recording(recording_sid, conference_sid=conference_sid)

    def recordings(self):
        """List the project's recordings, deleted ones left out, filtered by `CallSid` and `ConferenceSid`
        (OpenAPI list_all_recordings)."""
        call, conference = request.args.get("CallSid"), request.args.get("ConferenceSid")
        with self.sim.lock:
            items = [
                self._recording_json(rec)
                for rec in self.sim.recordings.values()
                if not rec.deleted and call in (None, rec.call_sid) and conference in (None, rec.conference_sid)
            ]
        return self._page("recordings", items)

    def delete_recording(self, recording_sid: str):
        """DELETE /Recordings/{R}, as the Compatibility API's "Delete a Recording" page documents it."""
        return self._delete_recording(recording_sid)

    def _delete_recording(self, recording_sid: str, conference_sid: str = ""):
        """204 once deleted; 404 unknown or already deleted; 400 while it is still running."""
        # "Delete a Recording": "If the deletion is successful, a 204 response, with no request body, will be
        # returned." Silent on a second delete and on the media: the recording is gone, so both 404 from then on
        # (the delete documents no 422, so a running recording answers 400).
        try:
            self.sim.delete_recording(recording_sid, conference_sid)
        except NotFound:
            return self._missing_recording(recording_sid)
        except Unprocessable:
            return error(400, f"Recording {recording_sid} is still in progress", 20001)
        return Response(status=204)

    # Call recordings

    def create_call_recording(self, call_sid: str):
        """Start recording a call."""
        form = request.form
        channels = form.get("RecordingChannels", "mono")
        track = form.get("RecordingTrack", "both")
        if channels not in ("mono", "dual") or track not in ("inbound", "outbound", "both"):
            return error(400, "RecordingChannels must be mono|dual and RecordingTrack inbound|outbound|both", 20001)
        # CreateCallRecordingRequest: RecordingStatusCallbackEvent "Default is `completed`", Trim
        # "Default is `do-not-trim`".
        events = " ".join(form.getlist("RecordingStatusCallbackEvent")) or "completed"
        target = CallbackTarget(
            form.get("RecordingStatusCallback", ""),
            form.get("RecordingStatusCallbackMethod", "POST").upper(),
            frozenset(events.split()),
        )
        try:
            rec = self.sim.record_call(call_sid, channels, track, target, form.get("Trim", "do-not-trim"))
        except NotFound:
            return error(404, f"The requested resource /Calls/{call_sid} was not found or is not in progress", 20404)
        with self.sim.lock:  # OpenAPI create_recording: "200: The request has succeeded."
            return jsonify(self._recording_json(rec))

    def call_recordings(self, call_sid: str):
        """List a call's recordings, finished ones included, deleted ones not."""
        # OpenAPI Call.subresource_uris.recordings: ".../Calls/{CallSid}/Recordings.json".
        with self.sim.lock:
            call = self._call(call_sid)
            items = [
                self._recording_json(self.sim.recordings[sid])
                for sid in call.recording_sids
                if not self.sim.recordings[sid].deleted
            ]
        return self._page("recordings", items)

    def call(self, call_sid: str):
        """Fetch a call (OpenAPI retrieve_a_call)."""
        with self.sim.lock:
            return jsonify(self._call_json(self._call(call_sid)))

    def call_recording(self, call_sid: str, recording_sid: str):
        """Fetch, or pause/resume/stop, a call recording."""
        return self._recording(recording_sid, call_sid=call_sid)

    def _recording(self, recording_sid: str, **owner: str):
        """Shared fetch/update of a recording that must belong to `owner`."""
        if request.method == "GET":
            return self._fetch_recording(recording_sid, **owner)
        status = request.form.get("Status", "")
        behavior = request.form.get("PauseBehavior", "silence")
        if status not in STATUS_CHOICES or behavior not in PAUSE_BEHAVIORS:
            return error(400, "Status must be paused|in-progress|stopped and PauseBehavior skip|silence", 20001)
        try:
            rec = self.sim.update_recording(recording_sid, status, behavior, **owner)
        except NotFound:
            return self._missing_recording(recording_sid)
        except Unprocessable:
            message = (
                f"Recording {recording_sid} is {self.sim.recordings[recording_sid].status} and can no longer be updated"
            )
            # OpenAPI: update_conference_recording answers 422 CompatibilityErrorStringArrayResponse,
            # update_recording (a call's) 422 CompatibilityErrorResponse.
            return _unprocessable(message) if owner.get("conference_sid") else error(422, message)
        with self.sim.lock:
            answer = self._recording_json(rec)
        return jsonify(self._as_update_answer(answer, rec))

    def _fetch_recording(self, recording_sid: str, **owner: str):
        """A recording's resource, 404 when unknown, foreign or deleted."""
        with self.sim.lock:
            try:
                rec = self.sim.owned_recording(recording_sid, **owner)
            except NotFound:
                return self._missing_recording(recording_sid)
            return jsonify(self._recording_json(rec))

    def _as_update_answer(self, answer: dict, rec: Recording) -> dict:
        """An update's answer: like SignalWire's example when Behaviour.update_answers_queued, else as it is."""
        # The example answers "status": "queued" with end_time and duration filled.
        if not self.sim.behaviour.update_answers_queued:
            return answer
        return {**answer, "status": "queued", "end_time": rfc2822(time.time()), "duration": round(rec.duration())}

    @staticmethod
    def _missing_recording(recording_sid: str) -> Response:
        """404 for unknown, foreign or deleted recordings."""
        return error(404, f"The requested resource /Recordings/{recording_sid} was not found", 20404)

    # Numbers

    def numbers(self):
        """List the project's numbers, optionally only `PhoneNumber`."""
        wanted = request.args.get("PhoneNumber")
        with self.sim.lock:
            items = [
                self._number_json(n) for n in self.sim.numbers.values() if wanted is None or n.phone_number == wanted
            ]
        return self._page("incoming_phone_numbers", items)

    def number(self, number_sid: str):
        """Fetch a number, or set its VoiceUrl/VoiceMethod and StatusCallback/StatusCallbackMethod."""
        form = request.form
        # OpenAPI update_incoming_phone_number: StatusCallbackMethod "GET" | "POST", "Default is `POST`".
        if form.get("StatusCallbackMethod", "POST").upper() not in CALLBACK_METHODS:
            return error(400, "StatusCallbackMethod must be GET or POST", 20001)
        with self.sim.lock:
            number = self.sim.numbers.get(number_sid)
            if number is None:
                return error(404, f"The requested resource /IncomingPhoneNumbers/{number_sid} was not found", 20404)
            if request.method == "POST":
                number.voice_url = form.get("VoiceUrl", number.voice_url)
                number.voice_method = form.get("VoiceMethod", number.voice_method).upper()
                number.status_callback = form.get("StatusCallback", number.status_callback)
                number.status_callback_method = form.get("StatusCallbackMethod", number.status_callback_method).upper()
                number.updated_at = time.time()
            return jsonify(self._number_json(number))

    # Media

    def recording_media(self, recording_sid: str, ext: str = "wav"):
        """A finished recording as WAV or MP3 (no auth), or its metadata as JSON (auth checked)."""
        if ext == "json":
            return self._fetch_recording(recording_sid)
        failed = self.injector.plan_media(recording_sid)
        if failed:
            return error(failed)
        try:
            wav = audio.wav_bytes(self.sim.media(recording_sid))
        except NotFound:
            return self._missing_recording(recording_sid)
        body = wav if ext == "wav" else audio.mp3_bytes(wav)
        if body is None:
            return error(404, "MP3 needs lame or ffmpeg on the emulator's PATH; ask for .wav", 20404)
        return Response(body, mimetype=MEDIA_TYPES[ext])

    # JSON shapes (call with the simulator's lock held)

    def _conference(self, conference_sid: str) -> Conference:
        """The conference, or abort with SignalWire's 404."""
        conf = self.sim.conferences.get(conference_sid)
        if conf is None:
            abort(error(404, f"The requested resource /Conferences/{conference_sid} was not found", 20404))
        return conf

    def _call(self, call_sid: str) -> Call:
        """The call, or abort with SignalWire's 404."""
        call = self.sim.calls.get(call_sid)
        if call is None:
            abort(error(404, f"The requested resource /Calls/{call_sid} was not found", 20404))
        return call

    @staticmethod
    def _page(key: str, items: list) -> Response:
        """One page of `items` (Page, PageSize) in the OpenAPI *ListResponse envelope."""
        # The page URIs keep the request's other query parameters (filters), so twilio 6.54's
        # `.list()`/`.stream()` follows next_page_uri through every page.
        try:
            page = max(int(request.args.get("Page", 0)), 0)
            size = min(max(int(request.args.get("PageSize", PAGE_SIZE)), 1), MAX_PAGE_SIZE)
        except ValueError:
            return error(400, "Page and PageSize must be integers", 20001)
        # e.g. CallListResponse: uri, first_page_uri, next_page_uri, previous_page_uri, page, page_size and
        # the list; no start, end or total.
        start = page * size
        return jsonify(
            {
                key: items[start : start + size],
                "uri": _page_uri(page, size),
                "first_page_uri": _page_uri(0, size),
                "next_page_uri": _page_uri(page + 1, size) if start + size < len(items) else None,
                "previous_page_uri": _page_uri(page - 1, size) if page > 0 else None,
                "page": page,
                "page_size": size,
            }
        )

    def _conference_json(self, conf: Conference) -> dict:
        """A conference resource: exactly the OpenAPI Conference schema's fields."""
        uri = f"{self.base}/Conferences/{conf.sid}"
        updated = conf.ended_at or conf.started_at or conf.created_at
        return {
            "account_sid": self.project,
            "api_version": API_VERSION,
            "sid": conf.sid,
            "friendly_name": conf.name,
            "status": conf.status,
            "region": "us1",
            "date_created": rfc2822(conf.created_at),
            "date_updated": rfc2822(updated),
            "uri": uri + ".json",
            "subresource_uris": {"participants": uri + "/Participants.json", "recordings": uri + "/Recordings.json"},
        }

    def _participant_json(self, call: Call, conf: Conference) -> dict:
        """A participant resource: the OpenAPI ConferenceParticipant schema (status in-progress|completed)."""
        return {
            "account_sid": self.project,
            "call_sid": call.sid,
            "conference_sid": conf.sid,
            "date_created": rfc2822(call.joined_at),
            "date_updated": rfc2822(call.updated_at or call.joined_at),
            "end_conference_on_exit": call.end_conference_on_exit,
            "muted": call.muted,
            "hold": call.hold,
            "coaching": False,
            "call_sid_to_coach": None,
            "start_conference_on_enter": call.start_conference_on_enter,
            "status": "completed" if call.left_at is not None else "in-progress",
            "uri": f"{self.base}/Conferences/{conf.sid}/Participants/{call.sid}.json",
        }

    def _recording_json(self, rec: Recording) -> dict:
        """A recording: the OpenAPI ConferenceRecording/CallRecordingResponse fields."""
        # duration is an integer there (-1 until finished here), channels a string ('1' | '2').
        owner = f"Conferences/{rec.conference_sid}" if rec.conference_sid else f"Calls/{rec.call_sid}"
        return {
            "account_sid": self.project,
            "api_version": API_VERSION,
            "sid": rec.sid,
            "call_sid": rec.call_sid,
            "conference_sid": rec.conference_sid,
            "status": rec.status,
            "source": rec.source,
            "channel": str(rec.channels),
            "channels": str(rec.channels),
            "duration": round(rec.duration()) if rec.finished else -1,
            "start_time": rfc2822(rec.started_at),
            "end_time": rfc2822(rec.ended_at) if rec.finished else None,
            "date_created": rfc2822(rec.started_at),
            "date_updated": rfc2822(rec.ended_at or rec.started_at),
            "price": None,
            "price_unit": "USD",
            "error_code": None,
            "encryption_details": None,
            "trim": rec.trim,
            "uri": f"{self.base}/{owner}/Recordings/{rec.sid}.json",
            "subresource_uris": {"transcriptions": f"{self.base}/Recordings/{rec.sid}/Transcriptions.json"},
        }

    def _call_json(self, call: Call) -> dict:
        """A call: the OpenAPI Call schema's fields (quality figures once it is over, like SignalWire's)."""
        uri = f"{self.base}/Calls/{call.sid}"
        over = call.ended_at is not None
        updated = max(
            t for t in (call.created_at, call.answered_at, call.joined_at, call.left_at, call.ended_at) if t is not None
        )
        return {
            "sid": call.sid,
            "account_sid": self.project,
            "api_version": API_VERSION,
            "date_created": rfc2822(call.created_at),
            "date_updated": rfc2822(updated),
            "parent_call_sid": None,  # an inbound call: nothing created it
            "to": call.to,
            "formatted_to": _formatted(call.to),
            "to_formatted": _formatted(call.to),
            "from": call.from_,
            "formatted_from": _formatted(call.from_),
            "from_formatted": _formatted(call.from_),
            "phone_number_sid": call.phone_number_sid,
            "status": call.status,
            "direction": "inbound",
            "start_time": rfc2822(call.answered_at) if call.answered_at is not None else None,
            "end_time": rfc2822(call.ended_at) if over else None,
            "duration": call_duration(call),
            "price": None,
            "price_unit": "USD",
            "answered_by": None,
            "forwarded_from": None,
            "caller_name": None,
            "annotation": None,
            "group_sid": None,
            "uri": uri + ".json",
            "subresource_uris": {"notifications": None, "recordings": uri + "/Recordings.json"},
            "audio_in_mos": float(AUDIO_IN_MOS) if over and call.answered_at is not None else None,
            "sip_result_code": None,
            "audio_rtt_avg": None,
            "audio_rtt_min": None,
            "audio_rtt_max": None,
            "audio_out_jitter_min": None,
            "audio_out_jitter_max": None,
            "audio_out_jitter_avg": None,
            "audio_out_lost": None,
        }

    def _number_json(self, number: PhoneNumber) -> dict:
        """An IncomingPhoneNumber: the OpenAPI schema's fields (every one the SDK's constructor reads)."""
        return {
            "account_id": self.project,
            "account_sid": self.project,
            "address_requirements": "none",
            "address_sid": None,
            "country_code": "US",
            "emergency_address_sid": None,
            "emergency_status": "Inactive",
            "identity_sid": None,
            "origin": "signalwire",
            "trunk_sid": None,
            "verification_status": "Unverified",
            "api_version": API_VERSION,
            "beta": False,
            "sid": number.sid,
            "capabilities": {"voice": True, "sms": True, "mms": True, "fax": False},
            "date_created": rfc2822(number.created_at),
            "date_updated": rfc2822(number.updated_at),
            "friendly_name": number.phone_number,
            "phone_number": number.phone_number,
            "sms_application_sid": None,
            "sms_fallback_method": "POST",
            "sms_fallback_url": None,
            "sms_method": "POST",
            "sms_url": None,
            "status_callback": number.status_callback or None,
            "status_callback_method": number.status_callback_method,
            "voice_application_sid": None,
            "voice_caller_id_lookup": False,
            "voice_fallback_method": "POST",
            "voice_fallback_url": None,
            "voice_method": number.voice_method,
            "voice_url": number.voice_url,
            "uri": f"{self.base}/IncomingPhoneNumbers/{number.sid}.json",
        }


def _unprocessable(message: str) -> Response:
    """422 with OpenAPI's CompatibilityErrorStringArrayResponse body: {"errors": [...]}."""
    body = jsonify(errors=[message])
    body.status_code = 422
    return body


def _formatted(number: str) -> str:
    """A North American number as the Call resource's formatted_to shows it, "(310) 567-8901"; others as given."""
    digits = number[2:]
    if number.startswith("+1") and len(digits) == 10 and digits.isdigit():
        return f"({digits[:3]}) {digits[3:6]}-{digits[6:]}"
    return number


def _page_uri(page: int, size: int) -> str:
    """The request's path and filters with Page and PageSize replaced."""
    args = [(k, v) for k, v in request.args.items(multi=True) if k not in ("Page", "PageSize", "PageToken")]
    return f"{request.path}?{urlencode(args + [('Page', page), ('PageSize', size)])}"
