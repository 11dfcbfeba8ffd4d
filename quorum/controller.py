"""Turns parsed webhook events into state changes, queued commands and conversation processing."""

from __future__ import annotations

import logging
import time
from typing import Callable, Dict, Optional, Tuple

from config import RoomRule
from quorum import announcements, policy, read_schedule, talk
from quorum.call_end import call_ended
from quorum.command_queue import CommandQueue

# The events are imported from here by the routes and the tests, as before they had a module of their own.
from quorum.events import PARTICIPANT_EVENTS, CallStatusEvent, ConferenceEvent, Decision, RecordingEvent  # noqa: F401
from quorum.gateway import LIVE_PAGE_SIZE, LiveConference, Outcome, SignalWireGateway
from recording_state import LIVE, PROCESSING, STALE_AFTER_S, Caller, Conference, StateStore, alone, evolve, parked_key

log = logging.getLogger("quorum.controller")

# How often a repair round looks for conferences due a read. A round asks for the reads due before the next
# one, so a conference is read every REPAIR_INTERVAL_S less up to this, never later (the budget allowing).
REPAIR_TICK_S = 1.0


class RecordingController:
    """Applies events to the store; kicks commands when the policy wants a change and
    conversation processing when a conference is over."""

    def __init__(
        self,
        store: StateStore,
        commands: CommandQueue,
        processor,
        rules: Callable[[str], RoomRule],
        end_grace_s: float,
        reconcile_interval_s: float = 0,
        records_caller: Callable[[str, str], bool] = lambda number, room: False,
        clock: Callable[[], float] = time.time,
        gateway: Optional[SignalWireGateway] = None,
        repair_interval_s: float = 0,
    ):
        self._store = store
        self._commands = commands
        self._processor = processor  # has .submit(room)
        self._rules = rules  # room -> the rule a new conference in it follows
        self._grace = end_grace_s
        self._reconcile_interval_s = reconcile_interval_s
        # Conferences at the threshold are read at least as often as the rest.
        self._repair_s = min(repair_interval_s or reconcile_interval_s, reconcile_interval_s or repair_interval_s)
        self._records_caller = records_caller
        self._gateway = gateway
        self._clock = clock
        self._rounds: Dict[str, Tuple[int, int]] = {}  # key -> (version, reconcile rounds it has not changed)
        self._first_round = True

    def inbound_call(self, call_sid: str, from_: str, to: str) -> None:
        """Remember who a call is until it joins its conference (join callbacks do not say)."""
        self._store.remember_call(call_sid, {"from": from_, "to": to})

    def conference_event(self, event: ConferenceEvent) -> Decision:
        """Apply a conference or participant event; returns what happened, for logs and tests."""
        call_sid = event.call_sid if event.kind in PARTICIPANT_EVENTS else None
        now = self._clock()
        displaced: Dict[str, Conference] = {}
        crossed: Dict[str, Optional[float]] = {}

        def apply(conf: Optional[Conference], known: Optional[dict]) -> Optional[Conference]:
            displaced.clear()  # a retried mutation starts over
            crossed.clear()
            if conf is None and event.kind == "conference-end":
                return None  # nothing to end
            current = policy.adopt(conf, event.room, event.conference_sid, event.at, self._rules(event.room), now)
            if current is None:
                return conf
            if conf is not None and conf.conference_sid not in (None, current.conference_sid):
                displaced["conference"] = conf
            after = self._finish_if_done(self._apply_kind(current, event, now, self._caller(known, current)))
            if after.wanted != current.wanted:
                crossed["at"] = event.received
            return after

        # The retired check, the caller's record and the change: one round trip on Redis in the common case.
        retired, result = self._store.mutate_unless_retired(event.room, apply, event.conference_sid, call_sid)
        if retired:
            return Decision.STALE
        if displaced:
            self._park(displaced["conference"], now)
        return self._after(
            event.room, result, f"{event.kind} call={event.call_sid}", event.conference_sid, crossed.get("at")
        )

    def call_ended(self, event: CallStatusEvent) -> Decision:
        """End a call's presence in the room's current conference, if that conference holds the call;
        IGNORED otherwise (a call-status never creates a conference: it names none)."""
        now = self._clock()
        held: Dict[str, Optional[str]] = {}
        crossed: Dict[str, Optional[float]] = {}

        def apply(conf: Optional[Conference]) -> Optional[Conference]:
            held.clear()  # a retried mutation starts over
            crossed.clear()
            if conf is None or event.call_sid not in conf.participants:
                return conf
            held["conference"] = conf.conference_sid
            after = call_ended(conf, event.call_sid, event.at)
            if after is conf:
                return conf  # it ended already: a duplicate, or its other signal
            if after.wanted != conf.wanted:
                crossed["at"] = event.received
            return policy.connection_event(after, event.call_sid, False, now)

        result = self._store.mutate(event.room, apply)
        if not held:
            log.info("room=%s call=%s call-ended action=ignore reason=not-in-conference", event.room, event.call_sid)
            return Decision.IGNORED
        return self._after(
            event.room, result, f"call-ended call={event.call_sid}", held["conference"], crossed.get("at")
        )

    def _park(self, old: Conference, now: float) -> None:
        """Keep a conference that the room's next one displaced under a key of its own, so its
        recordings' late callbacks still find it and it is archived like any other."""
        key = parked_key(old.room, str(old.conference_sid))  # "None" for one known only from a recording's callback
        ended = old if old.ended else policy.conference_ended(old, now)  # its end callback was lost
        parked = self._store.mutate(key, lambda current: current or self._finish_if_done(ended))
        if old.conference_sid is not None:  # one known only from recordings has no sid: the state file takes no NULL
            self._store.retire(old.conference_sid)  # its own late conference events are stale now
        log.info("room=%s conference=%s action=park key=%s", old.room, old.conference_sid, key)
        if parked is not None and parked.status == PROCESSING:
            self._processor.submit(key)

    def recording_event(self, event: RecordingEvent) -> Decision:
        """Apply a recording status callback to the conference that holds the recording; the end of a recording
        no conference holds is kept on its own (`_keep_unclaimed`)."""
        key = event.room if event.status == "in-progress" else self._holder(event.room, event.recording_sid)
        sids: Dict[str, Optional[str]] = {}
        displaced: Dict[str, Conference] = {}
        unclaimed: Dict[str, str] = {}

        def apply(conf: Optional[Conference], _caller: Optional[dict]) -> Optional[Conference]:
            displaced.clear()  # a retried mutation starts over
            sids.clear()
            unclaimed.clear()
            if event.status != "in-progress" and (conf is None or event.recording_sid not in conf.recordings):
                unclaimed["recording"] = event.recording_sid  # whose it is, only SignalWire can say
                return conf
            if conf is not None and conf.ended and event.recording_sid not in conf.recordings:
                # A recording we do not know yet belongs to the room's next conference, never to an ended
                # one: the ended conference moves aside and a fresh one holds the recording.
                displaced["conference"] = conf
                conf = None
            if conf is None:
                conf = policy.new_conference(event.room, None, event.at, self._rules(event.room), self._clock())
            sids["conference"] = conf.conference_sid
            return self._finish_if_done(
                policy.recording_status(
                    conf, event.recording_sid, event.status, event.at, event.url, event.duration_s, event.call_sid
                )
            )

        retired, result = self._store.mutate_unless_retired(key, apply, event.recording_sid)
        if retired:
            return Decision.STALE  # its conversation is archived: a late or retried callback
        if unclaimed:
            return self._keep_unclaimed(event)
        if displaced:
            self._park(displaced["conference"], self._clock())
        return self._after(key, result, f"recording={event.recording_sid} {event.status}", sids.get("conference"))

    def _keep_unclaimed(self, event: RecordingEvent) -> Decision:
        """Keep the end of a recording no held conference knows (its in-progress was lost, or a restart forgot its
        conference) under a key of its own, ended, for processing to ask SignalWire whose it is: never forgotten."""
        key, now = unclaimed_key(event.room, event.recording_sid), self._clock()

        def keep(conf: Optional[Conference], _caller: Optional[dict]) -> Conference:
            conf = conf or policy.new_conference(event.room, None, event.at, self._rules(event.room), now)
            conf = policy.recording_status(
                conf, event.recording_sid, event.status, event.at, event.url, event.duration_s, event.call_sid
            )
            return policy.to_processing(policy.conference_ended(conf, now))

        retired, result = self._store.mutate_unless_retired(key, keep, event.recording_sid)
        if retired:
            return Decision.STALE
        return self._after(key, result, f"recording={event.recording_sid} {event.status} unclaimed", None)

    def _holder(self, room: str, recording_sid: str) -> str:
        """The store key of the room's conference (live or parked) that knows this recording."""
        conf = self._store.get(room)
        if conf is not None and recording_sid in conf.recordings:
            return room
        for key, parked in self._store.conferences():
            if key.startswith(room + "#") and recording_sid in parked.recordings:
                return key
        return room

    def sweep(self) -> int:
        """Hand over conferences ended longer than the grace period ago (or silent for too long),
        and retry processing that a dead process left unfinished. Returns how many were handed over."""
        now = self._clock()
        handed = 0
        for room, conf in self._store.conferences():
            if conf.status == PROCESSING:
                self._processor.submit(room)
            elif self._expired(conf, now):
                result = self._store.mutate(room, lambda c: self._close(c, now) if c and self._expired(c, now) else c)
                if result is not None and result.status == PROCESSING:
                    log.info("room=%s conference=%s action=process reason=grace-expired", room, result.conference_sid)
                    self._processor.submit(room)
                    handed += 1
        return handed

    def redrive(self) -> int:
        """`CommandQueue.redrive` every room the store holds (no REST call): what a process did not finish (it died,
        or the store did not take a write) is done. Returns how many rooms were kicked."""
        return sum(self._commands.redrive(room, conf) for room, conf in self._store.conferences())

    def reconcile(self) -> int:
        """The watchdog for lost callbacks and failed commands, one round at a time across processes.

        One paged list of in-progress conferences finds those the store lost (adopted and read) and those
        it holds but SignalWire does not list twice running (read: their end was probably lost). Beyond
        that, only conferences that asked for a confirmation and, in a process's first round, every held
        conference (callbacks may have gone unanswered while it was down) are read: routine reads,
        budgeted, behind every command. Lost callbacks in conferences it holds are `repair`'s.
        Returns how many reads were asked for.
        """
        # 0 while another process is in a round.
        return alone(
            self._store, "reconciler", max(1.0, 0.9 * self._reconcile_interval_s), self._reconcile_round, otherwise=0
        )

    def _reconcile_round(self) -> int:
        """One round of `reconcile`, under its lock."""
        held = dict(self._store.conferences())
        self._commands.reads.take_budget(1 + len(held) // LIVE_PAGE_SIZE)  # one GET per page of the list
        assert self._gateway is not None  # a controller that reconciles is given the gateway (app.py's always is)
        outcome, listed = self._gateway.list_live_conferences()
        if outcome is not Outcome.OK:
            return 0
        listed_sids = {live.sid for live in listed}
        held_sids = {conf.conference_sid for conf in held.values()}
        asked = sum(self._adopt(live) for live in listed if live.sid not in held_sids)  # adopted: read at once
        first_round, self._first_round = self._first_round, False
        self._rounds = {key: seen for key, seen in self._rounds.items() if key in held}
        for key, conf in held.items():
            if self._needs_routine_read(key, conf, listed_sids) or (first_round and not conf.ended):
                self._store.mutate(key, policy.ask_confirmation)
                self._commands.read(key)
                asked += 1
        return asked

    def repair(self) -> int:
        """Ask for the routine reads due by the next round (`read_schedule.next_read_at`): a conference at the threshold
        every REPAIR_INTERVAL_S, any other every RECONCILE_INTERVAL_S, the longest due first, in the read budget.

        Reads are how lost callbacks are found. The schedule is the conferences' own `read_at`, so processes
        share it: the read due after each `read_at` is claimed in the store (for one repair interval at most),
        so another process's round does not ask for it too, and happens only if no read has answered since.
        Returns how many reads were asked for.
        """
        horizon = self._clock() + self.repair_tick_s
        due = sorted(
            (at, key, conf.read_at)
            for key, conf in self._store.conferences()
            if (at := read_schedule.next_read_at(conf, self._repair_s, self._reconcile_interval_s)) <= horizon
        )
        asked = 0
        for at, key, read_at in due:
            if self._store.try_lock(f"due:{key}@{read_at!r}", self._repair_s) is not None:
                self._commands.read(key, since=read_at, due=at)
                asked += 1
        return asked

    @property
    def repair_tick_s(self) -> float:
        """Seconds between repair rounds (0: none, as with no reconciler)."""
        return min(REPAIR_TICK_S, self._repair_s / 2) if self._reconcile_interval_s else 0.0

    def _adopt(self, live: LiveConference) -> int:
        """Take on a conference SignalWire lists but the store does not know (state lost): read it now."""
        if self._store.is_retired(live.sid) or not live.room:
            return 0
        now = self._clock()
        displaced: Dict[str, Conference] = {}

        def apply(conf: Optional[Conference]) -> Optional[Conference]:
            displaced.clear()
            current = policy.adopt(conf, live.room, live.sid, live.created_at, self._rules(live.room), now)
            if current is None or current.conference_sid != live.sid:
                return conf  # the room holds a newer conference
            if conf is not None and conf.conference_sid not in (None, live.sid):
                displaced["conference"] = conf
            return current if current.recheck else evolve(current, recheck=True)

        adopted = self._store.mutate(live.room, apply)
        if displaced:
            self._park(displaced["conference"], now)
        if adopted is None or adopted.conference_sid != live.sid:
            return 0
        log.info("room=%s conference=%s action=adopt", live.room, live.sid)
        self._commands.read(live.room, urgent=True)
        return 1

    def _needs_routine_read(self, key: str, conf: Conference, listed: set) -> bool:
        """Whether the reconciler should read this held conference now (see `reconcile`)."""
        if conf.ended or conf.conference_sid is None:
            self._rounds.pop(key, None)
            return False
        seen = self._rounds.get(key)
        rounds = seen[1] + 1 if seen is not None and seen[0] == conf.version else 0
        self._rounds[key] = (conf.version, rounds)
        if conf.recheck:
            return True
        if conf.read_version == conf.version:
            return False  # nothing changed since a read confirmed it
        # Listed but never seen started, or started but no longer listed (a lost end), twice running.
        return (conf.conference_sid in listed) != conf.verified and rounds >= 1

    def _caller(self, known: Optional[dict], conf: Conference) -> Optional[Caller]:
        """Who a call is, from what the voice webhook kept: a host or not by the rule the conference began under
        (a restart on edited rules changes no call in progress), and recorded on its own or not."""
        if known is None:
            return None
        return Caller(
            from_=known["from"],
            to=known["to"],
            record=self._records_caller(known["from"], conf.room),
            host=conf.rule.is_host(known["from"]),
        )

    def _close(self, conf: Conference, now: float) -> Conference:
        """End a conference that outlived its grace period and stop waiting for its recordings."""
        return policy.to_processing(policy.give_up_waiting(policy.conference_ended(conf, now)))

    def _expired(self, conf: Conference, now: float) -> bool:
        """Live but ended past the grace period, or with no event for STALE_AFTER_S."""
        if conf.status != LIVE:
            return False
        if conf.ended:
            assert conf.ended_at is not None  # conference_ended sets both
            return now - conf.ended_at >= self._grace
        return now - conf.updated_at >= STALE_AFTER_S

    def _apply_kind(self, conf: Conference, event: ConferenceEvent, now: float, caller: Optional[Caller]) -> Conference:
        """Dispatch one event kind to its pure transitions."""
        if event.kind == "conference-start":
            return policy.conference_started(conf)
        if event.kind == "conference-end":
            # Our clock, not SignalWire's Timestamp: the grace period is measured against our clock.
            return policy.conference_ended(conf, now)
        if event.kind in PARTICIPANT_EVENTS and event.call_sid:
            joined = event.kind != "participant-leave"
            after = policy.participant_event(
                conf,
                event.call_sid,
                joined,
                event.at,
                known=caller is not None,
                hold=event.hold,
                host=caller is not None and caller.host,
            )
            if after is conf:
                return conf  # a duplicate or a stale event
            return policy.connection_event(after, event.call_sid, joined, now, caller if joined else None, event.hold)
        return talk.speech_event(conf, event.kind, event.call_sid, event.at)  # TALK_TIME's; any other: unchanged

    def _finish_if_done(self, conf: Conference) -> Conference:
        """Once ended with every recording's end reported, the conference awaits processing."""
        return policy.to_processing(conf) if policy.finished(conf) else conf

    def _after(
        self,
        room: str,
        result: Optional[Conference],
        what: str,
        conference_sid: Optional[str],
        crossed_at: Optional[float] = None,
    ) -> Decision:
        """Log the decision; queue a command or processing if one is due (`crossed_at`: the callback that
        crossed the threshold arrived then)."""
        if result is None:
            if conference_sid:
                self._store.retire(conference_sid)
            log.info("room=%s conference=%s %s action=forget", room, conference_sid, what)
            return Decision.FORGOTTEN
        if result.status == PROCESSING:
            log.info("room=%s conference=%s %s action=process", room, result.conference_sid, what)
            self._processor.submit(room)
            return Decision.PROCESSING
        action = policy.next_action(result)
        log.info(
            "room=%s conference=%s %s present=%d wanted=%s action=%s%s",
            room,
            result.conference_sid,
            what,
            len(result.present()),
            result.wanted,
            action.target if action else "none",
            f" why={policy.why_read(result)}" if action and action.target == policy.RECOVER else "",
        )
        if action or announcements.announcement_due(result):
            self._commands.kick(room, crossed_at)
            return Decision.QUEUED
        return Decision.APPLIED


def unclaimed_key(room: str, recording_sid: str) -> str:
    """Where the end of a recording no held conference knows waits until SignalWire says whose it is."""
    return f"{room}#recording:{recording_sid}"
