"""Settings: typed, defaulted, and refused with one clear line naming the setting."""

import logging
import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from console.request_logs import RedactTokens
from config import Config, ConfigError

ROOT = Path(__file__).resolve().parents[1]
VALID = {
    "SIGNALWIRE_PROJECT_ID": "p",
    "SIGNALWIRE_API_TOKEN": "t",
    "SIGNALWIRE_SPACE_URL": "x.signalwire.com",
    "SIGNALWIRE_SIGNING_KEY": "k",
    "PUBLIC_URL": "https://quorum.example.com/",
}


def test_defaults():
    config = Config.from_env(VALID)
    assert (config.port, config.min_participants, config.pause_behavior, config.trim) == (
        5000,
        2,
        "skip",
        "do-not-trim",
    )
    assert (config.conference_room, config.validate_signatures, config.use_ngrok) == ("per-number", True, False)
    assert config.public_url == "https://quorum.example.com"  # trailing slash dropped
    # SignalWire's copies stay and the archive is kept forever unless asked otherwise.
    assert (config.delete_from_signalwire, config.archive_retention_days) == (False, 0)


@pytest.mark.parametrize(
    "name, raw, field, value",
    [
        ("PORT", "8080", "port", 8080),
        ("MIN_PARTICIPANTS", "3", "min_participants", 3),
        ("USE_NGROK", "yes", "use_ngrok", True),
        ("VALIDATE_SIGNATURES", "False", "validate_signatures", False),
        ("PAUSE_BEHAVIOR", "silence", "pause_behavior", "silence"),
        ("LOG_LEVEL", "debug", "log_level", "DEBUG"),
        ("SIGNALWIRE_TIMEOUT_S", "2.5", "signalwire_timeout_s", 2.5),
        ("CONFERENCE_ROOM", "support", "conference_room", "support"),
        ("SIGNALWIRE_API_URL", "http://127.0.0.1:8099", "signalwire_api_url", "http://127.0.0.1:8099"),
        ("EVENT_MAX_AGE_S", "60", "event_max_age_s", 60.0),
        ("MAX_RECORDING_MB", "500", "max_recording_mb", 500),
        ("EVENT_CALLBACK_CONCURRENCY", "2", "event_callback_concurrency", 2),
        ("EVENT_QUEUE_MAX", "10", "event_queue_max", 10),
        ("DELETE_FROM_SIGNALWIRE", "true", "delete_from_signalwire", True),
        ("DELETE_FROM_SIGNALWIRE", "no", "delete_from_signalwire", False),
        ("ARCHIVE_RETENTION_DAYS", "30", "archive_retention_days", 30),
        ("ARCHIVE_RETENTION_DAYS", "0", "archive_retention_days", 0),
    ],
)
def test_typed_values(name, raw, field, value):
    assert getattr(Config.from_env({**VALID, name: raw}), field) == value


