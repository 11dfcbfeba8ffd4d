"""The only module that talks to SignalWire's REST API."""

from __future__ import annotations

import enum
import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Callable, Dict, List, Optional, Tuple
from urllib.parse import urlencode

import requests
from requests.adapters import HTTPAdapter
from requests.auth import _basic_auth_str
from requests.models import PreparedRequest
from requests.structures import CaseInsensitiveDict
from requests.utils import get_environ_proxies
from signalwire.rest import Client
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http import HttpClient
from twilio.http.response import Response

from config import Config
from quorum.policy import Snapshot
from recording_state import PAUSED, RECORDING

log = logging.getLogger("quorum.signalwire")

API_STATUS = {RECORDING: "in-progress", PAUSED: "paused"}
LIVE_PAGE_SIZE = 100
RECORDINGS_PAGE_SIZE = 100  # recordings of one conference or call: one page in practice
API_VERSION = "2010-04-01"
UPDATE_GONE = (404, 422)  # the Compatibility API answers 422 to an update of a finished recording
DELETE_GONE = (404,)  # "Delete a Recording" documents 204; 404: nothing of that sid is left
READ_GONE = (404,)  # a list or fetch: SignalWire has no such conference, call or recording


@dataclass(frozen=True)
class LiveConference:
    """One entry of the in-progress conference list."""

    sid: str
    room: str  # its FriendlyName
    created_at: float  # SignalWire's clock


@dataclass(frozen=True)
class ListedRecording:
    """A recording as the REST API lists it: what archiving needs to know of it."""

    status: str  # in-progress | paused | completed | absent | ... (ConferenceRecordingStatus, RecordingStatus)
    duration_s: Optional[float]  # None while SignalWire does not know it yet
    conference_sid: Optional[str] = None
    call_sid: Optional[str] = None

    @property
    def owner(self) -> Optional[str]:
        """The call whose own recording this is; None for a conference's recording."""
        return self.call_sid if self.conference_sid is None else None


def _listed(recording) -> ListedRecording:
    """The SDK's recording resource as a ListedRecording."""
    return ListedRecording(
        str(recording.status or ""),
        _seconds(recording.duration),
        recording.conference_sid or None,
        recording.call_sid or None,
    )


