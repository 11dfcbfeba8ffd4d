"""The Redis store: state shared by several workers and hosts, surviving restarts.

Keys (NS is REDIS_NAMESPACE, default "quorum"):
- `NS:conf:{room}`     JSON of the room's Conference; expires END_GRACE_S after the conference
                       ends, or STALE_AFTER_S after its last event while live.
- `NS:rooms`           set of rooms that may have state (pruned as their keys expire).
- `NS:retired:{sid}`   marks an ended ConferenceSid so late callbacks cannot revive it; 24 h.
- `NS:call:{sid}`      who a call is (from, to), kept by the voice webhook until it joins; 24 h.
- `NS:lock:{name}`     short-lived locks: `room:{room}` while a REST command for the room is
                       in flight, `reconciler` while one process runs the periodic reconciler.
"""

from __future__ import annotations

import json
import uuid
from typing import List, Optional

import redis

from recording_state import STALE_AFTER_S, Conference, Mutation

RETIRED_TTL_S = 24 * 3600

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
        self._ended_ttl_s = max(1, int(ended_ttl_s) + 1)
        self._unlock = client.register_script(_UNLOCK)

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
        """Apply `fn` atomically; on a concurrent change by another worker, retry with fresh state."""
        key = self._key("conf", room)
        with self._redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    result = fn(_decode(pipe.get(key)))
                    pipe.multi()
                    self._write(pipe, room, key, result)
                    pipe.execute()
                    return result
                except redis.WatchError:
                    continue

    def _write(self, pipe, room: str, key: str, conf: Optional[Conference]) -> None:
        """Queue the writes that store (or delete) one conference."""
        rooms = f"{self._ns}:rooms"
        if conf is None:
            pipe.delete(key)
            pipe.srem(rooms, room)
            return
        ttl = self._ended_ttl_s if conf.ended else STALE_AFTER_S
        pipe.set(key, json.dumps(conf.to_dict(), separators=(",", ":")), ex=ttl)
        pipe.sadd(rooms, room)

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


def _decode(raw: Optional[bytes]) -> Optional[Conference]:
    """A Conference from its stored JSON."""
    return None if raw is None else Conference.from_dict(json.loads(raw))
