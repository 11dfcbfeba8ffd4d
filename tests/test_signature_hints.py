"""A refused signature says what it was checked against and what to fix, at most once a minute, never the
signature or the form."""

import logging

import pytest

from app import create_app, shutdown
from quorum.log_throttle import Throttle, since
from support import PUBLIC_URL, conference_form, make_config, sid, sign

PATH = "/voice/conference-status"
FORM = conference_form("participant-join", sid("c-1"), "+15550100", sid("A"))


@pytest.fixture
def refusals(signalwire, caplog):
    """POST FORM with the given headers to a fresh app; returns the refusal lines logged so far."""
    caplog.set_level(logging.INFO)
    app = create_app(make_config())
    client = app.test_client()

    def post(headers, base_url="http://localhost"):
        assert client.post(PATH, data=FORM, headers=headers, base_url=base_url).status_code == 403
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused")]

    yield post
    shutdown(app)


def never_secret(line: str, signature: str) -> None:
    """The line names neither the signature nor any value of the form."""
    assert signature not in line
    assert not [value for value in FORM.values() if value in line]


def test_a_request_signed_for_its_own_url_names_the_public_url_to_set(refusals):
    signature = sign("http://10.1.2.3:5000" + PATH, FORM)
    [line] = refusals({"X-SignalWire-Signature": signature}, base_url="http://10.1.2.3:5000")
    assert f"checked against {PUBLIC_URL}{PATH}" in line
    assert f"signed for http://10.1.2.3:5000{PATH}: set PUBLIC_URL to http://10.1.2.3:5000" in line
    never_secret(line, signature)


def test_a_request_signed_for_the_forwarded_url_names_it(refusals):
    signature = sign("https://tunnel.example.org" + PATH, FORM)
    headers = {
        "X-SignalWire-Signature": signature,
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "tunnel.example.org",
    }
    [line] = refusals(headers, base_url="http://10.1.2.3:5000")
    assert f"signed for https://tunnel.example.org{PATH}: set PUBLIC_URL to https://tunnel.example.org" in line
    never_secret(line, signature)


def test_a_signature_for_no_url_we_know_points_at_the_key_and_the_public_url(refusals):
    signature = sign(PUBLIC_URL + PATH, FORM, key="another-key")
    [line] = refusals({"X-SignalWire-Signature": signature})
    assert f"checked against {PUBLIC_URL}{PATH}" in line
    assert "check SIGNALWIRE_SIGNING_KEY and PUBLIC_URL" in line
    never_secret(line, signature)


def test_an_unsigned_request_says_it_carried_no_signature(refusals):
    [line] = refusals({})
    assert line.startswith(f"refused unsigned POST {PATH}") and "X-SignalWire-Signature" in line


def test_a_burst_of_refusals_is_one_line(refusals):
    for _ in range(5):
        said = refusals({"X-SignalWire-Signature": "bogus"})
    assert len(said) == 1


def test_the_next_line_says_how_many_were_held_back():
    clock = [0.0]
    throttle = Throttle(60.0, clock=lambda: clock[0])
    assert throttle.due() == 0
    assert [throttle.due() for _ in range(3)] == [None, None, None]
    clock[0] = 59.9
    assert throttle.due() is None
    clock[0] = 60.0
    assert throttle.due() == 4 and since(4) == " (4 more since the last line)" and since(0) == ""
