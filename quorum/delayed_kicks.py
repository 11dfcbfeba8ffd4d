"""Kicks of keys after a delay, on one thread: retries that hold no worker through their backoff."""

from __future__ import annotations

import heapq
import threading
import time
from typing import Callable, Dict, List, Tuple

FIRST_BACKOFF_S = 0.2
MAX_BACKOFF_S = 5.0


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
