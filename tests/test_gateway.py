"""The SDK client as built for production (timeout, emulator URL, proxies read once) and the commands it sends."""

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
import responses

from support import API_BASE, PROJECT, make_config, recording_resource, recordings_page, sid
from quorum.gateway import ListedRecording, Outcome, SignalWireGateway, build_client, readers_for
from recording_state import PAUSED


def test_client_has_a_timeout_and_the_api_url_override():
    client = build_client(make_config(signalwire_api_url="http://127.0.0.1:8099/", signalwire_timeout_s=2.5))
    assert client.http_client.timeout == 2.5
    assert client.api.base_url == "http://127.0.0.1:8099"


@pytest.mark.parametrize(
    "environment, expected",
    [
        ({"HTTPS_PROXY": "http://proxy.internal:3128"}, {"https": "http://proxy.internal:3128"}),
        ({"HTTPS_PROXY": "http://proxy.internal:3128", "NO_PROXY": "example.signalwire.com"}, None),
        ({}, None),
    ],
)
def test_proxy_settings_are_read_once_from_the_environment(monkeypatch, environment, expected):
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    client = build_client(make_config())
    assert client.http_client.proxy == expected
    assert client.http_client.session.trust_env is False  # no per-request environment lookups


def test_the_client_keeps_a_connection_per_command_worker_and_reader():
    # requests' default pool holds 10: with more workers every extra command reopened its connection.
    config = make_config(signalwire_concurrency=32)
    session = build_client(config).http_client.session
    for url in ("https://example.signalwire.com/", "http://127.0.0.1:8099/"):
        assert session.get_adapter(url)._pool_maxsize >= (
            config.signalwire_concurrency + readers_for(config.reconcile_max_reads_per_s)
        )


@pytest.mark.parametrize(
    "answer, outcome",
    [
        ({"status": 204}, Outcome.OK),
        ({"status": 404, "json": {"code": 20404, "message": "Not Found", "status": 404}}, Outcome.GONE),  # already gone
        ({"status": 503, "json": {"code": 20503, "message": "Service Unavailable", "status": 503}}, Outcome.RETRY),
        ({"status": 429, "json": {"code": 20429, "message": "Too Many Requests", "status": 429}}, Outcome.RETRY),
        ({"body": requests.ConnectionError("reset")}, Outcome.RETRY),
        # 422 means "over" for an update; a delete documents none, so it is not taken for "already gone".
        ({"status": 422, "json": {"errors": ["cannot"]}}, Outcome.REJECTED),
        ({"status": 401, "json": {"code": 20003, "message": "Authentication Error", "status": 401}}, Outcome.REJECTED),
    ],
)
def test_delete_recording_sends_the_documented_delete_and_reads_404_as_gone(answer, outcome):
    recording = sid("R1")
    with responses.RequestsMock() as fake:
        fake.add(responses.DELETE, f"{API_BASE}/Recordings/{recording}.json", **answer)
        gateway = SignalWireGateway(build_client(make_config()))
        assert gateway.delete_recording(recording) is outcome
        assert [c.request.method for c in fake.calls] == ["DELETE"]


@pytest.mark.parametrize(
    "answer, outcome, caller",
    [
        (
            {"json": {"sid": "c", "from": "+15557770001", "to": "+15550004444", "status": "in-progress"}},
            Outcome.OK,
            {"from": "+15557770001", "to": "+15550004444"},
        ),
        ({"status": 404, "json": {"code": 20404, "message": "Not Found", "status": 404}}, Outcome.GONE, None),
        (
            {"status": 503, "json": {"code": 20503, "message": "Service Unavailable", "status": 503}},
            Outcome.RETRY,
            None,
        ),
    ],
)
def test_fetch_call_reads_who_dialed_in_from_the_call_resource(answer, outcome, caller):
    """`GET /Calls/{sid}` (Compatibility API, Retrieve a Call): its `from` and `to`, as the voice webhook saw them."""
    call = sid("CA1")
    with responses.RequestsMock() as fake:
        fake.add(responses.GET, f"{API_BASE}/Calls/{call}.json", **answer)
        assert SignalWireGateway(build_client(make_config())).fetch_call(call) == (outcome, caller)
        assert [c.request.method for c in fake.calls] == ["GET"]


