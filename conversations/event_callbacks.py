"""Signed JSON event callbacks to the user's own server (`EVENT_CALLBACK_URL`).

Body: `{"id", "type", "created_at", "data"}`. Header `X-Quorum-Signature`: hex
HMAC-SHA256 of the raw body with `EVENT_CALLBACK_SECRET`. Failed deliveries (connection
errors, timeouts, non-2xx) are retried with exponential backoff; the `id` stays the same
across retries so receivers can drop duplicates. Several deliveries run at once; the queue is
bounded (the oldest is dropped when full) and kept in an outbox (Redis, or files under
RECORDINGS_DIR) so a restart delivers what the last run could not.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import itertools
import json
import logging
import os
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, List, Optional, Protocol, Tuple

import requests

from conversations.record import iso, mix_recording
from quorum import redis_outage
from quorum.policy import ANNOUNCE, Action
from recording_state import PAUSED, RECORDING, Conference, SecurePause

log = logging.getLogger("quorum.events")

SIGNATURE_HEADER = "X-Quorum-Signature"


def recording_change(conf: Conference, action: Action, at: float) -> Optional[Tuple[str, str, dict]]:
    """The (type, id, data) of the event a confirmed pause or resume of the conference recording
    deserves, or None: SignalWire announces neither, so this is the only place users learn of them.

    Where the room plays RECORDING_ANNOUNCEMENT, `recording.resumed` waits for it and says how it went.
    """
    announces = bool(conf.rule.recording_announcement)
    if action.call_sid is not None or action.target not in (PAUSED, RECORDING, ANNOUNCE):
        return None
    if action.target == RECORDING and announces:
        return None  # sent once the announcement has played, failed or been skipped
    recording_sid = mix_recording(conf) if action.target == ANNOUNCE else action.recording_sid
    target = PAUSED if action.target == PAUSED else RECORDING
    kind = "recording.paused" if target == PAUSED else "recording.resumed"
    data = {
        "conversation_id": conf.conference_sid,
        "room": conf.room,
        "recording_sid": recording_sid,
        "at": iso(at),
        "participants": len(conf.counted()),
        "announcement": _announcement(conf) if announces and target == RECORDING else None,
    }
    return kind, f"{conf.conference_sid}.{recording_sid}.{target}.{at:.3f}", data


def secure_pause_change(conf: Conference, pause: SecurePause) -> Tuple[str, str, dict]:
    """The (type, id, data) of `recording.secure_paused` (a secure pause began) or `recording.secure_resumed` (it
    was resumed or timed out): who asked, why, until when, and how it ended."""
    data = {
        "conversation_id": conf.conference_sid,
        "room": conf.room,
        "by": pause.by,
        "reason": pause.reason,
        "started_at": iso(pause.start),
        "until": iso(pause.until),
    }
    if pause.end is None:
        kind, end = "paused", {"at": iso(pause.start)}
    else:
        kind, end = "resumed", {"at": iso(pause.end), "ended": pause.ended, "resumed_by": pause.resumed_by or None}
    return f"recording.secure_{kind}", f"{conf.conference_sid}.secure.{pause.start:.3f}.{kind}", {**data, **end}


def _announcement(conf: Conference) -> Optional[str]:
    """How the latest announcement went: played, failed or skipped."""
    return next((t.state for t in reversed(conf.timeline) if t.kind == "announced"), None)


def sign(body: bytes, secret: str) -> str:
    """Hex HMAC-SHA256 of the body."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Outbox(Protocol):
    """Where undelivered events wait across restarts."""

    def put(self, event_id: str, body: bytes) -> None:
        """Keep an event until `remove`."""

    def remove(self, event_id: str) -> None:
        """Forget a delivered, given-up or dropped event."""

    def load(self) -> List[Tuple[str, bytes]]:
        """Every kept (id, body), oldest first."""


def _created_at(body: bytes) -> str:
    """The event's creation time, which orders the outbox (ISO text sorts as time)."""
    try:
        return json.loads(body).get("created_at") or ""
    except ValueError:
        return ""


