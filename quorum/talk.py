"""Talk time from SignalWire's speaker events: each call's speech starts and stops, and the spans they give.

Pure functions over a `Conference`, applied through the store's mutate like every other conference event.
The `<Conference>` noun's `speaker` statusCallbackEvent sends `participant-speech-start` and
`participant-speech-stop` ("when a participant has begun or stopped speaking"), stamped with an RFC 2822
Timestamp of one-second resolution, best effort and unordered like every callback. So the events are
kept, not folded as they come: a call's spans are derived from the set of its (Timestamp, kind) pairs,
which no delivery order or duplicate changes (`spans`).
"""

from __future__ import annotations

import bisect
from typing import List, Optional, Tuple

from recording_state import Conference, TalkEvents, evolve

SPEECH_START, SPEECH_STOP = "participant-speech-start", "participant-speech-stop"
SPEECH_EVENTS = (SPEECH_START, SPEECH_STOP)
# Starts (and stops) kept per call, the newest: some 500 turns, an hour of lively talk for one caller.
# Older ones are dropped, so a longer call's talk time undercounts; the bound keeps a write to the store small.
TALK_EVENTS_LIMIT = 500


def speech_event(conf: Conference, kind: str, call_sid: Optional[str], at: float) -> Conference:
    """Keep one speech start or stop of `call_sid`; any other event kind, or a duplicate, changes nothing."""
    if kind not in SPEECH_EVENTS or not call_sid:
        return conf
    events = conf.talk.get(call_sid) or TalkEvents()
    marks = events.starts if kind == SPEECH_START else events.stops
    index = bisect.bisect_left(marks, at)
    if index < len(marks) and marks[index] == at:
        return conf  # a retried callback, or the same event in the same second
    kept = (marks[:index] + (at,) + marks[index:])[-TALK_EVENTS_LIMIT:]
    changed = evolve(events, **{"starts" if kind == SPEECH_START else "stops": kept})
    return evolve(conf, talk={**conf.talk, call_sid: changed}, updated_at=max(conf.updated_at, at))


def spans(events: TalkEvents, until: Optional[float]) -> List[Tuple[float, float]]:
    """The call's talk spans (SignalWire's clock), in order; one still open ends at `until` (None: dropped).

    Read in Timestamp order: a start (talking from that second on), a stop (silent from then on); a start while
    talking or a stop while silent (its partner lost or dropped) changes nothing. A second that holds both a
    start and a stop cannot be ordered within: it ends in the state the call's next one-kind second needs
    (silent before a start, talking before a stop; silent after the last), the fewest events that explain them.
    So a pause of under a second inside a turn keeps the turn going, talk of under a second between silences
    is not counted, and a stop, a start and a stop in one second end the turn there.
    """
    starts, stops = set(events.starts), set(events.stops)
    marks = sorted(starts | stops)
    after, needed = [False] * len(marks), False  # the state after each second; what the next one needs before it
    for index in range(len(marks) - 1, -1, -1):
        at = marks[index]
        after[index] = needed if at in starts and at in stops else at in starts
        if not (at in starts and at in stops):
            needed = at in stops
    out: List[Tuple[float, float]] = []
    since: Optional[float] = None
    for at, talking in zip(marks, after):
        if talking and since is None:
            since = at
        elif not talking and since is not None:
            out.append((since, at))
            since = None
    if since is not None and until is not None and until > since:
        out.append((since, until))
    return out


def talk_spans(conf: Conference, until: float) -> dict:
    """Call sid -> its talk spans; a span still open ends when the call left (its leave's Timestamp) or at `until`."""
    result = {}
    for call_sid, events in conf.talk.items():
        presence = conf.participants.get(call_sid)
        end = presence.at if presence is not None and not presence.present else until
        result[call_sid] = spans(events, end)
    return result
