"""Every /voice request must be signed by SignalWire for the public URL it called."""

import logging

import pytest

from app import create_app, services, shutdown
from support import PUBLIC_URL, SIGNING_KEY, conference_form, make_config, sid, sign

FORM = conference_form("participant-join", sid("c-1"), "room-1", sid("A"))


def state_rooms(app):
    """Rooms the app holds state for."""
    return services(app).store.rooms()


@pytest.mark.parametrize("header", ["X-SignalWire-Signature", "X-Twilio-Signature"])
def test_valid_signature_is_accepted_under_either_header(post_signed, app, header):
    assert post_signed("/voice/conference-status", FORM, header=header).status_code == 204
    assert state_rooms(app) == ["room-1"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-SignalWire-Signature": ""},
        {"X-SignalWire-Signature": sign(PUBLIC_URL + "/voice/conference-status", FORM, key="another-key")},
        {"X-SignalWire-Signature": sign(PUBLIC_URL + "/voice/conference-status", {**FORM, "CallSid": sid("B")})},
        {"X-SignalWire-Signature": sign("http://localhost:5000/voice/conference-status", FORM)},
    ],
)
def test_forged_requests_are_refused_and_change_nothing(client, app, headers):
    response = client.post("/voice/conference-status", data=FORM, headers=headers)
    assert response.status_code == 403
    assert state_rooms(app) == []


def test_query_string_is_part_of_the_signature(client, app):
    signed_for = PUBLIC_URL + "/voice/recording-status?room=room-1"
    form = {"RecordingSid": sid("r-1"), "RecordingStatus": "in-progress"}
    headers = {"X-SignalWire-Signature": sign(signed_for, form)}
    assert client.post("/voice/recording-status?room=room-2", data=form, headers=headers).status_code == 403
    assert client.post("/voice/recording-status?room=room-1", data=form, headers=headers).status_code == 204
    assert state_rooms(app) == ["room-1"]


def test_behind_a_proxy_the_public_https_url_is_what_counts(client):
    """ngrok or a load balancer hands us http://internal:5000; SignalWire signed https://public."""
    headers = {
        "X-SignalWire-Signature": sign(PUBLIC_URL + "/voice/conference-status", FORM),
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "quorum.example.com",
    }
    response = client.post("/voice/conference-status", data=FORM, headers=headers, base_url="http://10.1.2.3:5000")
    assert response.status_code == 204


def test_signature_with_default_port_is_accepted(client):
    headers = {"X-SignalWire-Signature": sign("https://quorum.example.com:443/voice/conference-status", FORM)}
    assert client.post("/voice/conference-status", data=FORM, headers=headers).status_code == 204


def test_refusal_is_logged_without_secrets(client, caplog):
    caplog.set_level(logging.DEBUG)
    client.post("/voice/conference-status", data=FORM, headers={"X-SignalWire-Signature": "bogus"})
    assert "refused" in caplog.text
    assert SIGNING_KEY not in caplog.text and "PTtoken" not in caplog.text


@pytest.mark.parametrize(
    "public_url, signed_for",
    [
        ("https://quorum.example.com:8443", "https://quorum.example.com"),
        ("http://quorum.example.com:5000", "http://quorum.example.com"),
    ],
)
def test_signature_without_an_explicit_port_is_accepted(signalwire, public_url, signed_for):
    """twilio 6.54's RequestValidator also tries the URL with any explicit port removed: SignalWire may sign
    the URL without the PUBLIC_URL's port."""
    app = create_app(make_config(public_url=public_url))
    try:
        headers = {"X-SignalWire-Signature": sign(signed_for + "/voice/conference-status", FORM)}
        response = app.test_client().post("/voice/conference-status", data=FORM, headers=headers)
    finally:
        shutdown(app)
    assert response.status_code == 204


def test_a_port_is_never_added_that_the_public_url_lacks(client):
    """Only removal: a signature for another port of our host is not ours."""
    headers = {"X-SignalWire-Signature": sign("https://quorum.example.com:8443/voice/conference-status", FORM)}
    assert client.post("/voice/conference-status", data=FORM, headers=headers).status_code == 403
