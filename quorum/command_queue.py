"""Runs REST commands off the request path, one conference at a time, level-triggered.

A webhook only "kicks" its room. A worker then reads the room's state, sends the one
command it needs, records the result and reads again, until the confirmed state
matches the wanted state. Kicks that arrive while a room is being worked on only ask
for one more pass, so rapid flip-flops coalesce into the latest wanted state.

REST reads of a conference go to a separate, lower-priority path (`ReadQueue`) within a
budget of reads per second shared by every process, so a read never delays a pause.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

from quorum import policy
from quorum.keyed_workers import KeyedWorkers
from recording_state import ABANDONED, GONE, UNSURE, Caller, Conference, StateStore
from quorum.gateway import READS_PER_CONFERENCE, Outcome, SignalWireGateway, readers_for

log = logging.getLogger("quorum.commands")

FIRST_BACKOFF_S = 0.2
MAX_BACKOFF_S = 5.0
LOCK_POLL_S = 0.05
URGENT_READ_ATTEMPTS = 5  # then decide on what the callbacks said rather than not at all
BUDGET_POLL_S = 0.05


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number `attempt` (1, 2, ...): doubling, capped."""
    return min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** (attempt - 1))


class DelayedKicks(threading.Thread):
    """One thread that calls `kick(key)` once each delay has passed (retries without holding a worker)."""

    def __init__(self, kick: Callable[[str], None], name: str):
        super().__init__(name=name, daemon=True)
        self._kick = kick
        self._due: List[Tuple[float, str]] = []
        self._firing = 0  # kicks popped but not yet handed over, so `pending` never blinks to 0
        self._cond = threading.Condition()
        self._stopped = False
        self.start()

    def later(self, key: str, delay_s: float) -> None:
        """Kick `key` after `delay_s` seconds."""
        with self._cond:
            heapq.heappush(self._due, (time.monotonic() + delay_s, key))
            self._cond.notify()

    def pending(self) -> int:
        """Kicks still to come."""
        with self._cond:
            return len(self._due) + self._firing

    def stop(self) -> None:
        """Drop what is still to come and end the thread."""
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def run(self) -> None:
        """Kick each key when it falls due."""
        with self._cond:
            while not self._stopped:
                if not self._due:
                    self._cond.wait()
                    continue
                wait = self._due[0][0] - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                _, key = heapq.heappop(self._due)
                self._firing += 1
                self._cond.release()
                try:
                    self._kick(key)
                finally:
                    self._cond.acquire()
                    self._firing -= 1


