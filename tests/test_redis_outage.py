"""A Redis that does not answer is said plainly: one line naming REDIS_URL when an outage begins (at start too,
where Quorum keeps starting), one when it ends, no tracebacks, and the dashboard's pages say it in HTML."""

import logging
import subprocess
import time

import pytest
import redis
import responses

from app import create_app, services, shutdown
from conversations.event_callbacks import EventSender, RedisOutbox
from quorum import redis_outage
from support import SignedCallbacks, conference_form, free_port, make_config, sid, start_redis_server

SECRET = "s3cret-password"


def outage_config(port: int, **overrides):
    """Settings with REDIS_URL (a password in it) at `port`, fast sweeps and reconciles, the dashboard on."""
    return make_config(
        redis_url=f"redis://:{SECRET}@127.0.0.1:{port}/3",
        end_grace_s=0.2,
        reconcile_interval_s=0.1,
        api_token="tok",
        event_callback_url="http://127.0.0.1:9/events",
        event_callback_secret="x",
        **overrides,
    )


def records(caplog):
    """Every record of the test so far, its fixtures' set-up (where the app starts) included."""
    return caplog.get_records("setup") + caplog.records


def lines(caplog, text: str):
    """The messages of the records that contain `text`."""
    return [r.getMessage() for r in records(caplog) if text in r.getMessage()]


def start_redis(port: int, directory) -> subprocess.Popen:
    """A redis-server on `port` with SECRET as its password, answering a ping before this returns."""
    return start_redis_server(directory, port=port, password=SECRET)[0]


def wait_for(condition, timeout: float = 10) -> bool:
    """Poll `condition` until it holds or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def down(caplog, signalwire):
    """An app started with nothing listening at REDIS_URL's port: (app, port)."""
    caplog.set_level(logging.INFO)
    port = free_port()
    app = create_app(outage_config(port))
    yield app, port
    shutdown(app)


def test_quorum_starts_and_says_once_that_redis_does_not_answer(down, caplog):
    app, port = down
    said = lines(caplog, "REDIS_URL")
    assert len(said) == 1, said
    assert f"REDIS_URL=redis://127.0.0.1:{port}/3" in said[0] and "starting anyway" in said[0]
    assert not lines(caplog, SECRET)


def test_while_redis_is_down_nothing_logs_a_traceback_or_a_line_per_round(down, caplog):
    app, _ = down
    callbacks, held = SignedCallbacks(app), services(app)
    for n in range(5):
        form = conference_form("participant-join", sid("CF"), "+15550100", sid(f"CA{n}"))
        assert callbacks.post("/voice/conference-status", form).status_code == 503
    held.processor.submit("+15550100")  # the conversation worker: its lock is in Redis
    held.commands.read("+15550100")  # the read path
    held.commands.kick("+15550100")  # the command workers
    time.sleep(1.0)  # ten housekeeping rounds, sweeps and reconciles
    # The command path retries what the store refused (with backoff) until it answers: never idle meanwhile.
    assert held.processor.wait_idle(5)
    assert [r.getMessage() for r in records(caplog) if r.exc_info] == []
    assert len(lines(caplog, "REDIS_URL")) == 1
    assert lines(caplog, "state store unavailable") == []


def test_the_dashboard_pages_say_it_in_html_and_the_data_stays_json(down):
    app, port = down
    client, auth = app.test_client(), {"Authorization": "Bearer tok"}
    for page in ("/", "/history"):
        answer = client.get(page, headers=auth)
        assert answer.status_code == 503 and answer.mimetype == "text/html"
        text = answer.get_data(as_text=True)
        assert f"REDIS_URL=redis://127.0.0.1:{port}/3" in text and SECRET not in text
        assert answer.headers["Content-Security-Policy"].startswith("default-src 'none'")
    for data in ("/live.json", "/api/conversations"):
        answer = client.get(data, headers=auth)
        assert (answer.status_code, answer.get_json()) == (503, {"error": "state store unavailable"})


@pytest.mark.slow
def test_an_outage_ends_in_one_line_saying_how_long_it_lasted(down, caplog, tmp_path):
    app, port = down
    server = start_redis(port, tmp_path)
    try:
        assert wait_for(lambda: lines(caplog, "answers again")), caplog.text
        back = lines(caplog, "answers again")
        assert len(back) == 1 and f"REDIS_URL=redis://127.0.0.1:{port}/3" in back[0] and " s" in back[0]
        form = conference_form("participant-join", sid("CF"), "+15550100", sid("CA"))
        assert SignedCallbacks(app).post("/voice/conference-status", form).status_code == 204
        server.terminate()
        server.wait(10)
        time.sleep(0.5)  # housekeeping rounds meet the second outage
        assert len(lines(caplog, "does not answer")) == 2  # the one at start, and this one
    finally:
        server.kill()
        server.wait(10)
    assert [r.getMessage() for r in records(caplog) if r.exc_info] == []
    assert not lines(caplog, SECRET)


def test_an_address_never_shows_the_password():
    assert redis_outage.address("redis://user:pw@cache.internal:6380/2") == "redis://cache.internal:6380/2"
    assert redis_outage.address("rediss://:pw@cache.internal") == "rediss://cache.internal:6379/0"
    assert redis_outage.address("unix://:pw@/run/redis.sock?db=1") == "unix:///run/redis.sock?db=1"


def test_a_refused_command_is_one_line_a_minute_without_a_traceback(caplog):
    clock = [0.0]
    outage = redis_outage.RedisOutage("redis://127.0.0.1:1/0", clock=lambda: clock[0])
    caplog.set_level(logging.INFO)
    for _ in range(3):
        outage.report(redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'."))
    clock[0] = 61.0
    outage.report(redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'."))
    said = lines(caplog, "refused a command")
    assert len(said) == 2 and "REDIS_URL=redis://127.0.0.1:1/0" in said[0] and "2 more since" in said[1]
    assert not [r for r in caplog.records if r.exc_info]


def test_event_callbacks_are_still_delivered_while_redis_is_down(caplog):
    outbox = RedisOutbox(redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0"), "q:events")
    with responses.RequestsMock() as receiver:
        receiver.add(responses.POST, "https://events.example.com/hook", status=204)
        sender = EventSender("https://events.example.com/hook", "secret", outbox)
        sender.send("conversation.ready", "conversation-1.ready", {})
        assert sender.wait_idle(5)
        sender.stop()
        assert len(receiver.calls) == 1
    assert not [r for r in caplog.records if r.exc_info]
