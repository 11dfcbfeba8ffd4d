"""The quorum policy and the state transitions it drives, as pure functions.

Nothing here does I/O: each function takes a `Conference` (or None) and returns a new
one, so the rules can be tested without Flask, threads or SignalWire.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from config import RoomRule
from recording_state import (
    ABANDONED,
    DOUBT,
    GONE,
    PAUSED,
    PROCESSING,
    RECORDING,
    TIMELINE_LIMIT,
    UNSURE,
    Caller,
    Conference,
    Presence,
    RecordingInfo,
    Transition,
    evolve,
)

# Recording statuses SignalWire reports in recording-status callbacks: `failed` for a conference recording,
# `absent` for a call recording (Compatibility API, recordingStatusCallbackEvent).
RECORDING_DONE = ("completed", "absent", "failed")
# Recording statuses the REST API reports, as our confirmed states. `queued` is not one: SignalWire's own
# update example answers `queued` with end_time set, so it says nothing about recording; we resend instead.
API_RECORDING_STATES = {
    "in-progress": RECORDING,
    "resumed": RECORDING,
    "paused": PAUSED,
    "completed": GONE,
    "absent": GONE,
    "stopped": GONE,
    "failed": GONE,
}
RECOVER = "recover"  # an Action target: read the conference from the REST API first
CREATE = "create"  # an Action target: start a participant's own recording of `call_sid`
ANNOUNCE = "announce"  # an Action target: play RECORDING_ANNOUNCEMENT to the conference
ANNOUNCE_TRIES = 2  # a failed announcement is tried once more, then logged and given up


@dataclass(frozen=True)
class Action:
    """One REST command the conference needs: set `recording_sid` to `target` (or RECOVER, CREATE)."""

    conference_sid: str
    recording_sid: Optional[str]
    target: str  # RECORDING | PAUSED | RECOVER | CREATE | ANNOUNCE
    call_sid: Optional[str] = None  # the call of a participant's own recording
    urgent: bool = field(default=False, compare=False)  # a RECOVER that decisions wait for


@dataclass(frozen=True)
class Snapshot:
    """A conference as the REST API reports it: status, calls on the line, recording statuses."""

    status: str  # init | in-progress | completed
    present: tuple
    recordings: dict  # the conference's own list: complete
    held: tuple = ()  # the calls among `present` that are on hold
    # Participant recordings in doubt, fetched one by one (not in the list): sid -> status, None for a 404.
    call_recordings: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ReadStart:
    """What a REST read must know of the state it began from to merge without losing a callback."""

    version: int  # the conference's version when the read was sent
    stamp: float  # the newest SignalWire Timestamp seen by then: the read reflects SignalWire at or after it


def read_start(conf: Conference) -> ReadStart:
    """Where a read of `conf` begins."""
    return ReadStart(conf.version, _newest(conf))


def _newest(conf: Conference) -> float:
    """The newest SignalWire Timestamp of any participant event."""
    return max((p.at for p in conf.participants.values()), default=0.0)


def wanted_state(present: int, minimum: int, host_on_the_line: bool = True) -> str:
    """Record while at least `minimum` participants are on the line (one of them a host, where hosts are set)."""
    return RECORDING if present >= minimum and host_on_the_line else PAUSED


def quorum_wanted(conf: Conference) -> str:
    """The wanted state under the conference's rule (held calls count if it says so); PAUSED in a secure pause."""
    counted = conf.counted()
    host = not conf.rule.host_numbers or any(conf.participants[sid].host for sid in counted)
    return PAUSED if conf.secure_pause() else wanted_state(len(counted), conf.rule.min_participants, host)


def _log(conf: Conference, at: float, kind: str, state: str, recording_sid: Optional[str] = None) -> tuple:
    """The timeline with one more transition, oldest dropped past the limit."""
    return (conf.timeline + (Transition(at, kind, state, recording_sid),))[-TIMELINE_LIMIT:]


