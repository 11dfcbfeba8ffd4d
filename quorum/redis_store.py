"""The Redis store: state shared by several workers and hosts, surviving restarts.

Keys (NS is REDIS_NAMESPACE, default "quorum"):
- `NS:conf:{room}`     JSON of the room's Conference; expires END_GRACE_S + 1 h after the
                       conference ends, or 12 h (STALE_AFTER_S) after its last write otherwise.
                       Each process keeps its last copy of a room (a bounded LRU) as the starting
                       guess of a mutation, verified by the write itself: one round trip per change.
- `NS:rooms`           set of rooms that may have state (pruned as their keys expire).
- `NS:retired:{sid}`   marks an ended ConferenceSid so late callbacks cannot revive it; 24 h.
- `NS:call:{sid}`      who a call is (from, to), kept by the voice webhook until it joins; 24 h. Each process
                       keeps the records it wrote or was answered (a smaller LRU) as its guess of them, verified
                       by the same compare-and-set: a callback's change, retired check and caller cost one trip.
- `NS:reads:{second}`  REST reads taken in that second, across processes (RECONCILE_MAX_READS_PER_S); 2 s.
- `NS:lock:{name}`     short-lived locks: `room:{room}` while a REST command for the room is
                       in flight (released by the compare-and-set recording its outcome),
                       `reconciler` while one process runs the periodic reconciler.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections import OrderedDict
from typing import Generic, List, Optional, Set, Tuple, TypeVar, cast

import redis

from recording_state import LIVE, STALE_AFTER_S, Conference, EventMutation, Mutation, bump

RETIRED_TTL_S = 24 * 3600

# What a process keeps of the conferences it last saw, as JSON bytes: decoded they take about three times that,
# so some 25 MB, or about 1900 rooms of the benchmark's size (4 KB); a room's full timeline makes it 70 KB.
CACHE_BYTES = 8 << 20
# Caller records are some 60 bytes of JSON: about 8000 calls, each wanted from its dial-in until it hangs up.
CALLERS_BYTES = 512 << 10
# Keys per MGET when listing every room: a thousand rooms come back in one pipelined round trip, and no
# single command keeps Redis from serving the webhooks for long.
MGET_BATCH = 500

# Apply ARGV[2] ('set', 'del', or 'check': a mutation that changed nothing) only if the key still holds what the
# caller started from (the SHA1 of its JSON; '' for no key) and answer 1; else answer {what it holds now}, so
# the retry needs no GET. By content, not `version`: a room deleted (or flushed) and created again counts
# from 1 again, and a stale copy of the old conference at the same version must not pass.
# A callback's change also names KEYS[3], its conference's retired mark: if set, nothing is written and the
# answer is 0. KEYS[4], if given, is the caller record the change was computed with (ARGV[6], '' for none),
# checked like the room: {room, caller} as they are now is the answer to any mismatch.
# A command's change instead names, as KEYS[3], the lock it holds with token ARGV[7] ('' for none): released
# with the write, as `_UNLOCK` would, so the command's record and the lock's release cost one round trip.
_COMPARE_AND_SET = """
local lock = ARGV[7] ~= '' and KEYS[3]
if KEYS[3] and not lock and redis.call('exists', KEYS[3]) == 1 then return 0 end
local current = redis.call('get', KEYS[1])
local seen = current and redis.sha1hex(current) or ''
local caller = false
if KEYS[4] then caller = redis.call('get', KEYS[4]) end
if seen ~= ARGV[1] or (caller or '') ~= ARGV[6] then return {current, caller} end
if ARGV[2] == 'del' then
  redis.call('del', KEYS[1])
  redis.call('srem', KEYS[2], ARGV[5])
elseif ARGV[2] == 'set' then
  redis.call('set', KEYS[1], ARGV[3], 'EX', ARGV[4])
  redis.call('sadd', KEYS[2], ARGV[5])
