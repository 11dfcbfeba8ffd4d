"""Runs REST commands off the request path, one conference at a time, level-triggered.

A webhook only "kicks" its room. A worker then reads the room's state, sends the one
command it needs, records the result and reads again, until the confirmed state
matches the wanted state. Kicks that arrive while a room is being worked on only mark
it dirty, so rapid flip-flops coalesce into the latest wanted state.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional, Set

import policy
from recording_state import FAILED, GONE, StateStore
from signalwire_gateway import Outcome, SignalWireGateway

log = logging.getLogger("quorum.commands")

MAX_ATTEMPTS = 5
FIRST_BACKOFF_S = 0.2
MAX_BACKOFF_S = 5.0
LOCK_POLL_S = 0.05


class CommandQueue:
    """Per-room serial execution of pause/resume commands on a small thread pool."""

    def __init__(self, store: StateStore, gateway: SignalWireGateway, min_participants: int,
                 lock_ttl_s: float, workers: int = 32,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep):
        self._store = store
        self._gateway = gateway
        self._minimum = min_participants
        self._lock_ttl_s = lock_ttl_s
        self._clock = clock
        self._sleep = sleep
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="quorum-cmd")
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._active: Set[str] = set()
        self._dirty: Set[str] = set()

    def kick(self, room: str) -> None:
        """Make sure the room is reconciled soon; never blocks on the API."""
        with self._lock:
            if room in self._active:
                self._dirty.add(room)
                return
            self._active.add(room)
        self._pool.submit(self._run, room)

    def depth(self) -> int:
        """Rooms waiting for or under a command."""
        with self._lock:
            return len(self._active)

    def wait_idle(self, timeout: float) -> bool:
        """Block until no room is pending (for tests and shutdown); False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._active, timeout)

    def shutdown(self) -> None:
        """Stop taking work and let running commands finish."""
        self._pool.shutdown(wait=True)

    def _run(self, room: str) -> None:
        """Reconcile until nothing is left to do and no kick came in meanwhile."""
        while True:
            with self._lock:
                self._dirty.discard(room)
            try:
                self._reconcile(room)
            except Exception:  # a worker must never die silently with the room marked active
                log.exception("room %s: reconcile crashed", room)
            with self._lock:
                if room not in self._dirty:
                    self._active.discard(room)
                    self._idle.notify_all()
                    return

    def _reconcile(self, room: str) -> None:
        """Send commands until the room's recordings match the wanted state."""
        attempts = 0
        while policy.next_action(self._store.get(room)) is not None:
            token = self._store.try_lock(f"room:{room}", self._lock_ttl_s)
            if token is None:  # another process is acting on this room; look again shortly
                self._sleep(LOCK_POLL_S)
                continue
            try:
                outcome = self._act_once(room)
            finally:
                self._store.unlock(f"room:{room}", token)
            if outcome is Outcome.RETRY and attempts + 1 < MAX_ATTEMPTS:
                attempts += 1
                self._sleep(min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** (attempts - 1)))
            else:
                attempts = 0

    def _act_once(self, room: str) -> Optional[Outcome]:
        """Under the room's lock: re-read, send the one command due, and record a final outcome."""
        action = policy.next_action(self._store.get(room))
        if action is None:
            return None
        snapshot = None
        if action.target == policy.RECOVER:
            outcome, snapshot = self._gateway.read_conference(action.conference_sid)
        else:
            outcome = self._gateway.set_conference_recording(action.conference_sid, action.recording_sid, action.target)
        if outcome is not Outcome.RETRY:
            self._record(room, action, outcome, snapshot)
        return outcome

    def _record(self, room: str, action: policy.Action, outcome: Outcome, snapshot) -> None:
        """Store what the API said about one command and log the decision."""
        now = self._clock()
        if action.target == policy.RECOVER:
            if outcome is Outcome.REJECTED:
                change = policy.assume_verified
            else:
                change = lambda conf: policy.recover(conf, snapshot, now, self._minimum)  # noqa: E731
        else:
            state = {Outcome.OK: action.target, Outcome.GONE: GONE}.get(outcome, FAILED)
            change = lambda conf: policy.command_result(conf, action.recording_sid, state, now)  # noqa: E731
        self._store.mutate(room, change)
        log.info("room=%s conference=%s recording=%s action=%s outcome=%s", room, action.conference_sid,
                 action.recording_sid, action.target, outcome.value)
