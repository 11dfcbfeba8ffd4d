"""A call's own end, the second signal of who is on the line: the pure transition that takes it off for good."""

from __future__ import annotations

from quorum.policy import _rewant
from recording_state import Conference, evolve

# CallStatus values of a call that is over (cXML voice overview, "CallStatus values").
CALL_OVER = ("completed", "busy", "failed", "no-answer", "canceled")


def end_time(stamp: float, duration_s: int, now: float) -> float:
    """When a call ended, from its status callback's Timestamp and CallDuration, received at `now`.

    SignalWire documents that Timestamp two ways: when the event occurred (cXML voice overview, StatusCallback)
    and the call's creation (Incoming call status callback), which plus CallDuration is when it ended. The stamp
    plus the duration, never later than the arrival, fits both; the end is final whatever its time (`call_ended`).
    """
    return min(stamp + duration_s, now)


def call_ended(conf: Conference, call_sid: str, at: float) -> Conference:
    """The call itself ended (its status callback, or its <Dial> action): off the line for good.

    Final whatever the order of the two signals and their clocks: a CallSid never rejoins (a rejoin is a new
    call), so the end outranks any event of the call stamped later, and `policy.participant_event` and
    `policy.recover` leave an ended call as it is. A call the conference does not hold is left alone: a call's
    status does not say which conference it was in.
    """
    seen = conf.participants.get(call_sid)
    if seen is None or seen.terminal:
        return conf
    gone = evolve(seen, present=False, hold=False, terminal=True, at=max(seen.at, at), version=conf.version + 1)
    changed = evolve(conf, participants={**conf.participants, call_sid: gone}, updated_at=max(conf.updated_at, at))
    return _rewant(changed, at)
