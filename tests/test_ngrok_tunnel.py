"""Local development: the tunnel's URL becomes PUBLIC_URL and the phone number is pointed at it."""

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

from quorum import tunnel as ngrok_tunnel
from quorum.__main__ import main as quorum_command
from support import API_BASE, PROJECT, make_config
from quorum.gateway import SignalWireGateway, build_client

NUMBER = "+15557654321"
NUMBER_SID = "0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"


def number_json(**overrides):
    """An IncomingPhoneNumber as SignalWire returns it."""
    number = {
        "sid": NUMBER_SID,
        "account_sid": "p",
        "api_version": "2010-04-01",
        "beta": False,
        "capabilities": {"voice": True},
        "date_created": None,
        "date_updated": None,
        "friendly_name": NUMBER,
        "phone_number": NUMBER,
        "sms_application_sid": None,
        "sms_fallback_method": "POST",
        "sms_fallback_url": None,
        "sms_method": "POST",
        "sms_url": None,
        "status_callback": None,
        "status_callback_method": "POST",
        "uri": "/x",
        "voice_application_sid": None,
        "voice_caller_id_lookup": False,
        "voice_fallback_method": "POST",
        "voice_fallback_url": None,
        "voice_method": "POST",
        "voice_url": "https://old.example.com/voice",
    }
    return {**number, **overrides}


def page(numbers):
    """A list page of IncomingPhoneNumbers."""
    return {
        "incoming_phone_numbers": numbers,
        "page": 0,
        "page_size": 50,
        "next_page_uri": None,
        "uri": "/IncomingPhoneNumbers.json",
    }


def expose(signalwire_replies):
    """Run `expose` with a stand-in tunnel against the faked API; returns (config, requests sent)."""
    config = make_config(use_ngrok=True, public_url="", signalwire_phone_number=NUMBER)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as fake:
        for method, url, kwargs in signalwire_replies:
            fake.add(method, url, **kwargs)
        exposed = ngrok_tunnel.expose(
            config, SignalWireGateway(build_client(config)), tunnel=lambda port, token: "http://abc123.ngrok.app"
        )
        return exposed, [
            (c.request.method, urlsplit(c.request.url).path, c.request.url, c.request.body) for c in fake.calls
        ]


def test_tunnel_url_becomes_public_url_and_number_is_pointed_at_it(capsys):
    exposed, sent = expose(
        [
            (responses.GET, f"{API_BASE}/IncomingPhoneNumbers.json", {"json": page([number_json()])}),
            (responses.POST, f"{API_BASE}/IncomingPhoneNumbers/{NUMBER_SID}.json", {"json": number_json()}),
        ]
    )
    assert exposed.public_url == "https://abc123.ngrok.app"
    assert parse_qs(urlsplit(sent[0][2]).query)["PhoneNumber"] == [NUMBER]
    assert sent[1][:2] == ("POST", f"{urlsplit(API_BASE).path}/IncomingPhoneNumbers/{NUMBER_SID}.json")
    assert parse_qs(sent[1][3]) == {
        "VoiceUrl": ["https://abc123.ngrok.app/voice/inbound"],
        "VoiceMethod": ["POST"],
        "StatusCallback": ["https://abc123.ngrok.app/voice/call-status"],
        "StatusCallbackMethod": ["POST"],
    }
    assert f"{NUMBER} now calls https://abc123.ngrok.app/voice/inbound" in capsys.readouterr().out


@pytest.mark.parametrize(
    "listing, says",
    [
        ({"json": page([])}, "is not a number of this project"),
        ({"status": 401, "json": {"code": 20003, "message": "Unauthorized", "status": 401}}, "could not be updated"),
    ],
)
def test_number_that_cannot_be_pointed_is_reported(capsys, listing, says):
    exposed, sent = expose([(responses.GET, f"{API_BASE}/IncomingPhoneNumbers.json", listing)])
    assert exposed.public_url == "https://abc123.ngrok.app"
    assert [s[0] for s in sent] == ["GET"]
    assert (
        f"{NUMBER} {says}; set its voice webhook to https://abc123.ngrok.app/voice/inbound and its status "
        "callback to https://abc123.ngrok.app/voice/call-status yourself"
    ) in capsys.readouterr().out


# --- `python -m quorum point-number`: the same update for a production number -------------------------

