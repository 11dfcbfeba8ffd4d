"""Secure pause (PCI) as pure functions: an agent stops the recording, whatever the quorum says, for a while.

While a conference's secure pause is on, `policy.quorum_wanted` wants PAUSED: the conference recording and every
participant's own recording are paused like any other pause. It ends when resumed, or at its deadline (it times
out), and then the quorum rule decides again: a resume below quorum records nothing. The deadline is kept in the
Conference, so any process, or the next run, ends it on time.
"""

from __future__ import annotations

import re
from typing import Optional, Tuple

from quorum.policy import _rewant
from recording_state import Conference, SecurePause, evolve

KEPT = 100  # secure pauses a conference remembers, for the record: one paused all day stays bounded
REASON_MAX_CHARS = 200
REASON_REFUSED = r"\x00-\x1f\x7f-\x9f\u2028\u2029"  # a regex character class: control characters, line breaks
RESUMED, TIMED_OUT, CONFERENCE_ENDED = "resumed", "timed-out", "conference-ended"


def valid_reason(reason: str) -> bool:
    """Whether a reason may be kept: short, and one line without control characters (records and events carry it)."""
    return len(reason) <= REASON_MAX_CHARS and not re.search(f"[{REASON_REFUSED}]", reason)


def begin(conf: Optional[Conference], now: float, by: str, reason: str, max_s: float) -> Optional[Conference]:
    """A live conference with a secure pause on from `now` until `now + max_s`; one already on is kept as it is."""
    if conf is None or conf.ended or conf.secure_pause() is not None:
        return conf
    pause = SecurePause(start=now, until=now + max_s, by=by, reason=reason)
    return _rewant(evolve(conf, secure_pauses=(conf.secure_pauses + (pause,))[-KEPT:]), now)


def resume(conf: Optional[Conference], now: float, by: str) -> Optional[Conference]:
    """The conference with its secure pause ended now by `by`, if one is on: the quorum rule decides again."""
    if conf is None or conf.ended or conf.secure_pause() is None:
        return conf
    return _ended(conf, now, RESUMED, by, now)


def expire(conf: Optional[Conference], now: float) -> Optional[Conference]:
    """The conference with its secure pause ended at its deadline, once that has passed."""
    pause = conf.secure_pause() if conf is not None and due(conf, now) else None
    if conf is None or pause is None:
        return conf
    return _ended(conf, pause.until, TIMED_OUT, "", now)


def due(conf: Optional[Conference], now: float) -> bool:
    """Whether a live conference's secure pause has outlived its deadline (`expire` would end it)."""
    pause = conf.secure_pause() if conf is not None and not conf.ended else None
    return pause is not None and now >= pause.until


def _ended(conf: Conference, end: float, how: str, by: str, now: float) -> Conference:
    """The secure pause on, ended at `end`; the wanted state recomputed at `now`."""
    closed = evolve(conf.secure_pause(), end=end, ended=how, resumed_by=by)
    return _rewant(evolve(conf, secure_pauses=conf.secure_pauses[:-1] + (closed,)), now)


def outcome(pause: SecurePause, ended_at: Optional[float], now: float) -> Tuple[Optional[float], Optional[str]]:
    """When and how a secure pause ended, as of `now` (its conference ended at `ended_at`); (None, None) while on.

    One still on in a conference that ended was cut short by that end, or had timed out before it; one past its
    deadline in a live conference timed out then, whether or not its end was stored yet."""
    if pause.end is not None:
        return pause.end, pause.ended
    if ended_at is not None and ended_at < pause.until:
        return ended_at, CONFERENCE_ENDED
    if (ended_at if ended_at is not None else now) >= pause.until:
        return pause.until, TIMED_OUT
    return None, None
