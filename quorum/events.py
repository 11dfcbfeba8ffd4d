"""The parsed webhook events the controller takes, and what it did with each (`Decision`)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional

PARTICIPANT_EVENTS = ("participant-join", "participant-leave", "participant-hold", "participant-unhold")


class Decision(enum.StrEnum):
    """What the controller did with a callback (the `X-Quorum-Outcome` header)."""

    APPLIED = "applied"  # the state changed, or not, and no command is due
    QUEUED = "queued"  # a command is due: the room was kicked
    PROCESSING = "processing"  # the conference is over: handed to conversation processing
    FORGOTTEN = "forgotten"  # nothing is left to track
    STALE = "stale"  # a late callback for a finished conference or an archived recording
    IGNORED = "ignored"  # an event kind Quorum does not act on


@dataclass(frozen=True)
class ConferenceEvent:
    """A conference status callback, reduced to what the policy needs."""

    kind: str  # conference-start | conference-end | participant-join | -leave | -hold | -unhold | -speech-start | -stop
    room: str
    conference_sid: str
    call_sid: Optional[str]
    at: float  # SignalWire's Timestamp: orders events
    hold: bool = False  # the participant is on hold after this event
    received: Optional[float] = None  # perf_counter() when the callback arrived, for the crossing latency


@dataclass(frozen=True)
class RecordingEvent:
    """A recording status callback; the room comes from the callback URL's query string."""

    room: str
    recording_sid: str
    status: str
    at: float
    url: Optional[str] = None
    duration_s: Optional[float] = None
    call_sid: Optional[str] = None  # set for a participant's own recording (from our callback URL)


@dataclass(frozen=True)
class CallStatusEvent:
    """A call's own end: its <Dial> action (it left the conference) or its status callback (it hung up)."""

    room: str  # from our <Dial> action's query, or the room /voice/inbound chose from the dialed number
    call_sid: str
    at: float  # when it ended: from SignalWire's Timestamp, else our arrival clock
    received: Optional[float] = None  # perf_counter() when the callback arrived, for the crossing latency