def _seconds(value) -> Optional[float]:
    """A duration as the API gives it (a string per the docs, an integer, -1 or none while unfinished)."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if seconds >= 0 else None


def _epoch(value) -> float:
    """A date the SDK parsed (datetime) or left as text, as epoch seconds; 0 when unknown."""
    if isinstance(value, datetime):
        return value.timestamp()
    try:
        return parsedate_to_datetime(value).timestamp() if value else 0.0
    except (TypeError, ValueError):
        return 0.0


class Outcome(enum.Enum):
    """How a REST command ended, as far as the caller needs to know."""

    OK = "ok"
    GONE = "gone"  # 404, or 422 for an update: not there (a delete: already gone; a recording update: a read decides)
    RETRY = "retry"  # timeout, connection error, 429 or 5xx: worth another try
    REJECTED = "rejected"  # any other 4xx: retrying would not help


ANNOUNCERS = 4  # threads of the command queue's announcement lane, on a client (and pool) of their own
# An Update Conference with AnnounceUrl answers in a REST round trip (SignalWire fetches the LaML afterwards): one
# slower than this is failing, and the notice is worth something only right after the recording (re)started, so
# the lane gives up sooner than SIGNALWIRE_TIMEOUT_S and its one more try comes seconds earlier.
ANNOUNCE_TIMEOUT_S = 2.0
# The read path's threads, each with a connection of its own: enough GETs in flight to spend the read budget at
# SignalWire's answer time (Little's law: in flight = rate x time; ~100 ms a GET), at least two, at most MAX_READERS.
GET_ANSWER_S = 0.1
MIN_READERS, MAX_READERS = 2, 64


def readers_for(reads_per_s: int) -> int:
    """Reader threads for a budget of `reads_per_s` GETs a second."""
    return max(MIN_READERS, min(MAX_READERS, math.ceil(reads_per_s * GET_ANSWER_S)))


class SignalWireHttp(HttpClient):
    """The SDK's HTTP client contract, sent straight through one requests adapter (pooled, keep-alive).

    TwilioHttpClient goes through `Session.prepare_request` and `Session.send`: cookie jars, hook and
    environment merging and requests' runtime Protocol checks, half of each command's CPU (1.3 ms vs 0.6 ms
    measured), on the path between a crossing and its pause. The request built here is the same bytes.
    """

    def __init__(self, timeout: float, pool_size: int, proxy: Optional[dict]):
        if timeout <= 0:
            raise ValueError(timeout)
        self.timeout = timeout
        self.proxy = proxy
        self.session = requests.Session()
        self.session.trust_env = False  # proxies were read once, into `proxy`
        # One kept-alive connection per command worker, the readers and the reconciler: requests' default pool of
        # 10 would discard (and reopen) connections beyond it, a TCP and TLS handshake per extra command.
        adapter = HTTPAdapter(pool_maxsize=pool_size)
        for scheme in ("http://", "https://"):
            self.session.mount(scheme, adapter)

    def request(
        self, method, url, params=None, data=None, headers=None, auth=None, timeout=None, allow_redirects=False
    ):
        """Send one request and return the SDK's Response; transport errors raise requests' exceptions."""
        prepared = PreparedRequest()
        prepared.method = method.upper()
        # The SDK builds paths from sids the routes have checked; values are encoded here, lists as repeated keys.
        prepared.url = url + ("?" + urlencode(params, doseq=True) if params else "")
        prepared.headers = CaseInsensitiveDict(headers or {})
        prepared.body = urlencode(data, doseq=True) if data else None
        if prepared.body or prepared.method not in ("GET", "HEAD"):  # as requests does: a GET has no length
            prepared.headers["Content-Length"] = str(len(prepared.body or ""))
        if auth:
            prepared.headers["Authorization"] = _basic_auth_str(*auth)
        prepared.hooks = {"response": []}
        answer = self.session.get_adapter(prepared.url).send(
            prepared, timeout=timeout or self.timeout, proxies=self.proxy or {}
        )
        return Response(
            answer.status_code, answer.content.decode(answer.encoding or "utf-8", "replace"), answer.headers
        )


def build_client(config: Config, timeout_s: Optional[float] = None, pool_size: Optional[int] = None) -> Client:
    """The SDK client with a timeout (it has none by default; default SIGNALWIRE_TIMEOUT_S) and the optional API URL
    override; `pool_size` defaults to a connection per command worker, reader and the reconciler."""
    base_url = config.signalwire_api_url or f"https://{config.signalwire_space_url}"
    # requests re-reads proxy variables from the environment on every call, which costs more CPU than
    # the rest of the call; read them once here.
    http_client = SignalWireHttp(
        timeout_s or config.signalwire_timeout_s,
        pool_size or config.signalwire_concurrency + readers_for(config.reconcile_max_reads_per_s) + 1,
        get_environ_proxies(base_url) or None,
    )
    client = Client(
        config.signalwire_project_id,
        config.signalwire_api_token,
        signalwire_space_url=config.signalwire_space_url,
        http_client=http_client,
    )
    if config.signalwire_api_url:
        # The SDK forces https://SPACE; a local emulator listens on plain http.
        client.api.base_url = config.signalwire_api_url.rstrip("/")
    return client


def build_announcer(config: Config) -> Client:
    """The announcement lane's SDK client: its own connections, and ANNOUNCE_TIMEOUT_S at most."""
    return build_client(config, min(ANNOUNCE_TIMEOUT_S, config.signalwire_timeout_s), ANNOUNCERS)


def _status(error: Exception) -> Optional[int]:
    """The HTTP status behind an SDK error (list pages raise a bare TwilioException)."""
    if isinstance(error, TwilioRestException):
        return error.status
    response = error.args[1] if isinstance(error, TwilioException) and len(error.args) > 1 else None
    return getattr(response, "status_code", None)


def _classify(error: Exception, gone: Tuple[int, ...] = UPDATE_GONE) -> Outcome:
    """Map an SDK or transport error to what the caller should do next."""
    status = _status(error)
    if status is None:
        return Outcome.RETRY  # timeouts and connection errors
    if status in gone:
        return Outcome.GONE
    if status == 429 or status >= 500:
        return Outcome.RETRY
    return Outcome.REJECTED


