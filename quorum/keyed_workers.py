"""A thread pool that runs `work(key)` never twice at once for the same key."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Set

from quorum import redis_outage

log = logging.getLogger("quorum.workers")


class KeyedWorkers:
    """Submitting a key that is already running makes it run once more afterwards, so work
    submitted meanwhile is never missed, and bursts of submits collapse into one extra run."""

    def __init__(self, work: Callable[[str], None], workers: int, name: str):
        self._work = work
        self._name = name
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._active: Set[str] = set()
        self._again: Set[str] = set()
        self._closed = False

    def submit(self, key: str) -> None:
        """Run `work(key)` soon; never blocks on the work itself."""
        with self._lock:
            if self._closed:
                return  # shutting down: work that lands now (a late read's kick) has nothing to run on
            if key in self._active:
                self._again.add(key)
                return
            self._active.add(key)
        self._pool.submit(self._run, key)

    def depth(self) -> int:
        """Keys waiting or running."""
        with self._lock:
            return len(self._active)

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing is waiting or running (tests, shutdown); False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._active, timeout)

    def shutdown(self) -> None:
        """Stop taking work and let what runs finish."""
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=True)

    def _run(self, key: str) -> None:
        """Work on `key` until no submit came in meanwhile."""
        while True:
            with self._lock:
                self._again.discard(key)
            try:
                self._work(key)
            except Exception as error:  # a worker must never die silently with the key marked active
                if not redis_outage.reported(error):
                    log.exception("%s: work on %s crashed", self._name, key)
            with self._lock:
                if key not in self._again:
                    self._active.discard(key)
                    self._idle.notify_all()
                    return
