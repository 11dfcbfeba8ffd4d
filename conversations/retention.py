"""Archive retention: conversations that ended more than ARCHIVE_RETENTION_DAYS ago are removed.

The sweeper runs a pass every RETENTION_EVERY_S. The archive is laid out ROOM/YYYY-MM-DD/ID/ by the day
a conversation started, so a pass reads only the conversations of days that began before the cutoff:
those it removes and those of the edge day, never the whole archive. A conversation whose SignalWire
copies are still to be deleted (DELETE_FROM_SIGNALWIRE) stays until they are: removing ours first would
leave theirs, which anyone with the URL can fetch, with nothing left to delete it by.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Callable, Optional

from conversations.archive import Archive, ArchiveUnavailable
from conversations.signalwire_copies import SignalWireCopies
from recording_state import StateStore, alone

log = logging.getLogger("quorum.retention")

DAY_S = 86400
RETENTION_EVERY_S = 600  # days of retention need no finer grain; a pass may read a day's conversations
LOCK_TTL_S = 300  # one pass at a time across processes


def expired(record: dict, cutoff: float) -> bool:
    """Whether a conversation ended (or, with no end recorded, started) before `cutoff`; unknown: kept."""
    at = _epoch(record.get("ended_at")) or _epoch(record.get("started_at"))
    return at is not None and at < cutoff


def _epoch(value) -> Optional[float]:
    """An ISO 8601 time as epoch seconds, or None."""
    try:
        return datetime.fromisoformat(value).timestamp() if isinstance(value, str) else None
    except ValueError:
        return None


class Retention:
    """Expires old conversations from the archive; 0 days keeps them forever."""

    def __init__(
        self,
        archive: Archive,
        store: StateStore,
        copies: SignalWireCopies,
        days: int,
        clock: Callable[[], float] = time.time,
    ):
        self._archive = archive
        self._store = store
        self._copies = copies
        self._days = days
        self._clock = clock
        self._next_pass = 0.0

    def sweep(self) -> int:
        """The sweeper's share: a pass when one is due; returns how many conversations it removed."""
        now = self._clock()
        if not self._days or now < self._next_pass:
            return 0
        self._next_pass = now + RETENTION_EVERY_S
        try:
            return alone(self._store, "retention", LOCK_TTL_S, lambda: self.expire(now), otherwise=0)
        except ArchiveUnavailable as error:  # object storage down: the next pass, in RETENTION_EVERY_S, tries again
            log.warning("archive retention: pass cut short, the archive cannot be reached (%s)", error)
            return 0

    def expire(self, now: float) -> int:
        """Remove every conversation that ended more than the retention ago as of `now`; returns how many."""
        cutoff = now - self._days * DAY_S
        self._archive.empty_trash()
        removed = waiting = 0
        for directory in list(self._archive.started_before(cutoff)):
            record = self._archive.read(directory)
            if record is None or not expired(record, cutoff):
                continue  # not complete (being archived, or never was), or not old enough yet
            if not self._copies.clear_to_remove(directory.name):
                waiting += 1
                continue
            removed += self._archive.remove(directory)
        if removed:
            log.info(
                "archive retention: removed %d conversation%s that ended more than %d days ago",
                removed,
                "" if removed == 1 else "s",
                self._days,
            )
        if waiting:
            log.info(
                "archive retention: %d expired conversation%s kept until SignalWire's copies are deleted",
                waiting,
                "" if waiting == 1 else "s",
            )
        return removed
