"""Secure pauses at work: an agent's pause and resume applied to the store, the room kicked, each deadline kept."""

from __future__ import annotations

import logging
import time
from typing import Callable, Dict, Optional

from quorum import secure_pause
from quorum.delayed_kicks import DelayedKicks
from recording_state import Conference, SecurePause, StateStore

log = logging.getLogger("quorum.secure_pause")


class SecurePauser:
    """Pauses and resumes a room's recording on an agent's word, and ends each secure pause at its deadline.

    A change is a store mutation followed by a kick of the room, as a callback's is: the command queue pauses or
    resumes every recording within the usual crossing-to-command time. The deadline lives in the Conference; a
    timer fires at it in the process that began the pause, and `sweep` (the housekeeper's re-drive tick, and a
    start) arms one in every process for every secure pause in the store, so a pause ends on time even when the
    process that began it is gone. `notify(conf, pause)` is told of each start and end, once (by the process whose
    write made it)."""

    def __init__(
        self,
        store: StateStore,
        kick: Callable[[str, Optional[float]], None],
        max_s: float,
        notify: Callable[[Conference, SecurePause], None] = lambda conf, pause: None,
        clock: Callable[[], float] = time.time,
    ):
        self._store = store
        self._kick = kick  # (room, when the change arrived: perf_counter) -> the command queue's kick
        self._max_s = max_s
        self._notify = notify
        self._clock = clock
        self._timers = DelayedKicks(self.expire, "quorum-secure-pause")

    def pause(self, room: str, by: str, reason: str = "", received: Optional[float] = None) -> Optional[Conference]:
        """Begin a secure pause of the room's live conference (one on already stays as it is); None if there is
        none. `received`: when the request arrived (perf_counter), timed to the pause command it causes."""
        now = self._clock()
        return self._change(room, lambda conf: secure_pause.begin(conf, now, by, reason, self._max_s), received)

    def resume(self, room: str, by: str, received: Optional[float] = None) -> Optional[Conference]:
        """End the room's secure pause, if one is on: the quorum rule decides again; None without a live conference."""
        now = self._clock()
        return self._change(room, lambda conf: secure_pause.resume(conf, now, by), received)

    def expire(self, room: str) -> None:
        """End the room's secure pause if its deadline has passed; one still to come is looked at again then."""
        now = self._clock()
        conf = self._change(room, lambda current: secure_pause.expire(current, now))
        pause = conf.secure_pause() if conf is not None else None
        if pause is not None:
            self._timers.later(room, max(0.0, pause.until - now))

    def sweep(self) -> int:
        """End every secure pause past its deadline, and arm a timer for each other one this process has none for
        (it began elsewhere, or before a restart). Returns how many were past their deadline."""
        now, due = self._clock(), 0
        for room, conf in self._store.conferences():
            pause = None if conf.ended else conf.secure_pause()
            if pause is not None and secure_pause.due(conf, now):
                self.expire(room)
                due += 1
            elif pause is not None and not self._timers.waiting(room):
                self._timers.later(room, pause.until - now)
        return due

    def stop(self) -> None:
        """Drop the timers (the deadlines stay in the store)."""
        self._timers.stop()

    def _change(
        self, room: str, fn: Callable[[Optional[Conference]], Optional[Conference]], received: Optional[float] = None
    ) -> Optional[Conference]:
        """Apply `fn` to the room's live conference; when it began or ended a secure pause, arm its timer, tell
        `notify` and kick the room. Returns the live conference after it, or None."""
        seen: Dict[str, SecurePause] = {}
        crossed: Dict[str, bool] = {}

        def apply(conf: Optional[Conference]) -> Optional[Conference]:
            seen.clear()  # a retried mutation starts over
            after = fn(conf)
            if after is not conf and after is not None and conf is not None:  # a pause begun or ended on `conf`
                seen["pause"] = after.secure_pauses[-1]
                crossed["wanted"] = after.wanted != conf.wanted
            return after

        conf = self._store.mutate(room, apply)
        if conf is None or conf.ended:
            return None
        if seen:
            pause = seen["pause"]
            what, who = (
                ("secure-pause", pause.by)
                if pause.end is None
                else (f"secure-{pause.ended}", pause.resumed_by or "deadline")
            )
            log.info(
                "room=%s conference=%s action=%s by=%s wanted=%s", room, conf.conference_sid, what, who, conf.wanted
            )
            if pause.end is None:
                self._timers.later(room, self._max_s)
            self._notify(conf, pause)
            self._kick(room, received if crossed.get("wanted") else None)
        return conf
