"""What the emulator knows about numbers, calls, conferences and recordings.

Plain records guarded by the owning `Simulator`'s lock. Times are wall-clock epoch
seconds (`time.time()`), the clock SignalWire's Timestamps use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Set, Tuple

from emulator import audio

RECORDING = "recording"
PAUSED = "paused"


@dataclass
class Span:
    """A stretch of a recording: `recording`, or `paused` with the pause's behaviour."""

    state: str
    start: float
    end: Optional[float] = None
    behavior: Optional[str] = None  # skip | silence, for paused spans

    @property
    def seconds(self) -> float:
        """Length of a closed span."""
        return (self.end or self.start) - self.start

    def to_dict(self) -> dict:
        """A JSON-ready copy."""
        return {"state": self.state, "start": self.start, "end": self.end, "behavior": self.behavior}


@dataclass
class Timeline:
    """The recording/paused spans of one recording, honouring each pause's PauseBehavior."""

    spans: List[Span] = field(default_factory=list)

    @property
    def state(self) -> Optional[str]:
        """`recording`, `paused`, or None when not started or closed."""
        if self.spans and self.spans[-1].end is None:
            return self.spans[-1].state
        return None

    def start(self, at: float) -> None:
        """Begin recording."""
        self.spans.append(Span(RECORDING, at))

    def pause(self, at: float, behavior: str) -> bool:
        """Pause; False (no change) when not recording."""
        if self.state != RECORDING:
            return False
        self._switch(at, Span(PAUSED, at, behavior=behavior))
        return True

    def resume(self, at: float) -> bool:
        """Resume; False (no change) when not paused."""
        if self.state != PAUSED:
            return False
        self._switch(at, Span(RECORDING, at))
        return True

    def close(self, at: float) -> None:
        """End the last span."""
        if self.state is not None:
            self.spans[-1].end = at

    def _switch(self, at: float, span: Span) -> None:
        """Close the open span at `at` and open `span`."""
        self.spans[-1].end = at
        self.spans.append(span)

    def seconds(self, state: str) -> float:
        """Total length of closed spans in `state`."""
        return sum(s.seconds for s in self.spans if s.state == state)

    def media_seconds(self) -> float:
        """Length of the media: recording spans, plus paused spans kept as silence."""
        return sum(s.seconds for s in self.spans if s.state == RECORDING or s.behavior == "silence")

    def pieces(self, origin: float) -> List[audio.Piece]:
        """The media's spans in samples from `origin`; skipped pauses leave nothing."""
        pieces = []
        for span in self.spans:
            if span.state == PAUSED and span.behavior == "skip":
                continue
            start, end = _sample(span.start, origin), _sample(span.end or span.start, origin)
            pieces.append(audio.Piece(start, end, silent=span.state == PAUSED))
        return pieces


def _sample(at: float, origin: float) -> int:
    """The sample index of time `at` on a clock starting at `origin`."""
    return round((at - origin) * audio.RATE)


@dataclass
class PhoneNumber:
    """An IncomingPhoneNumber of the project."""

    sid: str
    phone_number: str
    voice_url: str = ""
    voice_method: str = "POST"
    created_at: float = 0.0
    updated_at: float = 0.0
    # OpenAPI update_incoming_phone_number: StatusCallback, StatusCallbackMethod ("Default is `POST`").
    status_callback: str = ""
    status_callback_method: str = "POST"


@dataclass(frozen=True)
class Verb:
    """One LaML instruction of a `<Response>`: its name, attributes and text (`<Dial>`: its nouns too)."""

    name: str
    attrs: Tuple[Tuple[str, str], ...] = ()
    text: str = ""
    nouns: Tuple["Verb", ...] = ()

    def attr(self, name: str, default: str = "") -> str:
        """An attribute's value, or `default`."""
        return dict(self.attrs).get(name, default)


@dataclass(frozen=True)
class CallbackTarget:
    """Where and which events to report, as a `<Conference>` or REST request asked."""

    url: str = ""
    method: str = "POST"
    events: frozenset = frozenset()


@dataclass
class Call:
    """One simulated caller's inbound call."""

    sid: str
    from_: str
    to: str
    label: str
    voice_seed: int
    created_at: float
    fault_key: str = ""  # the call's own callbacks (status, dial action) draw from streams named after it
    phone_number_sid: Optional[str] = None
    status_callback: CallbackTarget = CallbackTarget()  # the number's StatusCallback when the call arrived
    # OpenAPI CallStatus; in-progress from the moment its LaML runs until it ends (also between leaving a
    # conference and the end of its document).
    status: str = "ringing"  # ringing | in-progress | completed | failed
    answered_at: Optional[float] = None  # its LaML began to run: the Call resource's start_time
    ended_at: Optional[float] = None
    dial_action: CallbackTarget = CallbackTarget()  # <Dial action method> of the conference it joined
    after_dial: Tuple[Verb, ...] = ()  # the document's verbs after that <Dial>
    conference_sid: Optional[str] = None
    joined_at: Optional[float] = None
    left_at: Optional[float] = None
    start_conference_on_enter: bool = True
    end_conference_on_exit: bool = False
    muted: bool = False
    hold: bool = False
    updated_at: Optional[float] = None  # last hold change or leave, the participant's date_updated
    recording_sids: List[str] = field(default_factory=list)
    talk: Tuple[Tuple[float, float], ...] = ()  # scripted turns, (start, end) s after joining; empty: the voice's own

    @property
    def on_the_line(self) -> bool:
        """Answered and not yet ended."""
        return self.status == "in-progress"


@dataclass
class Conference:
    """A conference room instance: created by its first caller, ended when the last leaves."""

    sid: str
    name: str
    created_at: float
    record: str  # do-not-record | record-from-start
    status_callback: CallbackTarget
    recording_callback: CallbackTarget
    fault_key: str  # the conference's callbacks share one seeded fault stream
    trim: str = "trim-silence"
    # OpenAPI ConferenceStatus: init | in-progress | completed; init until conference-start.
    status: str = "init"
    started_at: Optional[float] = None
    ended_at: Optional[float] = None
    call_sids: List[str] = field(default_factory=list)  # everyone who ever joined, in order
    present: Set[str] = field(default_factory=set)
    recording_sids: List[str] = field(default_factory=list)


@dataclass
class Recording:
    """A conference or call recording with its timeline."""

    sid: str
    source: str  # OpenAPI RecordingSource: Conference | StartCallRecordingApi
    origin: float  # sample 0 of the voices it hears
    callback: CallbackTarget
    conference_sid: Optional[str] = None
    call_sid: Optional[str] = None
    channels: int = 1
    track: str = "both"  # inbound | outbound | both, for call recordings
    trim: str = "do-not-trim"
    status: str = "in-progress"  # OpenAPI RecordingStatus: in-progress | paused | completed | absent
    timeline: Timeline = field(default_factory=Timeline)
    started_at: float = 0.0
    ended_at: Optional[float] = None
    deleted: bool = False  # DELETE /Recordings/{R}: gone from the API, media 404
    failed: bool = False  # reported `failed`: "not accessible because of a failure", media 404

    @property
    def finished(self) -> bool:
        """Ended (completed, absent or failed): no longer updatable."""
        return self.ended_at is not None

    def duration(self) -> float:
        """Seconds of media so far."""
        return self.timeline.media_seconds()