class FileOutbox:
    """One small file per undelivered event in a directory (RECORDINGS_DIR/.outbox)."""

    def __init__(self, directory: Path):
        self._directory = Path(directory)

    def _path(self, event_id: str) -> Path:
        """The event's file, named by a hash: ids need not be safe file names."""
        return self._directory / (hashlib.sha256(event_id.encode()).hexdigest()[:32] + ".json")

    def put(self, event_id: str, body: bytes) -> None:
        """Write the event's file atomically (temp name, rename)."""
        self._directory.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(prefix=".event.", dir=self._directory)
        with os.fdopen(handle, "wb") as out:
            out.write(json.dumps({"id": event_id, "body": body.decode()}).encode())
        os.replace(temp, self._path(event_id))

    def remove(self, event_id: str) -> None:
        """Delete the event's file."""
        self._path(event_id).unlink(missing_ok=True)

    def load(self) -> List[Tuple[str, bytes]]:
        """Every readable event file, oldest first."""
        kept = []
        for path in self._directory.glob("*.json") if self._directory.is_dir() else ():
            try:
                saved = json.loads(path.read_text())
                kept.append((saved["id"], saved["body"].encode()))
            except (OSError, ValueError, KeyError):
                log.warning("unreadable event outbox file %s skipped", path.name)
        return sorted(kept, key=lambda item: _created_at(item[1]))


class RedisOutbox:
    """Undelivered events in one Redis hash (`NAMESPACE:events`), shared by every process."""

    def __init__(self, client, key: str):
        self._redis = client
        self._key = key

    def put(self, event_id: str, body: bytes) -> None:
        """HSET the event."""
        self._redis.hset(self._key, event_id, body)

    def remove(self, event_id: str) -> None:
        """HDEL the event."""
        self._redis.hdel(self._key, event_id)

    def load(self) -> List[Tuple[str, bytes]]:
        """Every kept event, oldest first."""
        kept = [(k.decode(), v) for k, v in self._redis.hgetall(self._key).items()]
        return sorted(kept, key=lambda item: _created_at(item[1]))


@dataclass
class _Pending:
    """One queued event: its body, the attempt it is on, and its heap entry's number."""

    body: bytes
    attempt: int
    order: int
    busy: bool = False


