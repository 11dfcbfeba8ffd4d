"""`GET /api/conversations[/ID]`: live conversations from the store, finished ones from the archive.

Every request needs `Authorization: Bearer API_TOKEN`. With API_TOKEN unset the API is
off (503): behind ngrok every request looks local, so there is no localhost exception.
"""

from __future__ import annotations

from typing import Optional

from flask import Blueprint, current_app, jsonify, request

from console.auth import require_bearer
from conversations.archive import ArchiveUnavailable, valid_id
from conversations.queries import find_conversation, listing, search_filters
from conversations.record import STATUSES

bp = Blueprint("conversations", __name__, url_prefix="/api")

MAX_PER_PAGE = 100
MAX_ID_LENGTH = 64


@bp.before_request
def require_token():
    """401 without the right token; 503 when no token is configured."""
    return require_bearer("the conversations API")


@bp.errorhandler(ArchiveUnavailable)
def archive_unavailable(error: ArchiveUnavailable):
    """The archive's store or index cannot answer now: 503 with Retry-After, so clients try again."""
    response = _error(503, "the archive cannot answer now; try again shortly")
    response[0].headers["Retry-After"] = "30"
    return response


@bp.get("/conversations")
def list_conversations():
    """Newest first, paginated, filtered by `room`, `status`, `caller` (a number or its last digits) and the days
    `from` to `to` (YYYY-MM-DD, UTC, both included)."""
    status = request.args.get("status")
    if status is not None and status not in STATUSES:
        return _error(400, f"status must be one of {', '.join(STATUSES)}")
    page, per_page = _positive("page", 1), _positive("per_page", 20)
    if page is None or per_page is None or per_page > MAX_PER_PAGE:
        return _error(400, f"page and per_page must be whole numbers from 1 (per_page at most {MAX_PER_PAGE})")
    try:
        caller, (since, until) = search_filters(request.args)
    except ValueError as problem:
        return _error(400, str(problem))
    held = current_app.extensions["quorum"]
    found = listing(
        held.store,
        held.archive,
        lambda total: (page - 1) * per_page,
        per_page,
        room=request.args.get("room"),
        status=status,
        caller=caller,
        since=since,
        until=until,
    )
    return jsonify(
        conversations=found.conversations,
        page=page,
        per_page=per_page,
        total=found.total,
        next_page=page + 1 if page * per_page < found.total else None,
    )


@bp.get("/conversations/<conversation_id>")
def get_conversation(conversation_id: str):
    """One conversation by id (the ConferenceSid)."""
    if len(conversation_id) > MAX_ID_LENGTH:
        return _error(400, "conversation id too long")
    held = current_app.extensions["quorum"]
    found = find_conversation(held.store, held.archive, conversation_id) if valid_id(conversation_id) else None
    if found is None:
        return _error(404, "no such conversation")
    return jsonify(found)


def _positive(name: str, default: int) -> Optional[int]:
    """A positive whole-number query parameter, or None when malformed."""
    raw = request.args.get(name)
    if raw is None:
        return default
    return int(raw) if raw.isascii() and raw.isdigit() and int(raw) > 0 else None


def _error(status: int, message: str):
    """A small JSON error."""
    return jsonify(error=message), status
