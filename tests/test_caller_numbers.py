"""Caller numbers are masked to their last four digits in log lines unless LOG_CALLER_NUMBERS=full."""

import logging

import pytest

from app import create_app, shutdown
from config import Config, ConfigError
from console.request_logs import MaskCallerNumbers, configure_werkzeug
from quorum.caller_numbers import masked
from support import PROJECT, SignedCallbacks, make_config, sid

CALLER = "+15551230000"


@pytest.mark.parametrize(
    "number, shown",
    [
        ("+15551230000", "+1******0000"),
        ("+442071838750", "+4*******8750"),
        ("15551230000", "*******0000"),
        ("+1234", "+1234"),
        ("0000", "0000"),
        ("", ""),
        ("anonymous", "*****mous"),
    ],
)
def test_a_number_keeps_its_country_code_s_first_digit_and_its_last_four(number, shown):
    assert masked(number) == shown


def inbound_lines(caplog, **settings):
    """The log lines of one signed /voice/inbound call from CALLER."""
    caplog.set_level(logging.INFO)
    app = create_app(make_config(**settings))
    try:
        form = {"AccountSid": PROJECT, "CallSid": sid("CA"), "From": CALLER, "To": "+15550100"}
        assert SignedCallbacks(app).post("/voice/inbound", form).status_code == 200
    finally:
        shutdown(app)
    return [r.getMessage() for r in caplog.records if "join-conference" in r.getMessage()]


def test_the_inbound_line_masks_the_caller_by_default(signalwire, caplog):
    [line] = inbound_lines(caplog)
    assert "from=+1******0000" in line and CALLER not in caplog.text


def test_log_caller_numbers_full_shows_them(signalwire, caplog):
    [line] = inbound_lines(caplog, log_caller_numbers="full")
    assert f"from={CALLER}" in line


def test_the_setting_is_read_and_checked():
    base = {
        "SIGNALWIRE_PROJECT_ID": "p",
        "SIGNALWIRE_API_TOKEN": "t",
        "SIGNALWIRE_SPACE_URL": "x.signalwire.com",
        "SIGNALWIRE_SIGNING_KEY": "k",
        "PUBLIC_URL": "https://quorum.example.com",
    }
    assert Config.from_env(base).log_caller_numbers == "masked"
    assert Config.from_env({**base, "LOG_CALLER_NUMBERS": "full"}).log_caller_numbers == "full"
    with pytest.raises(ConfigError) as refused:
        Config.from_env({**base, "LOG_CALLER_NUMBERS": "partly"})
    assert refused.value.setting == "LOG_CALLER_NUMBERS"


@pytest.mark.parametrize(
    "line, shown",
    [
        ('"GET /history?caller=%2B15551230000 HTTP/1.1" 200 -', '"GET /history?caller=**********0000 HTTP/1.1" 200 -'),
        (
            '"GET /api/conversations?room=x&caller=+15551230000&page=2 HTTP/1.1" 200 -',
            '"GET /api/conversations?room=x&caller=+1******0000&page=2 HTTP/1.1" 200 -',
        ),
        ('"GET /history?page=2 HTTP/1.1" 200 -', '"GET /history?page=2 HTTP/1.1" 200 -'),
    ],
)
def test_request_lines_mask_the_caller_searched_for(line, shown):
    record = logging.LogRecord("werkzeug", logging.INFO, __file__, 1, "%s", (line,), None)
    assert MaskCallerNumbers().filter(record) and record.getMessage() == shown


@pytest.mark.parametrize("setting, shown", [("masked", "caller=+1******0000"), ("full", f"caller={CALLER}")])
def test_werkzeug_s_request_lines_follow_the_setting(caplog, setting, shown):
    caplog.set_level(logging.INFO)
    configure_werkzeug("INFO", setting)
    try:
        logging.getLogger("werkzeug").info('"GET /history?caller=%s HTTP/1.1" 200 -', CALLER)
    finally:
        configure_werkzeug("INFO")
    assert shown in caplog.text
