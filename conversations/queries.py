"""Conversations as the API and the dashboard list them: live ones from the store, finished ones from the archive."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Dict, List, Optional, Tuple

from conversations import record as conversation
from conversations.archive import Archive
from conversations.archive_index import CALLER_MIN_DIGITS, Query, digits, fields, numbers, sort_key
from recording_state import StateStore


@dataclass(frozen=True)
class Listing:
    """One page of a list, and how many conversations the whole list holds."""

    conversations: List[dict]
    total: int


def date_bounds(first: Optional[str], last: Optional[str]) -> Tuple[Optional[str], Optional[str]]:
    """[since, until) as ISO 8601 UTC strings for the days `first` to `last` (YYYY-MM-DD, UTC, both included, in
    either order); ValueError naming the problem when a date is malformed."""

    def day(value: Optional[str], name: str) -> Optional[datetime]:
        if not value:
            return None
        try:
            return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=timezone.utc)
        except ValueError:
            raise ValueError(f"{name} must be a date such as 2026-12-31, got {value!r}") from None

    start, end = day(first, "from"), day(last, "to")
    if start and end and end < start:
        start, end = end, start  # typed the other way round: the same days
    since = conversation.iso(start.timestamp()) if start else None
    until = conversation.iso((end + timedelta(days=1)).timestamp()) if end else None
    return since, until


def search_filters(args) -> Tuple[Optional[str], Tuple[Optional[str], Optional[str]]]:
    """`caller` and the [since, until) of `from`/`to` from request arguments; ValueError naming the problem."""
    caller = (args.get("caller") or "").strip() or None
    if caller is not None and len(digits(caller)) < CALLER_MIN_DIGITS:
        raise ValueError(f"caller must hold at least {CALLER_MIN_DIGITS} digits of a number")
    return caller, date_bounds(args.get("from"), args.get("to"))


def listing(
    store: StateStore,
    archive: Archive,
    offset: Callable[[int], int],
    limit: int,
    room: Optional[str] = None,
    status: Optional[str] = None,
    caller: Optional[str] = None,
    since: Optional[str] = None,
    until: Optional[str] = None,
) -> Listing:
    """Conversations `offset(total)` to `offset(total) + limit`, newest first: the live ones from the store
    among the archive's (the offset is a function of the total so that a page can be clamped into range).
    `caller` is a number or its last digits; [`since`, `until`) bound the start (ISO 8601 UTC)."""
    now = time.time()
    live = [conversation.record(conf, now) for _, conf in store.conferences() if conf.conference_sid]
    # Live ones were perhaps archived a moment ago: shown once.
    query = Query(room, status, frozenset(c["id"] for c in live), caller, since, until)
    shown = sorted(
        (c for c in live if (found := fields(c)) and query.matches(found, numbers(c))), key=sort_key, reverse=True
    )
    return archive.view(lambda view: _merged(view, query, shown, offset, limit))


def _merged(view, query: Query, live: List[dict], offset: Callable[[int], int], limit: int) -> Listing:
    """The window of the merged list: the few live ones placed by counting archived ones newer than each."""
    placed: Dict[int, dict] = {rank + view.count(query, newer_than=sort_key(c)): c for rank, c in enumerate(live)}
    total = len(live) + view.count(query)
    start = offset(total)
    end = min(start + limit, total)
    inside = [at for at in placed if start <= at < end]
    before = sum(1 for at in placed if at < start)
    archived = iter(view.page(query, start - before, end - start - len(inside)) if end > start else [])
    return Listing([placed[at] if at in placed else next(archived) for at in range(start, end)], total)


def known_rooms(store: StateStore, archive: Archive) -> List[str]:
    """Every room with a live or archived conversation, sorted."""
    live = {conf.room for _, conf in store.conferences() if conf.conference_sid}
    return sorted(live | set(archive.view(lambda view: view.rooms())))


def find_conversation(store: StateStore, archive: Archive, conversation_id: str) -> Optional[dict]:
    """The conversation with this id, live or archived."""
    for _, conf in store.conferences():
        if conf.conference_sid == conversation_id:
            return conversation.record(conf, time.time())
    return archive.find(conversation_id)