@pytest.mark.parametrize(
    "changes, setting",
    [
        ({"SIGNALWIRE_PROJECT_ID": ""}, "SIGNALWIRE_PROJECT_ID"),
        ({"SIGNALWIRE_API_TOKEN": ""}, "SIGNALWIRE_API_TOKEN"),
        ({"SIGNALWIRE_SPACE_URL": ""}, "SIGNALWIRE_SPACE_URL"),
        ({"SIGNALWIRE_SIGNING_KEY": ""}, "SIGNALWIRE_SIGNING_KEY"),
        ({"PUBLIC_URL": ""}, "PUBLIC_URL"),
        ({"PUBLIC_URL": "quorum.example.com"}, "PUBLIC_URL"),
        ({"PUBLIC_URL": "https://q.example.com/?x=1"}, "PUBLIC_URL"),
        ({"PORT": "eighty"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"MIN_PARTICIPANTS": "0"}, "MIN_PARTICIPANTS"),
        ({"PAUSE_BEHAVIOR": "mute"}, "PAUSE_BEHAVIOR"),
        ({"TRIM": "yes"}, "TRIM"),
        ({"USE_NGROK": "maybe"}, "USE_NGROK"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"SIGNALWIRE_TIMEOUT_S": "0"}, "SIGNALWIRE_TIMEOUT_S"),
        ({"SIGNALWIRE_CONCURRENCY": "0"}, "SIGNALWIRE_CONCURRENCY"),
        ({"SIGNALWIRE_API_URL": "localhost:8099"}, "SIGNALWIRE_API_URL"),
        ({"END_GRACE_S": "-1"}, "END_GRACE_S"),
        ({"CONFERENCE_ROOM": "a/../b"}, "CONFERENCE_ROOM"),
        ({"EVENT_MAX_AGE_S": "0"}, "EVENT_MAX_AGE_S"),
        ({"MAX_RECORDING_MB": "0"}, "MAX_RECORDING_MB"),
        ({"EVENT_CALLBACK_CONCURRENCY": "0"}, "EVENT_CALLBACK_CONCURRENCY"),
        ({"EVENT_QUEUE_MAX": "0"}, "EVENT_QUEUE_MAX"),
        ({"DELETE_FROM_SIGNALWIRE": "sometimes"}, "DELETE_FROM_SIGNALWIRE"),
        ({"ARCHIVE_RETENTION_DAYS": "-1"}, "ARCHIVE_RETENTION_DAYS"),
        ({"ARCHIVE_RETENTION_DAYS": "a month"}, "ARCHIVE_RETENTION_DAYS"),
        ({"ARCHIVE_RETENTION_DAYS": "1.5"}, "ARCHIVE_RETENTION_DAYS"),
        ({"SIGNALWIRE_SPACE_URL": "https://example.signalwire.com"}, "SIGNALWIRE_SPACE_URL"),
        ({"SIGNALWIRE_SPACE_URL": "example.signalwire.com/"}, "SIGNALWIRE_SPACE_URL"),
    ],
)
def test_bad_settings_name_the_setting(changes, setting):
    with pytest.raises(ConfigError) as error:
        Config.from_env({**VALID, **changes})
    assert error.value.setting == setting
    assert str(error.value).startswith(setting)


def test_signing_key_not_needed_when_validation_is_off():
    assert Config.from_env({**VALID, "SIGNALWIRE_SIGNING_KEY": "", "VALIDATE_SIGNATURES": "false"})


def test_public_url_optional_with_ngrok():
    assert Config.from_env({**VALID, "PUBLIC_URL": "", "USE_NGROK": "true"}).public_url == ""


@pytest.mark.slow
def test_start_up_with_a_bad_setting_prints_one_line_and_no_traceback(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGNALWIRE_", "PUBLIC_URL"))}
    env.update(VALID, MIN_PARTICIPANTS="two")
    result = subprocess.run(
        [sys.executable, str(ROOT / "app.py")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "quorum: configuration error: MIN_PARTICIPANTS: must be a number, got 'two'"
    ]


@pytest.mark.parametrize("document", [".env.example", "README.md"])
def test_every_setting_is_documented(document):
    text = (ROOT / document).read_text()
    missing = [
        f.name.upper()
        for f in fields(Config)
        if f.init and f"{f.name.upper()}=" not in text and f"`{f.name.upper()}`" not in text
    ]
    assert missing == []


@pytest.mark.parametrize(
    "line, shown",
    [
        ('"GET /login?token=s3cret HTTP/1.1" 302 -', '"GET /login?token=REDACTED HTTP/1.1" 302 -'),
        (
            '"GET /history?page=2&token=abc&room=x HTTP/1.1" 200 -',
            '"GET /history?page=2&token=REDACTED&room=x HTTP/1.1" 200 -',
        ),
        ('"POST /voice/inbound HTTP/1.1" 200 -', '"POST /voice/inbound HTTP/1.1" 200 -'),
    ],
)
def test_request_logs_never_show_the_sign_in_token(line, shown):
    record = logging.LogRecord("werkzeug", logging.INFO, __file__, 1, "%s", (line,), None)
    assert RedactTokens().filter(record) and record.getMessage() == shown


@pytest.mark.parametrize("document", [".env.example", "README.md"])
def test_the_emulator_address_documented_is_where_it_listens(document):
    """A newcomer copies SIGNALWIRE_API_URL's example: it must be the port `python -m emulator` listens on."""
    cli = (ROOT / "emulator" / "__main__.py").read_text()
    default = re.search(r'"--port", type=int, default=(\d+)', cli).group(1)
    text = (ROOT / document).read_text()
    near = text[max(0, text.index("SIGNALWIRE_API_URL") - 300) : text.index("SIGNALWIRE_API_URL") + 300]
    assert re.findall(r"http://127\.0\.0\.1:(\d+)", near) == [default]
