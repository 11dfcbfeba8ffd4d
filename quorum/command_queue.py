"""Runs REST commands off the request path, one conference at a time, level-triggered.

A webhook only "kicks" its room. A worker then reads the room's state, sends the one
command it needs, records the result and reads again, until the confirmed state
matches the wanted state. Kicks that arrive while a room is being worked on only ask
for one more pass, so rapid flip-flops coalesce into the latest wanted state.

REST reads of a conference go to a separate, lower-priority path (`ReadQueue`) within a
budget of reads per second shared by every process, so a read never delays a pause.
Announcements (RECORDING_ANNOUNCEMENT) have a lane of their own too: a pause or resume never
queues behind one.

A store that does not answer (Redis down) loses nothing: a write that fails after its REST
call is kept with the lock it holds and made once the store answers again (the room is driven
again with the usual backoff), releasing that lock then instead of leaving it to its TTL.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import redis

from quorum import policy
from quorum.keyed_workers import KeyedWorkers
from recording_state import ABANDONED, DOUBT, UNSURE, Conference, StateStore
from quorum.gateway import ANNOUNCERS, READERS, READS_PER_CONFERENCE, Outcome, SignalWireGateway

log = logging.getLogger("quorum.commands")

FIRST_BACKOFF_S = 0.2
MAX_BACKOFF_S = 5.0
LOCK_POLL_S = 0.05
URGENT_READ_ATTEMPTS = 5  # then decide on what the callbacks said rather than not at all
BUDGET_POLL_S = 0.05
STORE_ERRORS = (redis.RedisError,)  # the store did not answer (MemoryStore never raises)
WRITE_STRIPES = 64  # per-room exclusion of a write and the events it sends, without a lock per room


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number `attempt` (1, 2, ...): doubling, capped."""
    return min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** (attempt - 1))


class DelayedKicks(threading.Thread):
    """One thread that calls `kick(key)` once each delay has passed (retries without holding a worker)."""

    def __init__(self, kick: Callable[[str], None], name: str):
        super().__init__(name=name, daemon=True)
        self._kick = kick
        self._due: List[Tuple[float, str]] = []
        self._keys: Dict[str, int] = {}  # key -> its kicks still in `_due`
        self._firing = 0  # kicks popped but not yet handed over, so `pending` never blinks to 0
        self._cond = threading.Condition()
        self._stopped = False
        self.start()

    def later(self, key: str, delay_s: float) -> None:
        """Kick `key` after `delay_s` seconds."""
        with self._cond:
            heapq.heappush(self._due, (time.monotonic() + delay_s, key))
            self._keys[key] = self._keys.get(key, 0) + 1
            self._cond.notify()

    def waiting(self, key: str) -> bool:
        """Whether a kick of `key` is still to come."""
        with self._cond:
            return key in self._keys

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
                self._keys[key] -= 1
                if not self._keys[key]:
                    del self._keys[key]
                self._firing += 1
                self._cond.release()
                try:
                    self._kick(key)
                finally:
                    self._cond.acquire()
                    self._firing -= 1