end
if lock and redis.call('get', lock) == ARGV[7] then redis.call('del', lock) end
return 1
"""

# Count reads in this second's window unless that would pass the budget.
_TAKE_READS = """
local taken = tonumber(redis.call('get', KEYS[1]) or '0')
if taken + tonumber(ARGV[1]) > tonumber(ARGV[2]) then return 0 end
redis.call('incrby', KEYS[1], ARGV[1])
redis.call('expire', KEYS[1], 2)
return 1
"""

# Delete the lock only if we still own it: a lock that expired and was re-taken is not ours.
_UNLOCK = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class RedisStore:
    """Store backed by Redis; each mutation is one optimistic compare-and-set Lua call."""

    def __init__(self, client: redis.Redis, namespace: str = "quorum", ended_ttl_s: float = 300.0):
        self._redis = client
        self._ns = namespace
        # An ended conference waits END_GRACE_S for its recordings, then the sweeper hands it on;
        # the hour covers a sweeper that is late, while still bounding what a dead cluster leaves.
        self._ended_ttl_s = int(ended_ttl_s) + 3600
        self._unlock = client.register_script(_UNLOCK)
        self._compare_and_set = client.register_script(_COMPARE_AND_SET)
        self._take_reads = client.register_script(_TAKE_READS)
        self._recent: _Recent[Conference] = _Recent(CACHE_BYTES)
        self._callers: _Recent[dict] = _Recent(CALLERS_BYTES)

    @classmethod
    def from_url(cls, url: str, namespace: str, ended_ttl_s: float) -> "RedisStore":
        """Connect with timeouts so a dead Redis fails a request instead of hanging it."""
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2, health_check_interval=30)
        return cls(client, namespace, ended_ttl_s)

    def _key(self, kind: str, name: str) -> str:
        """A namespaced key."""
        return f"{self._ns}:{kind}:{name}"

    def get(self, room: str) -> Optional[Conference]:
        """The conference in `room`, always read from Redis: the command path, the reconciler and the
        dashboards decide on what it says. JSON this process has seen before is not decoded again."""
        # Without decode_responses Redis answers bytes; redis-py's types allow str for clients made with it.
        return self._seen(room, cast(Optional[bytes], self._redis.get(self._key("conf", room))))[1]

    def mutate(self, room: str, fn: Mutation, release: Optional[Tuple[str, str]] = None) -> Optional[Conference]:
        """Apply `fn` to this process's last copy of the room and write the result back in one
        compare-and-set; when another writer got there first, its answer is the state to retry from.
        `release`: (name, token) of a lock to `unlock` in the write that succeeds."""
        guards, token = ([self._key("lock", release[0])], release[1]) if release else ([], "")
        return self._mutate(room, lambda conf, caller: fn(conf), guards, None, token)[1]

    def mutate_unless_retired(
        self, room: str, fn: EventMutation, conference_sid: str, call_sid: Optional[str] = None
    ) -> Tuple[bool, Optional[Conference]]:
        """`mutate` with the retired check and the caller's record in the same compare-and-set: the caller is
        this process's guess, verified there like the room's copy. Returns (retired, result)."""
        guards = [self._key("retired", conference_sid)] + ([self._key("call", call_sid)] if call_sid else [])
        return self._mutate(room, fn, guards, call_sid)

    def _mutate(
        self, room: str, fn: EventMutation, guards: List[str], call_sid: Optional[str], token: str = ""
    ) -> Tuple[bool, Optional[Conference]]:
        """The compare-and-set loop of `mutate` and `mutate_unless_retired`; `guards`: KEYS[3:], `token`: ARGV[7]."""
        keys = [self._key("conf", room), f"{self._ns}:rooms", *guards]
        digest, current = self._recent.get(room)
        heard, caller = self._callers.get(call_sid) if call_sid else ("", None)
        while True:
            result = bump(current, fn(current, caller))
            op, data, ttl = self._write_of(current, result)
            reply = self._compare_and_set(keys=keys, args=[digest, op, data, ttl, room, heard, token])
            if reply == 0:
                return True, None
            if reply == 1:
                if result is not current:
                    self._recent.put(room, _sha1(data), len(data), result)  # a deletion forgets the room
                return False, result
            digest, current = self._seen(room, reply[0])
            heard, caller = self._heard(call_sid, reply[1])

    def _write_of(self, current: Optional[Conference], result: Optional[Conference]) -> Tuple[str, bytes, int]:
        """What the compare-and-set does for a mutation's result: (op, JSON, TTL)."""
        if result is current:
            return "check", b"", 0  # a duplicate or stale event: nothing to write, but `current` must be fresh
        if result is None:
            return "del", b"", 0
        return "set", _encode(result), self._ttl(result)

    def _seen(self, room: str, raw: Optional[bytes]) -> Tuple[str, Optional[Conference]]:
        """(SHA1, conference) of what Redis holds for `room`, remembered as this process's copy."""
        digest = _sha1(raw) if raw is not None else ""
        known, conf = self._recent.get(room)
        if digest != known:
            conf = _decode(raw)
            self._recent.put(room, digest, len(raw or b""), conf)
        return digest, conf

    def _heard(self, call_sid: Optional[str], raw: Optional[bytes]) -> Tuple[str, Optional[dict]]:
        """(JSON, record) of the caller Redis holds for `call_sid`, remembered as this process's guess."""
        if call_sid is None:
            return "", None
        heard = raw.decode() if raw is not None else ""
        caller = json.loads(heard) if raw is not None else None
        self._callers.put(call_sid, heard, len(heard), caller)
        return heard, caller

    def _ttl(self, conf: Conference) -> int:
        """Seconds a conference's key lives: renewed on every write, short once it has ended."""
        if conf.ended and conf.status == LIVE:
            return self._ended_ttl_s
        return STALE_AFTER_S  # live, or being archived (which must outlive any grace period)

    def rooms(self) -> List[str]:
        """Rooms with live state; names whose key has expired are pruned from the set."""
        return [name for name, _ in self._stored()]

    def conferences(self) -> List[Tuple[str, Conference]]:
        """(room, conference) for every room with live state: one SMEMBERS, then one pipeline of MGETs."""
        # `_seen` of JSON that is there (not None) is its Conference, which its Optional return cannot say.
        return [(name, cast(Conference, self._seen(name, raw)[1])) for name, raw in self._stored()]

    def _stored(self) -> List[Tuple[str, bytes]]:
        """(room, JSON) of every room in the set, sorted; names whose key has expired are pruned from the set."""
        rooms_key = f"{self._ns}:rooms"
        names = sorted(name.decode() for name in cast(Set[bytes], self._redis.smembers(rooms_key)))  # as in `get`
        pipe = self._redis.pipeline(transaction=False)
        for start in range(0, len(names), MGET_BATCH):
            pipe.mget([self._key("conf", name) for name in names[start : start + MGET_BATCH]])
        values = [value for batch in pipe.execute() for value in batch]
        gone = [name for name, value in zip(names, values) if value is None]
        if gone:
            self._redis.srem(rooms_key, *gone)
        return [(name, value) for name, value in zip(names, values) if value is not None]

    def count_rooms(self) -> int:
        """Rooms in the set (one SCARD): may still count a key that expired since `rooms` last pruned it."""
        return self._redis.scard(f"{self._ns}:rooms")

    def retire(self, conference_sid: str) -> None:
        """Remember an ended conference for a day."""
        self._redis.set(self._key("retired", conference_sid), 1, ex=RETIRED_TTL_S)

    def is_retired(self, conference_sid: str) -> bool:
        """Whether the conference was retired in the last day."""
        return bool(self._redis.exists(self._key("retired", conference_sid)))

    def remember_call(self, call_sid: str, caller: dict) -> None:
        """Keep the caller for a day (no call lasts longer), and as this process's guess of it."""
        heard = json.dumps(caller)
        self._redis.set(self._key("call", call_sid), heard, ex=RETIRED_TTL_S)
        self._callers.put(call_sid, heard, len(heard), caller)

    def recall_call(self, call_sid: str) -> Optional[dict]:
        """The caller kept for `call_sid`, or None."""
        raw = self._redis.get(self._key("call", call_sid))
        return None if raw is None else json.loads(raw)

    def take_reads(self, count: int, per_second: int) -> bool:
        """A fixed one-second window counted in Redis, so every process shares one budget."""
        return bool(self._take_reads(keys=[self._key("reads", str(int(time.time())))], args=[count, per_second]))

    def try_lock(self, name: str, ttl_s: float) -> Optional[str]:
        """Take `name` for `ttl_s` seconds if free; the expiry frees it if this process dies."""
        token = uuid.uuid4().hex
        taken = self._redis.set(self._key("lock", name), token, nx=True, px=max(1, int(ttl_s * 1000)))
        return token if taken else None

    def try_lock_and_get(self, name: str, ttl_s: float, room: str) -> Tuple[Optional[str], Optional[Conference]]:
        """`try_lock`, then `get(room)`, pipelined: the read runs after the lock is taken, in the same round trip."""
        token = uuid.uuid4().hex
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(self._key("lock", name), token, nx=True, px=max(1, int(ttl_s * 1000)))
        pipe.get(self._key("conf", room))
        taken, raw = pipe.execute()
        return (token if taken else None), self._seen(room, raw)[1]

    def unlock(self, name: str, token: str) -> None:
        """Release `name` if this token still holds it."""
        self._unlock(keys=[self._key("lock", name)], args=[token])

    def ping(self) -> bool:
        """Whether Redis answers."""
        try:
            return bool(self._redis.ping())
        except redis.RedisError:
            return False


