"""Secure pause (PCI), without servers: the pure transitions and their hook in the quorum rule, the stored JSON,
the record, the events, the timeline and the live card; then the app's routes (auth, CSRF, reasons) with
SignalWire faked over HTTP."""

import json
import time
from email.utils import formatdate

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app import create_app, services, shutdown
from config import Config, ConfigError, RoomRule
from console import signin, views
from conversations.event_callbacks import secure_pause_change
from conversations.record import record
from quorum import policy, secure_pause
from recording_state import PAUSED, RECORDING, Caller, Conference, evolve
from support import SignedCallbacks, make_config, recording_updates, sid

ROOM = "+15550007777"
T0 = 1_800_000_000.0
MAX_S = 180.0
TOKEN = "secure-0123456789-abcdefghij"


def conference(*calls, minimum=2, at=T0):
    """A conference seen from its start with `calls` on the line, recording since `at`."""
    conf = policy.conference_started(
        policy.new_conference(ROOM, "conf-1", at, RoomRule(min_participants=minimum), now=at)
    )
    for call in calls:
        conf = policy.participant_event(conf, call, True, at)
    return policy.recording_status(conf, "mix", "in-progress", at)


def test_a_secure_pause_overrules_a_quorum_and_pauses_every_recording():
    conf = policy.recording_created(conference("A", "B"), "A", "own-a", T0)
    assert conf.wanted == RECORDING and policy.next_action(conf) is None
    paused = secure_pause.begin(conf, T0 + 5, "api", "card number", MAX_S)
    assert paused.wanted == PAUSED and paused.timeline[-1].state == PAUSED
    actions = []
    while (action := policy.next_action(paused)) is not None:
        actions.append((action.recording_sid, action.target))
        paused = policy.command_result(paused, action.recording_sid, action.target, T0 + 5.1)
    assert actions == [("mix", PAUSED), ("own-a", PAUSED)]


def test_joins_during_a_secure_pause_record_nothing_and_start_no_participant_recording():
    conf = secure_pause.begin(conference("A"), T0 + 1, "dashboard", "", MAX_S)
    conf = evolve(conf, callers={"C": Caller(record=True)})
    joined = policy.participant_event(policy.participant_event(conf, "B", True, T0 + 2), "C", True, T0 + 3)
    assert joined.wanted == PAUSED
    assert policy.next_action(policy.command_result(joined, "mix", PAUSED, T0 + 3)) is None  # no CREATE for C


def test_a_resume_gives_the_decision_back_to_the_quorum_rule():
    paused = secure_pause.begin(conference("A", "B"), T0 + 5, "api", "", MAX_S)
    resumed = secure_pause.resume(paused, T0 + 20, "dashboard")
    assert resumed.wanted == RECORDING
    (pause,) = resumed.secure_pauses
    assert (pause.end, pause.ended, pause.resumed_by) == (T0 + 20, secure_pause.RESUMED, "dashboard")


def test_a_resume_below_quorum_does_not_record():
    paused = secure_pause.begin(conference("A", "B"), T0 + 5, "api", "", MAX_S)
    alone = policy.participant_event(paused, "B", False, T0 + 10)
    assert secure_pause.resume(alone, T0 + 20, "api").wanted == PAUSED


def test_a_secure_pause_times_out_at_its_deadline_and_not_before():
    paused = secure_pause.begin(conference("A", "B"), T0, "api", "", MAX_S)
    assert secure_pause.expire(paused, T0 + MAX_S - 0.001) is paused
    assert not secure_pause.due(paused, T0 + MAX_S - 0.001) and secure_pause.due(paused, T0 + MAX_S)
    expired = secure_pause.expire(paused, T0 + MAX_S + 3)
    assert expired.wanted == RECORDING and expired.secure_pause() is None
    (pause,) = expired.secure_pauses
    assert (pause.end, pause.ended, pause.resumed_by) == (T0 + MAX_S, secure_pause.TIMED_OUT, "")
    assert expired.timeline[-1].at == T0 + MAX_S + 3  # the rule applied again when the expiry was seen


