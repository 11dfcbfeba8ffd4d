"""The command queue's writes to the store: one room's at a time in a process, kept when the store does not answer.

A write that fails after its REST call (Redis down) is kept with the lock it holds and made again by `flush`
once the store answers, releasing that lock then instead of leaving other processes to wait for its TTL.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import zlib
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, Optional, Tuple

import redis

from recording_state import Conference, StateStore

log = logging.getLogger("quorum.commands")

STORE_ERRORS = (redis.RedisError,)  # the store did not answer (MemoryStore never raises)
STRIPES = 64  # per-room exclusion of a write and what follows it, without a lock per room


def nothing(conf: Optional[Conference]) -> None:
    """Nothing follows the write."""


@dataclass(frozen=True)
class _Kept:
    """A write the store did not take: it releases the lock `token` holds once made."""

    room: str
    change: Callable
    token: str
    then: Callable[[Optional[Conference]], None]  # what follows the write (the events it sends)


class Writes:
    """Writes that release the lock they were computed under, kept for `flush` when the store does not answer."""

    def __init__(self, store: StateStore, stripes: int = STRIPES):
        self._store = store
        self._kept: Dict[str, _Kept] = {}  # lock name -> the write that is to release it
        self._kept_lock = threading.Lock()
        self._stripes = [threading.Lock() for _ in range(stripes)]

    def write(
        self,
        room: str,
        lock: Tuple[str, str],
        change: Callable,
        then: Callable = nothing,
        lost: Optional[Tuple[Callable, Callable]] = None,
    ) -> Optional[Conference]:
        """`mutate` the room with `change`, releasing `lock` (name, token), then `then(result)`: one room's writes
        and what follows each run one at a time here, so the events they send leave in the order of the writes.
        If the store does not answer, `lost` (change, then; default the same) is kept with the lock for `flush`
        and the error raised."""
        with self._stripes[zlib.crc32(room.encode()) % len(self._stripes)]:
            try:
                conf = self._store.mutate(room, change, lock)
            except STORE_ERRORS:
                self._keep(room, lock, *(lost or (change, then)))
                raise
            then(conf)
        return conf

    def release(self, room: str, lock: Tuple[str, str]) -> None:
        """Unlock with no write; if the store does not answer, the release is kept for `flush`."""
        try:
            self._store.unlock(*lock)
        except STORE_ERRORS:
            self._keep(room, lock, lambda conf: conf, nothing)
            raise

    @contextlib.contextmanager
    def releasing_on_error(self, room: str, lock: Tuple[str, str]) -> Iterator[None]:
        """Release `lock` if the block raises before a write released it or kept it for `flush`."""
        try:
            yield
        except BaseException:
            if not self.kept(lock[0]):
                self.release(room, lock)
            raise

    def kept(self, name: str) -> bool:
        """Whether a kept write is to release the lock `name`."""
        with self._kept_lock:
            return name in self._kept

    def flush(self, room: str) -> None:
        """Make the room's kept writes, each releasing its lock (raises while the store still does not answer,
        what is left kept)."""
        with self._kept_lock:
            kept = [(name, entry) for name, entry in self._kept.items() if entry.room == room]
        for name, entry in kept:
            with self._kept_lock:
                if self._kept.get(name) is not entry:
                    continue
                del self._kept[name]
            self.write(room, (name, entry.token), entry.change, entry.then)
            log.info("room=%s action=write-kept lock=%s", room, name)

    def _keep(self, room: str, lock: Tuple[str, str], change: Callable, then: Callable) -> None:
        """Remember a write the store did not take, and the lock it is to release."""
        with self._kept_lock:
            self._kept[lock[0]] = _Kept(room, change, lock[1], then)