V = TypeVar("V")  # what a _Recent holds: a room's Conference, or a call's caller record


class _Recent(Generic[V]):
    """The last value this process saw under each name (a room's conference, a call's caller), with what the
    compare-and-set compares it by: an LRU bounded in bytes."""

    def __init__(self, limit_bytes: int):
        self._limit = limit_bytes
        self._bytes = 0
        self._items: "OrderedDict[str, Tuple[str, V, int]]" = OrderedDict()
        self._lock = threading.Lock()

    def get(self, room: str) -> Tuple[str, Optional[V]]:
        """(digest, value) last seen under `room`; ('', None), the guess "no key", if none."""
        with self._lock:
            entry = self._items.get(room)
            if entry is None:
                return "", None
            self._items.move_to_end(room)
            return entry[:2]

    def put(self, room: str, digest: str, size: int, conf: Optional[V]) -> None:
        """Remember `conf` (`size` bytes of JSON) as the newest under `room`; None forgets it (it was deleted)."""
        with self._lock:
            old = self._items.pop(room, None)
            self._bytes -= old[2] if old else 0
            if conf is not None:
                self._items[room] = (digest, conf, size)
                self._bytes += size
            while self._bytes > self._limit:
                self._bytes -= self._items.popitem(last=False)[1][2]


def _sha1(data: bytes) -> str:
    """What the compare-and-set script compares: the hex SHA1 of the stored JSON."""
    return hashlib.sha1(data).hexdigest()


# Made once: `json.dumps` with options builds an encoder per call; `to_dict` is a tree, so no cycle checks.
_JSON = json.JSONEncoder(separators=(",", ":"), check_circular=False)


def _encode(conf: Conference) -> bytes:
    """A Conference as compact JSON."""
    return _JSON.encode(conf.to_dict()).encode()


def _decode(raw: Optional[bytes]) -> Optional[Conference]:
    """A Conference from its stored JSON."""
    return None if raw is None else Conference.from_dict(json.loads(raw))