SETTINGS = {
    "SIGNALWIRE_PROJECT_ID": PROJECT,
    "SIGNALWIRE_API_TOKEN": "PTtoken",
    "SIGNALWIRE_SPACE_URL": "example.signalwire.com",
    "SIGNALWIRE_SIGNING_KEY": "PSK",
    "PUBLIC_URL": "https://quorum.example.com",
    "SIGNALWIRE_PHONE_NUMBER": NUMBER,
}
OTHER = "+15550001234"


def point_number(monkeypatch, argv, replies, **settings):
    """Run the command in this process against the faked API: (exit status, requests sent)."""
    for name, value in {**SETTINGS, **settings}.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as fake:
        for method, url, kwargs in replies:
            fake.add(method, url, **kwargs)
        status = quorum_command(["point-number", *argv])
        return status, [(c.request.method, c.request.url, c.request.body) for c in fake.calls]


FOUND = [
    (responses.GET, f"{API_BASE}/IncomingPhoneNumbers.json", {"json": page([number_json()])}),
    (responses.POST, f"{API_BASE}/IncomingPhoneNumbers/{NUMBER_SID}.json", {"json": number_json()}),
]


@pytest.mark.parametrize("argv, number", [([], NUMBER), ([OTHER], OTHER)])
def test_point_number_sets_the_voice_webhook_and_the_status_callback(monkeypatch, capsys, argv, number):
    status, sent = point_number(monkeypatch, argv, FOUND)
    assert status == 0
    assert parse_qs(urlsplit(sent[0][1]).query)["PhoneNumber"] == [number]
    assert parse_qs(sent[1][2]) == {
        "VoiceUrl": ["https://quorum.example.com/voice/inbound"],
        "VoiceMethod": ["POST"],
        "StatusCallback": ["https://quorum.example.com/voice/call-status"],
        "StatusCallbackMethod": ["POST"],
    }
    out = capsys.readouterr()
    assert out.out == (
        f"quorum: {number} now calls https://quorum.example.com/voice/inbound, its status callback "
        "https://quorum.example.com/voice/call-status\n"
    )
    assert out.err == ""


@pytest.mark.parametrize(
    "listing, says",
    [
        ({"json": page([])}, "is not a number of this project"),
        ({"status": 401, "json": {"code": 20003, "message": "Unauthorized", "status": 401}}, "could not be updated"),
    ],
)
def test_point_number_says_why_a_number_was_not_pointed(monkeypatch, capsys, listing, says):
    status, sent = point_number(monkeypatch, [], [(responses.GET, f"{API_BASE}/IncomingPhoneNumbers.json", listing)])
    assert (status, [s[0] for s in sent]) == (1, ["GET"])
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.splitlines()[-1] == (
        f"quorum: {NUMBER} {says}; set its voice webhook to "
        "https://quorum.example.com/voice/inbound and its status callback to "
        "https://quorum.example.com/voice/call-status yourself"
    )


@pytest.mark.parametrize(
    "settings, says",
    [
        ({"SIGNALWIRE_PHONE_NUMBER": None}, "quorum: no number to point: give one, or set SIGNALWIRE_PHONE_NUMBER"),
        ({"PUBLIC_URL": None, "USE_NGROK": "true"}, f"quorum: PUBLIC_URL is not set: nothing to point {NUMBER} at"),
        ({"SIGNALWIRE_API_TOKEN": None}, "quorum: configuration error: SIGNALWIRE_API_TOKEN: is required"),
    ],
)
def test_point_number_without_what_it_needs_sends_nothing(monkeypatch, capsys, settings, says):
    status, sent = point_number(monkeypatch, [], FOUND, **settings)
    assert (status, sent) == (2, [])
    assert capsys.readouterr().err.startswith(says)


@pytest.mark.slow
def test_point_number_runs_as_a_module():
    """The documented one-liner, as a process: here with a setting missing, so nothing leaves the machine."""
    environ = {key: value for key, value in os.environ.items() if not key.startswith(("SIGNALWIRE_", "PUBLIC_URL"))}
    done = subprocess.run(
        [sys.executable, "-m", "quorum", "point-number"],
        cwd=Path(__file__).parent.parent,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("quorum: configuration error: SIGNALWIRE_PROJECT_ID")