class _Recorder(BaseHTTPRequestHandler):
    """A real HTTP server that records each request and answers as told (or too late)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        """Quiet."""

    def do_POST(self):
        """Record the request; answer 200 with a recording, after `delay_s`."""
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.seen.append((self.command, self.path, dict(self.headers), body.decode()))
        time.sleep(self.server.delay_s)
        self._answer({"sid": "r", "status": "paused"})

    def do_GET(self):
        """Record the request; answer an empty page of conferences."""
        self.server.seen.append((self.command, self.path, dict(self.headers), ""))
        self._answer(
            {
                "conferences": [],
                "next_page_uri": None,
                "page": 0,
                "page_size": 50,
                "first_page_uri": self.path,
                "previous_page_uri": None,
                "uri": self.path,
            }
        )

    def _answer(self, payload: dict):
        """200 with `payload` as JSON."""
        answer = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


@pytest.fixture
def recorder():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.seen, server.delay_s = [], 0.0
    server.handle_error = lambda request, address: None  # the timeout test hangs up before the answer
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def test_a_pause_goes_out_as_the_documented_form_post_with_basic_auth(recorder):
    config = make_config(signalwire_api_url=f"http://127.0.0.1:{recorder.server_address[1]}")
    gateway = SignalWireGateway(build_client(config))
    assert gateway.set_recording(sid("C1"), sid("R1"), PAUSED) is Outcome.OK
    [(method, path, headers, body)] = recorder.seen
    assert method == "POST"
    assert (
        path == f"/2010-04-01/Accounts/{config.signalwire_project_id}/Conferences/{sid('C1')}"
        f"/Recordings/{sid('R1')}.json"
    )
    assert sorted(body.split("&")) == ["PauseBehavior=skip", "Status=paused"]
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    user, _, password = base64.b64decode(headers["Authorization"].removeprefix("Basic ")).decode().partition(":")
    assert (user, password) == (config.signalwire_project_id, config.signalwire_api_token)


def test_an_answer_slower_than_the_timeout_is_worth_retrying(recorder):
    recorder.delay_s = 1.5
    config = make_config(signalwire_api_url=f"http://127.0.0.1:{recorder.server_address[1]}", signalwire_timeout_s=0.3)
    started = time.monotonic()
    assert SignalWireGateway(build_client(config)).set_recording(sid("C1"), sid("R1"), PAUSED) is Outcome.RETRY
    assert time.monotonic() - started < 1.2


def test_a_read_goes_out_as_a_get_without_a_body_or_its_length(recorder):
    config = make_config(signalwire_api_url=f"http://127.0.0.1:{recorder.server_address[1]}")
    outcome, live = SignalWireGateway(build_client(config)).list_live_conferences()
    assert (outcome, live) == (Outcome.OK, [])
    [(method, path, headers, _)] = recorder.seen
    assert method == "GET" and "Status=in-progress" in path
    assert "Content-Length" not in headers  # as requests sends a GET: nothing to measure


@pytest.mark.parametrize(
    "api_url, base", [(None, "https://example.signalwire.com"), ("http://127.0.0.1:8099/", "http://127.0.0.1:8099")]
)
def test_a_recordings_media_url_is_where_signalwire_documents_it_on_the_rest_base(api_url, base):
    gateway = SignalWireGateway(build_client(make_config(signalwire_api_url=api_url)))
    assert gateway.media_url(sid("R1")) == f"{base}/api/laml/2010-04-01/Accounts/{PROJECT}/Recordings/{sid('R1')}"


def test_recordings_are_listed_per_conference_and_per_call_with_their_owner_and_duration():
    conference, call = sid("C1"), sid("CA1")
    with responses.RequestsMock() as fake:
        fake.add(
            responses.GET,
            f"{API_BASE}/Conferences/{conference}/Recordings.json",
            json=recordings_page([recording_resource(sid("R1"), "completed", "4", conference=conference, call=call)]),
        )
        fake.add(
            responses.GET,
            f"{API_BASE}/Recordings.json",
            json=recordings_page([recording_resource(sid("R2"), "in-progress", -1, call=call)]),
        )
        gateway = SignalWireGateway(build_client(make_config()))
        assert gateway.list_recordings(conference_sid=conference) == (
            Outcome.OK,
            {sid("R1"): ListedRecording("completed", 4.0, conference, call)},
        )
        outcome, listed = gateway.list_recordings(call_sid=call)
        assert outcome is Outcome.OK and listed[sid("R2")].duration_s is None and listed[sid("R2")].owner == call
        assert listed.keys() == {sid("R2")} and ListedRecording("completed", 4.0, conference, call).owner is None
        sent = [made.request.url for made in fake.calls]
    assert "PageSize=100" in sent[0] and f"CallSid={call}" in sent[1]  # the list SignalWire documents for calls


def test_fetching_a_recording_names_its_conference_and_reads_404_as_gone():
    with responses.RequestsMock() as fake:
        fake.add(
            responses.GET,
            f"{API_BASE}/Recordings/{sid('R1')}.json",
            json=recording_resource(sid("R1"), conference=sid("C1")),
        )
        fake.add(
            responses.GET,
            f"{API_BASE}/Recordings/{sid('R2')}.json",
            status=404,
            json={"code": 20404, "message": "Not Found", "status": 404},
        )
        gateway = SignalWireGateway(build_client(make_config()))
        assert gateway.fetch_recording(sid("R1")) == (Outcome.OK, ListedRecording("completed", 2.0, sid("C1"), None))
        assert gateway.fetch_recording(sid("R2")) == (Outcome.GONE, None)