def _rewant(conf: Conference, at: float) -> Conference:
    """Recompute the wanted state and log it when it changes."""
    wanted = quorum_wanted(conf)
    if wanted == conf.wanted and conf.timeline:
        return conf
    return evolve(conf, wanted=wanted, timeline=_log(conf, at, "wanted", wanted))


def new_conference(
    room: str, conference_sid: Optional[str], at: float, rule: RoomRule, now: Optional[float] = None
) -> Conference:
    """A fresh conference with nobody on the line yet, under `rule`; `at` is SignalWire's clock, `now` ours."""
    opened_at = at if now is None else now
    conf = Conference(
        room=room, conference_sid=conference_sid, started_at=at, opened_at=opened_at, updated_at=at, rule=rule
    )
    return _rewant(conf, at)


def adopt(
    conf: Optional[Conference], room: str, conference_sid: str, at: float, rule: RoomRule, now: Optional[float] = None
) -> Optional[Conference]:
    """The conference an event for `conference_sid` applies to, or None when the event is stale.

    A sid we have not seen replaces an ended conference (the room's next call) or a
    live one whose events are older than it (a lost conference-end).
    """
    if conf is None:
        return new_conference(room, conference_sid, at, rule, now)
    if conf.conference_sid == conference_sid:
        return conf
    if conf.conference_sid is None:
        return evolve(conf, conference_sid=conference_sid)
    if at < conf.started_at:
        return None
    return new_conference(room, conference_sid, at, rule, now)


def participant_event(
    conf: Conference,
    call_sid: str,
    joined: bool,
    at: float,
    known: bool = False,
    hold: bool = False,
    host: bool = False,
) -> Conference:
    """Apply a join, leave, hold or unhold; duplicates, events older than the call's newest and events of a call
    that ended are no-ops.

    An event says where the call is: (in the conference, on hold). Timestamps have one-second resolution and
    no sequence number: a conflicting event in the same second as the call's newest is applied in arrival
    order and a confirmation read asked for (a same-second rejoin delivered first looks like a first join).
    """
    line = (joined, joined and hold)
    seen = conf.participants.get(call_sid)
    if seen is not None and (seen.terminal or at < seen.at or (at == seen.at and seen.line == line)):
        return conf
    if seen is not None and seen.line == line:
        # Same state, later time: an event between them was missed. Keep the newer time, so a conflicting
        # event in that second is seen as a conflict.
        return evolve(conf, participants={**conf.participants, call_sid: evolve(seen, at=at)})
    tie = seen is not None and at == seen.at
    known = known or (seen is not None and seen.known)
    host = host or (seen is not None and seen.host)
    presence = Presence(joined, at, conf.version + 1, known, line[1], host)
    changed = evolve(
        conf,
        participants={**conf.participants, call_sid: presence},
        updated_at=max(conf.updated_at, at),
        recheck=conf.recheck or tie,
    )
    return _rewant(changed, at)


def connection_event(
    conf: Conference, call_sid: str, joined: bool, now: float, caller: Optional[Caller] = None, hold: bool = False
) -> Conference:
    """Note when a call joined, left or was held, for the conversation record; `caller` says who it is."""
    known = conf.callers.get(call_sid) or caller or Caller()
    if joined:
        known = evolve(known, joined_at=known.joined_at or now, left_at=None)
    else:
        known = evolve(known, left_at=now)
    if joined and hold:
        known = evolve(known, held_at=known.held_at or now)
    elif known.held_at is not None:
        known = evolve(known, held_at=None, holds=known.holds + ((known.held_at, now),))
    return evolve(conf, callers={**conf.callers, call_sid: known})


def conference_started(conf: Conference) -> Conference:
    """SignalWire started the conference (it does once two are in): trust the callbacks from here."""
    return conf if conf.verified else evolve(conf, verified=True)


def needs_recovery(conf: Conference) -> bool:
    """Whether deciding needs a REST read first: state begun mid-conference, or it may have been.

    Calls that came through our voice webhook are known, so a conference of known calls is trusted as
    its callbacks arrive, before `conference-start` (which SignalWire sends after the second join). Any
    other call, in a conference not seen started, may be from before a restart or a flushed store, with
    others on the line we have no word of (its hold may leave one of them recorded alone)."""
    if conf.verified:
        return False
    return not all(p.known for p in conf.participants.values()) if conf.participants else bool(conf.recordings)


