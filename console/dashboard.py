"""The operator's dashboard: live conferences (`GET /`), conversation pages and history.

Same API_TOKEN as the API: sign in with the form or a `/login?token=...` link, which sets a
signed, HttpOnly, SameSite=Lax cookie (Secure when PUBLIC_URL is https); every route also
takes `Authorization: Bearer`. With API_TOKEN unset every page answers 503 saying how to
turn it on. Behind ngrok every request looks local, so there is no localhost exception.
Sign-in is in console/signin.py; the view data, as pure functions, in console/views.py.
"""

from __future__ import annotations

import logging
import time
from typing import Tuple

import redis
from flask import Blueprint, abort, current_app, jsonify, redirect, render_template, request, send_file, url_for

from console import secure_pause, signin
from console.talk_view import talk_view
from console.views import (
    MEDIA_TYPES,
    PER_PAGE,
    THRESHOLDS,
    clock,
    conversation_facts,
    live_conference,
    live_summary,
    paginate,
    recordings_view,
    retention_words,
    rule_words,
    timeline_view,
    unrecorded_channels,
)
from conversations.archive import Archive, ArchiveUnavailable, valid_id
from conversations.queries import find_conversation, known_rooms, listing, search_filters
from quorum import redis_outage
from recording_state import StateStore

log = logging.getLogger("quorum.dashboard")
bp = Blueprint("dashboard", __name__)
bp.before_request(signin.gate)
bp.add_url_rule("/login", view_func=signin.login_page, methods=["GET"])
bp.add_url_rule("/login", view_func=signin.login, methods=["POST"])
bp.add_url_rule("/logout", view_func=signin.logout, methods=["POST"])
bp.add_url_rule("/live/<room>/secure-pause", "secure_pause", secure_pause.dashboard_pause, methods=["POST"])
bp.add_url_rule("/live/<room>/secure-resume", "secure_resume", secure_pause.dashboard_resume, methods=["POST"])

POLL_MS = 1500
# Only our own files: no inline script or style, nothing framed, forms post only here.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


@bp.after_request
def harden(response):
    """No framing, no foreign code, no token in a Referer; pages are never cached."""
    origin = current_app.extensions["quorum"].archive.media_origin()  # object storage: players fetch from it
    response.headers["Content-Security-Policy"] = (
        CSP.replace("media-src 'self'", f"media-src 'self' {origin}") if origin else CSP
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "private, no-cache" if request.endpoint == "dashboard.media" else "no-store"
    return response


@bp.errorhandler(ArchiveUnavailable)
def archive_unavailable(error: ArchiveUnavailable):
    """The archive's store or index cannot answer now: 503, said in a line."""
    log.warning("archive unavailable: %s", error)
    if request.endpoint in signin.DATA_ENDPOINTS:
        return jsonify(error="archive unavailable"), 503
    return render_template("unavailable.html", redis=None, archive=True), 503


@bp.errorhandler(redis.RedisError)
def store_unavailable(error: redis.RedisError):
    """Redis does not answer: a page that says so (the live page's data stays JSON), 503, said once per outage."""
    redis_outage.reported(error)
    if request.endpoint in signin.DATA_ENDPOINTS:
        return jsonify(error="state store unavailable"), 503
    redis_url = current_app.config["QUORUM"].redis_url
    return render_template("unavailable.html", redis=redis_outage.address(redis_url) if redis_url else None), 503


# Pages


@bp.get("/")
def live():
    """Every active conference, updated in place by static/dashboard.js."""
    config = current_app.config["QUORUM"]
    return render_template(
        "live.html",
        live=_live_data(),
        poll_ms=POLL_MS,
        rule=rule_words(config.default_rule),
        retention=retention_words(config.delete_from_signalwire, config.archive_retention_days),
        csrf=signin.csrf_token(),
        reason_max=secure_pause.REASON_MAX_CHARS,
    )


@bp.get("/live.json")
def live_data():
    """What the live page shows, for its polling script."""
    return jsonify(_live_data())


@bp.get("/history")
def history():
    """Past and present conversations, newest first, paginated, filtered by room, caller and dates."""
    room, asked = request.args.get("room") or None, request.args.get("page", 1, type=int)
    search = {name: (request.args.get(name) or "").strip() for name in ("caller", "from", "to")}
    try:
        caller, (since, until) = search_filters(request.args)
    except ValueError as problem:
        caller, since, until, search["problem"] = None, None, None, str(problem)
    found = listing(
        *_store_and_archive(),
        lambda total: paginate(total, asked)["offset"],
        PER_PAGE,
        room=room,
        caller=caller,
        since=since,
        until=until,
    )
    return render_template(
        "history.html",
        page=paginate(found.total, asked),
        room=room,
        search=search,
        rooms=known_rooms(*_store_and_archive()),
        rows=[conversation_facts(c) for c in found.conversations],
    ), 400 if "problem" in search else 200


@bp.get("/conversations/<conversation_id>")
def conversation_page(conversation_id: str):
    """One conversation: timeline picture, audio players, SNR and RT60 in plain words."""
    record = find_conversation(*_store_and_archive(), conversation_id) if valid_id(conversation_id) else None
    if record is None:
        abort(404)

    def media_url(name: str) -> str:
        """The URL of one of this conversation's media files."""
        return url_for(".media", conversation_id=conversation_id, name=name)

    return render_template(
        "conversation.html",
        facts=conversation_facts(record),
        timeline=timeline_view(record),
        recordings=recordings_view(record, media_url),
        unrecorded=unrecorded_channels(record),
        thresholds=THRESHOLDS,
        talk=talk_view(record),
    )


@bp.get("/conversations/<conversation_id>/media/<name>")
def media(conversation_id: str, name: str):
    """One archived media file, with range requests so players can seek; hostile names are 404."""
    archive = current_app.extensions["quorum"].archive
    url = archive.media_url(conversation_id, name)
    if url is not None:
        return redirect(url, 302)  # a presigned URL valid ARCHIVE_LINK_S, fetched (and ranged) by the player
    path = archive.media_path(conversation_id, name)
    if path is None:
        abort(404)
    return send_file(path, mimetype=MEDIA_TYPES[path.suffix[1:]], conditional=True)


def _live_data() -> dict:
    """Active conferences (oldest first), a one-line summary for screen readers, and when."""
    now = time.time()
    conferences = sorted(
        (c for _, c in current_app.extensions["quorum"].store.conferences() if not c.ended),
        key=lambda c: (c.opened_at, c.room),
    )
    # One url_for per page, not per card: a thousand calls were a fifth of the page's time.
    page_url = url_for(".conversation_page", conversation_id="ID").rsplit("/", 1)[0]
    secure_url = url_for(".secure_pause", room="ROOM").rsplit("/", 2)[0]  # + /ROOM/secure-pause|resume
    default = current_app.config["QUORUM"].default_rule
    items = [
        {
            **live_conference(c, now, default),
            "url": f"{page_url}/{c.conference_sid}" if c.conference_sid else None,
            "secure_url": f"{secure_url}/{c.room}/secure-{'resume' if c.secure_pause() else 'pause'}",
        }
        for c in conferences
    ]
    return {"conferences": items, "summary": live_summary(items), "updated": clock(now)}


def _store_and_archive() -> Tuple[StateStore, Archive]:
    """The app's state store and archive, which the conversation queries read."""
    held = current_app.extensions["quorum"]
    return held.store, held.archive
