"""Conference-to-recording state and the stores that keep it.

A conference is keyed by its room (the conference's FriendlyName): SignalWire runs at
most one live conference per name, recording callbacks only tell us the room (we put
it in their URL), and a recording callback may arrive before any conference event.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Protocol, Tuple

from config import RoomRule
from frozen import evolve, memo, plain  # evolve: every module that changes this state uses it from here

RECORDING = "recording"
PAUSED = "paused"
GONE = "gone"  # a completed/absent/failed callback, or a read that says so: nothing more to do
DOUBT = "doubt"  # a command was answered 404 or 422, which may be transient: a read decides, no command meanwhile
ABANDONED = "failed"  # the API refused a command (4xx): sent again only for a new wanted state; or it never ended
UNSURE = "unsure"  # a command timed out or failed with 5xx: it may or may not have taken effect
LIVE, PROCESSING = "live", "processing"  # a conference's status: live, then being archived

TIMELINE_LIMIT = 1000  # a conference that flips all day must not grow without bound
STALE_AFTER_S = 12 * 3600  # a live conference with no event for this long lost its end callback


@dataclass(frozen=True)
class Presence:
    """Whether a call is on the line, as of the newest event seen for it."""

    present: bool
    at: float  # SignalWire's clock
    version: int = 0  # the conference version that set it: a REST read begun before it must not undo it
    known: bool = False  # the call came through /voice/inbound, or a REST read listed it
    hold: bool = False  # on the line but on hold: hears hold music and takes no part
    host: bool = False  # dialed in from one of the room's HOST_NUMBERS
    terminal: bool = False  # the call itself ended (its status or its <Dial> action): off the line for good

    @property
    def line(self) -> Tuple[bool, bool]:
        """What an event says of the call: (in the conference, on hold); events are ordered on it."""
        return self.present, self.hold


@dataclass(frozen=True)
class Transition:
    """One change of the wanted or confirmed recording state."""

    at: float
    kind: str  # "wanted" | "confirmed" | "announced"
    state: str  # a recording state; for "announced": played | failed | skipped
    recording_sid: Optional[str] = None


@dataclass(frozen=True)
class Caller:
    """One call's connection to the conference, for the conversation record (our clock)."""

    from_: str = ""
    to: str = ""
    joined_at: Optional[float] = None
    left_at: Optional[float] = None
    record: bool = False  # gets a recording of its own voice (PARTICIPANT_RECORDING)
    host: bool = False  # dialed in from one of the room's HOST_NUMBERS
    held_at: Optional[float] = None  # on hold since
    holds: tuple = ()  # (start, end) of each hold that ended


@dataclass(frozen=True)
class RecordingInfo:
    """What a recording's callbacks told us beyond its state."""

    call_sid: Optional[str] = None  # set for a participant's own recording
    url: Optional[str] = None
    duration_s: Optional[float] = None
    missing: Optional[str] = None  # why there is no audio for it (yet), for the conversation record


@dataclass(frozen=True)
class TalkEvents:
    """One call's speaker events (TALK_TIME), by SignalWire's Timestamp: spans come from them (quorum/talk.py)."""

    starts: tuple = ()  # Timestamps of participant-speech-start, ascending, each once
    stops: tuple = ()  # ... of participant-speech-stop


@dataclass(frozen=True)
class SecurePause:
    """An agent's secure pause (PCI): nothing records, whatever the quorum says, until resumed or `until`."""

    start: float  # our clock
    until: float  # SECURE_PAUSE_MAX_S after `start`: then it times out and the quorum rule applies again
    by: str  # who asked: "api" (the API token) or "dashboard"
    reason: str = ""
    end: Optional[float] = None  # None while it is on
    ended: str = ""  # how it ended: resumed | timed-out
    resumed_by: str = ""  # who resumed it, as `by`


