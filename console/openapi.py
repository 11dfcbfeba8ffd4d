"""The OpenAPI 3.1 description of Quorum's JSON API and the /voice/* webhooks, served at `/api/openapi.json`."""

from __future__ import annotations

from console.api import MAX_PER_PAGE
from conversations.archive_index import CALLER_MIN_DIGITS
from conversations.record import STATUSES
from quorum.secure_pause import REASON_MAX_CHARS, REASON_REFUSED

API_VERSION = "0.4.0"
NULLABLE_STRING = {"type": ["string", "null"]}
ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
LAML = {"text/xml": {"schema": {"type": "string"}}}
DAY = {"type": "string", "anyOf": [{"maxLength": 0}, {"format": "date"}]}  # a blank form field: no bound


def _ref(name: str) -> dict:
    """A reference to one of the document's schemas."""
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    """A JSON response."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict:
    """A JSON error response ({"error": ...})."""
    return _json(_ref("Error"), description)


STORE_DOWN = _error("the state store (Redis) is unreachable: SignalWire retries a callback answered so")
REFUSED = _error("unsigned or badly signed (X-SignalWire-Signature over PUBLIC_URL + path + sorted form)")
BAD_INPUT = _error("a required field is missing, or an id, room or Timestamp is malformed or stale")
TOO_LARGE = {"description": "the body is over 64 KB"}
NO_TOKEN = _error("API_TOKEN is not set: this part is off")
WRONG_TOKEN = _error("missing or wrong bearer token")
SIGNED: list[dict[str, list[str]]] = [{"signalwireSignature": []}]  # security requirements: scheme -> scopes
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]


# What quorum/input_checks.py accepts: SignalWire's sids are UUIDs (Twilio-style ones are accepted too).
_UUID = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
SID = {kind: {"pattern": f"^({_UUID}|{kind}[0-9a-fA-F]{{32}})$"} for kind in ("CF", "CA", "RE")}
ROOM = {"pattern": "^[A-Za-z0-9_.+-]{1,64}$", "not": {"enum": [".", ".."]}}  # config.valid_room
FILLED = {"minLength": 1, "pattern": "\\S"}  # a pattern of its own (a sid's, a room's) is kept


def _field(shape: dict, required: bool) -> dict:
    """One form field or query parameter: a required one is never blank; a blank optional one counts as absent
    (SignalWire sends `CallSid=` on a conference recording's callback)."""
    if required:
        return {"type": "string", **FILLED, **shape}
    if "pattern" in shape:
        return {"type": "string", **shape, "pattern": f"^$|{shape['pattern']}"}
    return {"type": "string", **shape}


def _form(properties: dict, required: tuple = (), body_required: bool = True) -> dict:
    """A form-encoded request body, as SignalWire posts its callbacks."""
    schema = {
        "type": "object",
        "properties": {name: _field(shape, name in required) for name, shape in properties.items()},
    }
    if required:
        schema["required"] = list(required)
    return {"required": body_required, "content": {"application/x-www-form-urlencoded": {"schema": schema}}}


def _webhook(summary: str, body: dict, answer: dict, query: tuple = ()) -> dict:
    """A POST /voice/* operation: signed by SignalWire, answered within its 5 s read timeout."""
    operation = {
        "summary": summary,
        "tags": ["webhooks"],
        "security": SIGNED,
        "requestBody": body,
        "responses": {**answer, "400": BAD_INPUT, "403": REFUSED, "413": TOO_LARGE, "503": STORE_DOWN},
    }
    if query:
        operation["parameters"] = [
            {"name": name, "in": "query", "required": required, "schema": _field(shape, required)}
            for name, required, shape in query
        ]
    return {"post": operation}


OUTCOME = {
    "description": "applied; the header says what the callback did",
    "headers": {
        "X-Quorum-Outcome": {
            "schema": {"type": "string", "enum": ["applied", "queued", "processing", "forgotten", "stale", "ignored"]}
        }
    },
}


def _webhooks() -> dict:
    """The routes SignalWire calls."""
    return {
        "/voice/inbound": _webhook(
            "A call comes in: LaML that puts it in its room's recorded conference",
            _form({"CallSid": SID["CA"], "From": {}, "To": ROOM, "AccountSid": {}, "CallStatus": {}}, required=("To",)),
            {"200": {"description": "LaML: <Dial><Conference record=record-from-start>", "content": LAML}},
        ),
        "/voice/announce": _webhook(
            "The LaML SignalWire plays to a conference when the recording starts or resumes",
            _form({"AccountSid": {}, "ConferenceSid": SID["CF"], "FriendlyName": ROOM}, body_required=False),
            {"200": {"description": "LaML: <Say> the room's RECORDING_ANNOUNCEMENT", "content": LAML}},
            query=(("room", False, ROOM),),
        ),
        "/voice/conference-status": _webhook(
            "A conference or participant event (statusCallback of <Conference>)",
            _form(
                {
                    "ConferenceSid": SID["CF"],
                    "FriendlyName": ROOM,
                    "StatusCallbackEvent": {},
                    "CallSid": SID["CA"],
                    "Timestamp": {
                        "description": "RFC 2822, one-second resolution; required for the events Quorum "
                        "acts on, and no older than EVENT_MAX_AGE_S"
                    },
                    "Hold": {},
                    "Muted": {},
                },
                required=("ConferenceSid", "StatusCallbackEvent"),
            ),
            {"204": OUTCOME},
        ),
        "/voice/call-status": _webhook(
            "A call's own end: its <Dial action> (it left the conference) or the number's StatusCallback (it "
            "hung up); SignalWire's Timestamp and CallDuration, when sent, order it (fresh within EVENT_MAX_AGE_S)",
            _form(
                {
                    "CallSid": SID["CA"],
                    "To": ROOM,
                    "From": {},
                    "CallStatus": {},
                    "DialCallStatus": {},
                    "AccountSid": {},
                },
                required=("CallSid", "To"),
            ),
            {"200": {"description": "the <Dial action>: LaML that hangs up", "content": LAML}, "204": OUTCOME},
            query=(("room", False, ROOM),),
        ),
        "/voice/recording-status": _webhook(
            "A recording's status (recordingStatusCallback); the room is in Quorum's own callback URL",
            _form(
                {
                    "RecordingSid": SID["RE"],
                    "RecordingStatus": {},
                    "RecordingUrl": {},
                    "RecordingDuration": {},
                    "CallSid": SID["CA"],
                    "AccountSid": {},
                },
                required=("RecordingSid", "RecordingStatus"),
            ),
            {"204": OUTCOME},
            query=(("room", True, ROOM), ("call", False, SID["CA"])),
        ),
    }


def _operations() -> dict:
    """The JSON API, the live page's data, health and metrics."""
    page = {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1}}
    per_page = {"name": "per_page", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PER_PAGE}}
    return {
        "/api/conversations": {
            "get": {
                "summary": "Conversations, newest first: live ones from the store among the archived ones",
                "tags": ["conversations"],
                "security": BEARER,
                "parameters": [
                    {"name": "room", "in": "query", "schema": {"type": "string"}},
                    {"name": "status", "in": "query", "schema": {"type": "string", "enum": list(STATUSES)}},
                    {
                        "name": "caller",
                        "in": "query",
                        "description": "a caller's number, or its last digits",
                        "schema": {"type": "string", "pattern": f"^$|^([^0-9]*[0-9]){{{CALLER_MIN_DIGITS},}}"},
                    },
                    {"name": "from", "in": "query", "description": "first UTC day, included", "schema": DAY},
                    {
                        "name": "to",
                        "in": "query",
                        "description": "last UTC day, included (from and to may come in either order)",
                        "schema": DAY,
                    },
                    page,
                    per_page,
                ],
                "responses": {
                    "200": _json(_ref("ConversationPage"), "one page"),
                    "400": _error("a bad parameter"),
                    "401": WRONG_TOKEN,
                    "503": NO_TOKEN,
                },
            }
        },
        "/api/conversations/{conversation_id}": {
            "get": {
                "summary": "One conversation by id (its ConferenceSid)",
                "tags": ["conversations"],
                "security": BEARER,
                "parameters": [
                    {"name": "conversation_id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": _json(_ref("Conversation"), "the conversation record"),
                    "400": _error("the id is too long"),
                    "404": _error("no such conversation"),
                    "401": WRONG_TOKEN,
                    "503": NO_TOKEN,
                },
            }
        },
        **{f"/api/conferences/{{room}}/secure-{what}": {"post": _secure_pause(what)} for what in ("pause", "resume")},
        "/live.json": {
            "get": {
                "summary": "What the live page shows: every active conference",
                "tags": ["dashboard"],
                "security": [{"bearer": []}, {"dashboardCookie": []}],
                "responses": {
                    "200": _json(_ref("Live"), "active conferences, oldest first"),
                    "401": _error("not signed in"),
                    "503": {"description": "API_TOKEN is not set", "content": {"text/html": {}}},
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness for load balancers: the store reachable, commands queued, live rooms",
                "tags": ["operations"],
                "security": [],
                "responses": {"200": _json(_ref("Health"), "healthy"), "503": _json(_ref("Health"), "degraded")},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus text exposition",
                "tags": ["operations"],
                "security": BEARER,
                "responses": {
                    "200": {"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}},
                    "401": WRONG_TOKEN,
                    "503": NO_TOKEN,
                },
            }
        },
        "/api/openapi.json": {
            "get": {
                "summary": "This document",
                "tags": ["operations"],
                "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}},
            }
        },
    }


def _secure_pause(what: str) -> dict:
    """POST /api/conferences/{room}/secure-pause or secure-resume."""
    pause = what == "pause"
    operation: dict = {
        "summary": "Secure pause (PCI): stop the recording whatever the quorum says, until resumed or "
        "SECURE_PAUSE_MAX_S"
        if pause
        else "End the secure pause: the quorum rule decides again",
        "tags": ["conferences"],
        "security": BEARER,
        "parameters": [{"name": "room", "in": "path", "required": True, "schema": {"type": "string", **ROOM}}],
        "responses": {
            "200": _json(_ref("SecurePauseState"), "the conference's secure-pause state"),
            "404": _error("no live conference in that room"),
            "401": WRONG_TOKEN,
            "503": NO_TOKEN,
        },
    }
    if pause:
        reason = {
            "type": "object",
            "properties": {
                "reason": {
                    "type": "string",
                    "maxLength": REASON_MAX_CHARS,
                    "pattern": f"^[^{REASON_REFUSED}]*$",
                    "description": "why, for the record: one line, no control characters",
                }
            },
        }
        operation["requestBody"] = {
            "required": False,
            "content": {
                "application/x-www-form-urlencoded": {"schema": reason},
                "application/json": {"schema": reason},
            },
        }
        operation["responses"]["400"] = _error("the reason is too long, or not one line of text")
    return operation


def _schemas() -> dict:
    """The shapes the API answers with (records may gain fields: clients ignore what they don't know)."""
    millis = {"type": ["integer", "null"], "minimum": 0}
    span = {"type": "object", "required": ["start_ms", "end_ms"], "properties": {"start_ms": millis, "end_ms": millis}}
    audio = {
        "type": "object",
        "properties": {
            "wav_file": NULLABLE_STRING,
            "mp3_file": NULLABLE_STRING,
            "duration_ms": millis,
            "snr": {"type": ["number", "null"]},
            "rt60": {"type": ["number", "null"]},
            "deleted_from_signalwire": {"type": "boolean"},
        },
    }
    channel = {
        "type": "object",
        "required": ["call_sid", "start_ms", "end_ms", "holds", "audio"],
        "properties": {
            "connection_id": {"type": "string"},
            "call_sid": {"type": "string"},
            "from": {"type": "string"},
            "to": {"type": "string"},
            "host": {"type": "boolean"},
            "start_ms": millis,
            "end_ms": millis,
            "holds": {"type": "array", "items": span},
            "audio": _ref("Audio"),
            "recording_timeline": {"type": "array", "items": _ref("TimelineSpan")},
            "talk": _ref("ChannelTalk"),
        },
    }
    timeline_span = {
        "type": "object",
        "required": ["state", "start_ms", "end_ms"],
        "properties": {
            "state": {"type": "string", "enum": ["recording", "paused"]},
            "start_ms": millis,
            "end_ms": millis,
        },
    }
    seconds = {"type": ["number", "null"], "minimum": 0}
    channel_talk = {
        "type": "object",
        "description": "recorded time only (docs/conversations.md#talk-time)",
        "properties": {
            "seconds": seconds,
            "longest_monologue_s": seconds,
            "overlap_s": seconds,
            "share": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
            "spans": {"type": "array", "items": span},
        },
    }
    talk = {
        "type": "object",
        "properties": {
            "silence_s": seconds,
            "source": {"type": ["string", "null"], "enum": ["speaker-events", "audio", None]},
        },
    }
    conversation = {
        "type": "object",
        "required": ["id", "room", "status", "started_at", "ended_at", "audio", "recording_timeline", "channels"],
        "properties": {
            "id": {"type": "string"},
            "room": {"type": "string"},
            "status": {"type": "string", "enum": list(STATUSES)},
            "started_at": {"type": "string", "format": "date-time"},
            "ended_at": {"type": ["string", "null"], "format": "date-time"},
            "audio": _ref("Audio"),
            "recording_timeline": {"type": "array", "items": _ref("TimelineSpan")},
            "talk": talk,
            "announcements": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "at_ms": millis,
                        "outcome": {"type": "string", "enum": ["played", "failed", "skipped"]},
                    },
                },
            },
            "secure_pauses": {"type": "array", "items": _ref("SecurePause")},
            "channels": {"type": "array", "items": _ref("Channel")},
        },
    }
    secure_pause = {
        "type": "object",
        "required": ["start_ms", "end_ms", "by", "reason", "ended"],
        "properties": {
            "start_ms": millis,
            "end_ms": millis,
            "by": {"type": "string", "enum": ["api", "dashboard"]},
            "reason": {"type": "string"},
            "resumed_by": NULLABLE_STRING,
            "ended": {"type": ["string", "null"], "enum": ["resumed", "timed-out", "conference-ended", None]},
        },
    }
    on_now = {
        "type": ["object", "null"],
        "properties": {
            "by": {"type": "string"},
            "reason": {"type": "string"},
            "started_at": {"type": "string", "format": "date-time"},
            "until": {"type": "string", "format": "date-time"},
        },
    }
    participant = {
        "type": "object",
        "properties": {
            "number": {"type": "string"},
            "hold": {"type": "boolean"},
            "host": {"type": "boolean"},
            "joined": {"type": "string"},
        },
    }
    live_card = {
        "type": "object",
        "required": ["room", "state", "present", "participants"],
        "properties": {
            "room": {"type": "string"},
            "id": NULLABLE_STRING,
            "state": {"type": "string"},
            "state_words": {"type": "string"},
            "present": {"type": "integer", "minimum": 0},
            "rule": {"type": "string"},
            "participants": {"type": "array", "items": participant},
            "url": NULLABLE_STRING,
        },
    }
    return {
        "Error": ERROR,
        "Audio": audio,
        "Channel": channel,
        "Conversation": conversation,
        "SecurePause": secure_pause,
        "TimelineSpan": timeline_span,
        "ChannelTalk": channel_talk,
        "SecurePauseState": {
            "type": "object",
            "required": ["room", "secure_paused", "secure_pause", "wanted"],
            "properties": {
                "room": {"type": "string"},
                "conversation_id": NULLABLE_STRING,
                "secure_paused": {"type": "boolean"},
                "secure_pause": on_now,
                "wanted": {"type": "string", "enum": ["recording", "paused"]},
                "recording": {"type": "string"},
                "secure_pauses": {"type": "array", "items": _ref("SecurePause")},
            },
        },
        "ConversationPage": {
            "type": "object",
            "required": ["conversations", "page", "per_page", "total"],
            "properties": {
                "conversations": {"type": "array", "items": _ref("Conversation")},
                "page": {"type": "integer"},
                "per_page": {"type": "integer"},
                "total": {"type": "integer", "minimum": 0},
                "next_page": {"type": ["integer", "null"]},
            },
        },
        "Live": {
            "type": "object",
            "required": ["conferences", "summary", "updated"],
            "properties": {
                "conferences": {"type": "array", "items": live_card},
                "summary": {"type": "string"},
                "updated": {"type": "string"},
            },
        },
        "Health": {
            "type": "object",
            "required": ["status", "store", "queue_depth"],
            "properties": {
                "status": {"type": "string", "enum": ["ok", "degraded"]},
                "store": {"type": "string"},
                "archive": {"type": "string", "enum": ["ok", "unwritable"]},
                "queue_depth": {"type": "integer", "minimum": 0},
                "conferences": {"type": "integer", "minimum": 0},
            },
        },
    }


def document(public_url: str) -> dict:
    """The whole OpenAPI document, its server being PUBLIC_URL."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Quorum",
            "version": API_VERSION,
            "license": {"name": "MIT", "identifier": "MIT"},
            "description": "Records SignalWire conference calls only while a quorum is on the line. "
            "/voice/* are the webhooks SignalWire calls; the rest is for operators.",
        },
        "servers": [{"url": public_url or "/"}],
        "paths": {**_webhooks(), **_operations()},
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "API_TOKEN"},
                "dashboardCookie": {"type": "apiKey", "in": "cookie", "name": "quorum_dashboard"},
                "signalwireSignature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-SignalWire-Signature",
                    "description": "base64 HMAC-SHA1 with the Signing Key; X-Twilio-Signature is accepted too",
                },
            },
        },
    }