def why_read(conf: Conference) -> str:
    """Why a conference is to be read, for the log: the calls we do not know, or a confirmation."""
    if needs_recovery(conf):
        return "unknown:" + ",".join(sorted(sid for sid, p in conf.participants.items() if not p.known))
    return "confirm" if conf.recheck else "none"


def ask_confirmation(conf: Optional[Conference]) -> Optional[Conference]:
    """Ask for a confirmation REST read of a live conference."""
    return conf if conf is None or conf.ended or conf.recheck else evolve(conf, recheck=True)


def recover(
    conf: Optional[Conference],
    snapshot: Optional[Snapshot],
    at: float,
    start: Optional[ReadStart] = None,
    hosts: frozenset = frozenset(),
) -> Optional[Conference]:
    """Merge what a REST read reports into `conf`; a None snapshot means the conference is gone.

    `start` is where the read began (default: `conf` itself). Anything a callback or command changed after
    that is newer than the read and kept; the rest takes the read's word, stamped with the newest
    Timestamp seen when the read began, so a later callback (even in the same second) still wins.
    `hosts`: listed calls our voice webhook saw dial in from a host number (the API does not say).
    """
    if conf is None:
        return None
    # A participant event during the read (a same-second conflict among them) is one it cannot confirm: the
    # confirmation stays asked for. A call's own end needs none: it is final.
    changed_meanwhile = start is not None and any(
        p.version > start.version and not p.terminal for p in conf.participants.values()
    )
    start = start or read_start(conf)
    if snapshot is None or snapshot.status == "completed":
        return evolve(
            conference_ended(conf, at), verified=True, recheck=False, read_version=conf.version + 1, read_at=at
        )
    participants = dict(conf.participants)
    for call in set(conf.participants) | set(snapshot.present):
        seen = conf.participants.get(call)
        line = (call in snapshot.present, call in snapshot.held)
        host = call in hosts or (seen is not None and seen.host)  # a fact about the call: kept whatever the order
        if seen is not None and (seen.terminal or seen.version > start.version or seen.line == line):
            participants[call] = evolve(seen, known=seen.known or seen.line == line, host=host)
        else:
            participants[call] = Presence(
                line[0], max(start.stamp, seen.at if seen else 0.0), conf.version + 1, True, line[1], host
            )
    merged = evolve(
        conf,
        participants=participants,
        verified=True,
        recheck=conf.recheck and changed_meanwhile,
        read_version=conf.version + 1,
        read_at=at,
    )
    # A conference recording in doubt that the conference's (complete) list leaves out is over.
    unlisted = {
        sid: None
        for sid, state in conf.recordings.items()
        if state == DOUBT and _owner(conf, sid) is None and sid not in snapshot.recordings
    }
    for sid, status in {**snapshot.recordings, **snapshot.call_recordings, **unlisted}.items():
        if conf.recording_versions.get(sid, 0) > start.version:
            continue  # a callback or command result newer than the read
        state = GONE if status is None else API_RECORDING_STATES.get(status, UNSURE)
        if merged.recordings.get(sid) not in (GONE, state):
            merged = _confirmed(merged, sid, state, at)
    # The read lists conference recordings only: a participant's own recording whose command failed
    # is in an unknown state, so send the wanted state to it again.
    retry = {sid: UNSURE for sid, state in merged.recordings.items() if state == ABANDONED and _owner(merged, sid)}
    if retry:
        merged = evolve(merged, recordings={**merged.recordings, **retry})
    return _rewant(merged, at)


def assume_verified(conf: Optional[Conference]) -> Optional[Conference]:
    """Go on with what the callbacks told us when the REST API refuses to be read; a recording in doubt is sent
    the wanted state again (unsure), never taken for gone."""
    doubts = {sid: UNSURE for sid, state in (conf.recordings if conf else {}).items() if state == DOUBT}
    return conf and evolve(conf, verified=True, recheck=False, recordings={**conf.recordings, **doubts})


