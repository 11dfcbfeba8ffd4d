"""The emulator's own controls, beside (never under) SignalWire's API paths: `POST /_emulator/calls` places an
ad-hoc call into a running emulator, which is what `python -m emulator call` sends.

Not a SignalWire API: SignalWire's inbound calls come from the phone network. It takes the project's HTTP Basic
credentials like the REST API, and the form fields `To`, `From` (default: a new caller each time), `HoldAfter`
and `HangupAfter` (seconds from joining; absent: never).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import threading
from typing import Callable, Optional

import requests
from flask import Blueprint, jsonify, request

from emulator.calls import NotFound, Unprocessable
from emulator.rest_api import error
from emulator.scenarios import caller_number

CALLS_PATH = "/_emulator/calls"
TIMEOUT_S = 15.0  # the call's voice webhook has 2 s to connect and 5 s to answer; the rest is slack


def blueprint(emulator) -> Blueprint:
    """The control routes of one `Emulator`."""
    bp = Blueprint("control", __name__)
    callers = itertools.count(1)

    @bp.before_request
    def guard():
        """The project's credentials, as the REST API takes them."""
        auth = request.authorization
        if not auth or auth.username != emulator.project or auth.password != emulator.token:
            return error(401, code=20003)
        return None

    @bp.post(CALLS_PATH)
    def place():
        """Dial `To` from `From` now; answers once the voice webhook did, saying where the call is."""
        to = request.form.get("To", "").strip()
        if not to:
            return error(400, "To is required", 20001)
        from_ = request.form.get("From", "").strip() or caller_number(f"call-{next(callers)}")
        try:
            hold_after, hangup_after = (_seconds(request.form.get(name)) for name in ("HoldAfter", "HangupAfter"))
        except ValueError:
            return error(400, "HoldAfter and HangupAfter must be seconds, 0 or more", 20001)
        return jsonify(place_call(emulator, to, from_, hold_after, hangup_after))

    return bp


def place_call(emulator, to: str, from_: str, hold_after: Optional[float], hangup_after: Optional[float]) -> dict:
    """Dial `to` from `from_`; once the call is in its conference, hold it and hang it up after the delays given.
    Returns the call as the control endpoint answers it (`detail`: why it failed, if it did)."""
    with emulator.sim.lock:
        seen = len(emulator.sim.events)
    call = emulator.dial(to, from_)
    if call.conference_sid is not None:
        if hold_after is not None:
            _after(hold_after, lambda: emulator.hold(call.sid))
        if hangup_after is not None:
            _after(hangup_after, lambda: emulator.hangup(call.sid))
    with emulator.sim.lock:
        why = next(
            (e.detail for e in emulator.sim.events[seen:] if e.kind == "call-failed" and e.label == call.label), ""
        )
    return {
        "sid": call.sid,
        "from": call.from_,
        "to": call.to,
        "status": call.status,
        "conference_sid": call.conference_sid,
        "detail": why,
    }


def request_call(
    url: str,
    project: str,
    token: str,
    to: str,
    from_: Optional[str] = None,
    hold_after: Optional[float] = None,
    hangup_after: Optional[float] = None,
) -> requests.Response:
    """Ask the emulator at `url` for a call (requests' errors pass through)."""
    form = {"To": to, "From": from_ or "", "HoldAfter": _field(hold_after), "HangupAfter": _field(hangup_after)}
    return requests.post(url.rstrip("/") + CALLS_PATH, data=form, auth=(project, token), timeout=TIMEOUT_S)


def _after(delay_s: float, action: Callable[[], object]) -> None:
    """Run `action` in `delay_s` seconds; a call that is over by then (hung up, its conference ended) is left be."""

    def run() -> None:
        with contextlib.suppress(NotFound, Unprocessable):
            action()

    timer = threading.Timer(delay_s, run)
    timer.daemon = True
    timer.start()


def _seconds(raw: Optional[str]) -> Optional[float]:
    """A delay field: None when absent or empty, else seconds (ValueError if negative, endless or not a number)."""
    if raw is None or not raw.strip():
        return None
    seconds = float(raw)
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(raw)
    return seconds


def _field(seconds: Optional[float]) -> str:
    """A delay as a form field ('' for none)."""
    return "" if seconds is None else f"{seconds:g}"
