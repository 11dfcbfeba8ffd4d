"""The consent announcement (RECORDING_ANNOUNCEMENT) as pure functions: owed, then played, failed or skipped.

Each start or resume of the conference recording owes one (`policy` sets `announce_tries` when it confirms
it); the announcement lane (`quorum/announcer.py`) plays it, so no pause or resume waits for it. A pause
confirmed first settles it as skipped, and `recording.resumed` (which waits for the outcome) goes out before
that pause's `recording.paused`.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, TypeGuard

from quorum.policy import _log, _owner
from recording_state import PAUSED, RECORDING, Conference, evolve


def announcement_due(conf: Optional[Conference]) -> TypeGuard[Conference]:
    """Whether the announcement lane has something to do: a start or resume of a live conference not yet announced."""
    return conf is not None and not conf.ended and conf.conference_sid is not None and conf.announce_tries > 0


def announcement_start(conf: Conference) -> Optional[float]:
    """When (our clock) the start or resume of the conference recording that is owed an announcement was confirmed."""
    return next(
        (
            t.at
            for t in reversed(conf.timeline)
            if t.kind == "confirmed" and t.state == RECORDING and _owner(conf, t.recording_sid) is None
        ),
        None,
    )


def announcement_plays(conf: Conference) -> bool:
    """Whether a due announcement is worth playing: the recording is to go on, not about to pause."""
    return conf.wanted == RECORDING


def announced(
    conf: Optional[Conference], outcome: str, at: float, start: Optional[float] = None
) -> Optional[Conference]:
    """Record how an announcement went (played, failed, skipped): a first failure leaves one more try.

    `start`: the `announcement_start` it was sent for; a start or resume confirmed since owes one of its own.
    """
    if conf is None or not conf.announce_tries or (start is not None and announcement_start(conf) != start):
        return conf
    if outcome == "failed" and conf.announce_tries > 1:
        return evolve(conf, announce_tries=conf.announce_tries - 1)
    return evolve(conf, announce_tries=0, timeline=_log(conf, at, "announced", outcome))


def paused_first(conf: Optional[Conference], recording_sid: str, state: str, at: float) -> Optional[Conference]:
    """After a command confirmed `state` for a recording: a pause of the conference recording before the owed
    announcement's outcome settles it as skipped (the recording does not carry it)."""
    if conf is None or state != PAUSED or _owner(conf, recording_sid) is not None:
        return conf
    return announced(conf, "skipped", at)


def noting_settled(change: Callable, settled: Dict[str, bool]) -> Callable:
    """`change`, noting in `settled["owed"]` whether it settled the announcement a start or resume owed: then the
    `recording.resumed` held back for it is due."""

    def apply(conf: Optional[Conference]) -> Optional[Conference]:
        after = change(conf)
        settled["owed"] = bool(conf and after and conf.announce_tries and not after.announce_tries)
        return after

    return apply