class ReadQueue:
    """REST reads of conferences, each room once: urgent ones (a decision waits), routine ones, then scheduled ones
    (`since`: the `read_at` their schedule saw) the longest `due` first, done only if no read has answered since;
    at most `reads_per_s` GETs per second across every process sharing the store."""

    def __init__(self, read: Callable[[str, Optional[float]], None], store: StateStore, reads_per_s: int,
                 readers: int = 2, sleep: Callable[[float], None] = time.sleep):
        self._read = read  # (room, since)
        self._store = store
        self._reads_per_s = reads_per_s
        self._sleep = sleep
        self._heap: List[Tuple[int, float, int, str]] = []
        self._queued: Dict[str, int] = {}  # room -> priority it is queued at
        self._reading: Dict[str, int] = {}  # room under a read -> priority to queue it again at (2: none)
        self._since: Dict[str, float] = {}  # room -> the newest `read_at` a scheduled read of it was asked on
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        for i in range(readers):
            threading.Thread(target=self._serve, name=f"quorum-read-{i}", daemon=True).start()

    def request(self, room: str, urgent: bool, since: Optional[float] = None, due: float = 0.0) -> None:
        """Read `room` soon; a room already queued is queued once, at the higher priority."""
        with self._cond:
            if since is not None:
                self._since[room] = max(since, self._since.get(room, since))
            self._queue(room, 0 if urgent else 1, due)

    def _queue(self, room: str, priority: int, due: float = 0.0) -> None:
        """Queue `room` (lock held); a room under a read is queued again once that read ends."""
        if room in self._reading:
            self._reading[room] = min(self._reading[room], priority)
            return
        if self._queued.get(room, 2) <= priority:
            return
        self._queued[room] = priority
        heapq.heappush(self._heap, (priority, due, next(self._seq), room))
        self._cond.notify()

    def take_budget(self, reads: int) -> None:
        """Block until `reads` more GETs fit the shared per-second budget."""
        while not self._stopped and not self._store.take_reads(reads, self._reads_per_s):
            self._sleep(BUDGET_POLL_S)

    def depth(self) -> int:
        """Rooms waiting for or under a read."""
        with self._cond:
            return len(self._queued) + len(self._reading)

    def stop(self) -> None:
        """Stop serving once the reads under way finish."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def _next(self) -> Optional[Tuple[str, Optional[float]]]:
        """The next room to read and its `since` (waiting for one), or None once stopped."""
        with self._cond:
            while not self._stopped:
                while self._heap:
                    priority, _, _, room = heapq.heappop(self._heap)
                    if self._queued.get(room) == priority:  # else a stale, superseded entry
                        del self._queued[room]
                        self._reading[room] = 2
                        return room, self._since.pop(room, None)
                self._cond.wait()
            return None

    def _serve(self) -> None:
        """Read rooms until stopped."""
        for room, since in iter(self._next, None):
            try:
                self._read(room, since)
            except Exception:  # a reader must never die: the next round asks again
                log.exception("read of room %s crashed", room)
            finally:
                with self._cond:
                    again = self._reading.pop(room)
                    if again < 2:
                        self._queue(room, again)


class CommandQueue:
    """Per-room serial execution of pause/resume commands on a small thread pool, plus the read path."""

    def __init__(self, store: StateStore, gateway: SignalWireGateway, lock_ttl_s: float,
                 recording_callback: Callable[[str, str], str],
                 announce_url: Callable[[str], str] = lambda room: "",
                 on_done: Callable[[Conference, policy.Action], None] = lambda conf, action: None,
                 workers: int = 8, reads_per_s: int = 5, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep,
                 observe_crossing: Callable[[float], None] = lambda seconds: None):
        self._store = store
        self._gateway = gateway
        self._lock_ttl_s = lock_ttl_s
        self._recording_callback = recording_callback  # (room, call) -> the recording-status URL
        self._announce_url = announce_url  # room -> where SignalWire fetches the announcement's LaML
        self._on_done = on_done  # told of every command that succeeded, with the state after it
        self._clock = clock
        self._sleep = sleep
        self._attempts: Dict[str, int] = {}  # room -> retryable failures in a row (commands or reads)
        self._attempts_lock = threading.Lock()
        self._observe_crossing = observe_crossing  # seconds from a crossing callback's arrival to its command
        self._crossed: Dict[str, float] = {}  # room -> perf_counter() of the oldest crossing not yet commanded
        self._workers = KeyedWorkers(self._drive, workers, "quorum-cmd")
        self._later = DelayedKicks(self.kick, "quorum-retry")
        self.reads = ReadQueue(self._read, store, reads_per_s, readers=readers_for(reads_per_s), sleep=sleep)

    def kick(self, room: str, crossed_at: Optional[float] = None) -> None:
        """Make sure the room is brought to its wanted state soon; never blocks on the API.

        `crossed_at`: when the callback that crossed the threshold arrived (perf_counter), timed to its command.
        """
        if crossed_at is not None:
            with self._attempts_lock:
                self._crossed.setdefault(room, crossed_at)
        self._workers.submit(room)

    def read(self, room: str, urgent: bool = False, since: Optional[float] = None, due: float = 0.0) -> None:
        """Ask for a REST read of the room's conference on the read path (`since`, `due`: see `ReadQueue`)."""
        self.reads.request(room, urgent, since, due)

    def depth(self) -> int:
        """Rooms waiting for or under a command or a read."""
        return self._workers.depth() + self.reads.depth()

    def wait_idle(self, timeout: float) -> bool:
        """Block until no command, read or retry is pending (tests and shutdown); False on timeout."""
        deadline = time.monotonic() + timeout
        while self._workers.depth() or self.reads.depth() or self._later.pending():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def shutdown(self) -> None:
        """Stop taking work and let running commands finish."""
        self._later.stop()
        self.reads.stop()
        self._workers.shutdown()

    def _drive(self, room: str) -> None:
        """Send commands until the room's recordings match the wanted state, or hand over to the read path.

        Each look after the first is at what the last command's compare-and-set found (current then), or what
        was read under the lock: a change since then kicks the room again, so it is looked at afresh."""
        conf = self._store.get(room)
        while (action := policy.next_action(conf)) is not None:
            if action.target == policy.RECOVER:
                self._crossing(room)  # the command after a read is the read's decision: not timed as this one
                self.read(room, action.urgent)
                return
            token, conf = self._store.try_lock_and_get(f"room:{room}", self._lock_ttl_s, room)
            if token is None:  # another process is acting on this room; look again shortly
                self._sleep(LOCK_POLL_S)
                conf = self._store.get(room)
                continue
            outcome = None
            try:
                outcome, conf = self._act_once(room, conf, (f"room:{room}", token))
            finally:
                if outcome is None:  # nothing recorded, or it failed: no compare-and-set released the lock
                    self._store.unlock(f"room:{room}", token)
            if outcome is Outcome.RETRY:
                self._later.later(room, backoff(self._failed(room)))
                return  # the retry comes back as a kick: no worker waits through the backoff
            self._succeeded(room)
        self._crossing(room)  # crossings that cancelled out before a command went: nothing to time

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

    def _act_once(self, room: str, conf: Optional[Conference],
                  lock: Tuple[str, str]) -> Tuple[Optional[Outcome], Optional[Conference]]:
        """Under the room's `lock` (name, token), `conf` read since it was taken: send the one command due and
        record what is now known, releasing the lock in that record. Returns the outcome (None if nothing was
        recorded, the lock still held) and the conference as that record left it."""
        action = policy.next_action(conf)
        if action is None or action.target == policy.RECOVER:
            return None, conf
        if action.target == policy.ANNOUNCE:
            return self._announce(room, conf, action, lock)
        crossed_at = self._crossing(room) if action.call_sid is None and action.target != policy.CREATE else None
        if crossed_at is not None:
            self._observe_crossing(time.perf_counter() - crossed_at)  # the command leaves Quorum now
        outcome, result = self._send(room, conf, action)
        conf = self._store.mutate(room, _for_conference(action, self._command_change(action, outcome, result)), lock)
        recording = result if action.target == policy.CREATE else action.recording_sid
        log.info("room=%s conference=%s recording=%s call=%s action=%s outcome=%s", room, action.conference_sid,
                 recording, action.call_sid, action.target, outcome.value)
        if outcome is Outcome.OK and conf is not None:
            self._on_done(conf, action)
        return outcome, conf

    def _send(self, room: str, conf: Conference, action: policy.Action) -> Tuple[Outcome, object]:
        """The REST call a command stands for; returns its outcome and what it created."""
        if action.target == policy.CREATE:
            return self._gateway.record_call(action.call_sid, self._recording_callback(room, action.call_sid))
        return self._gateway.set_recording(action.conference_sid, action.recording_sid, action.target,
                                           action.call_sid, conf.rule.pause_behavior), None

    def _announce(self, room: str, conf: Conference, action: policy.Action,
                  lock: Tuple[str, str]) -> Tuple[Outcome, Optional[Conference]]:
        """Play the room's announcement (skipped if the recording is about to pause); a failure is tried
        once more after a backoff, so a pause due meanwhile is never held up by it. Returns what `_act_once` does."""
        outcome = "skipped"
        if policy.announcement_plays(conf):
            sent = self._gateway.announce(action.conference_sid, self._announce_url(conf.room))
            outcome = "played" if sent is Outcome.OK else "failed"
        now = self._clock()
        after = self._store.mutate(room, _for_conference(action, lambda c: policy.announced(c, outcome, now)), lock)
        log.info("room=%s conference=%s action=announce outcome=%s", room, action.conference_sid, outcome)
        if after is not None and after.announce_tries:
            return Outcome.RETRY, after
        if after is not None:
            self._on_done(after, action)
        return Outcome.OK, after

    def _command_change(self, action: policy.Action, outcome: Outcome, result) -> Callable:
        """What a command's outcome changes in its conference."""
        now = self._clock()
        if action.target == policy.CREATE:
            # Never retried: a create that timed out may have worked, and a second would record the caller
            # twice. If it did work, its in-progress callback names the call and it is managed from then on.
            return lambda conf: policy.recording_created(conf, action.call_sid, result, now)
        # A retryable failure may or may not have taken effect: the recording is unsure, and whatever is
        # wanted next is sent again, even the old state. Never given up on while the conference is live.
        state = {Outcome.OK: action.target, Outcome.GONE: GONE, Outcome.RETRY: UNSURE}.get(outcome, ABANDONED)
        return lambda conf: policy.command_result(conf, action.recording_sid, state, now, action.target)

    def _read(self, room: str, since: Optional[float] = None) -> None:
        """On the read path: read the room's conference if it still needs it, merge, then kick commands."""
        if not _wants_read(self._store.get(room), since):
            return
        self.reads.take_budget(READS_PER_CONFERENCE)  # before the lock: waiting must not outlast its expiry
        token, conf = self._store.try_lock_and_get(f"read:{room}", self._lock_ttl_s, room)
        if token is None:
            return  # another process is reading it now
        try:
            if not _wants_read(conf, since):
                return  # a read that landed while this one waited for its budget settled it
            urgent = policy.needs_recovery(conf)
            start = policy.read_start(conf)
            outcome, snapshot = self._gateway.read_conference(conf.conference_sid)
            change = self._read_change(room, outcome, snapshot, start, urgent, self._hosts(conf, snapshot))
            after = self._store.mutate(room, _for_conference(policy.Action(conf.conference_sid, None,
                                                                           policy.RECOVER), change))
        finally:
            self._store.unlock(f"read:{room}", token)
        log.info("room=%s conference=%s action=read outcome=%s", room, conf.conference_sid, outcome.value)
        if policy.next_action(after) is not None:  # most routine reads confirm what was known: nothing to do
            self.kick(room)

    def _hosts(self, conf: Conference, snapshot) -> frozenset:
        """Listed calls that dialed in from a host number, not marked yet (a callback's number was judged then)."""
        if snapshot is None or not conf.rule.host_numbers:
            return frozenset()
        unjudged = [call for call in snapshot.present if not (conf.callers.get(call) or Caller()).from_
                    and not (call in conf.participants and conf.participants[call].host)]
        return frozenset(call for call in unjudged if conf.rule.is_host((self._caller(call) or {}).get("from", "")))

    def _caller(self, call_sid: str) -> Optional[dict]:
        """Who a call is: its record, else the Call resource's (a budgeted GET; remembered, or tried next read)."""
        caller = self._store.recall_call(call_sid)
        if caller is None:
            self.reads.take_budget(1)
            outcome, caller = self._gateway.fetch_call(call_sid)
            if outcome is Outcome.OK:
                self._store.remember_call(call_sid, caller)
        return caller

    def _read_change(self, room: str, outcome: Outcome, snapshot, start: policy.ReadStart, urgent: bool,
                     hosts: frozenset = frozenset()) -> Callable:
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


def _wants_read(conf: Optional[Conference], since: Optional[float] = None) -> bool:
    """Whether a live conference still needs a REST read: something unknown, a confirmation, or a read since `since`."""
    return (conf is not None and not conf.ended and conf.conference_sid is not None
            and (policy.needs_recovery(conf) or conf.recheck or (since is not None and conf.read_at <= since)))


def _for_conference(action: policy.Action, change: Callable) -> Callable:
    """`change` applied only to the action's own conference: the room may hold a newer one by the answer."""
    return lambda conf: change(conf) if conf is not None and conf.conference_sid == action.conference_sid else conf