def conference_ended(conf: Conference, at: float) -> Conference:
    """Mark the conference over: no more commands are sent for it."""
    if conf.ended:
        return conf
    return evolve(conf, ended=True, ended_at=at, updated_at=max(conf.updated_at, at))


def recording_status(
    conf: Conference,
    recording_sid: str,
    status: str,
    at: float,
    url: Optional[str] = None,
    duration_s: Optional[float] = None,
    call_sid: Optional[str] = None,
) -> Conference:
    """Apply a recording-status callback; our own confirmed state outranks a late 'in-progress'.

    `call_sid` (from our callback URL) marks a participant's own recording.
    """
    if call_sid and _owner(conf, recording_sid) != call_sid:
        conf = _with_info(conf, recording_sid, call_sid=call_sid)
    known = conf.recordings.get(recording_sid)
    if status == "in-progress":
        if known is not None:
            return conf
        return _confirmed(conf, recording_sid, RECORDING, at)
    if status in RECORDING_DONE and known != GONE:
        info = conf.recording_info.get(recording_sid) or RecordingInfo()
        conf = _with_info(
            conf,
            recording_sid,
            url=url or info.url,
            duration_s=duration_s if duration_s is not None else info.duration_s,
        )
        return _confirmed(conf, recording_sid, GONE, at)
    return conf


def _with_info(conf: Conference, recording_sid: str, **changes) -> Conference:
    """`conf` with some of one recording's RecordingInfo fields changed."""
    info = evolve(conf.recording_info.get(recording_sid) or RecordingInfo(), **changes)
    return evolve(conf, recording_info={**conf.recording_info, recording_sid: info})


def recording_created(
    conf: Optional[Conference], call_sid: str, recording_sid: Optional[str], at: float
) -> Optional[Conference]:
    """A participant's own recording was started (or refused, when `recording_sid` is None)."""
    if conf is None:
        return None
    if recording_sid is None:
        return evolve(conf, unrecordable=conf.unrecordable + (call_sid,))
    conf = _with_info(conf, recording_sid, call_sid=call_sid)
    if conf.recordings.get(recording_sid) is not None:
        return conf  # its in-progress callback got here first
    return _confirmed(conf, recording_sid, RECORDING, at)


def _confirmed(conf: Conference, recording_sid: str, state: str, at: float) -> Conference:
    """Record the API-confirmed state of one recording (UNSURE and DOUBT are not states the timeline shows)."""
    recordings = {**conf.recordings, recording_sid: state}
    versions = {**conf.recording_versions, recording_sid: conf.version + 1}
    refused = {sid: target for sid, target in conf.refused.items() if sid != recording_sid}
    if state in (UNSURE, DOUBT):
        return evolve(conf, recordings=recordings, recording_versions=versions, refused=refused)
    # The conference recording (re)started: everyone hears the announcement, and the recording carries it.
    starts = (
        state == RECORDING
        and conf.recordings.get(recording_sid) != RECORDING
        and _owner(conf, recording_sid) is None
        and bool(conf.rule.recording_announcement)
    )
    return evolve(
        conf,
        recordings=recordings,
        recording_versions=versions,
        refused=refused,
        updated_at=max(conf.updated_at, at),
        timeline=_log(conf, at, "confirmed", state, recording_sid),
        announce_tries=ANNOUNCE_TRIES if starts else conf.announce_tries,
    )