@dataclass(frozen=True)
class Conference:
    """Everything Quorum knows about the live conference in one room."""

    room: str
    conference_sid: Optional[str] = None
    participants: Dict[str, Presence] = field(default_factory=dict)
    recordings: Dict[str, str] = field(default_factory=dict)  # sid -> RECORDING|PAUSED|UNSURE|DOUBT|GONE|ABANDONED
    recording_versions: Dict[str, int] = field(default_factory=dict)  # sid -> version that last set its state
    refused: Dict[str, str] = field(default_factory=dict)  # sid -> the target the API refused (4xx)
    recording_info: Dict[str, RecordingInfo] = field(default_factory=dict)
    callers: Dict[str, Caller] = field(default_factory=dict)
    unrecordable: tuple = ()  # calls whose own recording SignalWire refused to start
    rule: RoomRule = RoomRule()  # the room's rule when the conference began
    announce_tries: int = 0  # attempts left at playing RECORDING_ANNOUNCEMENT for the latest start or resume
    wanted: str = PAUSED
    verified: bool = False  # its state is trusted: conference-start seen, or rebuilt from the REST API
    recheck: bool = False  # a confirmation REST read is wanted, after any command due
    version: int = 0  # bumped by the store on every change
    read_version: int = 0  # the version a REST read last confirmed
    read_at: float = 0.0  # our clock: when a REST read last answered (the repair schedule every process shares)
    ended: bool = False
    status: str = LIVE  # LIVE, then PROCESSING once ended and every recording has reported its end
    started_at: float = 0.0  # SignalWire's clock: orders conferences that share a room
    opened_at: float = 0.0  # our clock, as are ended_at and the confirmed transitions
    updated_at: float = 0.0  # newest event, either clock: only compared with STALE_AFTER_S
    ended_at: Optional[float] = None
    timeline: tuple = ()
    process_after: float = 0.0  # our clock: archiving was put off (SignalWire unreachable...) until then
    talk: Dict[str, TalkEvents] = field(default_factory=dict)  # call sid -> its speaker events (TALK_TIME)
    secure_pauses: tuple = ()  # SecurePause, oldest first (bounded): the last is on while its `end` is None

    @memo
    def _on_the_line(self) -> tuple:
        """Computed once per (immutable) conference: every decision asks for it."""
        return tuple(sorted(sid for sid, p in self.participants.items() if p.present))

    def present(self) -> List[str]:
        """CallSids in the conference, on hold or not."""
        return list(self._on_the_line)

    def counted(self) -> List[str]:
        """CallSids that count toward the quorum: in the conference, and not on hold unless the rule says so."""
        hold_counts = self.rule.hold_counts_as_present
        return [sid for sid in self._on_the_line if hold_counts or not self.participants[sid].hold]

    def secure_pause(self) -> Optional[SecurePause]:
        """The secure pause on now, if any (quorum/secure_pause.py): while it is, nothing records."""
        last = self.secure_pauses[-1] if self.secure_pauses else None
        return last if last is not None and last.end is None else None

    def to_dict(self) -> dict:
        """A JSON-ready copy: the JSON `dataclasses.asdict` gives, made faster."""
        return plain(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Conference":
        """Inverse of `to_dict`."""
        data = dict(data)
        data["participants"] = {k: Presence(**v) for k, v in data["participants"].items()}
        data["recording_info"] = {k: RecordingInfo(**v) for k, v in data["recording_info"].items()}
        data["callers"] = {
            k: Caller(**{**v, "holds": tuple(map(tuple, v.get("holds", ())))}) for k, v in data["callers"].items()
        }
        rule = data.get("rule") or {}
        data["rule"] = RoomRule(**{**rule, "host_numbers": tuple(rule.get("host_numbers", ()))})
        data["unrecordable"] = tuple(data["unrecordable"])
        data["timeline"] = tuple(Transition(**t) for t in data["timeline"])
        data["talk"] = {k: TalkEvents(tuple(v["starts"]), tuple(v["stops"])) for k, v in data.get("talk", {}).items()}
        data["secure_pauses"] = tuple(SecurePause(**p) for p in data.get("secure_pauses", ()))  # older JSON: none
        return cls(**data)


Mutation = Callable[[Optional[Conference]], Optional[Conference]]
EventMutation = Callable[[Optional[Conference], Optional[dict]], Optional[Conference]]  # also told the caller record


def bump(current: Optional[Conference], result: Optional[Conference]) -> Optional[Conference]:
    """The mutation's result with the next version: every change, by any process, gets a new one."""
    if result is None or result is current:
        return result
    base = current.version if current is not None else result.version
    return evolve(result, version=base + 1)


def alone(store: "StateStore", name: str, ttl_s: float, work: Callable[[], object], otherwise=None):
    """`work()` under the store's lock `name`, so one process at a time does it; `otherwise` (nothing
    done) while another process holds the lock."""
    token = store.try_lock(name, ttl_s)
    if token is None:
        return otherwise
    try:
        return work()
    finally:
        store.unlock(name, token)


def parked_key(room: str, conference_sid: str) -> str:
    """Where an ended conference waits for its recordings once a newer one has taken its room."""
    return f"{room}#{conference_sid}"


class StateStore(Protocol):
    """What the controller needs from a store; the Redis store implements the same."""

    def get(self, room: str) -> Optional[Conference]:
        """The conference in `room`, or None."""

    def mutate(self, room: str, fn: Mutation, release: Optional[Tuple[str, str]] = None) -> Optional[Conference]:
        """Atomically replace the room's conference with `fn(current)` (None deletes it), then `unlock(*release)`."""

    def mutate_unless_retired(
        self, room: str, fn: EventMutation, conference_sid: str, call_sid: Optional[str] = None
    ) -> Tuple[bool, Optional[Conference]]:
        """Unless `conference_sid` is retired, `mutate` with `fn(current, what remember_call kept for call_sid)`;
        returns (retired, result)."""

    def rooms(self) -> List[str]:
        """Every room with live state."""

    def conferences(self) -> List[Tuple[str, Conference]]:
        """(room, conference) for every room with live state."""

    def count_rooms(self) -> int:
        """How many rooms have state, without loading any (for /healthz)."""

    def retire(self, conference_sid: str) -> None:
        """Remember that a conference is over so late callbacks cannot revive it."""

    def is_retired(self, conference_sid: str) -> bool:
        """Whether `retire` was called for this conference (recently)."""

    def remember_call(self, call_sid: str, caller: dict) -> None:
        """Keep who a call is (from, to) from the voice webhook until it joins its conference."""

    def recall_call(self, call_sid: str) -> Optional[dict]:
        """What `remember_call` kept, or None."""

    def try_lock(self, name: str, ttl_s: float) -> Optional[str]:
        """A token if this process may act on `name` now (across processes), else None."""

    def try_lock_and_get(self, name: str, ttl_s: float, room: str) -> Tuple[Optional[str], Optional[Conference]]:
        """`try_lock(name, ttl_s)`, then `get(room)` (read once the lock is taken, if it was)."""

    def unlock(self, name: str, token: str) -> None:
        """Release a lock taken with `try_lock`."""

    def take_reads(self, count: int, per_second: int) -> bool:
        """Whether `count` more REST reads fit this second's budget, shared by every process."""

    def ping(self) -> bool:
        """Whether the store answers."""


class MemoryStore:
    """In-process store: right for one process (threads welcome), not for several workers."""

    LOCK_STRIPES = 64
    RETIRED_LIMIT = 10_000
    CALLS_LIMIT = 50_000

    def __init__(self) -> None:
        self._conferences: Dict[str, Conference] = {}
        # Striped locks: per-room exclusion without a lock table that grows with rooms.
        self._locks = [threading.Lock() for _ in range(self.LOCK_STRIPES)]
        self._retired: "OrderedDict[str, None]" = OrderedDict()
        self._sets_lock = threading.Lock()
        self._calls: "OrderedDict[str, dict]" = OrderedDict()
        self._read_window = [0, 0]  # [second, reads taken in it]

    def _lock(self, room: str) -> threading.Lock:
        """The stripe lock guarding `room`."""
        return self._locks[zlib.crc32(room.encode()) % self.LOCK_STRIPES]

    def get(self, room: str) -> Optional[Conference]:
        """The conference in `room`, or None."""
        return self._conferences.get(room)

    def mutate(self, room: str, fn: Mutation, release: Optional[Tuple[str, str]] = None) -> Optional[Conference]:
        """Apply `fn` under the room's lock; never call the API inside `fn`. `release` is `unlock`ed after.
        Conferences are shared, not copied: `fn` must return a new one (as `policy` does)."""
        with self._lock(room):
            current = self._conferences.get(room)
            result = bump(current, fn(current))
            if result is not current:
                self._put(room, result)
        if release is not None:
            self.unlock(*release)
        return result

    def _put(self, room: str, conf: Optional[Conference]) -> None:
        """Set the room's conference (None: delete it), under its lock (quorum/state_file.py writes it through)."""
        if conf is None:
            del self._conferences[room]
        else:
            self._conferences[room] = conf

    def mutate_unless_retired(
        self, room: str, fn: EventMutation, conference_sid: str, call_sid: Optional[str] = None
    ) -> Tuple[bool, Optional[Conference]]:
        """Check the retired set, recall the caller, then `mutate`: (retired, result)."""
        if self.is_retired(conference_sid):
            return True, None
        caller = self.recall_call(call_sid) if call_sid else None
        return False, self.mutate(room, lambda conf: fn(conf, caller))

    def rooms(self) -> List[str]:
        """Every room with live state."""
        return list(self._conferences)

    def conferences(self) -> List[Tuple[str, Conference]]:
        """(room, conference) for every room with live state."""
        return list(self._conferences.items())

    def count_rooms(self) -> int:
        """How many rooms have state."""
        return len(self._conferences)

    def retire(self, conference_sid: str) -> None:
        """Remember the sid, forgetting the oldest beyond RETIRED_LIMIT."""
        with self._sets_lock:
            self._keep("retired", self._retired, conference_sid, None)

    def remember_call(self, call_sid: str, caller: dict) -> None:
        """Keep the caller, forgetting the oldest beyond CALLS_LIMIT."""
        with self._sets_lock:
            self._keep("calls", self._calls, call_sid, caller)

    def _keep(self, kind: str, items: "OrderedDict", key: str, value) -> List[str]:
        """Insert as newest into the bounded set `kind`, under the sets' lock; returns the oldest keys dropped."""
        items[key] = value
        items.move_to_end(key)
        limit = self.CALLS_LIMIT if kind == "calls" else self.RETIRED_LIMIT
        return [items.popitem(last=False)[0] for _ in range(len(items) - limit)]

    def recall_call(self, call_sid: str) -> Optional[dict]:
        """The caller kept for `call_sid`, or None (one lookup, atomic under the GIL: no lock to wait for)."""
        return self._calls.get(call_sid)

    def is_retired(self, conference_sid: str) -> bool:
        """Whether the conference was retired (one lookup, atomic under the GIL: no lock to wait for)."""
        return conference_sid in self._retired

    def take_reads(self, count: int, per_second: int) -> bool:
        """A fixed one-second window of this process's reads (it is the only process)."""
        with self._sets_lock:
            second = int(time.time())
            taken = (self._read_window[1] if self._read_window[0] == second else 0) + count
            if taken > per_second:
                return False
            self._read_window = [second, taken]
            return True

    def try_lock(self, name: str, ttl_s: float) -> Optional[str]:
        """One process only: the command queue already serialises each room."""
        return "local"

    def try_lock_and_get(self, name: str, ttl_s: float, room: str) -> Tuple[Optional[str], Optional[Conference]]:
        """`try_lock`, then `get`."""
        return self.try_lock(name, ttl_s), self.get(room)

    def unlock(self, name: str, token: str) -> None:
        """Nothing to release in one process."""

    def ping(self) -> bool:
        """Memory always answers."""
        return True
