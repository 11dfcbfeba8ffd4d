"""Signed webhook delivery the way SignalWire does it: best effort, retried, per-conference lanes.

Each conference's callbacks go through one lane, delivered one at a time in the order
they were produced unless a fault says otherwise, so a run without faults is ordered
like a healthy SignalWire; a call's own status callback and `<Dial action>` have lanes
of their own. Every HTTP attempt is logged with its status.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import itertools
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Tuple
from urllib.parse import urlencode

import requests

from emulator.faults import FaultInjector

SIGNATURE_HEADER = "X-SignalWire-Signature"
USER_AGENT = "SignalWire-Emulator/1.0"
DUPLICATE_GAP_S = 0.02

log = logging.getLogger(__name__)


def signature(key: str, url: str, params: Mapping[str, str]) -> str:
    """base64(HMAC-SHA1(key, url + k1 + v1 + k2 + v2 ...)) over params sorted by name."""
    payload = url + "".join(name + params[name] for name in sorted(params))
    return base64.b64encode(hmac.new(key.encode(), payload.encode(), hashlib.sha1).digest()).decode()


def signed_request(key: str, method: str, url: str, params: Mapping[str, str]) -> Tuple[str, Optional[dict], dict]:
    """(url, form, headers) for one signed request; GET carries the params in the signed URL."""
    form: Optional[dict] = dict(params)
    if method.upper() == "GET":
        url = f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"
        form, params = None, {}
    headers = {SIGNATURE_HEADER: signature(key, url, params), "User-Agent": USER_AGENT}
    return url, form, headers


@dataclass(frozen=True)
class Callback:
    """One webhook to deliver: where, what, and which lane and fault stream it belongs to."""

    url: str
    params: Mapping[str, str]
    lane: str
    event: str  # e.g. participant-join, recording:completed, call-status, dial-action
    method: str = "POST"
    fault_key: str = ""
    # Called once with the last attempt and the answer's body (a dropped callback: attempt 0, ""),
    # on the lane's thread and outside every lock, e.g. to follow the LaML a <Dial action> answers.
    on_answer: Optional[Callable[["Attempt", str], None]] = field(default=None, compare=False)


@dataclass(frozen=True)
class Attempt:
    """One HTTP attempt (or a drop): what was sent and how the server answered."""

    callback: Callback
    number: int  # 1..max_attempts; 0 for a dropped callback
    duplicate: bool
    at: float
    status: Optional[int]  # None: transport error or dropped
    error: str = ""
    elapsed_s: Optional[float] = None  # from sending to the answer, for answered attempts

    @property
    def ok(self) -> bool:
        """Answered 2xx."""
        return self.status is not None and 200 <= self.status < 300


@dataclass(order=True)
class _Item:
    due: float
    seq: int
    callback: Callback = field(compare=False)
    duplicate: bool = field(compare=False, default=False)
    attempt: int = field(compare=False, default=1)
    dropped: bool = field(compare=False, default=False)


@dataclass
class _Lane:
    wake: threading.Condition  # on the dispatcher's lock: only this lane's worker is woken
    heap: List[_Item] = field(default_factory=list)
    last_due: float = 0.0
    busy: bool = False  # a worker thread serves the lane


class Dispatcher:
    """Delivers callbacks on per-lane worker threads, applying callback faults and retries."""

    def __init__(
        self,
        signing_key: str,
        injector: FaultInjector,
        connect_timeout_s: float = 2.0,
        read_timeout_s: float = 5.0,
        max_attempts: int = 3,
        retry_after_s: float = 0.25,
    ):
        self._key = signing_key
        self._injector = injector
        self._timeouts = (connect_timeout_s, read_timeout_s)
        self._max_attempts = max_attempts
        self._retry_after = retry_after_s
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._lanes: Dict[str, _Lane] = {}
        self._pending = 0
        self._seq = itertools.count()
        self.attempts: List[Attempt] = []
        # Lane workers are started by this thread: Thread.start() waits for the new thread to
        # run, and under load that wait must not happen while the simulator's lock is held.
        self._to_start: "queue.SimpleQueue[Optional[str]]" = queue.SimpleQueue()
        threading.Thread(target=self._start_workers, name="emulator-lanes", daemon=True).start()

    def send(self, callback: Callback) -> None:
        """Queue a callback; faults may drop, delay, hold back or duplicate it."""
        plan = self._injector.plan_callback(
            callback.fault_key or callback.lane, callback.event, callback.params.get("CallSid", "")
        )
        now = time.time()
        with self._lock:
            if plan.drop:  # through the lane all the same, so its on_answer runs like any other's
                self._push(callback.lane, _Item(now, next(self._seq), callback, dropped=True))
                return
            lane = self._lane(callback.lane)
            due = max(now + plan.delay_s, lane.last_due)  # delay keeps the lane's order
            if plan.hold_s:
                due += plan.hold_s  # overtaken by what follows: the lane's order is not kept
            else:
                lane.last_due = due
            self._push(callback.lane, _Item(due, next(self._seq), callback))
            if plan.duplicate:
                self._push(callback.lane, _Item(due + DUPLICATE_GAP_S, next(self._seq), callback, duplicate=True))

    def wait_idle(self, timeout: float) -> bool:
        """Block until every queued callback is delivered or given up; False on timeout."""
        with self._lock:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def log_attempt(self, callback: Callback, status: Optional[int], error: str = "") -> None:
        """Record a request made outside the lanes (the voice webhook)."""
        with self._lock:
            self.attempts.append(Attempt(callback, 1, False, time.time(), status, error))

    def log(self) -> List[Attempt]:
        """Every attempt so far (a copy)."""
        with self._lock:
            return list(self.attempts)

    def pending(self) -> int:
        """Callbacks queued or in flight."""
        with self._lock:
            return self._pending

    def _lane(self, name: str) -> _Lane:
        """The lane called `name`, created on first use (lock held)."""
        lane = self._lanes.get(name)
        if lane is None:
            lane = self._lanes[name] = _Lane(threading.Condition(self._lock))
        return lane

    def _push(self, name: str, item: _Item) -> None:
        """Add to a lane (lock held), starting the lane's worker when it has none."""
        lane = self._lane(name)
        if not lane.busy:
            lane.busy = True
            self._to_start.put(name)
        heapq.heappush(lane.heap, item)
        self._pending += 1
        lane.wake.notify()

    def close(self) -> None:
        """Start no more lane workers (callbacks still queued are abandoned)."""
        self._to_start.put(None)

    def _start_workers(self) -> None:
        """Start a worker for each lane that needs one, until closed."""
        while (name := self._to_start.get()) is not None:
            threading.Thread(target=self._work, args=(name,), name=f"emulator-lane-{name[:8]}", daemon=True).start()

    def _next(self, name: str) -> Optional[_Item]:
        """The lane's next due item (waiting for it), or None when the lane is empty and retired."""
        with self._lock:
            while True:
                lane = self._lanes[name]
                if not lane.heap:
                    del self._lanes[name]
                    return None
                wait = lane.heap[0].due - time.time()
                if wait <= 0:
                    return heapq.heappop(lane.heap)
                lane.wake.wait(wait)

    def _work(self, name: str) -> None:
        """Deliver a lane's items one at a time until it is empty."""
        with requests.Session() as session:
            while (item := self._next(name)) is not None:
                attempt, body = self._deliver(session, item)
                with self._lock:
                    self.attempts.append(attempt)
                    if not item.dropped and _retryable(attempt) and item.attempt < self._max_attempts:
                        retry = _Item(
                            time.time() + self._retry_after,
                            next(self._seq),
                            item.callback,
                            item.duplicate,
                            item.attempt + 1,
                        )
                        heapq.heappush(self._lanes[name].heap, retry)  # the lane lives while its worker does
                        continue
                self._answered(item, attempt, body)
                with self._lock:
                    self._pending -= 1  # after on_answer, so what it sends keeps the dispatcher busy
                    if self._pending == 0:
                        self._idle.notify_all()

    @staticmethod
    def _answered(item: _Item, attempt: Attempt, body: str) -> None:
        """Hand a callback's final answer to its on_answer (once: duplicates are not the original)."""
        if item.callback.on_answer is None or item.duplicate:
            return
        try:
            item.callback.on_answer(attempt, body)
        except Exception:  # a simulator bug must not wedge the lane and every settle() after it
            log.exception("on_answer of %s %s failed", item.callback.event, item.callback.url)

    def _deliver(self, session: requests.Session, item: _Item) -> Tuple[Attempt, str]:
        """One signed HTTP attempt (or the record of a dropped callback) and the answer's body."""
        callback = item.callback
        at = time.time()
        if item.dropped:
            return Attempt(callback, 0, False, at, None, "dropped"), ""
        url, form, headers = signed_request(self._key, callback.method, callback.url, callback.params)
        try:
            response = session.request(
                callback.method, url, data=form, headers=headers, timeout=self._timeouts, allow_redirects=False
            )
        except requests.RequestException as error:
            return Attempt(callback, item.attempt, item.duplicate, at, None, type(error).__name__), ""
        body = response.text if callback.on_answer is not None else ""
        return Attempt(
            callback, item.attempt, item.duplicate, at, response.status_code, elapsed_s=time.time() - at
        ), body


def _retryable(attempt: Attempt) -> bool:
    """Transport errors and 5xx are retried; any other answer is final."""
    return attempt.status is None or attempt.status >= 500
