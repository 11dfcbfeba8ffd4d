"""`GET /api/conversations[/ID]`: live conversations from the store, finished ones from the archive.

Every request needs `Authorization: Bearer API_TOKEN`. With API_TOKEN unset the API is
off (503): behind ngrok every request looks local, so there is no localhost exception.
"""

from __future__ import annotations

import time
from typing import List, Optional

from flask import Blueprint, current_app, jsonify, request

from conversations import record as conversation
from conversations.archive import Archive, valid_id
from console.auth import require_bearer
from recording_state import StateStore, stored_conferences

bp = Blueprint("conversations", __name__, url_prefix="/api")

STATUSES = ("live", "processing", "ready", "failed")
MAX_PER_PAGE = 100
MAX_ID_LENGTH = 64


@bp.before_request
def require_token():
    """401 without the right token; 503 when no token is configured."""
    return require_bearer("the conversations API")


@bp.get("/conversations")
def list_conversations():
    """Newest first, paginated, filtered by `room` and `status`."""
    status = request.args.get("status")
    if status is not None and status not in STATUSES:
        return _error(400, f"status must be one of {', '.join(STATUSES)}")
    page, per_page = _positive("page", 1), _positive("per_page", 20)
    if page is None or per_page is None or per_page > MAX_PER_PAGE:
        return _error(400, f"page and per_page must be whole numbers from 1 (per_page at most {MAX_PER_PAGE})")
    room = request.args.get("room")
    found = [c for c in all_conversations(_store(), _archive())
             if (room is None or c["room"] == room) and (status is None or c["status"] == status)]
    start = (page - 1) * per_page
    return jsonify(conversations=found[start:start + per_page], page=page, per_page=per_page, total=len(found),
                   next_page=page + 1 if start + per_page < len(found) else None)


@bp.get("/conversations/<conversation_id>")
def get_conversation(conversation_id: str):
    """One conversation by id (the ConferenceSid)."""
    if len(conversation_id) > MAX_ID_LENGTH:
        return _error(400, "conversation id too long")
    found = find_conversation(_store(), _archive(), conversation_id) if valid_id(conversation_id) else None
    if found is None:
        return _error(404, "no such conversation")
    return jsonify(found)


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


def _positive(name: str, default: int) -> Optional[int]:
    """A positive whole-number query parameter, or None when malformed."""
    raw = request.args.get(name)
    if raw is None:
        return default
    return int(raw) if raw.isascii() and raw.isdigit() and int(raw) > 0 else None


def _store() -> StateStore:
    """The app's state store."""
    return current_app.extensions["quorum"].store


def _archive() -> Archive:
    """The app's archive."""
    return current_app.extensions["quorum"].archive


def _error(status: int, message: str):
    """A small JSON error."""
    return jsonify(error=message), status
