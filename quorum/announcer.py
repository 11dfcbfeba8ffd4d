"""The announcement lane: plays RECORDING_ANNOUNCEMENT on workers, a lock and an HTTP client of its own."""

from __future__ import annotations

import logging
import time
from typing import Callable, Dict, Optional, Tuple

from quorum import announcements, policy
from quorum.gateway import ANNOUNCERS, Outcome, SignalWireGateway
from quorum.keyed_workers import KeyedWorkers
from quorum.store_writes import STORE_ERRORS, Writes
from recording_state import Conference, StateStore

log = logging.getLogger("quorum.commands")


class Announcer:
    """Plays a room's due announcement (one process at a time: the store's `announce:{room}` lock) apart from its
    commands, so no pause or resume ever waits for one."""

    def __init__(
        self,
        store: StateStore,
        gateway: SignalWireGateway,
        writes: Writes,
        lock_ttl_s: float,
        announce_url: Callable[[str], str],
        on_done: Callable[[Conference, policy.Action], None],
        retry: Callable[[str], None],
        clock: Callable[[], float] = time.time,
        workers: int = ANNOUNCERS,
    ):
        self._store = store
        self._gateway = gateway
        self._writes = writes
        self._lock_ttl_s = lock_ttl_s
        self._announce_url = announce_url  # room -> where SignalWire fetches the announcement's LaML
        self._on_done = on_done  # told of each announcement that settled what a start or resume owed
        self._retry = retry  # room -> drive it again after a backoff (its command lane hands the announcement back)
        self._clock = clock
        self._workers = KeyedWorkers(self._announce, workers, "quorum-announce")

    def submit(self, room: str) -> None:
        """Play the room's due announcement soon; never blocks."""
        self._workers.submit(room)

    def depth(self) -> int:
        """Rooms waiting for or under an announcement."""
        return self._workers.depth()

    def shutdown(self) -> None:
        """Stop taking work and let what runs finish."""
        self._workers.shutdown()

    def _announce(self, room: str) -> None:
        """Under the room's announcement lock, play what is due; a store that does not answer has it tried again."""
        try:
            token, conf = self._store.try_lock_and_get(f"announce:{room}", self._lock_ttl_s, room)
            if token is None:
                return  # another process is playing it, and records how it went
            lock = (f"announce:{room}", token)
            with self._writes.releasing_on_error(room, lock):
                if not announcements.announcement_due(conf):
                    self._writes.release(room, lock)
                    return
                self._play(room, conf, lock)
        except STORE_ERRORS as error:
            log.warning(
                "room=%s store unavailable (%s) for an announcement: tried again after a backoff",
                room,
                type(error).__name__,
            )
            self._retry(room)

    def _play(self, room: str, conf: Conference, lock: Tuple[str, str]) -> None:
        """Play the announcement (skipped if the recording is about to pause) and record how it went, releasing
        `lock`; a first failure is tried once more after a backoff."""
        assert conf.conference_sid is not None  # announcement_due wants only a conference with its sid
        action = policy.Action(conf.conference_sid, None, policy.ANNOUNCE)
        start = announcements.announcement_start(conf)
        outcome = "skipped"
        if announcements.announcement_plays(conf):
            sent = self._gateway.announce(action.conference_sid, self._announce_url(conf.room))
            outcome = "played" if sent is Outcome.OK else "failed"
        now = self._clock()
        log.info("room=%s conference=%s action=announce outcome=%s", room, action.conference_sid, outcome)
        settled: Dict[str, bool] = {}

        def change(current: Optional[Conference]) -> Optional[Conference]:
            if current is None or current.conference_sid != action.conference_sid:
                return current  # the room holds a newer conference by now
            return announcements.announced(current, outcome, now, start)

        def then(after: Optional[Conference]) -> None:
            if settled.get("owed") and after is not None:
                self._on_done(after, action)  # the recording.resumed held back for it

        after = self._writes.write(room, lock, announcements.noting_settled(change, settled), then)
        if announcements.announcement_due(after) and after.conference_sid == action.conference_sid:
            self._retry(room)
