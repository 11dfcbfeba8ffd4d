"""What ids and room names from a request may look like, checked before they reach a REST path, a key or the disk.

Pure functions: the /voice routes refuse anything else with 400.
"""

from __future__ import annotations

import re
from email.utils import parsedate_to_datetime
from typing import Mapping, Optional

from config import valid_room

_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# SignalWire's sids are UUIDs; Twilio-style ones (a two-letter kind and 32 hex digits) are accepted too.
_SID = {kind: re.compile(rf"{_UUID}|{kind}[0-9a-fA-F]{{32}}") for kind in ("CF", "CA", "RE")}

# (where, name) -> what it must be: sids by their kind, rooms by `config.valid_room`.
_CHECKED = {
    ("form", "ConferenceSid"): "CF",
    ("form", "CallSid"): "CA",
    ("form", "RecordingSid"): "RE",
    ("form", "FriendlyName"): "room",
    ("query", "room"): "room",
    ("query", "call"): "CA",
}


def valid_sid(kind: str, value: str) -> bool:
    """Whether `value` is a sid of `kind` (CF conference, CA call, RE recording)."""
    return bool(_SID[kind].fullmatch(value))


def first_invalid(form: Mapping[str, str], query: Mapping[str, str]) -> Optional[str]:
    """The name of the first present, non-empty id or room field that has the wrong shape, else None."""
    for (where, name), kind in _CHECKED.items():
        value = (form if where == "form" else query).get(name, "").strip()
        if value and not (valid_room(value) if kind == "room" else valid_sid(kind, value)):
            return name
    return None


def event_time(raw: str) -> Optional[float]:
    """SignalWire's RFC 2822 Timestamp as epoch seconds, or None when it cannot be read."""
    try:
        return parsedate_to_datetime(raw).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def too_old(at: float, now: float, max_age_s: float) -> bool:
    """Whether an event stamped `at` is older than the freshness window: a replay, or too late to trust.

    Events from the future are not refused: the signature covers the Timestamp, so only SignalWire can set it.
    """
    return now - at > max_age_s