def test_a_second_pause_keeps_the_first_and_nothing_acts_on_an_ended_conference():
    paused = secure_pause.begin(conference("A", "B"), T0, "api", "first", MAX_S)
    assert secure_pause.begin(paused, T0 + 10, "dashboard", "second", MAX_S) is paused
    assert secure_pause.resume(conference("A", "B"), T0, "api") == conference("A", "B")
    ended = policy.conference_ended(paused, T0 + 20)
    assert secure_pause.resume(ended, T0 + 30, "api") is ended
    assert secure_pause.expire(ended, T0 + 1000) is ended and not secure_pause.due(ended, T0 + 1000)
    assert secure_pause.begin(None, T0, "api", "", MAX_S) is None


def test_the_list_of_secure_pauses_is_bounded():
    conf = conference("A", "B")
    for n in range(secure_pause.KEPT + 5):
        conf = secure_pause.resume(secure_pause.begin(conf, T0 + n, "api", str(n), MAX_S), T0 + n + 0.5, "api")
    assert len(conf.secure_pauses) == secure_pause.KEPT and conf.secure_pauses[0].reason == "5"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["join", "leave", "pause", "resume", "tick"]), st.sampled_from("ABC"), st.floats(0.1, 100)
        ),
        max_size=30,
    )
)
def test_nothing_records_while_a_secure_pause_is_on_whatever_the_order(steps):
    """Any joins, leaves, pauses, resumes and clock ticks: wanted is PAUSED exactly while a pause is on, else the
    quorum rule's answer."""
    conf, now = conference(), T0
    for kind, call, gap in steps:
        now += gap
        if kind in ("join", "leave"):
            conf = policy.participant_event(conf, call, kind == "join", now)
        elif kind == "pause":
            conf = secure_pause.begin(conf, now, "api", "", MAX_S)
        elif kind == "resume":
            conf = secure_pause.resume(conf, now, "api")
        else:
            conf = secure_pause.expire(conf, now)
        rule = policy.wanted_state(len(conf.counted()), 2)
        assert conf.wanted == (PAUSED if conf.secure_pause() else rule)
        assert all(p.end is not None for p in conf.secure_pauses[:-1])


def test_a_secure_pause_round_trips_through_json_and_older_json_loads():
    paused = secure_pause.begin(conference("A", "B"), T0, "dashboard", "card", MAX_S)
    assert Conference.from_dict(json.loads(json.dumps(paused.to_dict()))) == paused
    older = paused.to_dict()
    del older["secure_pauses"]  # stored by a Quorum from before secure pauses
    assert Conference.from_dict(older).secure_pauses == () and Conference.from_dict(older).secure_pause() is None


def test_the_record_lists_who_why_when_and_how_each_ended():
    conf = secure_pause.begin(conference("A", "B"), T0 + 2, "api", "card number", MAX_S)
    conf = secure_pause.resume(conf, T0 + 12, "dashboard")
    conf = secure_pause.begin(conf, T0 + 20, "dashboard", "", 5)
    live = record(conf, T0 + 22)["secure_pauses"]
    assert live == [
        {
            "start_ms": 2000,
            "end_ms": 12000,
            "by": "api",
            "reason": "card number",
            "ended": "resumed",
            "resumed_by": "dashboard",
        },
        {"start_ms": 20000, "end_ms": None, "by": "dashboard", "reason": "", "ended": None, "resumed_by": None},
    ]
    assert record(conf, T0 + 30)["secure_pauses"][1]["end_ms"] == 25000  # past its deadline: timed out then
    assert record(conf, T0 + 30)["secure_pauses"][1]["ended"] == "timed-out"
    cut = policy.conference_ended(conf, T0 + 23)
    assert record(cut, T0 + 99)["secure_pauses"][1] == {
        "start_ms": 20000,
        "end_ms": 23000,
        "by": "dashboard",
        "reason": "",
        "ended": "conference-ended",
        "resumed_by": None,
    }


def test_the_events_say_who_why_until_when_and_how_it_ended():
    paused = secure_pause.begin(conference("A", "B"), T0, "api", "card", MAX_S)
    kind, event_id, data = secure_pause_change(paused, paused.secure_pause())
    assert kind == "recording.secure_paused" and event_id == f"conf-1.secure.{T0:.3f}.paused"
    assert data["by"] == "api" and data["reason"] == "card" and data["until"].startswith("2027-01-15T08:")
    expired = secure_pause.expire(paused, T0 + MAX_S + 1)
    kind, event_id, data = secure_pause_change(expired, expired.secure_pauses[-1])
    assert kind == "recording.secure_resumed" and event_id.endswith(".resumed")
    assert (data["ended"], data["resumed_by"], data["at"]) == ("timed-out", None, data["until"])


