"""Runs REST commands off the request path, one conference at a time, level-triggered.

A webhook only "kicks" its room. A worker then reads the room's state, sends the one
command it needs, records the result and reads again, until the confirmed state
matches the wanted state. Kicks that arrive while a room is being worked on only ask
for one more pass, so rapid flip-flops coalesce into the latest wanted state.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Optional, Tuple

import policy
from keyed_workers import KeyedWorkers
from recording_state import FAILED, GONE, UNSURE, Conference, StateStore
from signalwire_gateway import Outcome, SignalWireGateway

log = logging.getLogger("quorum.commands")

MAX_ATTEMPTS = 5
FIRST_BACKOFF_S = 0.2
MAX_BACKOFF_S = 5.0
LOCK_POLL_S = 0.05


class CommandQueue:
    """Per-room serial execution of pause/resume commands on a small thread pool."""

    def __init__(self, store: StateStore, gateway: SignalWireGateway, min_participants: int,
                 lock_ttl_s: float, recording_callback: Callable[[str, str], str],
                 on_done: Callable[[Conference, policy.Action], None] = lambda conf, action: None,
                 workers: int = 8, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep):
        self._store = store
        self._gateway = gateway
        self._minimum = min_participants
        self._lock_ttl_s = lock_ttl_s
        self._recording_callback = recording_callback  # (room, call) -> the recording-status URL
        self._on_done = on_done  # told of every command that succeeded, with the state after it
        self._clock = clock
        self._sleep = sleep
        self._workers = KeyedWorkers(self._reconcile, workers, "quorum-cmd")

    def kick(self, room: str) -> None:
        """Make sure the room is reconciled soon; never blocks on the API."""
        self._workers.submit(room)

    def depth(self) -> int:
        """Rooms waiting for or under a command."""
        return self._workers.depth()

    def wait_idle(self, timeout: float) -> bool:
        """Block until no room is pending (for tests and shutdown); False on timeout."""
        return self._workers.wait_idle(timeout)

    def shutdown(self) -> None:
        """Stop taking work and let running commands finish."""
        self._workers.shutdown()

    def _reconcile(self, room: str) -> None:
        """Send commands until the room's recordings match the wanted state."""
        attempts = 0
        while policy.next_action(self._store.get(room)) is not None:
            token = self._store.try_lock(f"room:{room}", self._lock_ttl_s)
            if token is None:  # another process is acting on this room; look again shortly
                self._sleep(LOCK_POLL_S)
                continue
            try:
                outcome = self._act_once(room, last_try=attempts + 1 >= MAX_ATTEMPTS)
            finally:
                self._store.unlock(f"room:{room}", token)
            if outcome is Outcome.RETRY and attempts + 1 < MAX_ATTEMPTS:
                attempts += 1
                self._sleep(min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** (attempts - 1)))
            else:
                attempts = 0

    def _act_once(self, room: str, last_try: bool) -> Optional[Outcome]:
        """Under the room's lock: re-read, send the one command due, and record what is now known."""
        action = policy.next_action(self._store.get(room))
        if action is None:
            return None
        outcome, result = self._send(room, action)
        conf = self._store.mutate(room, self._change(action, outcome, result, self._clock(), last_try))
        recording = result if action.target == policy.CREATE else action.recording_sid
        log.info("room=%s conference=%s recording=%s call=%s action=%s outcome=%s", room, action.conference_sid,
                 recording, action.call_sid, action.target, outcome.value)
        if outcome is Outcome.OK and conf is not None:
            self._on_done(conf, action)
        return outcome

    def _send(self, room: str, action: policy.Action) -> Tuple[Outcome, object]:
        """The REST call an action stands for; returns its outcome and what it read or created."""
        if action.target == policy.RECOVER:
            return self._gateway.read_conference(action.conference_sid)
        if action.target == policy.CREATE:
            return self._gateway.record_call(action.call_sid, self._recording_callback(room, action.call_sid))
        return self._gateway.set_recording(action.conference_sid, action.recording_sid, action.target,
                                           action.call_sid), None

    def _change(self, action: policy.Action, outcome: Outcome, result, now: float, last_try: bool) -> Callable:
        """The state change that records what an action's outcome tells us, for that conference only:
        the room may hold a newer conference by the time the answer comes."""
        change = self._outcome_change(action, outcome, result, now, last_try)
        return lambda conf: change(conf) if conf is not None and conf.conference_sid == action.conference_sid else conf

    def _outcome_change(self, action: policy.Action, outcome: Outcome, result, now: float,
                        last_try: bool) -> Callable:
        """What an action's outcome changes in its conference."""
        if action.target == policy.RECOVER:
            if outcome is Outcome.RETRY and not last_try:
                return lambda conf: conf
            if outcome is Outcome.GONE:
                return lambda conf: policy.recover(conf, None, now, self._minimum)  # the conference is over
            if outcome is not Outcome.OK:
                return policy.assume_verified
            return lambda conf: policy.recover(conf, result, now, self._minimum)
        if action.target == policy.CREATE:
            # Never retried: a create that timed out may have worked, and a second would record the caller
            # twice. If it did work, its in-progress callback names the call and it is managed from then on.
            return lambda conf: policy.recording_created(conf, action.call_sid, result, now)
        if outcome is Outcome.RETRY and not last_try:
            state = UNSURE  # it may have taken effect: resend whatever is wanted next, even the old state
        else:
            state = {Outcome.OK: action.target, Outcome.GONE: GONE}.get(outcome, FAILED)
        return lambda conf: policy.command_result(conf, action.recording_sid, state, now)