class ReadQueue:
    """REST reads of conferences: urgent ones (a decision waits) before routine ones, each room once,
    at most `reads_per_s` GETs per second across every process sharing the store."""

    def __init__(self, read: Callable[[str], None], store: StateStore, reads_per_s: int, readers: int = READERS,
                 sleep: Callable[[float], None] = time.sleep):
        self._read = read
        self._store = store
        self._reads_per_s = reads_per_s
        self._sleep = sleep
        self._heap: List[Tuple[int, int, str]] = []
        self._queued: Dict[str, int] = {}  # room -> priority it is queued at
        self._reading: Dict[str, int] = {}  # room under a read -> priority to queue it again at (2: none)
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        for i in range(readers):
            threading.Thread(target=self._serve, name=f"quorum-read-{i}", daemon=True).start()

    def request(self, room: str, urgent: bool) -> None:
        """Read `room` soon; a room already queued is queued once, at the higher priority."""
        with self._cond:
            self._queue(room, 0 if urgent else 1)

    def _queue(self, room: str, priority: int) -> None:
        """Queue `room` (lock held); a room under a read is queued again once that read ends."""
        if room in self._reading:
            self._reading[room] = min(self._reading[room], priority)
            return
        if self._queued.get(room, 2) <= priority:
            return
        self._queued[room] = priority
        heapq.heappush(self._heap, (priority, next(self._seq), room))
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

    def _next(self) -> Optional[str]:
        """The next room to read (waiting for one), or None once stopped."""
        with self._cond:
            while not self._stopped:
                while self._heap:
                    priority, _, room = heapq.heappop(self._heap)
                    if self._queued.get(room) == priority:  # else a stale, superseded entry
                        del self._queued[room]
                        self._reading[room] = 2
                        return room
                self._cond.wait()
            return None

    def _serve(self) -> None:
        """Read rooms until stopped."""
        while (room := self._next()) is not None:
            try:
                self._read(room)
            except Exception:  # a reader must never die: the next round asks again
                log.exception("read of room %s crashed", room)
            finally:
                with self._cond:
                    again = self._reading.pop(room)
                    if again < 2:
                        self._queue(room, again)


@dataclass(frozen=True)
class _Unwritten:
    """A write the store did not take, to be made once it answers: it releases the lock `token` holds."""

    room: str
    change: Callable
    token: str
    then: Callable[[Optional[Conference]], None]  # what follows the write (the events it sends)


