"""The `/voice/*` routes SignalWire calls: thin views over the controller."""

from __future__ import annotations

import logging
import time

from flask import Blueprint, Response, current_app, g, jsonify, request

from quorum import caller_numbers, input_checks
from quorum import laml
from quorum import signatures, talk
from quorum.log_throttle import since
from quorum.call_end import CALL_OVER, end_time
from quorum.controller import CallStatusEvent, ConferenceEvent, Decision, RecordingEvent

log = logging.getLogger("quorum.webhooks")

bp = Blueprint("voice", __name__, url_prefix="/voice")

CONFERENCE_EVENTS = (
    "conference-start",
    "conference-end",
    "participant-join",
    "participant-leave",
    "participant-hold",
    "participant-unhold",
    *talk.SPEECH_EVENTS,
)


@bp.before_request
def note_arrival():
    """When the callback arrived: where its crossing-to-command latency starts."""
    g.received = time.perf_counter()


@bp.before_request
def require_signature():
    """Refuse any /voice request not signed with the project's Signing Key."""
    config = current_app.config["QUORUM"]
    if not config.validate_signatures:
        return None
    url = signatures.public_url_for(config.public_url, request.path, request.query_string)
    signature = signatures.signature_from(request.headers)
    if signatures.is_valid(config.signalwire_signing_key, url, request.form, signature):
        return None
    held = current_app.extensions["quorum"].refusals.due()  # a wrong PUBLIC_URL refuses every call: a line a minute
    if held is not None:  # the hint costs HMACs: only for a line that is written
        hint = signatures.refusal_hint(
            config.signalwire_signing_key,
            url,
            _request_bases(),
            request.path,
            request.query_string,
            request.form,
            signature,
        )
        log.warning(
            "refused %s %s %s from %s: %s%s",
            "badly signed" if signature else "unsigned",
            request.method,
            request.path,
            request.remote_addr,
            hint,
            since(held),
        )
    return _error(403, "invalid or missing X-SignalWire-Signature")


def _request_bases() -> list:
    """The base URLs the request names itself by: as it arrived, and as a proxy's X-Forwarded-Proto/-Host say."""
    bases = [request.url_root.rstrip("/")]
    proto, host = (request.headers.get(f"X-Forwarded-{name}", "").split(",")[0].strip() for name in ("Proto", "Host"))
    if proto or host:
        bases.append(f"{proto or request.scheme}://{host or request.host}")
    return bases


@bp.before_request
def require_well_formed_ids():
    """Refuse ids and room names that could reach a REST path, a Redis key or the disk malformed."""
    invalid = input_checks.first_invalid(request.form, request.args)
    if invalid:
        log.warning("refused %s %s: invalid %s", request.method, request.path, invalid)
        return _error(400, f"invalid field: {invalid}")
    return None


@bp.after_request
def count(response: Response) -> Response:
    """Count every answered webhook by route and outcome."""
    current_app.extensions["quorum"].metrics.count_webhook(
        request.path.rsplit("/", 1)[-1], response.status_code, response.headers.get("X-Quorum-Outcome")
    )
    return response


@bp.post("/inbound")
def inbound():
    """Answer a call with LaML that puts it in its room's recorded conference."""
    config = current_app.config["QUORUM"]
    dialed = request.form.get("To", "").strip()
    if not dialed and config.conference_room == "per-number":
        return _error(400, "missing field: To")
    room = laml.choose_room(config.conference_room, dialed)
    if not input_checks.valid_room(room):
        return _error(400, "invalid field: To")
    call_sid, caller = request.form.get("CallSid", "").strip(), request.form.get("From", "").strip()
    if call_sid:
        current_app.extensions["quorum"].controller.inbound_call(call_sid, caller, dialed)
    rule = config.rule_for(room)
    starts = not rule.host_numbers or rule.is_host(caller)
    log.info(
        "room=%s call=%s from=%s action=join-conference starts=%s",
        room,
        call_sid,
        caller_numbers.for_log(caller, config.log_caller_numbers),
        starts,
    )
    return Response(
        laml.conference_laml(room, config.public_url, config.trim, starts, config.talk_time), mimetype="text/xml"
    )


@bp.post("/announce")
def announce():
    """The LaML SignalWire plays to a conference when Quorum asks it to announce the recording."""
    room = request.args.get("room", "").strip()
    text = current_app.config["QUORUM"].rule_for(room).recording_announcement if room else ""
    return Response(laml.announcement_laml(text), mimetype="text/xml")


