"""Conversations as the API and the dashboard list them: live ones from the store, finished ones from the archive."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from conversations import record as conversation
from conversations.archive import Archive
from conversations.archive_index import Query, sort_key
from recording_state import StateStore


@dataclass(frozen=True)
class Listing:
    """One page of a list, and how many conversations the whole list holds."""

    conversations: List[dict]
    total: int


def listing(store: StateStore, archive: Archive, offset: Callable[[int], int], limit: int,
            room: Optional[str] = None, status: Optional[str] = None) -> Listing:
    """Conversations `offset(total)` to `offset(total) + limit`, newest first: the live ones from the store
    among the archive's (the offset is a function of the total so that a page can be clamped into range)."""
    now = time.time()
    live = [conversation.record(conf, now) for _, conf in store.conferences() if conf.conference_sid]
    query = Query(room, status, hidden=frozenset(c["id"] for c in live))  # archived a moment ago: shown once
    shown = sorted((c for c in live if query.matches(c["room"], c["status"])), key=sort_key, reverse=True)
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
