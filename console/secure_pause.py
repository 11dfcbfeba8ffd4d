"""`POST /api/conferences/ROOM/secure-pause` and `/secure-resume`, and the live card's button (PCI secure pause).

An agent stops the recording while a caller reads out a card number, whatever the quorum says, until it is
resumed or SECURE_PAUSE_MAX_S runs out. The API takes the bearer token (recorded as "api"); the live card's
button posts to `/live/ROOM/secure-pause|resume` behind the dashboard's sign-in, with the session's CSRF token
(recorded as "dashboard"). A pause takes an optional `reason` (form or JSON); both answer the conference's state.
"""

from __future__ import annotations

import time
from typing import Optional

from flask import Blueprint, current_app, jsonify, redirect, request, url_for

from config import valid_room
from console import signin
from console.auth import require_bearer
from console.views import recording_now
from conversations.record import iso, secure_pauses
from quorum.secure_pause import REASON_MAX_CHARS, valid_reason
from recording_state import Conference

bp = Blueprint("secure_pause", __name__)
API = "the conferences API"


@bp.post("/api/conferences/<room>/secure-pause")
def api_pause(room: str):
    """Begin a secure pause of the room's live conference (one already on stays as it is)."""
    return require_bearer(API) or _apply(room, "api", pause=True)


@bp.post("/api/conferences/<room>/secure-resume")
def api_resume(room: str):
    """End the room's secure pause: the quorum rule decides again."""
    return require_bearer(API) or _apply(room, "api", pause=False)


def dashboard_pause(room: str):
    """The live card's button: begin a secure pause (registered on the dashboard's blueprint, behind its sign-in)."""
    return signin.csrf_refusal() or _from_page(_apply(room, "dashboard", pause=True))


def dashboard_resume(room: str):
    """The live card's button: end the secure pause."""
    return signin.csrf_refusal() or _from_page(_apply(room, "dashboard", pause=False))


def _apply(room: str, by: str, pause: bool):
    """Pause (with the body's reason) or resume the room for `by`; its state as JSON, 404 without a live
    conference, 400 for a bad reason."""
    received = time.perf_counter()
    reason = _reason() if pause else ""
    if reason is None:
        return jsonify(error=f"reason must be text of at most {REASON_MAX_CHARS} characters, on one line"), 400
    pauser = current_app.extensions["quorum"].secure
    conf = None
    if valid_room(room):
        conf = pauser.pause(room, by, reason, received) if pause else pauser.resume(room, by, received)
    if conf is None:
        return jsonify(error="no live conference in that room"), 404
    return jsonify(secure_pause_state(conf, time.time()))


def _reason() -> Optional[str]:
    """The body's optional `reason` (form or JSON object), stripped; None when it is not acceptable."""
    if request.is_json:
        body = request.get_json(silent=True) if request.get_data() else {}
        reason = body.get("reason", "") if isinstance(body, dict) else None
    else:
        reason = request.form.get("reason", "")
    return reason.strip() if isinstance(reason, str) and valid_reason(reason) else None


def _from_page(answer):
    """A plain form post (no script) goes back to the live page; the page's script gets the JSON answer."""
    if request.accept_mimetypes.best == "application/json":
        return answer
    return redirect(url_for("dashboard.live"), 303)


def secure_pause_state(conf: Conference, now: float) -> dict:
    """What the secure-pause routes answer: the conference, its secure pause on (or null), and every one so far."""
    pause = conf.secure_pause()
    return {
        "room": conf.room,
        "conversation_id": conf.conference_sid,
        "secure_paused": pause is not None,
        "secure_pause": None
        if pause is None
        else {"by": pause.by, "reason": pause.reason, "started_at": iso(pause.start), "until": iso(pause.until)},
        "wanted": conf.wanted,
        "recording": recording_now(conf)[0],
        "secure_pauses": secure_pauses(conf, now),
    }