class EventSender:
    """Delivers events on a few threads at once, retrying with backoff, from a bounded, kept queue."""

    def __init__(
        self,
        url: str,
        secret: str,
        outbox: Outbox,
        workers: int = 4,
        max_queued: int = 1000,
        max_attempts: int = 8,
        first_backoff_s: float = 1.0,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._url = url
        self._secret = secret
        self._outbox = outbox
        self._max_queued = max_queued
        self._max_attempts = max_attempts
        self._first_backoff_s = first_backoff_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._session = requests.Session()
        self._pending: "OrderedDict[str, _Pending]" = OrderedDict()  # oldest first
        self._due: List[Tuple[float, int, str]] = []  # heap of (due time, order, event id); stale entries are skipped
        self._order = itertools.count()
        self._dropped = 0
        self._cond = threading.Condition()
        self._stopped = False
        kept = []
        with redis_outage.tolerated():  # Redis down at start: what it keeps waits there for the next start
            kept = outbox.load()
        for event_id, body in kept:
            self._queue(event_id, body, 1, self._clock())
        if self._pending:
            log.info("%d undelivered event callback(s) from the last run queued again", len(self._pending))
        self._threads = [
            threading.Thread(target=self._run, name=f"quorum-events-{n}", daemon=True) for n in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def notify(self, conf: Conference, action: Action) -> None:
        """Send `recording.paused`/`recording.resumed` after a command the API confirmed."""
        event = recording_change(conf, action, time.time())
        if event is not None:
            self.send(*event)

    def notify_secure_pause(self, conf: Conference, pause: SecurePause) -> None:
        """Send `recording.secure_paused` or `recording.secure_resumed` for a secure pause that began or ended."""
        self.send(*secure_pause_change(conf, pause))

    def send(self, event_type: str, event_id: str, data: dict) -> None:
        """Queue one event (kept in the outbox until delivered); returns at once."""
        body = json.dumps(
            {"id": event_id, "type": event_type, "data": data, "created_at": datetime.now(timezone.utc).isoformat()},
            sort_keys=True,
        ).encode()
        with redis_outage.tolerated():  # Redis down: delivered all the same, only not kept for a restart
            self._outbox.put(event_id, body)
        self._queue(event_id, body, 1, self._clock())

    def pending_ids(self) -> List[str]:
        """Ids of the events not yet delivered or given up, oldest first."""
        with self._cond:
            return list(self._pending)

    def wait_idle(self, timeout: float) -> bool:
        """Until every queued event is delivered or given up (tests, shutdown)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending, timeout)

    def stop(self) -> None:
        """Stop the threads; what is undelivered stays in the outbox for the next start."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=self._timeout_s + 5)
        if self._pending:
            log.warning(
                "%d event callback(s) not delivered before shutdown; kept for the next start", len(self._pending)
            )

    def _queue(self, event_id: str, body: bytes, attempt: int, due: float) -> None:
        """Add or reschedule an event, dropping the oldest beyond the bound."""
        with self._cond:
            entry = _Pending(body, attempt, next(self._order))
            self._pending[event_id] = entry
            heapq.heappush(self._due, (due, entry.order, event_id))
            dropped = []
            while len(self._pending) > self._max_queued:
                dropped.append(self._pending.popitem(last=False)[0])
            self._dropped += len(dropped)
            self._cond.notify_all()
        for old in dropped:
            self._unkeep(old)
        if dropped:
            log.warning(
                "event callback queue full (%d): dropped %d oldest, %d since start",
                self._max_queued,
                len(dropped),
                self._dropped,
            )

    def _next_due(self) -> Optional[Tuple[float, str]]:
        """(due time, id) of the earliest live heap entry, discarding stale ones; caller holds the lock."""
        while self._due:
            due, order, event_id = self._due[0]
            entry = self._pending.get(event_id)
            if entry is not None and entry.order == order and not entry.busy:
                return due, event_id
            heapq.heappop(self._due)
        return None

    def _run(self) -> None:
        """Deliver due events until stopped."""
        while True:
            with self._cond:
                while not self._stopped:
                    found = self._next_due()
                    if found is not None and found[0] <= self._clock():
                        break
                    self._cond.wait(None if found is None else max(0.0, found[0] - self._clock()))
                if self._stopped:
                    return
                assert found is not None  # the wait above ends, unless stopped, on an event that is due
                heapq.heappop(self._due)
                event_id = found[1]
                entry = self._pending[event_id]
                entry.busy = True
            self._attempt(event_id, entry)

    def _attempt(self, event_id: str, entry: _Pending) -> None:
        """One POST; then forget the event, or schedule its next attempt."""
        error = self._post(entry.body)
        if error is not None and entry.attempt < self._max_attempts:
            backoff = self._first_backoff_s * 2 ** (entry.attempt - 1)
            log.warning("event callback attempt %d failed (%s); retrying in %.1fs", entry.attempt, error, backoff)
            with self._cond:
                still_queued = self._pending.get(event_id) is entry  # not dropped meanwhile
            if still_queued:
                self._queue(event_id, entry.body, entry.attempt + 1, self._clock() + backoff)
            return
        if error is not None:
            log.error("event callback given up after %d attempts: %s", entry.attempt, error)
        with self._cond:
            if self._pending.get(event_id) is entry:
                del self._pending[event_id]
            self._cond.notify_all()
        self._unkeep(event_id)

    def _unkeep(self, event_id: str) -> None:
        """Drop the event from the outbox; with Redis down it stays there, so the next start sends it again
        (with the same id, which receivers drop as a duplicate)."""
        with redis_outage.tolerated():
            self._outbox.remove(event_id)

    def _post(self, body: bytes) -> Optional[str]:
        """POST the body; None on a 2xx answer, else what went wrong."""
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(body, self._secret)}
        try:
            response = self._session.post(self._url, data=body, headers=headers, timeout=self._timeout_s)
        except requests.RequestException as error:
            return type(error).__name__
        return None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
