"""The conversation record of a conference, built from its state as a pure function.

Shape (times in ms from the conversation's start, which is when Quorum first heard of it):

    {id, room, started_at, ended_at, status: live|processing|ready|failed,
     audio: {wav_file, mp3_file, duration_ms, snr, rt60, deleted_from_signalwire, missing},
     recording_timeline: [{state: recording|paused, start_ms, end_ms}],
     announcements: [{at_ms, outcome: played|failed|skipped}],
     secure_pauses: [{start_ms, end_ms, by: api|dashboard, reason, ended: resumed|timed-out|conference-ended,
                      resumed_by}],
     channels: [{connection_id, call_sid, from, to, host, start_ms, end_ms, holds: [{start_ms, end_ms}],
                 audio: {...}, recording_timeline: [...] (its own recording's), talk: {...}}],
     talk: {silence_s, source}}     (talk figures: conversations/talk_time.py)

`status` is `failed` when the conference recording never reported its end (the mix is
then missing); a missing channel recording leaves that channel's audio empty.
`deleted_from_signalwire` turns true once SignalWire's copy of that recording is deleted. `missing` says why a
recording has no audio (SignalWire lists it absent, it is gone there, it never finished...; while processing, why
not yet); it is null when there is audio, or no recording at all.
A secure pause still on has `end_ms` and `ended` null.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Dict, List, Optional

from conversations import talk_time
from quorum.secure_pause import outcome
from recording_state import ABANDONED, LIVE, PAUSED, PROCESSING, RECORDING, Conference

# A conversation's status: its conference's (LIVE, PROCESSING) until archived, then one of these two.
READY = "ready"
UNFINISHED = "failed"  # archived, but the conference recording never reported its end
STATUSES = (LIVE, PROCESSING, READY, UNFINISHED)
EMPTY_AUDIO = {
    "wav_file": None,
    "mp3_file": None,
    "duration_ms": None,
    "snr": None,
    "rt60": None,
    "deleted_from_signalwire": False,
    "missing": None,
}


def iso(at: Optional[float]) -> Optional[str]:
    """Epoch seconds as an ISO 8601 UTC string."""
    return None if at is None else datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="milliseconds")


def mix_recording(conf: Conference) -> Optional[str]:
    """The sid of the conference's own (full-mix) recording, the first one it started."""
    for transition in conf.timeline:
        sid = transition.recording_sid
        if transition.kind == "confirmed" and sid and not _is_channel(conf, sid):
            return sid
    return next((sid for sid in conf.recordings if not _is_channel(conf, sid)), None)


def _is_channel(conf: Conference, recording_sid: str) -> bool:
    """Whether the recording is a participant's own."""
    info = conf.recording_info.get(recording_sid)
    return bool(info and info.call_sid)


def recording_timeline(conf: Conference, recording_sid: Optional[str], until: float) -> List[dict]:
    """Recorded and paused spans of one recording, from its confirmed transitions."""
    spans: List[dict] = []
    state: Optional[str] = None
    since = 0.0  # read only once a transition has set `state`
    for t in conf.timeline:
        if t.kind != "confirmed" or t.recording_sid != recording_sid:
            continue
        if state in (RECORDING, PAUSED) and t.at > since:
            spans.append(_span(state, since, t.at, conf.opened_at))
        state, since = t.state, t.at
    if state in (RECORDING, PAUSED) and until > since:
        spans.append(_span(state, since, until, conf.opened_at))
    return _merge(spans)


def _span(state: str, start: float, end: float, origin: float) -> dict:
    """One timeline span in ms from `origin`."""
    return {"state": state, "start_ms": _ms(start, origin), "end_ms": _ms(end, origin)}


def _merge(spans: List[dict]) -> List[dict]:
    """Join neighbouring spans of the same state."""
    merged: List[dict] = []
    for span in spans:
        if merged and merged[-1]["state"] == span["state"] and merged[-1]["end_ms"] == span["start_ms"]:
            merged[-1] = {**merged[-1], "end_ms": span["end_ms"]}
        else:
            merged.append(span)
    return merged


