"""Redis outages said plainly: one line naming REDIS_URL when one begins, one when it ends, never a traceback.

Quorum starts even when Redis does not answer (it may come up after Quorum): meanwhile every callback is
answered 503, which SignalWire retries, and the dashboard says Redis is down. A process has one REDIS_URL, so
one watch per process (`watch`) hears every thread's Redis errors through `reported`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Callable, Iterator, Optional
from urllib.parse import parse_qs, urlsplit

import redis

from quorum.log_throttle import Throttle, since

log = logging.getLogger("quorum.store")

POLL_S = 1.0  # how often a watch pings a Redis that stopped answering
# Errors that mean Redis cannot be reached (refused, timed out, loading, wrong password): an outage with an end.
UNREACHABLE = (redis.ConnectionError, redis.TimeoutError)


def address(url: str) -> str:
    """REDIS_URL as the log may show it: scheme, host, port and database, never a user or password."""
    parts = urlsplit(url)
    db = (parse_qs(parts.query).get("db") or [""])[0]
    if parts.scheme == "unix":
        return f"unix://{parts.path}" + (f"?db={db}" if db else "")
    host = parts.hostname or "localhost"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}:{parts.port or 6379}/{parts.path.strip('/') or db or 0}"


def describe(error: BaseException) -> str:
    """An error on one short line: its kind and message."""
    return " ".join(f"{type(error).__name__}: {error}".split())[:300]


class RedisOutage:
    """One process's view of its Redis: says when it stops answering (then pings it until it answers again, and
    says that too, with how long it was out) and, at most once a minute, when it refuses a command."""

    def __init__(self, url: str, clock: Callable[[], float] = time.monotonic, poll_s: float = POLL_S):
        self.address = address(url)
        self._client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._clock = clock
        self._poll_s = poll_s
        self._since: Optional[float] = None  # when the outage under way began
        self._refusals = Throttle(60.0, clock)
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def check_at_start(self) -> bool:
        """Ping once; if Redis does not answer, say so (Quorum starts anyway) and watch for it."""
        try:
            return bool(self._client.ping())
        except redis.RedisError as error:
            self._begin(
                error,
                logging.WARNING,
                "starting anyway; callbacks are answered 503 (SignalWire retries them) until it does",
            )
            return False

    def report(self, error: redis.RedisError) -> None:
        """A Redis error from anywhere: the first of an outage is said, the rest are already known."""
        if isinstance(error, UNREACHABLE):
            self._begin(
                error, logging.ERROR, "callbacks are answered 503 (SignalWire retries them) and background work waits"
            )
            return
        held = self._refusals.due()
        if held is not None:
            log.error("Redis at REDIS_URL=%s refused a command (%s)%s", self.address, describe(error), since(held))

    def stop(self) -> None:
        """Stop watching (the app is shutting down)."""
        global _watching
        self._stopped.set()
        if _watching is self:
            _watching = None

    def _begin(self, error: redis.RedisError, level: int, meanwhile: str) -> None:
        """Start an outage unless one is under way: one line, and a thread that waits for Redis to answer."""
        with self._lock:
            if self._since is not None or self._stopped.is_set():
                return
            self._since = self._clock()
        log.log(level, "Redis at REDIS_URL=%s does not answer (%s): %s", self.address, describe(error), meanwhile)
        threading.Thread(target=self._watch, name="quorum-redis-watch", daemon=True).start()

    def _watch(self) -> None:
        """Ping until Redis answers, then say how long it was out."""
        while not self._stopped.wait(self._poll_s):
            try:
                self._client.ping()
            except redis.RedisError:
                continue
            with self._lock:
                assert self._since is not None  # set when this watch started; only the watch clears it
                lasted, self._since = self._clock() - self._since, None
            log.warning("Redis at REDIS_URL=%s answers again after %.1f s out", self.address, lasted)
            return


_watching: Optional[RedisOutage] = None


def watch(url: str) -> RedisOutage:
    """The process's watch of REDIS_URL, from now on the one `reported` tells; pings Redis once now."""
    global _watching
    _watching = RedisOutage(url)
    _watching.check_at_start()
    return _watching


def reported(error: BaseException) -> bool:
    """Whether `error` is a Redis error, now said (once per outage when watched): then no traceback is needed."""
    if not isinstance(error, redis.RedisError):
        return False
    watching = _watching
    if watching is None:
        log.error("Redis failed (%s)", describe(error))
    else:
        watching.report(error)
    return True


@contextlib.contextmanager
def tolerated() -> Iterator[None]:
    """A block whose Redis errors are said (see `reported`) and end the block quietly; others pass through."""
    try:
        yield
    except redis.RedisError as error:
        reported(error)
