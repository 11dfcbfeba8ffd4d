"""Typed settings for Quorum, read from the environment and an optional `.env` file."""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Dict, Mapping, Optional
from urllib.parse import unquote, urlsplit

PAUSE_BEHAVIORS = ("skip", "silence")
TRIM_CHOICES = ("do-not-trim", "trim-silence")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_CALLER_NUMBERS_CHOICES = ("masked", "full")
PER_NUMBER = "per-number"
PARTICIPANT_RECORDING_CHOICES = ("off", "inbound")
READS_PER_CONFERENCE = 2  # GETs in one conference read: its participants and its recordings
# A room is a dialed number (E.164) or a configured FriendlyName: one safe path segment, bounded.
_ROOM = re.compile(r"[A-Za-z0-9_.+-]{1,64}")
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_SPACE = re.compile(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+(:[0-9]{1,5})?")  # a host name: the SDK prefixes https://
ANNOUNCEMENT_MAX_CHARS = 500  # a sentence or two: <Say> reads it to everyone on every start and resume
STATE_FILE_NAME = ".quorum-state.sqlite3"  # STATE_FILE's default, in RECORDINGS_DIR
STATE_FILE_OFF = "off"
SECURE_PAUSE_MAX_S_LIMIT = 86400  # a day: longer than any call


def valid_room(value: str) -> bool:
    """Whether `value` is a usable room name (and so a safe key, URL value and directory name)."""
    return bool(_ROOM.fullmatch(value)) and value not in (".", "..")


def numbers_in(value: str) -> tuple:
    """The numbers of a comma list, stripped, empties dropped."""
    return tuple(n.strip() for n in value.split(",") if n.strip())


@dataclass(frozen=True)
class RoomRule:
    """What one room records by: the global settings, or its table in ROOM_RULES_FILE."""

    min_participants: int = 2
    pause_behavior: str = "skip"
    record_participants: str = "all"
    host_numbers: tuple = ()  # E.164; when set, a quorum needs at least one host on the line
    recording_announcement: str = ""  # played to everyone each time the recording starts or resumes
    hold_counts_as_present: bool = False

    def records(self, number: str) -> bool:
        """Whether RECORD_PARTICIPANTS picks this caller (PARTICIPANT_RECORDING decides whether anyone is)."""
        return self.record_participants.strip().lower() == "all" or number.strip() in numbers_in(
            self.record_participants
        )

    def is_host(self, number: str) -> bool:
        """Whether a caller from `number` is a host of this room."""
        return number.strip() in self.host_numbers


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names it."""

    def __init__(self, setting: str, problem: str):
        super().__init__(f"{setting}: {problem}")
        self.setting = setting


@dataclass(frozen=True)
class Config:
    """Every setting Quorum reads; see `.env.example` for what each one means."""

    signalwire_project_id: str
    signalwire_api_token: str
    signalwire_space_url: str
    signalwire_signing_key: str = ""
    signalwire_phone_number: Optional[str] = None
    signalwire_api_url: Optional[str] = None
    public_url: str = ""
    use_ngrok: bool = False
    ngrok_authtoken: Optional[str] = None
    ngrok_path: Optional[str] = None  # the ngrok binary; unset: ngrok on PATH, else pyngrok downloads its own
    port: int = 5000
    min_participants: int = 2
    pause_behavior: str = "skip"
    hold_counts_as_present: bool = False
    host_numbers: str = ""
    recording_announcement: str = ""
    room_rules_file: Optional[str] = None
    conference_room: str = PER_NUMBER
    trim: str = "do-not-trim"
    validate_signatures: bool = True
    log_level: str = "INFO"
    log_caller_numbers: str = "masked"  # full: log lines show callers' numbers whole
    signalwire_timeout_s: float = 5.0
    signalwire_concurrency: int = 32
    end_grace_s: float = 300.0
    participant_recording: str = "off"
    talk_time: bool = False  # ask SignalWire for speaker events (a callback per turn), for talk-time figures
    record_participants: str = "all"
    api_token: Optional[str] = None
    recordings_dir: str = "./recordings"
    archive_url: str = ""  # empty: file://RECORDINGS_DIR; s3://bucket/prefix: object storage, RECORDINGS_DIR stages
    archive_public_key: str = ""  # age X25519 recipients (age1...): media and records encrypted before they leave
    archive_link_s: int = 300  # how long a presigned media URL of the object-storage archive is valid
    event_callback_url: Optional[str] = None
    event_callback_secret: Optional[str] = None
    event_callback_concurrency: int = 4
    event_queue_max: int = 1000
    redis_url: Optional[str] = None
    redis_namespace: str = "quorum"
    reconcile_interval_s: float = 60.0
    reconcile_max_reads_per_s: int = 400
    repair_interval_s: float = 8.0
    event_max_age_s: float = 900.0
    max_recording_mb: int = 240
    delete_from_signalwire: bool = False  # SignalWire serves media without auth: delete its copy once ours is checked
    archive_retention_days: int = 0  # 0: keep archived conversations forever
    state_file: str = ""  # empty: RECORDINGS_DIR/.quorum-state.sqlite3; "off": none; see state_path
    secure_pause_max_s: float = 180.0  # a secure pause (PCI) not resumed ends by itself after this long
    # Built from the settings above (and ROOM_RULES_FILE) once, at construction.
    rules: Dict[str, RoomRule] = field(default_factory=dict, init=False, repr=False, compare=False)
    default_rule: RoomRule = field(default=RoomRule(), init=False, repr=False, compare=False)

    def rule_for(self, room: str) -> RoomRule:
        """The rule a room records by: its ROOM_RULES_FILE table, else the global settings."""
        return self.rules.get(room, self.default_rule)

    def archive_root(self) -> str:
        """The local directory of the archive: ARCHIVE_URL's file:// path, else RECORDINGS_DIR (which, with an
        s3:// ARCHIVE_URL, stages each conversation until its upload is checked)."""
        parts = urlsplit(self.archive_url)
        return unquote(parts.path) if parts.scheme == "file" else self.recordings_dir

    def state_path(self) -> Optional[str]:
        """Where the memory store writes its state through (STATE_FILE), or None: off, or Redis is the store."""
        if self.redis_url or self.state_file.lower() == STATE_FILE_OFF:
            return None
        return self.state_file or os.path.join(self.recordings_dir, STATE_FILE_NAME)

    def records_caller(self, number: str, room: str) -> bool:
        """Whether a caller gets a recording of their own (PARTICIPANT_RECORDING, the room's RECORD_PARTICIPANTS)."""
        return self.participant_recording != "off" and self.rule_for(room).records(number)

    def __post_init__(self):
        # A trailing slash would double up in every callback URL and break signatures.
        object.__setattr__(self, "public_url", self.public_url.rstrip("/"))
        _check(self)
        default = RoomRule(
            self.min_participants,
            self.pause_behavior,
            self.record_participants,
            numbers_in(self.host_numbers),
            self.recording_announcement,
            self.hold_counts_as_present,
        )
        object.__setattr__(self, "default_rule", default)
        if self.room_rules_file:
            object.__setattr__(self, "rules", load_room_rules(self.room_rules_file, default, self.conference_room))

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "Config":
        """Build from `environ` (default: os.environ after loading `.env`)."""
        if environ is None:
            from dotenv import load_dotenv

            load_dotenv()
            environ = os.environ
        values: Dict[str, Any] = {}  # each field's own type, from its parser
        for setting in fields(cls):
            name = setting.name.upper()
            raw = environ.get(name, "").strip()
            if raw and setting.init:
                values[setting.name] = _PARSERS.get(setting.name, _parse_text)(name, raw)
        for required in ("signalwire_project_id", "signalwire_api_token", "signalwire_space_url"):
            if required not in values:
                raise ConfigError(required.upper(), "is required (SignalWire dashboard → API)")
        return cls(**values)


def _parse_bool(name: str, raw: str) -> bool:
    """Read true/false, yes/no, 1/0."""
    lowered = raw.lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    raise ConfigError(name, f"must be true or false, got {raw!r}")


def _parse_number(kind: Callable[[str], float]) -> Callable[[str, str], float]:
    """Make a parser for int or float settings with a clear error."""

    def parse(name: str, raw: str):
        try:
            return kind(raw)
        except ValueError:
            raise ConfigError(name, f"must be a number, got {raw!r}") from None

    return parse


def _parse_text(name: str, raw: str) -> str:
    """Plain text settings are taken as given."""
    return raw


def _parse_upper(name: str, raw: str) -> str:
    """Normalise names such as log levels to upper case."""
    return raw.upper()


_PARSERS = {
    "use_ngrok": _parse_bool,
    "validate_signatures": _parse_bool,
    "hold_counts_as_present": _parse_bool,
    "port": _parse_number(int),
    "min_participants": _parse_number(int),
    "signalwire_concurrency": _parse_number(int),
    "signalwire_timeout_s": _parse_number(float),
    "end_grace_s": _parse_number(float),
    "reconcile_interval_s": _parse_number(float),
    "reconcile_max_reads_per_s": _parse_number(int),
    "repair_interval_s": _parse_number(float),
    "event_max_age_s": _parse_number(float),
    "max_recording_mb": _parse_number(int),
    "event_callback_concurrency": _parse_number(int),
    "event_queue_max": _parse_number(int),
    "log_level": _parse_upper,
    "delete_from_signalwire": _parse_bool,
    "talk_time": _parse_bool,
    "archive_retention_days": _parse_number(int),
    "archive_link_s": _parse_number(int),
    "secure_pause_max_s": _parse_number(float),
}


def _check(config: Config) -> None:
    """Refuse values that would only fail later, naming the setting."""
    _choice("TRIM", config.trim, TRIM_CHOICES)
    _choice("LOG_LEVEL", config.log_level, LOG_LEVELS)
    _choice("LOG_CALLER_NUMBERS", config.log_caller_numbers, LOG_CALLER_NUMBERS_CHOICES)
    _choice("PARTICIPANT_RECORDING", config.participant_recording, PARTICIPANT_RECORDING_CHOICES)
    if config.event_callback_url:
        _http_url("EVENT_CALLBACK_URL", config.event_callback_url)
        if not config.event_callback_secret:
            raise ConfigError("EVENT_CALLBACK_SECRET", "is required with EVENT_CALLBACK_URL (receivers verify with it)")
    if not 1 <= config.port <= 65535:
        raise ConfigError("PORT", f"must be between 1 and 65535, got {config.port}")
    _check_rule(
        "",
        RoomRule(
            config.min_participants,
            config.pause_behavior,
            config.record_participants,
            numbers_in(config.host_numbers),
            config.recording_announcement,
        ),
    )
    if config.signalwire_concurrency < 1:
        raise ConfigError("SIGNALWIRE_CONCURRENCY", f"must be at least 1, got {config.signalwire_concurrency}")
    if config.signalwire_timeout_s <= 0:
        raise ConfigError("SIGNALWIRE_TIMEOUT_S", "must be greater than 0")
    if config.end_grace_s < 0:
        raise ConfigError("END_GRACE_S", "must be 0 or more")
    if config.reconcile_interval_s < 0:
        raise ConfigError("RECONCILE_INTERVAL_S", "must be 0 (off) or more")
    if config.reconcile_max_reads_per_s < READS_PER_CONFERENCE:
        raise ConfigError(
            "RECONCILE_MAX_READS_PER_S",
            f"must be at least {READS_PER_CONFERENCE} (one conference read), got {config.reconcile_max_reads_per_s}",
        )
    if config.repair_interval_s <= 0:
        raise ConfigError(
            "REPAIR_INTERVAL_S", "must be greater than 0 (seconds between reads of a conference at the threshold)"
        )
    if config.event_max_age_s <= 0:
        raise ConfigError("EVENT_MAX_AGE_S", "must be greater than 0 (seconds a conference event may be late)")
    if config.event_callback_concurrency < 1:
        raise ConfigError("EVENT_CALLBACK_CONCURRENCY", f"must be at least 1, got {config.event_callback_concurrency}")
    if config.event_queue_max < 1:
        raise ConfigError("EVENT_QUEUE_MAX", f"must be at least 1, got {config.event_queue_max}")
    if config.max_recording_mb < 1:
        raise ConfigError("MAX_RECORDING_MB", f"must be at least 1, got {config.max_recording_mb}")
    if not _SPACE.fullmatch(config.signalwire_space_url):
        raise ConfigError(
            "SIGNALWIRE_SPACE_URL",
            "must be the space's host name, such as example.signalwire.com "
            f"(no https://, no path), got {config.signalwire_space_url!r}",
        )
    archive = urlsplit(config.archive_url)
    if config.archive_url and archive.scheme not in ("file", "s3"):
        raise ConfigError(
            "ARCHIVE_URL", f"must be empty, file:///path or s3://bucket/prefix, got {config.archive_url!r}"
        )
    if archive.scheme == "file" and (archive.netloc not in ("", "localhost") or not archive.path):
        raise ConfigError(
            "ARCHIVE_URL", f"a file URL names a local directory, file:///path, got {config.archive_url!r}"
        )
    if not 1 <= config.archive_link_s <= 7 * 86400:
        raise ConfigError(
            "ARCHIVE_LINK_S", f"must be 1 to 604800 s (S3's limit is 7 days), got {config.archive_link_s}"
        )
    if config.redis_url and urlsplit(config.redis_url).scheme not in ("redis", "rediss", "unix"):
        raise ConfigError("REDIS_URL", f"must start with redis://, rediss:// or unix://, got {config.redis_url!r}")
    if config.conference_room != PER_NUMBER and not valid_room(config.conference_room):
        raise ConfigError(
            "CONFERENCE_ROOM",
            f"must be {PER_NUMBER!r} or a room name of 1-64 letters, digits, "
            f"'_', '.', '+' or '-', got {config.conference_room!r}",
        )
    if config.validate_signatures and not config.signalwire_signing_key:
        raise ConfigError(
            "SIGNALWIRE_SIGNING_KEY",
            "is required while VALIDATE_SIGNATURES=true (SignalWire dashboard → API → Signing Key)",
        )
    if config.use_ngrok:
        if config.public_url:
            _http_url("PUBLIC_URL", config.public_url)
        if config.ngrok_path and not (os.path.isfile(config.ngrok_path) and os.access(config.ngrok_path, os.X_OK)):
            raise ConfigError("NGROK_PATH", f"is not an executable file: {config.ngrok_path!r}")
    else:
        if not config.public_url:
            raise ConfigError("PUBLIC_URL", "is required when USE_NGROK=false (the https URL SignalWire calls)")
        _http_url("PUBLIC_URL", config.public_url)
    if config.signalwire_api_url:
        _http_url("SIGNALWIRE_API_URL", config.signalwire_api_url)
    if config.state_file.lower() in ("on", "true", "false", "yes", "no", "0", "1"):  # a switch, not a file name
        raise ConfigError(
            "STATE_FILE",
            f"must be empty (RECORDINGS_DIR/{STATE_FILE_NAME}), {STATE_FILE_OFF} "
            f"or a file path, got {config.state_file!r}",
        )
    if not 0 < config.secure_pause_max_s <= SECURE_PAUSE_MAX_S_LIMIT:  # NaN fails too
        raise ConfigError(
            "SECURE_PAUSE_MAX_S",
            f"must be more than 0 and at most {SECURE_PAUSE_MAX_S_LIMIT} seconds "
            f"(the longest a secure pause lasts), got {config.secure_pause_max_s}",
        )
    if config.archive_retention_days < 0:
        raise ConfigError(
            "ARCHIVE_RETENTION_DAYS",
            f"must be 0 (keep forever) or a number of days, got {config.archive_retention_days}",
        )


def _check_rule(where: str, rule: RoomRule) -> None:
    """Refuse a rule that could not be followed; `where` prefixes the setting's name (a rules-file table)."""

    def name(setting: str) -> str:
        return f"{where}{setting.lower()}" if where else setting

    if rule.min_participants < 1:
        raise ConfigError(name("MIN_PARTICIPANTS"), f"must be at least 1, got {rule.min_participants}")
    _choice(name("PAUSE_BEHAVIOR"), rule.pause_behavior, PAUSE_BEHAVIORS)
    bad = [n for n in rule.host_numbers if not _E164.fullmatch(n)]
    if bad:
        raise ConfigError(name("HOST_NUMBERS"), f"must be E.164 numbers such as +15551230000, got {bad[0]!r}")
    if len(rule.recording_announcement) > ANNOUNCEMENT_MAX_CHARS:
        raise ConfigError(name("RECORDING_ANNOUNCEMENT"), f"must be at most {ANNOUNCEMENT_MAX_CHARS} characters")


# ROOM_RULES_FILE keys and the types TOML must give them.
_RULE_KEYS: Dict[str, type | tuple[type, ...]] = {
    "min_participants": int,
    "pause_behavior": str,
    "record_participants": (str, list),
    "host_numbers": (str, list),
    "recording_announcement": str,
    "hold_counts_as_present": bool,
}


def load_room_rules(path: str, default: RoomRule, conference_room: str = PER_NUMBER) -> Dict[str, RoomRule]:
    """Each dialed number's table in the TOML file, over `default`; a bad file names the number and key.

    A table that no room could ever be named is refused: with one room per number, an E.164 number; with
    one fixed CONFERENCE_ROOM, that room."""
    try:
        with open(path, "rb") as handle:
            tables = tomllib.load(handle)
    except OSError as error:
        raise ConfigError("ROOM_RULES_FILE", f"cannot read {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError("ROOM_RULES_FILE", f"{path} is not valid TOML: {error}") from None
    rules = {room: _room_rule(path, room, table, default) for room, table in tables.items()}
    for room in rules:
        if conference_room == PER_NUMBER and not _E164.fullmatch(room):
            raise ConfigError(
                f"ROOM_RULES_FILE {path} [{room}]",
                f'must be named by a dialed number in E.164 form, such as "+{room.lstrip("+")}"',
            )
        if conference_room != PER_NUMBER and room != conference_room:
            raise ConfigError(
                f"ROOM_RULES_FILE {path} [{room}]",
                f"can never apply: CONFERENCE_ROOM puts every call in {conference_room!r}",
            )
    return rules


def _room_rule(path: str, room: str, table, default: RoomRule) -> RoomRule:
    """One table of the rules file as a RoomRule."""
    where = f"ROOM_RULES_FILE {path} [{room}] "
    if not isinstance(table, dict) or not valid_room(room):
        raise ConfigError(where.rstrip(), 'must be a table named by a dialed number such as "+15551230000"')
    changes: Dict[str, Any] = {}  # each rule's own type, checked against _RULE_KEYS
    for key, value in table.items():
        kind = _RULE_KEYS.get(key)
        if kind is None:
            raise ConfigError(where + key, f"is not a rule; use one of {', '.join(_RULE_KEYS)}")
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(where + key, f"has the wrong type: {value!r}")
        if isinstance(value, list):
            value = ",".join(str(item) for item in value)
        changes[key] = numbers_in(value) if key == "host_numbers" else value
    rule = replace(default, **changes)
    _check_rule(where, rule)
    return rule


def _choice(name: str, value: str, allowed: tuple) -> None:
    """Refuse a value outside `allowed`."""
    if value not in allowed:
        raise ConfigError(name, f"must be one of {', '.join(allowed)}; got {value!r}")


def _http_url(name: str, value: str) -> None:
    """Refuse anything but an absolute http(s) URL with no query or fragment."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(name, f"must be an absolute http(s) URL, got {value!r}")
    if parts.query or parts.fragment:
        raise ConfigError(name, "must not carry a query string or fragment")