class CommandQueue:
    """Per-room serial execution of pause/resume commands on a small thread pool, plus the read path and the
    announcement lane."""

    def __init__(self, store: StateStore, gateway: SignalWireGateway, lock_ttl_s: float,
                 recording_callback: Callable[[str, str], str],
                 announce_url: Callable[[str], str] = lambda room: "",
                 on_done: Callable[[Conference, policy.Action], None] = lambda conf, action: None,
                 workers: int = 8, reads_per_s: int = 5, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep,
                 observe_crossing: Callable[[float], None] = lambda seconds: None, announcers: int = ANNOUNCERS):
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
        self._unwritten: Dict[str, _Unwritten] = {}  # lock name -> the write that is to release it (guarded as above)
        self._writing = [threading.Lock() for _ in range(WRITE_STRIPES)]
        self._observe_crossing = observe_crossing  # seconds from a crossing callback's arrival to its command
        self._crossed: Dict[str, float] = {}  # room -> perf_counter() of the oldest crossing not yet commanded
        self._redriven: set = set()  # rooms kicked by `redrive` only since their last drive (guarded as above)
        self._workers = KeyedWorkers(self._drive, workers, "quorum-cmd")
        self._announcements = KeyedWorkers(self._announce, announcers, "quorum-announce")
        self._later = DelayedKicks(self.kick, "quorum-retry")
        self.reads = ReadQueue(self._read, store, reads_per_s, sleep=sleep)

    def kick(self, room: str, crossed_at: Optional[float] = None) -> None:
        """Make sure the room is brought to its wanted state soon; never blocks on the API.

        `crossed_at`: when the callback that crossed the threshold arrived (perf_counter), timed to its command.
        """
        with self._attempts_lock:
            self._redriven.discard(room)
            if crossed_at is not None:
                self._crossed.setdefault(room, crossed_at)
        self._workers.submit(room)

    def redrive(self, room: str) -> bool:
        """Kick a room the store says has work due, unless this process has a retry of it coming already; the
        drive it causes does not wait for another process's lock on the room (that process is driving it)."""
        if self._later.waiting(room):
            return False
        with self._attempts_lock:
            self._redriven.add(room)
        self._workers.submit(room)
        return True

    def read(self, room: str, urgent: bool = False) -> None:
        """Ask for a REST read of the room's conference on the read path."""
        self.reads.request(room, urgent)

    def depth(self) -> int:
        """Rooms waiting for or under a command, an announcement or a read."""
        return self._workers.depth() + self._announcements.depth() + self.reads.depth()

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
        self._announcements.shutdown()

    def _drive(self, room: str) -> None:
        """Write what the store did not take before (`_flush`), send commands (`_command`) and hand a due
        announcement to its lane; a store that does not answer has the room driven again after a backoff."""
        with self._attempts_lock:
            redriven = room in self._redriven
            self._redriven.discard(room)
        try:
            self._flush(room)
            conf = self._command(room, redriven)
        except STORE_ERRORS as error:
            log.warning("room=%s store unavailable (%s): driven again after a backoff", room, type(error).__name__)
            self._later.later(room, backoff(self._failed(room)))
            return
        if policy.announcement_due(conf):
            self._announcements.submit(room)

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
            with self._releasing_on_error(room, lock):
                outcome, conf = self._act_once(room, conf, lock)
            if outcome is None:  # nothing was due under the lock after all: no write released it
                self._release(room, lock)
            if outcome is Outcome.RETRY:
                self._later.later(room, backoff(self._failed(room)))
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

    def _act_once(self, room: str, conf: Optional[Conference],
                  lock: Tuple[str, str]) -> Tuple[Optional[Outcome], Optional[Conference]]:
        """Under the room's `lock` (name, token), `conf` read since it was taken: send the one command due and
        record what is now known, releasing the lock in that record. Returns the outcome (None if nothing was
        recorded, the lock still held) and the conference as that record left it."""
        action = policy.next_action(conf)
        if action is None or action.target == policy.RECOVER:
            return None, conf
        crossed_at = self._crossing(room) if action.call_sid is None and action.target != policy.CREATE else None
        if crossed_at is not None:
            self._observe_crossing(time.perf_counter() - crossed_at)  # the command leaves Quorum now
        outcome, result = self._send(room, conf, action)
        recording = result if action.target == policy.CREATE else action.recording_sid
        log.info("room=%s conference=%s recording=%s call=%s action=%s outcome=%s", room, action.conference_sid,
                 recording, action.call_sid, action.target, outcome.value)
        settled: Dict[str, bool] = {}
        change = _settling(_for_conference(action, self._command_change(action, outcome, result)), settled)
        conf = self._write(room, lock, change, lambda after: self._done(after, action, outcome, settled),
                           lost=(_for_conference(action, self._unwritten_change(action, outcome, result)), _nothing))
        return outcome, conf

    def _done(self, conf: Optional[Conference], action: policy.Action, outcome: Optional[Outcome],
              settled: Dict[str, bool]) -> None:
        """Tell `on_done` of the announcement a write settled (its recording.resumed was held back for it), then
        of the command, if it succeeded (`outcome` None: the write was the announcement's own)."""
        if conf is None:
            return
        if settled.get("owed"):
            self._on_done(conf, policy.Action(action.conference_sid, None, policy.ANNOUNCE))
        if outcome is Outcome.OK:
            self._on_done(conf, action)

    def _send(self, room: str, conf: Conference, action: policy.Action) -> Tuple[Outcome, object]:
        """The REST call a command stands for; returns its outcome and what it created."""
        if action.target == policy.CREATE:
            return self._gateway.record_call(action.call_sid, self._recording_callback(room, action.call_sid))
        return self._gateway.set_recording(action.conference_sid, action.recording_sid, action.target,
                                           action.call_sid, conf.rule.pause_behavior), None

    def _announce(self, room: str) -> None:
        """The announcement lane: play the room's due announcement under a lock of its own (one process at a time),
        so no command waits for it. A store that does not answer hands the room back to its command lane, which
        makes what was kept and hands the announcement back."""
        try:
            token, conf = self._store.try_lock_and_get(f"announce:{room}", self._lock_ttl_s, room)
            if token is None:
                return  # another process is playing it, and records how it went
            lock = (f"announce:{room}", token)
            with self._releasing_on_error(room, lock):
                if not policy.announcement_due(conf):
                    self._release(room, lock)
                    return
                self._play(room, conf, lock)
        except STORE_ERRORS as error:
            log.warning("room=%s store unavailable (%s) for an announcement: driven again after a backoff", room,
                        type(error).__name__)
            self._later.later(room, backoff(self._failed(room)))

    def _play(self, room: str, conf: Conference, lock: Tuple[str, str]) -> None:
        """Play the announcement (skipped if the recording is about to pause) and record how it went, releasing
        `lock`; a first failure is tried once more after a backoff."""
        action = policy.Action(conf.conference_sid, None, policy.ANNOUNCE)
        start = policy.announcement_start(conf)
        outcome = "skipped"
        if policy.announcement_plays(conf):
            sent = self._gateway.announce(action.conference_sid, self._announce_url(conf.room))
            outcome = "played" if sent is Outcome.OK else "failed"
        now = self._clock()
        log.info("room=%s conference=%s action=announce outcome=%s", room, action.conference_sid, outcome)
        settled: Dict[str, bool] = {}
        change = _settling(_for_conference(action, lambda c: policy.announced(c, outcome, now, start)), settled)
        after = self._write(room, lock, change, lambda c: self._done(c, action, None, settled))
        if policy.announcement_due(after) and after.conference_sid == action.conference_sid:
            self._later.later(room, FIRST_BACKOFF_S)  # its command lane hands it back: one more try

    def _command_change(self, action: policy.Action, outcome: Outcome, result) -> Callable:
        """What a command's outcome changes in its conference."""
        now = self._clock()
        if action.target == policy.CREATE:
            # Never retried: a create that timed out may have worked, and a second would record the caller
            # twice. If it did work, its in-progress callback names the call and it is managed from then on.
            return lambda conf: policy.recording_created(conf, action.call_sid, result, now)
        # A retryable failure may or may not have taken effect: the recording is unsure, and whatever is
        # wanted next is sent again, even the old state. Never given up on while the conference is live.
        # A 404 or 422 may be a transient error as well as a finished recording: a read decides (DOUBT).
        state = {Outcome.OK: action.target, Outcome.GONE: DOUBT, Outcome.RETRY: UNSURE}.get(outcome, ABANDONED)
        return lambda conf: policy.command_result(conf, action.recording_sid, state, now, action.target)

    def _unwritten_change(self, action: policy.Action, outcome: Outcome, result) -> Callable:
        """What to write, once the store answers again, for a command whose outcome it did not take. Late, the
        outcome may be stale (the lock may have expired and another process commanded the recording since): a
        pause or resume leaves its recording unsure, which is never wrong and only sends the wanted state again."""
        if action.target == policy.CREATE:
            return self._command_change(action, outcome, result)
        return self._command_change(action, Outcome.RETRY, result)

    def _write(self, room: str, lock: Tuple[str, str], change: Callable,
               then: Callable[[Optional[Conference]], None] = lambda conf: None,
               lost: Optional[Tuple[Callable, Callable]] = None) -> Optional[Conference]:
        """`mutate` the room with `change`, releasing `lock`, then `then(result)`: in this process one room's writes
        and what follows each (the events it sends) run one at a time, so events leave in the order of the writes.
        If the store does not answer, `lost` (change, then; default the same) is kept with the lock for `_flush`
        and the error raised."""
        with self._writing[zlib.crc32(room.encode()) % len(self._writing)]:
            try:
                conf = self._store.mutate(room, change, lock)
            except STORE_ERRORS:
                self._keep(room, lock, *(lost or (change, then)))
                raise
            then(conf)
        return conf

    def _release(self, room: str, lock: Tuple[str, str]) -> None:
        """Unlock with no write; if the store does not answer, the release is kept for `_flush`."""
        try:
            self._store.unlock(*lock)
        except STORE_ERRORS:
            self._keep(room, lock, lambda conf: conf, _nothing)
            raise

    @contextlib.contextmanager
    def _releasing_on_error(self, room: str, lock: Tuple[str, str]) -> Iterator[None]:
        """Release `lock` if the block raises before a write released it or kept it for `_flush`."""
        try:
            yield
        except BaseException:
            if not self._kept(lock[0]):
                self._release(room, lock)
            raise

    def _keep(self, room: str, lock: Tuple[str, str], change: Callable, then: Callable) -> None:
        """Remember a write the store did not take, and the lock it is to release."""
        with self._attempts_lock:
            self._unwritten[lock[0]] = _Unwritten(room, change, lock[1], then)

    def _kept(self, name: str) -> bool:
        """Whether a kept write is to release the lock `name`."""
        with self._attempts_lock:
            return name in self._unwritten

    def _flush(self, room: str) -> None:
        """Make the room's writes the store did not take, each releasing its lock (raises while it still does not
        answer, the writes kept)."""
        with self._attempts_lock:
            kept = [(name, entry) for name, entry in self._unwritten.items() if entry.room == room]
        for name, entry in kept:
            with self._attempts_lock:
                if self._unwritten.get(name) is not entry:
                    continue
                del self._unwritten[name]
            self._write(room, (name, entry.token), entry.change, entry.then)
            log.info("room=%s action=write-kept lock=%s", room, name)

    def _read(self, room: str) -> None:
        """On the read path: `_read_once`; a store that does not answer has the room driven again after a backoff,
        which asks for the read again if it is still wanted."""
        try:
            self._read_once(room)
        except STORE_ERRORS as error:
            log.warning("room=%s store unavailable (%s) for a read: asked again after a backoff", room,
                        type(error).__name__)
            self._later.later(room, backoff(self._failed(room)))

    def _read_once(self, room: str) -> None:
        """Read the room's conference if it still needs it, merge, then kick commands."""
        conf = self._store.get(room)
        if not _wants_read(conf):
            return
        # Before the lock: waiting must not outlast its expiry.
        self.reads.take_budget(READS_PER_CONFERENCE + len(policy.call_recordings_in_doubt(conf)))
        token, conf = self._store.try_lock_and_get(f"read:{room}", self._lock_ttl_s, room)
        if token is None:
            return  # another process is reading it now
        lock = (f"read:{room}", token)
        with self._releasing_on_error(room, lock):
            if not _wants_read(conf):
                self._release(room, lock)
                return  # a read that landed while this one waited for its budget settled it
            urgent = policy.read_is_urgent(conf)
            start = policy.read_start(conf)
            outcome, snapshot = self._gateway.read_conference(conf.conference_sid,
                                                              policy.call_recordings_in_doubt(conf))
            change = self._read_change(room, outcome, snapshot, start, urgent, self._hosts(conf, snapshot))
            self._write(room, lock, _for_conference(policy.Action(conf.conference_sid, None, policy.RECOVER), change))
        log.info("room=%s conference=%s action=read outcome=%s", room, conf.conference_sid, outcome.value)
        self.kick(room)

    def _hosts(self, conf: Conference, snapshot) -> frozenset:
        """Listed calls we have no event for that dialed in from a host number (as our voice webhook saw)."""
        if snapshot is None or not conf.rule.host_numbers:
            return frozenset()
        unseen = [call for call in snapshot.present if call not in conf.participants]
        return frozenset(call for call in unseen
                         if conf.rule.is_host((self._store.recall_call(call) or {}).get("from", "")))

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


def _nothing(conf: Optional[Conference]) -> None:
    """Nothing follows the write."""


def _settling(change: Callable, settled: Dict[str, bool]) -> Callable:
    """`change`, noting in `settled["owed"]` whether it settled the announcement a start or resume owed (then the
    recording.resumed it held back is due)."""
    def apply(conf: Optional[Conference]) -> Optional[Conference]:
        after = change(conf)
        settled["owed"] = bool(conf and after and conf.announce_tries and not after.announce_tries)
        return after
    return apply


def _wants_read(conf: Optional[Conference]) -> bool:
    """Whether a live conference still needs a REST read: something unknown or in doubt, or a confirmation asked
    for."""
    return (conf is not None and not conf.ended and conf.conference_sid is not None
            and (policy.read_is_urgent(conf) or conf.recheck))


def _for_conference(action: policy.Action, change: Callable) -> Callable:
    """`change` applied only to the action's own conference: the room may hold a newer one by the answer."""
    return lambda conf: change(conf) if conf is not None and conf.conference_sid == action.conference_sid else conf
