"""Signed JSON event callbacks to the user's own server (`EVENT_CALLBACK_URL`).

Body: `{"id", "type", "created_at", "data"}`. Header `X-Quorum-Signature`: hex
HMAC-SHA256 of the raw body with `EVENT_CALLBACK_SECRET`. Failed deliveries (connection
errors, timeouts, non-2xx) are retried with exponential backoff; the `id` stays the same
across retries so receivers can drop duplicates.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import itertools
import json
import logging
import threading
import time
from datetime import datetime, timezone
from typing import Callable, Optional, Tuple

import requests

from policy import Action
from recording_state import PAUSED, RECORDING, Conference

log = logging.getLogger("quorum.events")

SIGNATURE_HEADER = "X-Quorum-Signature"


def recording_change(conf: Conference, action: Action, at: float) -> Optional[Tuple[str, str, dict]]:
    """The (type, id, data) of the event a confirmed pause or resume of the conference recording
    deserves, or None: SignalWire announces neither, so this is the only place users learn of them."""
    if action.call_sid is not None or action.target not in (PAUSED, RECORDING):
        return None
    kind = "recording.paused" if action.target == PAUSED else "recording.resumed"
    data = {"conversation_id": conf.conference_sid, "room": conf.room, "recording_sid": action.recording_sid,
            "at": datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="milliseconds"),
            "participants": len(conf.present())}
    return kind, f"{conf.conference_sid}.{action.recording_sid}.{action.target}.{at:.3f}", data


def sign(body: bytes, secret: str) -> str:
    """Hex HMAC-SHA256 of the body."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class EventSender:
    """Delivers events on a background thread, retrying with backoff."""

    def __init__(self, url: str, secret: str, max_attempts: int = 8, first_backoff_s: float = 1.0,
                 timeout_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self._url = url
        self._secret = secret
        self._max_attempts = max_attempts
        self._first_backoff_s = first_backoff_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._session = requests.Session()
        self._due = []  # heap of (due time, order, attempt, body)
        self._order = itertools.count()
        self._busy = 0
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="quorum-events", daemon=True)
        self._thread.start()

    def announce(self, conf: Conference, action: Action) -> None:
        """Send `recording.paused`/`recording.resumed` after a command the API confirmed."""
        event = recording_change(conf, action, time.time())
        if event is not None:
            self.send(*event)

    def send(self, event_type: str, event_id: str, data: dict) -> None:
        """Queue one event; returns at once."""
        body = json.dumps({"id": event_id, "type": event_type, "data": data,
                           "created_at": datetime.now(timezone.utc).isoformat()}, sort_keys=True).encode()
        self._schedule(self._clock(), 1, body)

    def wait_idle(self, timeout: float) -> bool:
        """Until every queued event is delivered or given up (tests, shutdown)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._due and not self._busy, timeout)

    def stop(self) -> None:
        """Stop the thread; undelivered events are logged as lost."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join(timeout=10)
        if self._due:
            log.warning("%d event callback(s) not delivered before shutdown", len(self._due))

    def _schedule(self, due: float, attempt: int, body: bytes) -> None:
        """Put a delivery attempt on the heap."""
        with self._cond:
            heapq.heappush(self._due, (due, next(self._order), attempt, body))
            self._cond.notify_all()

    def _run(self) -> None:
        """Deliver due events until stopped."""
        while True:
            with self._cond:
                while not self._stopped and (not self._due or self._due[0][0] > self._clock()):
                    self._cond.wait(None if not self._due else max(0.0, self._due[0][0] - self._clock()))
                if self._stopped:
                    return
                _, _, attempt, body = heapq.heappop(self._due)
                self._busy += 1
            try:
                self._attempt(attempt, body)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()

    def _attempt(self, attempt: int, body: bytes) -> None:
        """One POST; on failure, schedule the next attempt or give up."""
        error = self._post(body)
        if error is None:
            return
        if attempt >= self._max_attempts:
            log.error("event callback given up after %d attempts: %s", attempt, error)
            return
        backoff = self._first_backoff_s * 2 ** (attempt - 1)
        log.warning("event callback attempt %d failed (%s); retrying in %.1fs", attempt, error, backoff)
        self._schedule(self._clock() + backoff, attempt + 1, body)

    def _post(self, body: bytes) -> Optional[str]:
        """POST the body; None on a 2xx answer, else what went wrong."""
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(body, self._secret)}
        try:
            response = self._session.post(self._url, data=body, headers=headers, timeout=self._timeout_s)
        except requests.RequestException as error:
            return type(error).__name__
        return None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