def command_result(
    conf: Optional[Conference], recording_sid: str, state: str, at: float, target: Optional[str] = None
) -> Optional[Conference]:
    """Record the outcome of a REST command unless the recording has finished meanwhile.

    ABANDONED (the API refused `target`) keeps the recording's last confirmed state, remembers the refusal
    so the same command is not sent again, and lets the next change of the wanted state command it anew.
    DOUBT (a 404 or 422, which may be transient) asks for a read: only a read or a callback ends a recording.
    """
    if conf is None or conf.recordings.get(recording_sid) in (None, GONE):
        return conf
    if state == ABANDONED:
        refused = {**conf.refused, recording_sid: target or conf.wanted}
        result = evolve(conf, recordings={**conf.recordings, recording_sid: ABANDONED}, refused=refused)
    else:
        result = _confirmed(conf, recording_sid, state, at)
    # Our own command's answer is no news a read must confirm: a conference a read confirmed stays confirmed.
    return evolve(result, read_version=conf.version + 1) if conf.read_version == conf.version else result


def next_action(conf: Optional[Conference]) -> Optional[Action]:
    """The command that brings one recording to the wanted state, if any (announcements: quorum/announcements.py)."""
    if conf is None or conf.ended or conf.conference_sid is None:
        return None
    if needs_recovery(conf):
        return Action(conf.conference_sid, None, RECOVER, urgent=True)
    present = set(conf.present())
    for sid, confirmed in sorted(conf.recordings.items()):
        owner = _owner(conf, sid)
        if owner is not None and owner not in present:
            continue  # the caller hung up: their own recording is ending by itself
        if _due(conf, sid, confirmed):
            return Action(conf.conference_sid, sid, conf.wanted, owner)
    if conf.wanted == RECORDING:
        for call_sid in _callers_to_record(conf):
            return Action(conf.conference_sid, None, CREATE, call_sid)
    if in_doubt(conf):
        return Action(conf.conference_sid, None, RECOVER, urgent=True)  # what is known was commanded first
    if conf.recheck and (conf.recordings or len(conf.participants) >= 2):
        # Known state's commands go first: a routine re-read must not delay a pause.
        return Action(conf.conference_sid, None, RECOVER)
    return None


def in_doubt(conf: Conference) -> tuple:
    """(recording, its caller or None) in doubt for a read to settle; a caller's own that hung up ends by itself."""
    present = set(conf.present())
    return tuple(
        (sid, _owner(conf, sid))
        for sid, state in sorted(conf.recordings.items())
        if state == DOUBT and _owner(conf, sid) in (None, *present)
    )


def _due(conf: Conference, recording_sid: str, confirmed: str) -> bool:
    """Whether the recording needs a command: not in the wanted state, and not refused that very target."""
    if confirmed == ABANDONED:
        return conf.refused.get(recording_sid, conf.wanted) != conf.wanted
    return confirmed in (RECORDING, PAUSED, UNSURE) and confirmed != conf.wanted


def _owner(conf: Conference, recording_sid: str) -> Optional[str]:
    """The call a participant recording belongs to; None for the conference recording."""
    info = conf.recording_info.get(recording_sid)
    return info.call_sid if info else None


def _callers_to_record(conf: Conference) -> list:
    """Present callers chosen for their own recording that have none running.

    Created only while the quorum is met, so a participant recording never runs while
    the conference recording is paused.
    """
    # An abandoned recording may still be running: starting another would record the caller twice.
    running = {
        _owner(conf, sid)
        for sid, state in conf.recordings.items()
        if state in (RECORDING, PAUSED, UNSURE, DOUBT, ABANDONED)
    }
    return [
        call
        for call in conf.present()
        if conf.callers.get(call, Caller()).record and call not in running and call not in conf.unrecordable
    ]


def finished(conf: Conference) -> bool:
    """Ended, and every recording has reported its end (or been given up on)."""
    return conf.ended and all(state in (GONE, ABANDONED) for state in conf.recordings.values())


def give_up_waiting(conf: Conference) -> Conference:
    """Mark recordings that never reported their end as failed, so the conversation can be processed."""
    recordings = {sid: state if state in (GONE, ABANDONED) else ABANDONED for sid, state in conf.recordings.items()}
    return evolve(conf, recordings=recordings)


def to_processing(conf: Conference) -> Conference:
    """Hand a finished conference over to conversation processing."""
    return conf if conf.status == PROCESSING else evolve(conf, status=PROCESSING)
