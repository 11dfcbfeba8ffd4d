"""The read path: REST reads of conferences queued by priority, each room once, within a shared budget of GETs."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

from quorum import redis_outage
from recording_state import StateStore

log = logging.getLogger("quorum.commands")

BUDGET_POLL_S = 0.05


class ReadQueue:
    """REST reads of conferences, each room once: urgent ones (a decision waits), routine ones, then scheduled ones
    (`since`: the `read_at` their schedule saw) the longest `due` first, done only if no read has answered since;
    at most `reads_per_s` GETs per second across every process sharing the store."""

    def __init__(
        self,
        read: Callable[[str, Optional[float]], None],
        store: StateStore,
        reads_per_s: int,
        readers: int = 2,
        sleep: Callable[[float], None] = time.sleep,
    ):
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
            except Exception as error:  # a reader must never die: the next round asks again
                if not redis_outage.reported(error):
                    log.exception("read of room %s crashed", room)
            finally:
                with self._cond:
                    again = self._reading.pop(room)
                    if again < 2:
                        self._queue(room, again)
