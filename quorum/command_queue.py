"""Runs REST commands off the request path, one conference at a time, level-triggered.

A webhook only "kicks" its room. A worker then reads the room's state, sends the one
command it needs, records the result and reads again, until the confirmed state
matches the wanted state. Kicks that arrive while a room is being worked on only ask
for one more pass, so rapid flip-flops coalesce into the latest wanted state.

REST reads of a conference go to a separate, lower-priority path (`ReadQueue`) within a
budget of reads per second shared by every process, so a read never delays a pause.
Announcements have a lane of their own (`Announcer`): no pause or resume queues behind one. A
write the store does not take (Redis down) is kept (`Writes`) and made when the room is driven again.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Dict, Optional, Tuple, TypeGuard

from quorum import announcements, policy, redis_outage
from quorum.announcer import Announcer
from quorum.delayed_kicks import DelayedKicks, backoff
from quorum.keyed_workers import KeyedWorkers
from quorum.read_queue import ReadQueue
from quorum.store_writes import STORE_ERRORS, Writes, nothing
from recording_state import ABANDONED, DOUBT, UNSURE, Caller, Conference, StateStore
from config import READS_PER_CONFERENCE
from quorum.gateway import ANNOUNCERS, Outcome, SignalWireGateway, readers_for

log = logging.getLogger("quorum.commands")

LOCK_POLL_S = 0.05
# A store that did not answer is tried again within a second, not after the REST backoff's 5 s: a try costs no
# REST call, and the kept write is made (its lock freed, the room driven) soon after the store answers again.
STORE_RETRY_MAX_S = 1.0
URGENT_READ_ATTEMPTS = 5  # then decide on what the callbacks said rather than not at all


class CommandQueue:
    """Per-room serial execution of pause/resume commands on a small thread pool, plus the read path and the
    announcement lane."""

    def __init__(
        self,
        store: StateStore,
        gateway: SignalWireGateway,
        lock_ttl_s: float,
        recording_callback: Callable[[str, str], str],
        announce_url: Callable[[str], str] = lambda room: "",
        on_done: Callable[[Conference, policy.Action], None] = lambda conf, action: None,
        workers: int = 8,
        reads_per_s: int = 5,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        observe_crossing: Callable[[float], None] = lambda seconds: None,
        announcers: int = ANNOUNCERS,
    ):
        self._store = store
        self._gateway = gateway
        self._lock_ttl_s = lock_ttl_s
        self._recording_callback = recording_callback  # (room, call) -> the recording-status URL
        self._on_done = on_done  # told of every command that succeeded, with the state after it
        self._clock = clock
        self._sleep = sleep
        self._attempts: Dict[str, int] = {}  # room -> retryable failures in a row (commands or reads)
        self._attempts_lock = threading.Lock()
        self._writes = Writes(store)
        self._observe_crossing = observe_crossing  # seconds from a crossing callback's arrival to its command
        self._crossed: Dict[str, float] = {}  # room -> perf_counter() of the oldest crossing not yet commanded
        self._redriven: set = set()  # rooms kicked by `redrive` only since their last drive (guarded as above)
        self._workers = KeyedWorkers(self._drive, workers, "quorum-cmd")
        self._announcer = Announcer(
            store, gateway, self._writes, lock_ttl_s, announce_url, on_done, self._retry, clock, announcers
        )
        self._later = DelayedKicks(self.kick, "quorum-retry")
        self.reads = ReadQueue(self._read, store, reads_per_s, readers=readers_for(reads_per_s), sleep=sleep)

    def kick(self, room: str, crossed_at: Optional[float] = None) -> None:
        """Make sure the room is brought to its wanted state soon; never blocks on the API.

        `crossed_at`: when the callback that crossed the threshold arrived (perf_counter), timed to its command.
        """
        with self._attempts_lock:
            self._redriven.discard(room)
            if crossed_at is not None:
                self._crossed.setdefault(room, crossed_at)
        self._workers.submit(room)

    def redrive(self, room: str, conf: Conference) -> bool:
        """Kick a room whose stored `conf` has a command, an urgent read or an announcement due (routine reads are
        the reconciler's), unless this process has a retry of it coming already; the drive it causes does not
        wait for another process's lock on the room (that process is driving it)."""
        action = policy.next_action(conf)
        due = action is not None and (action.target != policy.RECOVER or action.urgent)
        if not (due or announcements.announcement_due(conf)) or self._later.waiting(room):
            return False
        with self._attempts_lock:
            self._redriven.add(room)
        self._workers.submit(room)
        return True

    def read(self, room: str, urgent: bool = False, since: Optional[float] = None, due: float = 0.0) -> None:
        """Ask for a REST read of the room's conference on the read path (`since`, `due`: see `ReadQueue`)."""
        self.reads.request(room, urgent, since, due)

    def depth(self) -> int:
        """Rooms waiting for or under a command, an announcement or a read."""
        return self._workers.depth() + self._announcer.depth() + self.reads.depth()

    def wait_idle(self, timeout: float) -> bool:
        """Block until no command, announcement, read or retry is pending (tests and shutdown); False on timeout."""
        deadline = time.monotonic() + timeout
        while self.depth() or self._later.pending():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def shutdown(self) -> None:
        """Stop taking work and let running commands finish."""
        self._later.stop()
        self.reads.stop()
        self._workers.shutdown()
        self._announcer.shutdown()

    def _drive(self, room: str) -> None:
        """Write what the store did not take before (`Writes.flush`), send commands (`_command`) and hand a due
        announcement to its lane; a store that does not answer has the room driven again shortly."""
        with self._attempts_lock:
            redriven = room in self._redriven
            self._redriven.discard(room)
        try:
            self._writes.flush(room)
            conf = self._command(room, redriven)
        except STORE_ERRORS as error:
            redis_outage.reported(error)  # one line per outage, not one per room and try
            self._retry_store(room)
            return
        if announcements.announcement_due(conf):
            self._announcer.submit(room)

    def _retry(self, room: str) -> None:
        """Drive the room again after the backoff its failures in a row call for."""
        self._later.later(room, backoff(self._failed(room)))

    def _retry_store(self, room: str) -> None:
        """Drive the room again once the store may answer: the backoff, capped at STORE_RETRY_MAX_S."""
        self._later.later(room, min(STORE_RETRY_MAX_S, backoff(self._failed(room))))

    def _command(self, room: str, redriven: bool = False) -> Optional[Conference]:
        """Send commands until the room's recordings match the wanted state, or hand over to the read path;
        returns the conference as last seen. `redriven`: leave a room another process holds to it.

        Each look after the first is at what the last command's compare-and-set found (current then), or what
        was read under the lock: a change since then kicks the room again, so it is looked at afresh."""
        conf = self._store.get(room)
        while (action := policy.next_action(conf)) is not None:
            if action.target == policy.RECOVER:
                self._crossing(room)  # the command after a read is the read's decision: not timed as this one
                self.read(room, action.urgent)
                return conf
            token, conf = self._store.try_lock_and_get(f"room:{room}", self._lock_ttl_s, room)
            if token is None:  # another process is acting on this room; look again shortly
                if redriven:
                    return conf  # it goes on driving the room after its command: no worker here waits for it
                self._sleep(LOCK_POLL_S)
                conf = self._store.get(room)
                continue
            lock = (f"room:{room}", token)
            with self._writes.releasing_on_error(room, lock):
                outcome, conf = self._act_once(room, conf, lock)
            if outcome is None:  # nothing was due under the lock after all: no write released it
                self._writes.release(room, lock)
            if outcome is Outcome.RETRY:
                self._retry(room)
                return conf  # the retry comes back as a kick: no worker waits through the backoff
            self._succeeded(room)
        self._crossing(room)  # crossings that cancelled out before a command went: nothing to time
        return conf

    def _crossing(self, room: str) -> Optional[float]:
        """Take the arrival time of the room's oldest crossing not yet commanded, if any."""
        with self._attempts_lock:
            return self._crossed.pop(room, None)

    def _failed(self, room: str) -> int:
        """Count one more retryable failure for the room; returns the count."""
        with self._attempts_lock:
            self._attempts[room] = self._attempts.get(room, 0) + 1
            return self._attempts[room]

    def _succeeded(self, room: str) -> None:
        """Reset the room's failure count."""
        with self._attempts_lock:
            self._attempts.pop(room, None)

    def _act_once(
        self, room: str, conf: Optional[Conference], lock: Tuple[str, str]
    ) -> Tuple[Optional[Outcome], Optional[Conference]]:
        """Under the room's `lock` (name, token), `conf` read since it was taken: send the one command due and
        record what is now known, releasing the lock in that record. Returns the outcome (None if nothing was
        recorded, the lock still held) and the conference as that record left it."""
        action = policy.next_action(conf)
        if action is None or conf is None or action.target == policy.RECOVER:  # an action has its conference
            return None, conf
        crossed_at = self._crossing(room) if action.call_sid is None and action.target != policy.CREATE else None
        if crossed_at is not None:
            self._observe_crossing(time.perf_counter() - crossed_at)  # the command leaves Quorum now
        outcome, result = self._send(room, conf, action)
        recording = result if action.target == policy.CREATE else action.recording_sid
        log.info(
            "room=%s conference=%s recording=%s call=%s action=%s outcome=%s",
            room,
            action.conference_sid,
            recording,
            action.call_sid,
            action.target,
            outcome.value,
        )
        # Written late, an answer may be stale (the lock may have expired, the recording been commanded since): a
        # pause or resume whose record the store did not take leaves it unsure, which only sends the wanted state.
        late = outcome if action.target == policy.CREATE else Outcome.RETRY
        settled: Dict[str, bool] = {}
        change = announcements.noting_settled(
            _for_conference(action, self._command_change(action, outcome, result)), settled
        )
        conf = self._writes.write(
            room,
            lock,
            change,
            lambda after: self._done(after, action, outcome, settled),
            lost=(_for_conference(action, self._command_change(action, late, result)), nothing),
        )
        return outcome, conf

    def _done(
        self, conf: Optional[Conference], action: policy.Action, outcome: Outcome, settled: Dict[str, bool]
    ) -> None:
        """Tell `on_done` of the announcement the write settled (its recording.resumed waited for it), then of the
        command, if it succeeded."""
        if conf is not None and settled.get("owed"):
            self._on_done(conf, policy.Action(action.conference_sid, None, policy.ANNOUNCE))
        if conf is not None and outcome is Outcome.OK:
            self._on_done(conf, action)

    def _send(self, room: str, conf: Conference, action: policy.Action) -> Tuple[Outcome, object]:
        """The REST call a command stands for; returns its outcome and what it created."""
        if action.target == policy.CREATE:
            assert action.call_sid is not None  # next_action's CREATE names the call to record
            return self._gateway.record_call(action.call_sid, self._recording_callback(room, action.call_sid))
        assert action.recording_sid is not None  # its pause or resume names the recording
        return self._gateway.set_recording(
            action.conference_sid, action.recording_sid, action.target, action.call_sid, conf.rule.pause_behavior
        ), None

    def _command_change(self, action: policy.Action, outcome: Outcome, result) -> Callable:
        """What a command's outcome changes in its conference."""
        now = self._clock()
        call_sid, recording_sid = action.call_sid, action.recording_sid  # narrowed below for the closures
        if action.target == policy.CREATE:
            assert call_sid is not None  # next_action's CREATE names the call to record
            # Never retried: a create that timed out may have worked, and a second would record the caller
            # twice. If it did work, its in-progress callback names the call and it is managed from then on.
            return lambda conf: policy.recording_created(conf, call_sid, result, now)
        # A retryable failure may or may not have taken effect: the recording is unsure, and whatever is
        # wanted next is sent again, even the old state. Never given up on while the conference is live.
        # A 404 or 422 may be a transient error as well as a finished recording: a read decides (DOUBT).
        state = {Outcome.OK: action.target, Outcome.GONE: DOUBT, Outcome.RETRY: UNSURE}.get(outcome, ABANDONED)
        assert recording_sid is not None  # its pause or resume names the recording

        def change(conf: Optional[Conference]) -> Optional[Conference]:
            after = policy.command_result(conf, recording_sid, state, now, action.target)
            return announcements.paused_first(after, recording_sid, state, now)  # settles what is owed

        return change

    def _read(self, room: str, since: Optional[float] = None) -> None:
        """On the read path: `_read_once`; a store that does not answer has the room driven again shortly."""
        try:
            self._read_once(room, since)
        except STORE_ERRORS as error:
            redis_outage.reported(error)
            self._retry_store(room)

    def _read_once(self, room: str, since: Optional[float]) -> None:
        """Read the room's conference if it still needs it (`since`: see `ReadQueue`), merge, then kick commands."""
        conf = self._store.get(room)
        if not _wants_read(conf, since):
            return
        # Before the lock: waiting must not outlast its expiry.
        self.reads.take_budget(READS_PER_CONFERENCE + len(_call_recordings_in_doubt(conf)))
        token, conf = self._store.try_lock_and_get(f"read:{room}", self._lock_ttl_s, room)
        if token is None:
            return  # another process is reading it now
        lock = (f"read:{room}", token)
        with self._writes.releasing_on_error(room, lock):
            if not _wants_read(conf, since):
                self._writes.release(room, lock)
                return  # a read that landed while this one waited for its budget settled it
            assert conf.conference_sid is not None  # _wants_read wants only a conference with its sid
            urgent = read_is_urgent(conf)
            start = policy.read_start(conf)
            outcome, snapshot = self._gateway.read_conference(conf.conference_sid, _call_recordings_in_doubt(conf))
            change = self._read_change(room, outcome, snapshot, start, urgent, self._hosts(conf, snapshot))
            after = self._writes.write(
                room, lock, _for_conference(policy.Action(conf.conference_sid, None, policy.RECOVER), change)
            )
        log.info("room=%s conference=%s action=read outcome=%s", room, conf.conference_sid, outcome.value)
        if policy.next_action(after) is not None:  # most routine reads confirm what was known: nothing to do
            self.kick(room)

    def _hosts(self, conf: Conference, snapshot) -> frozenset:
        """Listed calls that dialed in from a host number, not marked yet (a callback's number was judged then)."""
        if snapshot is None or not conf.rule.host_numbers:
            return frozenset()
        unjudged = [
            call
            for call in snapshot.present
            if not (conf.callers.get(call) or Caller()).from_
            and not (call in conf.participants and conf.participants[call].host)
        ]
        return frozenset(call for call in unjudged if conf.rule.is_host((self._caller(call) or {}).get("from", "")))

    def _caller(self, call_sid: str) -> Optional[dict]:
        """Who a call is: its record, else the Call resource's (a budgeted GET; remembered, or tried next read)."""
        caller = self._store.recall_call(call_sid)
        if caller is None:
            self.reads.take_budget(1)
            outcome, caller = self._gateway.fetch_call(call_sid)
            if outcome is Outcome.OK and caller is not None:  # an OK fetch found the call
                self._store.remember_call(call_sid, caller)
        return caller

    def _read_change(
        self,
        room: str,
        outcome: Outcome,
        snapshot,
        start: policy.ReadStart,
        urgent: bool,
        hosts: frozenset = frozenset(),
    ) -> Callable:
        """What a read's outcome changes; a failed read is tried again later."""
        now = self._clock()
        if outcome is Outcome.OK:
            self._succeeded(room)
            return lambda conf: policy.recover(conf, snapshot, now, start, hosts)
        if outcome is Outcome.GONE:
            return lambda conf: policy.recover(conf, None, now, start)  # the conference is over
        if outcome is Outcome.RETRY:
            attempts = self._failed(room)
            if not (urgent and attempts >= URGENT_READ_ATTEMPTS):
                self._later.later(room, backoff(attempts))
                return lambda conf: conf
        self._succeeded(room)
        return policy.assume_verified  # the API will not tell us: go on with what the callbacks said


def read_is_urgent(conf: Conference) -> bool:
    """Whether a decision waits for the read: state begun mid-conference, or a recording in doubt."""
    return policy.needs_recovery(conf) or bool(policy.in_doubt(conf))


def _call_recordings_in_doubt(conf: Conference) -> tuple:
    """(call, recording) of the participant recordings in doubt: the read fetches them one by one."""
    return tuple((call, sid) for sid, call in policy.in_doubt(conf) if call is not None)


def _wants_read(conf: Optional[Conference], since: Optional[float] = None) -> TypeGuard[Conference]:
    """Whether a live conference still needs a REST read: something unknown or in doubt, a confirmation, or a
    read since `since`."""
    return (
        conf is not None
        and not conf.ended
        and conf.conference_sid is not None
        and (read_is_urgent(conf) or conf.recheck or (since is not None and conf.read_at <= since))
    )


def _for_conference(action: policy.Action, change: Callable) -> Callable:
    """`change` applied only to the action's own conference: the room may hold a newer one by the answer."""
    return lambda conf: change(conf) if conf is not None and conf.conference_sid == action.conference_sid else conf