class SignalWireGateway:
    """REST commands Quorum issues, each returning an `Outcome` instead of raising."""

    def __init__(
        self,
        client: Client,
        observe: Callable[[str, str, float], None] = lambda kind, outcome, seconds: None,
        announcer: Optional[Client] = None,
    ):
        self._client = client
        self._announcer = announcer or client  # the client `announce` sends with (`build_announcer`)
        self._observe = observe  # (command kind, outcome, seconds) of every call, for metrics

    def set_recording(
        self,
        conference_sid: str,
        recording_sid: str,
        target: str,
        call_sid: Optional[str] = None,
        pause_behavior: str = "skip",
    ) -> Outcome:
        """Pause or resume the conference recording, or a participant's own (when `call_sid` is given)."""
        owner = self._client.calls(call_sid) if call_sid else self._client.conferences(conference_sid)
        recording = owner.recordings(recording_sid)
        return self._call(
            "pause" if target == PAUSED else "resume",
            f"{'call ' + call_sid if call_sid else 'conference ' + conference_sid} recording {recording_sid} "
            f"-> {API_STATUS[target]}",
            # PauseBehavior belongs to Status=paused only (Update a Conference Recording).
            lambda: recording.update(
                status=API_STATUS[target], **({"pause_behavior": pause_behavior} if target == PAUSED else {})
            ),
        )

    def announce(self, conference_sid: str, url: str) -> Outcome:
        """Have SignalWire fetch LaML from `url` and play it to everyone (Update a Conference: AnnounceUrl)."""
        return self._call(
            "announce",
            f"announce to conference {conference_sid}",
            lambda: self._announcer.conferences(conference_sid).update(announce_url=url, announce_method="POST"),
        )

    def record_call(self, call_sid: str, callback_url: str) -> Tuple[Outcome, Optional[str]]:
        """Start a mono recording of the caller's own voice; returns the recording sid."""
        created = []
        outcome = self._call(
            "record-call",
            f"record call {call_sid}",
            lambda: created.append(
                self._client.calls(call_sid).recordings.create(
                    recording_channels="mono",
                    recording_track="inbound",
                    trim="do-not-trim",
                    recording_status_callback=callback_url,
                    recording_status_callback_method="POST",
                    # twilio 6.54 would send a list as repeated fields; SignalWire wants one space-separated value.
                    recording_status_callback_event="in-progress completed absent",
                )
            ),
        )
        return outcome, (created[0].sid if created else None)

    def read_conference(
        self, conference_sid: str, call_recordings: Tuple[Tuple[str, str], ...] = ()
    ) -> Tuple[Outcome, Optional[Snapshot]]:
        """The conference's calls on the line and recordings, read from the REST API: two GETs, and a third
        for its status only when nobody is on the line (SignalWire ends a conference when the last one leaves);
        one more per (call, recording) of `call_recordings`, participant recordings the conference does not list."""
        found = []

        def read():
            conference = self._client.conferences(conference_sid)
            # A participant that has left may still be listed, with status `completed`.
            on_the_line = [
                p
                for p in conference.participants.list()
                if getattr(p, "status", "in-progress") in (None, "in-progress")
            ]
            present = tuple(p.call_sid for p in on_the_line)
            held = tuple(p.call_sid for p in on_the_line if getattr(p, "hold", False) is True)
            recordings = {r.sid: r.status for r in conference.recordings.list()}
            status = "in-progress" if present else conference.fetch().status
            fetched = {sid: self._call_recording_status(call, sid) for call, sid in call_recordings}
            found.append(Snapshot(status, present, recordings, held, fetched))

        outcome = self._call("read-conference", f"read conference {conference_sid}", read)
        return outcome, (found[0] if found else None)

    def _call_recording_status(self, call_sid: str, recording_sid: str) -> Optional[str]:
        """A participant recording's status (`GET /Calls/{C}/Recordings/{R}`); None when the API answers 404."""
        try:
            return self._client.calls(call_sid).recordings(recording_sid).fetch().status
        except TwilioRestException as error:
            if error.status == 404:
                return None  # nothing of that sid is left: the recording is over
            raise

    def fetch_call(self, call_sid: str) -> Tuple[Outcome, Optional[dict]]:
        """Who a call is, from the Call resource (`GET /Calls/{sid}`): {"from", "to"} as the voice webhook keeps."""
        found = []
        outcome = self._call(
            "fetch-call",
            f"fetch call {call_sid}",
            lambda: found.append(self._client.calls(call_sid).fetch()),
            gone=READ_GONE,
        )
        return outcome, ({"from": found[0].from_ or "", "to": found[0].to or ""} if found else None)

    def list_live_conferences(self) -> Tuple[Outcome, List[LiveConference]]:
        """Every in-progress conference of the project, page by page."""
        found: List[LiveConference] = []
        outcome = self._call(
            "list-conferences",
            "list in-progress conferences",
            lambda: found.extend(
                LiveConference(c.sid, c.friendly_name or "", _epoch(c.date_created))
                for c in self._client.conferences.stream(status="in-progress", page_size=LIVE_PAGE_SIZE)
            ),
        )
        return outcome, found

    def point_number_at(self, phone_number: str, voice_url: str, status_url: str) -> Outcome:
        """Set the number's voice webhook and its StatusCallback (the calls' own ends); GONE when the number is not
        in this project."""
        found = []
        outcome = self._call(
            "find-number",
            f"look up {phone_number}",
            lambda: found.extend(self._client.incoming_phone_numbers.list(phone_number=phone_number, limit=1)),
        )
        if outcome is not Outcome.OK:
            return outcome
        if not found:
            return Outcome.GONE
        return self._call(
            "point-number",
            f"point {phone_number} at {voice_url}",
            lambda: found[0].update(
                voice_url=voice_url, voice_method="POST", status_callback=status_url, status_callback_method="POST"
            ),
        )

    def list_recordings(
        self, conference_sid: Optional[str] = None, call_sid: Optional[str] = None
    ) -> Tuple[Outcome, Dict[str, ListedRecording]]:
        """A conference's recordings (`GET /Conferences/{C}/Recordings`), or a call's own (List all Recordings,
        `GET /Recordings?CallSid=`, the list SignalWire documents for calls), finished ones included."""
        found: Dict[str, ListedRecording] = {}
        if conference_sid is not None:
            listing = self._client.conferences(conference_sid).recordings
            what, page = (
                f"list recordings of conference {conference_sid}",
                lambda: listing.stream(page_size=RECORDINGS_PAGE_SIZE),
            )
        else:
            what, page = (
                f"list recordings of call {call_sid}",
                lambda: self._client.recordings.stream(call_sid=call_sid, page_size=RECORDINGS_PAGE_SIZE),
            )
        outcome = self._call(
            "list-recordings", what, lambda: found.update((r.sid, _listed(r)) for r in page()), gone=READ_GONE
        )
        return outcome, found

    def fetch_recording(self, recording_sid: str) -> Tuple[Outcome, Optional[ListedRecording]]:
        """One recording's resource (`GET /Recordings/{R}.json`, which names its conference); GONE: 404."""
        found = []
        outcome = self._call(
            "fetch-recording",
            f"fetch recording {recording_sid}",
            lambda: found.append(_listed(self._client.recordings(recording_sid).fetch())),
            gone=READ_GONE,
        )
        return outcome, (found[0] if found else None)

    def media_url(self, recording_sid: str) -> str:
        """Where SignalWire serves a recording's media, without extension, as RecordingUrl names it (Retrieve a
        Recording: `{space}/api/laml/2010-04-01/Accounts/{project}/Recordings/{sid}`), on the REST client's base."""
        base = self._client.api.base_url.rstrip("/")
        return f"{base}/api/laml/{API_VERSION}/Accounts/{self._client.account_sid}/Recordings/{recording_sid}"

    def delete_recording(self, recording_sid: str) -> Outcome:
        """Delete a recording and its media at SignalWire (`DELETE /Recordings/{R}`); GONE: 404, already gone."""
        return self._call(
            "delete-recording",
            f"delete recording {recording_sid}",
            lambda: self._client.recordings(recording_sid).delete(),
            gone=DELETE_GONE,
        )

    def _call(self, kind: str, what: str, command, gone: Tuple[int, ...] = UPDATE_GONE) -> Outcome:
        """Run one command, timing it and logging its failure without credentials; `gone`: statuses meaning GONE."""
        started = time.perf_counter()
        try:
            command()
            outcome = Outcome.OK
        except (TwilioException, requests.RequestException) as error:
            outcome = _classify(error, gone)
            log.warning("%s failed (%s): %s", what, outcome.value, _describe(error))
        self._observe(kind, outcome.value, time.perf_counter() - started)
        return outcome


def _describe(error: Exception) -> str:
    """A one-line description that never includes the request's auth header."""
    if isinstance(error, TwilioRestException):
        return f"HTTP {error.status} code={error.code} {error.msg}"
    status = _status(error)
    return f"HTTP {status}" if status else type(error).__name__