def test_the_timeline_shades_secure_pauses_apart_from_quorum_pauses():
    spans = [(RECORDING, 0, 4000), (PAUSED, 4000, 9000), (RECORDING, 9000, 12000), (PAUSED, 12000, 15000)]
    assert views.secure_shaded(spans, [(5000, 8000), (11000, 20000)]) == [
        (RECORDING, 0, 4000),
        (PAUSED, 4000, 5000),
        (views.SECURE, 5000, 8000),
        (PAUSED, 8000, 9000),
        (RECORDING, 9000, 12000),
        (views.SECURE, 12000, 15000),
    ]  # a recorded stretch inside one stays recorded
    page = views.timeline_view(
        {
            "started_at": None,
            "ended_at": None,
            "channels": [],
            "recording_timeline": [{"state": s, "start_ms": a, "end_ms": b} for s, a, b in spans],
            "secure_pauses": [
                {
                    "start_ms": 5000,
                    "end_ms": 8000,
                    "by": "api",
                    "reason": "card",
                    "ended": "resumed",
                    "resumed_by": "dashboard",
                }
            ],
        }
    )
    assert [s["state"] for s in page["lanes"][0]["spans"]].count(views.SECURE) == 1
    assert page["secure"] == [
        {"text": "secure pause by api (card), resumed by dashboard", "from": "0:05.0", "to": "0:08.0"}
    ]


def test_the_live_card_says_whose_secure_pause_is_on_and_until_when():
    paused = secure_pause.begin(conference("A", "B"), T0, "dashboard", "card", 60)
    card = views.live_conference(paused, T0 + 1)
    assert card["secure"] and card["secure_button"] == "Resume recording"
    assert card["secure_words"] == (
        "Secure pause by dashboard since 08:00:00 UTC (card): nothing is recorded; it ends by itself at 08:01:00 UTC."
    )
    assert not views.live_conference(conference("A"), T0)["secure"]


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "86401"])
def test_secure_pause_max_s_must_be_a_sensible_length(value):
    with pytest.raises(ConfigError, match="SECURE_PAUSE_MAX_S"):
        Config.from_env(
            {
                "SIGNALWIRE_PROJECT_ID": "p",
                "SIGNALWIRE_API_TOKEN": "t",
                "SIGNALWIRE_SPACE_URL": "example.signalwire.com",
                "PUBLIC_URL": "https://q.example.com",
                "VALIDATE_SIGNATURES": "false",
                "SECURE_PAUSE_MAX_S": value,
            }
        )


# The routes, on the real app (SignalWire faked over HTTP)


class Phone(SignedCallbacks):
    """Signed conference callbacks to one app, a second apart."""

    at = time.time() - 100

    def event(self, kind: str, call: str = None) -> None:
        """One conference status callback for the room's conference."""
        Phone.at += 1
        form = {
            "AccountSid": "acct",
            "ConferenceSid": sid("conf"),
            "FriendlyName": ROOM,
            "StatusCallbackEvent": kind,
            "Timestamp": formatdate(Phone.at, usegmt=True),
        } | ({"CallSid": call} if call else {})
        assert self.post("/voice/conference-status", form).status_code == 204

    def recording(self, status: str) -> None:
        """The conference recording's status callback."""
        form = {"AccountSid": "acct", "RecordingSid": sid("rec"), "RecordingStatus": status}
        assert self.post("/voice/recording-status", form, query={"room": ROOM}).status_code == 204


@pytest.fixture
def app(signalwire, tmp_path):
    application = create_app(make_config(api_token=TOKEN, recordings_dir=str(tmp_path), reconcile_interval_s=0))
    yield application
    shutdown(application)


@pytest.fixture
def recording(app):
    """The room's conference with two callers on the line, recording."""
    phone = Phone(app)
    for call in ("host", "guest"):
        phone.event("participant-join", sid(call))
    phone.event("conference-start")
    phone.recording("in-progress")
    return phone


BEARER = {"Authorization": f"Bearer {TOKEN}"}