def _ms(at: Optional[float], origin: float) -> Optional[int]:
    """Milliseconds from `origin`, never negative."""
    return None if at is None else max(0, round((at - origin) * 1000))


def channels(conf: Conference, media: Dict[str, dict], until: float) -> List[dict]:
    """One channel per call that joined, in joining order, with its own recording's audio."""
    own = {info.call_sid: sid for sid, info in conf.recording_info.items() if info.call_sid}
    result = []
    for call_sid, caller in sorted(conf.callers.items(), key=lambda item: (item[1].joined_at or 0, item[0])):
        if caller.joined_at is None:
            continue
        end = caller.left_at if caller.left_at is not None else until
        holds = caller.holds + (((caller.held_at, end),) if caller.held_at is not None else ())
        result.append(
            {
                "connection_id": caller.from_ or call_sid,
                "call_sid": call_sid,
                "from": caller.from_,
                "to": caller.to,
                "host": caller.host,
                "start_ms": _ms(caller.joined_at, conf.opened_at),
                "end_ms": _ms(end, conf.opened_at),
                "holds": [{"start_ms": _ms(a, conf.opened_at), "end_ms": _ms(b, conf.opened_at)} for a, b in holds],
                "audio": audio(conf, media, own.get(call_sid)),
                "recording_timeline": recording_timeline(conf, own[call_sid], until) if call_sid in own else [],
            }
        )
    return result


def audio(conf: Conference, media: Dict[str, dict], recording_sid: Optional[str]) -> dict:
    """A recording's audio entry: what was archived of it, or none and why (EMPTY_AUDIO for no recording)."""
    if recording_sid in media:
        return media[recording_sid]
    info = conf.recording_info.get(recording_sid) if recording_sid else None
    return {**EMPTY_AUDIO, "missing": info.missing} if info else EMPTY_AUDIO


def announcements(conf: Conference) -> List[dict]:
    """Each time RECORDING_ANNOUNCEMENT was due, and how it went."""
    return [{"at_ms": _ms(t.at, conf.opened_at), "outcome": t.state} for t in conf.timeline if t.kind == "announced"]


def secure_pauses(conf: Conference, now: float) -> List[dict]:
    """Each secure pause (PCI) an agent asked for: when, who, why, and how it ended (as of `now`)."""
    entries = []
    for pause in conf.secure_pauses:
        end, ended = outcome(pause, conf.ended_at, now)
        entries.append(
            {
                "start_ms": _ms(pause.start, conf.opened_at),
                "end_ms": _ms(end, conf.opened_at),
                "by": pause.by,
                "reason": pause.reason,
                "ended": ended,
                "resumed_by": pause.resumed_by or None,
            }
        )
    return entries


def record(conf: Conference, now: float, media: Optional[Dict[str, dict]] = None, status: Optional[str] = None) -> dict:
    """The conversation record; `media` maps recording sid to its audio entry once processed."""
    media = media or {}
    until = conf.ended_at if conf.ended_at is not None else now
    mix = mix_recording(conf)
    if status is None:
        status = conf.status
    return talk_time.with_speaker_talk(
        {
            "id": conf.conference_sid,
            "room": conf.room,
            "status": status,
            "started_at": iso(conf.opened_at),
            "ended_at": iso(conf.ended_at),
            "audio": audio(conf, media, mix),
            "recording_timeline": recording_timeline(conf, mix, until),
            "announcements": announcements(conf),
            "secure_pauses": secure_pauses(conf, now),
            "channels": channels(conf, media, until),
        },
        conf,
        until,
    )


def final_status(conf: Conference) -> str:
    """READY, or UNFINISHED when the conference recording never reported its end."""
    mix = mix_recording(conf)
    return UNFINISHED if mix is not None and conf.recordings.get(mix) == ABANDONED else READY
