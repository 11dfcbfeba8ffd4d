"""Local development: the tunnel's URL becomes PUBLIC_URL and the phone number is pointed at it."""

from urllib.parse import parse_qs, urlsplit

import pytest
import responses

from quorum import tunnel as ngrok_tunnel
from support import API_BASE, make_config
from quorum.gateway import SignalWireGateway, build_client

NUMBER = "+15557654321"
NUMBER_SID = "0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"


def number_json(**overrides):
    """An IncomingPhoneNumber as SignalWire returns it."""
    number = {
        "sid": NUMBER_SID, "account_sid": "p", "api_version": "2010-04-01", "beta": False,
        "capabilities": {"voice": True}, "date_created": None, "date_updated": None,
        "friendly_name": NUMBER, "phone_number": NUMBER, "sms_application_sid": None,
        "sms_fallback_method": "POST", "sms_fallback_url": None, "sms_method": "POST", "sms_url": None,
        "status_callback": None, "status_callback_method": "POST", "uri": "/x", "voice_application_sid": None,
        "voice_caller_id_lookup": False, "voice_fallback_method": "POST", "voice_fallback_url": None,
        "voice_method": "POST", "voice_url": "https://old.example.com/voice",
    }
    return {**number, **overrides}


def page(numbers):
    """A list page of IncomingPhoneNumbers."""
    return {"incoming_phone_numbers": numbers, "page": 0, "page_size": 50, "next_page_uri": None,
            "uri": "/IncomingPhoneNumbers.json"}


def expose(signalwire_replies):
    """Run `expose` with a stand-in tunnel against the faked API; returns (config, requests sent)."""
    config = make_config(use_ngrok=True, public_url="", signalwire_phone_number=NUMBER)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as fake:
        for method, url, kwargs in signalwire_replies:
            fake.add(method, url, **kwargs)
        exposed = ngrok_tunnel.expose(config, SignalWireGateway(build_client(config)),
                                      tunnel=lambda port, token: "http://abc123.ngrok.app")
        return exposed, [(c.request.method, urlsplit(c.request.url).path, c.request.url, c.request.body)
                         for c in fake.calls]


def test_tunnel_url_becomes_public_url_and_number_is_pointed_at_it(capsys):
    exposed, sent = expose([
        (responses.GET, f"{API_BASE}/IncomingPhoneNumbers.json", {"json": page([number_json()])}),
        (responses.POST, f"{API_BASE}/IncomingPhoneNumbers/{NUMBER_SID}.json", {"json": number_json()}),
    ])
    assert exposed.public_url == "https://abc123.ngrok.app"
    assert parse_qs(urlsplit(sent[0][2]).query)["PhoneNumber"] == [NUMBER]
    assert sent[1][:2] == ("POST", f"{urlsplit(API_BASE).path}/IncomingPhoneNumbers/{NUMBER_SID}.json")
    assert parse_qs(sent[1][3]) == {"VoiceUrl": ["https://abc123.ngrok.app/voice/inbound"], "VoiceMethod": ["POST"]}
    assert f"{NUMBER} now calls https://abc123.ngrok.app/voice/inbound" in capsys.readouterr().out


@pytest.mark.parametrize("listing, says", [
    ({"json": page([])}, "is not a number of this project"),
    ({"status": 401, "json": {"code": 20003, "message": "Unauthorized", "status": 401}}, "could not be updated"),
])
def test_number_that_cannot_be_pointed_is_reported(capsys, listing, says):
    exposed, sent = expose([(responses.GET, f"{API_BASE}/IncomingPhoneNumbers.json", listing)])
    assert exposed.public_url == "https://abc123.ngrok.app"
    assert [s[0] for s in sent] == ["GET"]
    assert f"{NUMBER} {says}; set its voice webhook to https://abc123.ngrok.app/voice/inbound yourself" \
        in capsys.readouterr().out