def test_the_api_pauses_and_resumes_with_the_bearer_token(app, recording, signalwire):
    client = app.test_client()
    answer = client.post(f"/api/conferences/{ROOM}/secure-pause", headers=BEARER, json={"reason": "card number"})
    assert answer.status_code == 200
    state = answer.get_json()
    assert state["secure_paused"] and state["wanted"] == PAUSED and state["secure_pause"]["by"] == "api"
    assert state["secure_pause"]["reason"] == "card number" and state["conversation_id"] == sid("conf")
    assert services(app).commands.wait_idle(5)
    assert recording_updates(signalwire)[-1][1]["Status"] == "paused"
    answer = client.post(f"/api/conferences/{ROOM}/secure-resume", headers=BEARER)
    assert answer.status_code == 200 and not answer.get_json()["secure_paused"]
    assert answer.get_json()["secure_pauses"][0]["ended"] == "resumed"
    assert services(app).commands.wait_idle(5)
    assert recording_updates(signalwire)[-1][1]["Status"] == "in-progress"


def test_the_api_needs_its_token_a_live_conference_and_a_sensible_reason(app, recording):
    client = app.test_client()
    url = f"/api/conferences/{ROOM}/secure-pause"
    assert client.post(url).status_code == 401
    assert client.post(url, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.post("/api/conferences/+15550000000/secure-pause", headers=BEARER).status_code == 404
    assert client.post("/api/conferences/not%20a%20room/secure-pause", headers=BEARER).status_code == 404
    for reason in ("x" * (secure_pause.REASON_MAX_CHARS + 1), "two\nlines"):
        assert client.post(url, headers=BEARER, data={"reason": reason}).status_code == 400
    assert client.post(url, headers=BEARER, json={"reason": 7}).status_code == 400
    assert client.post(url, headers=BEARER, json=["reason"]).status_code == 400
    assert services(app).store.get(ROOM).secure_pause() is None  # none of those paused anything
    assert client.post(url, headers=BEARER, data={"reason": "  card  "}).get_json()["secure_pause"]["reason"] == "card"


def test_the_api_is_off_without_api_token(signalwire, tmp_path):
    application = create_app(make_config(recordings_dir=str(tmp_path)))
    try:
        assert application.test_client().post(f"/api/conferences/{ROOM}/secure-pause").status_code == 503
    finally:
        shutdown(application)


def signed_in(app):
    """A test client signed in through the form, and the CSRF token the live page gives it."""
    client = app.test_client()
    assert client.post("/login", data={"token": TOKEN}).status_code == 303
    page = client.get("/").get_data(as_text=True)
    token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    return client, token


def test_the_button_needs_the_session_and_its_csrf_token(app, recording):
    client, token = signed_in(app)
    url = f"/live/{ROOM}/secure-pause"
    assert app.test_client().post(url, data={"csrf_token": token}).status_code == 401  # no session
    assert client.post(url, data={"reason": "card"}).status_code == 403  # no token
    assert client.post(url, data={"csrf_token": "0" * 64}).status_code == 403
    assert services(app).store.get(ROOM).secure_pause() is None
    answer = client.post(url, data={"csrf_token": token, "reason": "card"}, headers={"Accept": "application/json"})
    assert answer.status_code == 200 and answer.get_json()["secure_pause"]["by"] == "dashboard"
    live = client.get("/live.json").get_json()["conferences"][0]
    assert live["secure"] and live["secure_url"].endswith(f"/live/{ROOM}/secure-resume")
    plain = client.post(f"/live/{ROOM}/secure-resume", data={"csrf_token": token})  # a form without script
    assert plain.status_code == 303 and plain.headers["Location"].endswith("/")
    assert services(app).store.get(ROOM).secure_pauses[-1].resumed_by == "dashboard"


def test_the_csrf_token_is_bound_to_the_session(app, recording):
    first, token = signed_in(app)
    time.sleep(1.1)  # the next session's cookie carries another timestamp
    second, other = signed_in(app)
    assert token != other
    assert second.post(f"/live/{ROOM}/secure-pause", data={"csrf_token": token}).status_code == 403
    with app.test_request_context(headers={"Cookie": f"{signin.COOKIE}=x"}):
        assert signin.csrf_token() != token
