"""GET /metrics: Prometheus text that parses, behind the API token, with counters that move."""

import time
from email.utils import formatdate

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app import create_app, services, shutdown
from support import conference_form, make_config, sid

TOKEN = "metrics-token"
FORM = conference_form("participant-join", sid("c-1"), "R", sid("A"))


@pytest.fixture
def app(signalwire):
    application = create_app(make_config(api_token=TOKEN, validate_signatures=False))
    yield application
    shutdown(application)


def scrape(app) -> dict:
    """{(name, labels): value} of every sample."""
    response = app.test_client().get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200 and response.content_type.startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for s in family.samples
    }


def test_counters_and_gauges_move(app):
    client = app.test_client()
    before = scrape(app)
    client.post("/voice/conference-status", data={**FORM, "StatusCallbackEvent": "conference-start"})
    client.post("/voice/conference-status", data=FORM)
    client.post("/voice/conference-status", data={**FORM, "CallSid": sid("B")})
    client.post("/voice/recording-status?room=R", data={"RecordingSid": sid("rec"), "RecordingStatus": "in-progress"})
    # A later second: a join and leave of one call in one second would (rightly) ask for a confirmation read.
    client.post(
        "/voice/conference-status",
        data={
            **FORM,
            "StatusCallbackEvent": "participant-leave",
            "Timestamp": formatdate(time.time() + 1, usegmt=True),
        },
    )
    client.post("/voice/conference-status", data={"FriendlyName": "R"})  # 400
    assert services(app).commands.wait_idle(10)
    after = scrape(app)
    ok = ("quorum_webhooks_total", (("outcome", "ok"), ("route", "conference-status")))
    assert after[ok] - before.get(ok, 0) == 4
    assert after[("quorum_webhooks_total", (("outcome", "bad_request"), ("route", "conference-status")))] == 1
    assert after[("quorum_rest_commands_total", (("kind", "pause"), ("result", "ok")))] == 1
    assert after[("quorum_rest_command_seconds_count", (("kind", "pause"),))] == 1
    # One crossing (the leave) became one command: timed from the leave's arrival to the pause leaving.
    assert after[("quorum_crossing_to_command_seconds_count", ())] == 1
    assert after[("quorum_crossing_to_command_seconds_bucket", (("le", "1.0"),))] == 1
    assert after[("quorum_active_conferences", ())] == 1
    assert after[("quorum_recordings", (("state", "paused"),))] == 1
    assert after[("quorum_command_queue_depth", ())] == 0


@pytest.mark.parametrize("headers, status", [({}, 401), ({"Authorization": "Bearer nope"}, 401)])
def test_metrics_need_the_token(app, headers, status):
    assert app.test_client().get("/metrics", headers=headers).status_code == status


def test_metrics_off_without_a_token(signalwire):
    application = create_app(make_config())
    try:
        assert application.test_client().get("/metrics").status_code == 503
    finally:
        shutdown(application)
