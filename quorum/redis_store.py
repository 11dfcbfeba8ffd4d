"""The Redis store: state shared by several workers and hosts, surviving restarts.

Keys (NS is REDIS_NAMESPACE, default "quorum"):
- `NS:conf:{room}`     JSON of the room's Conference; expires END_GRACE_S + 1 h after the
                       conference ends, or 12 h (STALE_AFTER_S) after its last write otherwise.
- `NS:rooms`           set of rooms that may have state (pruned as their keys expire).
- `NS:retired:{sid}`   marks an ended ConferenceSid so late callbacks cannot revive it; 24 h.
- `NS:call:{sid}`      who a call is (from, to), kept by the voice webhook until it joins; 24 h.
- `NS:reads:{second}`  REST reads taken in that second, across processes (RECONCILE_MAX_READS_PER_S); 2 s.
- `NS:lock:{name}`     short-lived locks: `room:{room}` while a REST command for the room is
                       in flight, `reconciler` while one process runs the periodic reconciler.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import List, Optional

import redis

from recording_state import LIVE, STALE_AFTER_S, Conference, Mutation, bump

RETIRED_TTL_S = 24 * 3600

# Write the conference only if its key still holds what we read (by SHA1; '' for no key).
_COMPARE_AND_SET = """
local current = redis.call('get', KEYS[1])
local seen = current and redis.sha1hex(current) or ''
if seen ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('del', KEYS[1])
  redis.call('srem', KEYS[2], ARGV[4])
else
  redis.call('set', KEYS[1], ARGV[2], 'EX', ARGV[3])
  redis.call('sadd', KEYS[2], ARGV[4])
end
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
    """Store backed by Redis; each mutation is an optimistic WATCH/MULTI/EXEC transaction."""

    def __init__(self, client: redis.Redis, namespace: str = "quorum", ended_ttl_s: float = 300.0):
        self._redis = client
        self._ns = namespace
        # An ended conference waits END_GRACE_S for its recordings, then the sweeper hands it on;
        # the hour covers a sweeper that is late, while still bounding what a dead cluster leaves.
        self._ended_ttl_s = int(ended_ttl_s) + 3600
        self._unlock = client.register_script(_UNLOCK)
        self._compare_and_set = client.register_script(_COMPARE_AND_SET)
        self._take_reads = client.register_script(_TAKE_READS)

    @classmethod
    def from_url(cls, url: str, namespace: str, ended_ttl_s: float) -> "RedisStore":
        """Connect with timeouts so a dead Redis fails a request instead of hanging it."""
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2, health_check_interval=30)
        return cls(client, namespace, ended_ttl_s)

    def _key(self, kind: str, name: str) -> str:
        """A namespaced key."""
        return f"{self._ns}:{kind}:{name}"

    def get(self, room: str) -> Optional[Conference]:
        """The conference in `room`, or None."""
        return _decode(self._redis.get(self._key("conf", room)))

    def mutate(self, room: str, fn: Mutation) -> Optional[Conference]:
        """Apply `fn` atomically: read, compute, then write only if nobody wrote in between
        (compare-and-set in one Lua call); on a concurrent change, retry with fresh state."""
        key = self._key("conf", room)
        while True:
            raw = self._redis.get(key)
            current = _decode(raw)
            result = bump(current, fn(current))
            if result is current:
                return result  # a duplicate or stale event: nothing to write
            seen = hashlib.sha1(raw).hexdigest() if raw is not None else ""
            value, ttl = ("", 0) if result is None else (_encode(result), self._ttl(result))
            if self._compare_and_set(keys=[key, f"{self._ns}:rooms"], args=[seen, value, ttl, room]):
                return result

    def _ttl(self, conf: Conference) -> int:
        """Seconds a conference's key lives: renewed on every write, short once it has ended."""
        if conf.ended and conf.status == LIVE:
            return self._ended_ttl_s
        return STALE_AFTER_S  # live, or being archived (which must outlive any grace period)

    def rooms(self) -> List[str]:
        """Rooms with live state; names whose key has expired are pruned from the set."""
        rooms_key = f"{self._ns}:rooms"
        names = sorted(name.decode() for name in self._redis.smembers(rooms_key))
        if not names:
            return []
        exists = self._redis.mget([self._key("conf", name) for name in names])
        gone = [name for name, value in zip(names, exists) if value is None]
        if gone:
            self._redis.srem(rooms_key, *gone)
        return [name for name, value in zip(names, exists) if value is not None]

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
        """Keep the caller for a day (no call lasts longer)."""
        self._redis.set(self._key("call", call_sid), json.dumps(caller), ex=RETIRED_TTL_S)

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

    def unlock(self, name: str, token: str) -> None:
        """Release `name` if this token still holds it."""
        self._unlock(keys=[self._key("lock", name)], args=[token])

    def ping(self) -> bool:
        """Whether Redis answers."""
        try:
            return bool(self._redis.ping())
        except redis.RedisError:
            return False


def _encode(conf: Conference) -> str:
    """A Conference as compact JSON."""
    return json.dumps(conf.to_dict(), separators=(",", ":"))


def _decode(raw: Optional[bytes]) -> Optional[Conference]:
    """A Conference from its stored JSON."""
    return None if raw is None else Conference.from_dict(json.loads(raw))