@bp.post("/conference-status")
def conference_status():
    """Apply a conference or participant event."""
    missing = _missing("ConferenceSid", "StatusCallbackEvent")
    if missing:
        return missing
    kind = request.form["StatusCallbackEvent"]
    if kind not in CONFERENCE_EVENTS:
        return _outcome(Decision.IGNORED)
    # Required: the signed payload has no delimiters, so a Timestamp key shifted into another key keeps a
    # valid signature; present, it can only carry the date it was signed with, and that must be recent.
    missing = _missing("Timestamp")
    if missing:
        return missing
    form = request.form
    at = input_checks.event_time(form["Timestamp"])
    if at is None:
        return _error(400, "invalid field: Timestamp")
    max_age_s = current_app.config["QUORUM"].event_max_age_s
    if input_checks.too_old(at, time.time(), max_age_s):
        log.warning(
            "refused stale %s conference=%s call=%s: Timestamp %.0f s old, window %.0f s",
            kind,
            form["ConferenceSid"],
            form.get("CallSid", ""),
            time.time() - at,
            max_age_s,
        )
        return _error(400, f"stale event: Timestamp older than {max_age_s:.0f} s")
    # Hold=true on a hold event, and on a join by someone who joins already held.
    hold = kind == "participant-hold" or (kind == "participant-join" and form.get("Hold", "").lower() == "true")
    event = ConferenceEvent(
        kind=kind,
        room=form.get("FriendlyName") or form["ConferenceSid"],
        conference_sid=form["ConferenceSid"],
        call_sid=form.get("CallSid") or None,
        at=at,
        hold=hold,
        received=g.received,
    )
    return _outcome(current_app.extensions["quorum"].controller.conference_event(event))


@bp.post("/recording-status")
def recording_status():
    """Apply a recording event; the room is in our own callback URL."""
    missing = _missing("RecordingSid", "RecordingStatus")
    if missing:
        return missing
    room = request.args.get("room", "").strip()
    if not room:
        return _error(400, "missing query parameter: room")
    event = RecordingEvent(
        room=room,
        recording_sid=request.form["RecordingSid"],
        status=request.form["RecordingStatus"],
        at=time.time(),
        url=request.form.get("RecordingUrl") or None,
        duration_s=_number(request.form.get("RecordingDuration")),
        call_sid=request.args.get("call", "").strip() or None,
    )
    return _outcome(current_app.extensions["quorum"].controller.recording_event(event))


@bp.post("/call-status")
def call_status():
    """A call's own end, beside its participant-leave: our <Dial> action (answered with Hangup) or the number's
    StatusCallback."""
    missing = _missing("CallSid")
    if missing:
        return missing
    config, form, now = current_app.config["QUORUM"], request.form, time.time()
    # The number's StatusCallback has no room in its URL: it is the room /voice/inbound chose for the dialed number.
    room = request.args.get("room", "").strip() or laml.choose_room(config.conference_room, form.get("To", "").strip())
    if not room:
        return _error(400, "missing field: To")
    if not input_checks.valid_room(room):
        return _error(400, "invalid field: To")
    at = now  # the <Dial> action carries no Timestamp: our arrival clock (SignalWire's Timestamps are wall clock too)
    if form.get("Timestamp", "").strip():
        stamp = input_checks.event_time(form["Timestamp"])
        if stamp is None:
            return _error(400, "invalid field: Timestamp")
        at = end_time(stamp, _whole_seconds(form.get("CallDuration", "")), now)
        if input_checks.too_old(at, now, config.event_max_age_s):
            log.warning(
                "refused stale call-status call=%s: ended %.0f s ago, window %.0f s",
                form["CallSid"],
                now - at,
                config.event_max_age_s,
            )
            return _error(400, f"stale event: Timestamp older than {config.event_max_age_s:.0f} s")
    # The action comes "after the dialed call ends", whatever DialCallStatus says: the caller left the conference.
    dial_ended = bool(form.get("DialCallStatus", "").strip())
    outcome = Decision.IGNORED
    if dial_ended or form.get("CallStatus", "").strip() in CALL_OVER:
        event = CallStatusEvent(room=room, call_sid=form["CallSid"].strip(), at=at, received=g.received)
        outcome = current_app.extensions["quorum"].controller.call_ended(event)
    if dial_ended:
        return Response(laml.hangup_laml(), mimetype="text/xml", headers={"X-Quorum-Outcome": outcome})
    return _outcome(outcome)


def _whole_seconds(raw: str) -> int:
    """A duration field of up to 9 digits (30 years) as seconds; anything else counts as 0."""
    raw = raw.strip()
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 9 else 0


def _number(raw: str | None) -> float | None:
    """A numeric form field, or None when absent or not a number."""
    try:
        return float(raw) if raw else None
    except ValueError:
        return None


def _outcome(outcome: Decision) -> Response:
    """204, naming what the callback did in a header: one write, no body for SignalWire to read."""
    return Response(status=204, headers={"X-Quorum-Outcome": outcome})


def _missing(*fields: str):
    """A 400 naming the first required form field that is absent or empty, else None."""
    for name in fields:
        if not request.form.get(name, "").strip():
            return _error(400, f"missing field: {name}")
    return None


def _error(status: int, message: str):
    """A small JSON error body."""
    return jsonify(error=message), status
