"""A finished conference checked against what SignalWire holds before it is archived, as pure functions.

Callbacks get lost (SignalWire gives up after three attempts), a restart forgets conferences, downloads fail.
So before archiving, the conference's recordings (and each known caller's own) are listed at SignalWire: one
listed finished that Quorum has no media URL for gets one, one still being made there holds the archive back
(RUNNING_WAIT_S at most), one listed without media, or gone, says why in the record. A try that cannot finish
(SignalWire unreachable, a download failing) is put off with a growing backoff, never archived as "no audio".
Nothing here does I/O.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

from quorum import policy
from quorum.gateway import ListedRecording
from recording_state import ABANDONED, GONE, Caller, Conference, RecordingInfo, evolve

WITH_MEDIA = ("completed", "stopped")  # over, with media (`stopped`: ended through the REST API)
WITHOUT_MEDIA = ("absent", "failed", "deleted")
FINAL = WITH_MEDIA + WITHOUT_MEDIA  # any other status (in-progress, paused, queued, processing...): still being made
# SignalWire ends a conference's recordings with it, and a caller's own as the caller leaves: one still being made
# an hour after the conference ended is not coming, and the conversation is archived without it (saying so).
RUNNING_WAIT_S = 3600.0
# Between tries that could not finish: as long again as the conference has waited since it ended (a backoff that
# doubles), within these bounds. The sweep runs each try once it is due.
RETRY_FIRST_S, RETRY_MAX_S = 1.0, 600.0


def no_media(found: ListedRecording) -> Optional[str]:
    """Why a listed recording has no audio to fetch, or None when it has (or may yet have) some. A duration of 0
    is no such reason: durations are whole seconds, and a recording shorter than half a second has media."""
    if found.status in WITHOUT_MEDIA:
        return f"SignalWire lists it as {found.status}: it has no audio"
    return None


def no_media_served(found: ListedRecording) -> Optional[str]:
    """Why a recording whose media answered 404 has no audio, as its resource tells; None: ask again later."""
    if found.status in WITH_MEDIA and found.duration_s == 0:
        return "SignalWire reports it 0 s long and serves no media for it"
    return no_media(found)


def merged(conf: Conference, listed: Dict[str, ListedRecording], media_url: Callable[[str], str]) -> Conference:
    """`conf` with what SignalWire lists of its finished recordings: their end, media URL, duration and owner, or
    why they have no media. Recordings still being made are left as they are (see `running`)."""
    for sid, found in sorted(listed.items()):
        why = no_media(found)
        if why is not None:
            conf = gone(_ended(conf, sid, found), sid, why)
        elif found.status in WITH_MEDIA:
            conf = _ended(conf, sid, found, media_url(sid))
    return conf


def running(conf: Conference, listed: Dict[str, ListedRecording]) -> Dict[str, ListedRecording]:
    """The listed recordings SignalWire is still making, whose end no callback has reported either."""
    return {
        sid: found for sid, found in listed.items() if found.status not in FINAL and conf.recordings.get(sid) != GONE
    }


def unlisted(conf: Conference, listed: Dict[str, ListedRecording]) -> List[str]:
    """Recordings Quorum knows that SignalWire did not list and that there is no media URL for: asked one by one."""
    return sorted(
        sid
        for sid, state in conf.recordings.items()
        if sid not in listed and not (state == GONE and _info(conf, sid).url)
    )


def gone(conf: Conference, recording_sid: str, why: str) -> Conference:
    """The recording is over with no audio to fetch, and the record says why."""
    if conf.recordings.get(recording_sid) != GONE:
        conf = policy.recording_status(conf, recording_sid, "absent", _ended_at(conf))
    return _with_info(conf, recording_sid, url=None, missing=why)


def gave_up(conf: Conference, still: Dict[str, ListedRecording], waited_s: float) -> Conference:
    """Archive without the recordings still being made at SignalWire `waited_s` after the conference ended."""
    for sid, found in sorted(still.items()):
        if found.owner:
            conf = _as_channel(_with_info(conf, sid, call_sid=found.owner), found.owner)
        conf = evolve(conf, recordings={**conf.recordings, sid: ABANDONED})
        conf = _with_info(
            conf,
            sid,
            url=None,
            missing=f"still {found.status} at SignalWire {round(waited_s / 60)} min after the conference ended",
        )
    return conf


def with_missing(conf: Conference, reasons: Dict[str, str]) -> Conference:
    """`conf` saying, for each recording named, why it has no audio yet."""
    for sid, why in sorted(reasons.items()):
        conf = _with_info(conf, sid, missing=why)
    return conf


def put_off(conf: Conference, now: float) -> Conference:
    """Try archiving again after a backoff (our clock)."""
    return evolve(conf, process_after=now + retry_in(now - _ended_at(conf)))


def retry_in(waited_s: float) -> float:
    """Seconds before the next try of a conference that ended `waited_s` ago."""
    return min(RETRY_MAX_S, max(RETRY_FIRST_S, waited_s))


def claimed(unclaimed: Conference, conference_sid: str) -> Conference:
    """Recordings no held conference knew, kept as the conversation of the conference SignalWire says they are of."""
    return evolve(unclaimed, conference_sid=conference_sid)


def adopted(holder: Conference, unclaimed: Conference) -> Conference:
    """The conference SignalWire says the unclaimed recordings are of, with what their callbacks told."""
    at = _ended_at(holder) if holder.ended else _ended_at(unclaimed)
    for sid, state in sorted(unclaimed.recordings.items()):
        info = _info(unclaimed, sid)
        if state == GONE:
            holder = policy.recording_status(holder, sid, "completed", at, info.url, info.duration_s, info.call_sid)
        elif sid not in holder.recordings:
            holder = evolve(
                holder,
                recordings={**holder.recordings, sid: state},
                recording_info={**holder.recording_info, sid: info},
            )
        if info.call_sid:
            holder = _as_channel(holder, info.call_sid)
    return policy.to_processing(holder) if policy.finished(holder) else holder


def _ended(conf: Conference, recording_sid: str, found: ListedRecording, url: Optional[str] = None) -> Conference:
    """The recording over, as SignalWire lists it; what its callbacks told is kept, what they did not is filled in."""
    if conf.recordings.get(recording_sid) != GONE:
        conf = policy.recording_status(conf, recording_sid, "completed", _ended_at(conf))
    info = _info(conf, recording_sid)
    conf = _with_info(
        conf,
        recording_sid,
        url=info.url or url,
        call_sid=info.call_sid or found.owner,
        duration_s=info.duration_s if info.duration_s is not None else found.duration_s,
    )
    owner = _info(conf, recording_sid).call_sid
    return _as_channel(conf, owner) if owner else conf


def _as_channel(conf: Conference, call_sid: str) -> Conference:
    """A caller's own recording is archived on the caller's channel: one whose join no callback told (a restart)
    is shown from when Quorum first heard of the conference."""
    caller = conf.callers.get(call_sid) or Caller()
    if caller.joined_at is not None:
        return conf
    return evolve(conf, callers={**conf.callers, call_sid: evolve(caller, joined_at=conf.opened_at)})


def _ended_at(conf: Conference) -> float:
    """When the conference ended, as far as Quorum knows (our clock)."""
    return conf.ended_at if conf.ended_at is not None else conf.updated_at


def _info(conf: Conference, recording_sid: str) -> RecordingInfo:
    """What the callbacks told of a recording (nothing yet: empty)."""
    return conf.recording_info.get(recording_sid) or RecordingInfo()


def _with_info(conf: Conference, recording_sid: str, **changes) -> Conference:
    """`conf` with some of one recording's RecordingInfo fields changed."""
    info = evolve(_info(conf, recording_sid), **changes)
    return evolve(conf, recording_info={**conf.recording_info, recording_sid: info})
