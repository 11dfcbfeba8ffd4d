"""Turns parsed webhook events into state changes and queued commands."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

import policy
from command_queue import CommandQueue
from recording_state import STALE_AFTER_S, Conference, StateStore

log = logging.getLogger("quorum.controller")


@dataclass(frozen=True)
class ConferenceEvent:
    """A conference status callback, reduced to what the policy needs."""

    kind: str  # conference-start | conference-end | participant-join | participant-leave
    room: str
    conference_sid: str
    call_sid: Optional[str]
    at: float


@dataclass(frozen=True)
class RecordingEvent:
    """A recording status callback; the room comes from the callback URL's query string."""

    room: str
    recording_sid: str
    status: str
    at: float


class RecordingController:
    """Applies events to the store and kicks the command queue when the policy wants a change."""

    def __init__(self, store: StateStore, commands: CommandQueue, min_participants: int,
                 end_grace_s: float, reconcile_interval_s: float = 0, clock: Callable[[], float] = time.time):
        self._store = store
        self._commands = commands
        self._minimum = min_participants
        self._grace = end_grace_s
        self._reconcile_interval_s = reconcile_interval_s
        self._clock = clock

    def conference_event(self, event: ConferenceEvent) -> str:
        """Apply a conference or participant event; returns what happened, for logs and tests."""
        if self._store.is_retired(event.conference_sid):
            return "stale"
        replaced = []

        def apply(conf: Optional[Conference]) -> Optional[Conference]:
            if conf is None and event.kind == "conference-end":
                return None  # nothing to end
            current = policy.adopt(conf, event.room, event.conference_sid, event.at, self._minimum)
            if current is None:
                return conf
            if conf is not None and conf.conference_sid not in (None, current.conference_sid):
                replaced.append(conf.conference_sid)
            return self._finish_if_done(self._apply_kind(current, event))

        result = self._store.mutate(event.room, apply)
        for sid in replaced:
            self._store.retire(sid)
        return self._after(event.room, result, f"{event.kind} call={event.call_sid}", event.conference_sid)

    def recording_event(self, event: RecordingEvent) -> str:
        """Apply a recording status callback."""

        conference_sids = []

        def apply(conf: Optional[Conference]) -> Optional[Conference]:
            if conf is None:
                if event.status != "in-progress":
                    return None  # the end of a recording we no longer track
                conf = policy.new_conference(event.room, None, event.at, self._minimum)
            conference_sids.append(conf.conference_sid)
            return self._finish_if_done(policy.recording_status(conf, event.recording_sid, event.status, event.at))

        result = self._store.mutate(event.room, apply)
        conference_sid = conference_sids[-1] if conference_sids else None
        return self._after(event.room, result, f"recording={event.recording_sid} {event.status}", conference_sid)

    def sweep(self) -> int:
        """Drop conferences ended longer than the grace period ago, or silent for too long."""
        now = self._clock()
        dropped = 0
        for room in self._store.rooms():
            conf = self._store.get(room)
            if conf is None or not self._expired(conf, now):
                continue
            self._store.mutate(room, lambda c: None if c is not None and self._expired(c, now) else c)
            if conf.conference_sid:
                self._store.retire(conf.conference_sid)
            log.info("room=%s conference=%s action=drop reason=expired", room, conf.conference_sid)
            dropped += 1
        return dropped

    def reconcile(self) -> int:
        """Re-read every live conference from the REST API and fix what differs: the watchdog
        for lost callbacks and failed commands. One process per interval does it."""
        if self._store.try_lock("reconciler", max(1.0, 0.9 * self._reconcile_interval_s)) is None:
            return 0
        checked = 0
        for room in self._store.rooms():
            conf = self._store.mutate(room, policy.unverify)
            if policy.next_action(conf) is not None:
                self._commands.kick(room)
                checked += 1
        return checked

    def _expired(self, conf: Conference, now: float) -> bool:
        """Ended past the grace period, or no event for STALE_AFTER_S."""
        if conf.ended:
            return now - conf.ended_at >= self._grace
        return now - conf.updated_at >= STALE_AFTER_S

    def _apply_kind(self, conf: Conference, event: ConferenceEvent) -> Conference:
        """Dispatch one event kind to its pure transition."""
        if event.kind == "conference-start":
            return policy.conference_started(conf)
        if event.kind == "conference-end":
            # Our clock, not SignalWire's Timestamp: the grace period is measured against our clock.
            return policy.conference_ended(conf, self._clock())
        if event.kind in ("participant-join", "participant-leave") and event.call_sid:
            return policy.participant_event(conf, event.call_sid, event.kind == "participant-join",
                                            event.at, self._minimum)
        return conf

    def _finish_if_done(self, conf: Conference) -> Optional[Conference]:
        """Drop a conference once it has ended and its recordings have all reported their end."""
        return None if policy.finished(conf) else conf

    def _after(self, room: str, result: Optional[Conference], what: str, conference_sid: Optional[str]) -> str:
        """Log the decision, retire finished conferences and queue a command if one is due."""
        if result is None:
            if conference_sid:
                self._store.retire(conference_sid)
            log.info("room=%s conference=%s %s action=forget", room, conference_sid, what)
            return "forgotten"
        action = policy.next_action(result)
        log.info("room=%s conference=%s %s present=%d wanted=%s action=%s", room, result.conference_sid, what,
                 len(result.present()), result.wanted, action.target if action else "none")
        if action:
            self._commands.kick(room)
            return "queued"
        return "applied"


class Housekeeper(threading.Thread):
    """Drops expired conferences every `sweep_s` and reconciles every `reconcile_s` (0: never)."""

    def __init__(self, controller: RecordingController, sweep_s: float, reconcile_s: float):
        super().__init__(name="quorum-housekeeper", daemon=True)
        self._controller = controller
        self._sweep_s = sweep_s
        self._reconcile_s = reconcile_s
        self._stopped = threading.Event()

    def run(self) -> None:
        """Sweep and reconcile until stopped."""
        next_reconcile = time.monotonic() + self._reconcile_s
        while not self._stopped.wait(self._sweep_s):
            self._controller.sweep()
            if self._reconcile_s and time.monotonic() >= next_reconcile:
                self._controller.reconcile()
                next_reconcile = time.monotonic() + self._reconcile_s

    def stop(self) -> None:
        """Ask the thread to end after its current round."""
        self._stopped.set()
