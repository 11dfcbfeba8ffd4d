"""Conversations as the API and the dashboard list them: live ones from the store, finished ones from the archive."""

from __future__ import annotations

import time
from typing import List, Optional, Tuple

from conversations import record as conversation
from conversations.archive import Archive
from recording_state import StateStore, stored_conferences


def all_conversations(store: StateStore, archive: Archive) -> List[dict]:
    """Live and processing conversations from the store, then the archive's; newest first."""
    now = time.time()
    live = [conversation.record(conf, now) for _, conf in stored_conferences(store) if conf.conference_sid]
    known = {c["id"] for c in live}
    archived = [c for c in archive.all() if c.get("id") not in known]
    return sorted(live + archived, key=lambda c: c.get("started_at") or "", reverse=True)


def find_conversation(store: StateStore, archive: Archive, conversation_id: str) -> Optional[dict]:
    """The conversation with this id, live or archived."""
    for _, conf in stored_conferences(store):
        if conf.conference_sid == conversation_id:
            return conversation.record(conf, time.time())
    return archive.find(conversation_id)


def page_of(items: list, page: int, per_page: int) -> Tuple[list, bool]:
    """Page `page` (from 1) of `items`, and whether another page follows."""
    start = (page - 1) * per_page
    return items[start:start + per_page], start + per_page < len(items)
