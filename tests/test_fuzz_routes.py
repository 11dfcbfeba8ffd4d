"""Every route, every method, fuzzed form keys and values, headers and query strings: never a 500 or a traceback."""

import logging
import time
import uuid
from email.utils import formatdate
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from app import create_app, shutdown
from support import make_config

TOKEN = "fuzz-0123456789-abcdefghij"
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
FIELDS = [
    "ConferenceSid",
    "FriendlyName",
    "StatusCallbackEvent",
    "CallSid",
    "Timestamp",
    "RecordingSid",
    "RecordingStatus",
    "RecordingUrl",
    "RecordingDuration",
    "To",
    "From",
    "token",
    "next",
    "room",
    "status",
    "page",
    "per_page",
    "call",
    "CallStatus",
    "DialCallStatus",
    "CallDuration",
]
EVENTS = ["conference-start", "conference-end", "participant-join", "participant-leave", "participant-mute"]

# Values that reach past the edge checks as well as ones that do not.
values = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        EVENTS
        + [
            "in-progress",
            "completed",
            "absent",
            "failed",
            "+15550001111",
            TOKEN,
            "1",
            "-1",
            "99999999999999999999",
            "https://example.signalwire.com/recordings/x",
            "../..",
            "",
        ]
    ),
    st.builds(lambda: str(uuid.uuid4())),
    st.builds(lambda: formatdate(time.time(), usegmt=True)),
)
sids = st.one_of(
    st.builds(lambda: str(uuid.uuid4())), st.sampled_from(["CF" + "a" * 32, "CA" + "b" * 32]), st.text(max_size=40)
)
fresh = st.builds(lambda: formatdate(time.time(), usegmt=True))
optional = {
    "CallSid": sids,
    "FriendlyName": st.sampled_from(["+15550001111", "r"]) | values,
    "RecordingUrl": values,
    "RecordingDuration": values,
    "To": values,
    "From": values,
    "Junk": values,
}
# Callbacks as SignalWire sends them, some fields fuzzed, so the routes' deeper paths are reached too.
conference_callbacks = st.fixed_dictionaries(
    {"ConferenceSid": sids, "StatusCallbackEvent": st.sampled_from(EVENTS), "Timestamp": fresh | values},
    optional=optional,
)
recording_callbacks = st.fixed_dictionaries(
    {"RecordingSid": sids, "RecordingStatus": st.sampled_from(["in-progress", "completed"]) | values}, optional=optional
)
call_statuses = st.sampled_from(["completed", "failed", "busy", "no-answer", "canceled", "in-progress", "answered"])
call_status_callbacks = st.fixed_dictionaries(
    {"CallSid": sids},
    optional={
        **{k: v for k, v in optional.items() if k != "CallSid"},
        "CallStatus": call_statuses | values,
        "DialCallStatus": call_statuses | values,
        "Timestamp": fresh | values,
        "CallDuration": st.sampled_from(["0", "30", "3600", "99999999999999999999", "nan", "-1"]) | values,
    },
)
random_forms = st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=12)), values, max_size=8)
FORMS = {
    "/voice/conference-status": conference_callbacks | random_forms,
    "/voice/recording-status": recording_callbacks | random_forms,
    "/voice/call-status": call_status_callbacks | random_forms,
}
headers = st.fixed_dictionaries(
    {},
    optional={
        "Authorization": st.one_of(
            st.just(f"Bearer {TOKEN}"), st.text(max_size=30).map(lambda t: f"Bearer {t}"), st.text(max_size=30)
        ),
        "X-SignalWire-Signature": st.text(max_size=30),
        "X-Twilio-Signature": st.text(max_size=30),
        "Content-Type": st.sampled_from(
            [
                "application/x-www-form-urlencoded",
                "multipart/form-data",
                "application/json",
                "text/plain",
                "",
                "multipart/form-data; boundary=x",
            ]
        ),
        "Cookie": st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=40),
        "X-Forwarded-For": st.text(max_size=20),
        "Range": st.sampled_from(["bytes=0-10", "bytes=-5", "bytes=abc", "bytes=10-0"]),
    },
)


def latin1(text: str) -> str:
    """Header values travel as latin-1: keep what a client could send."""
    return text.encode("latin-1", "replace").decode("latin-1").replace("\r", "").replace("\n", "")


@pytest.fixture(scope="module", params=[False, True], ids=["signatures-off", "signatures-on"])
def fuzz_app(request, tmp_path_factory):
    """One app per signature mode; with them off every form reaches the routes' own checks."""
    import responses

    with responses.RequestsMock(assert_all_requests_are_fired=False):  # no REST call leaves the machine
        application = create_app(
            make_config(
                validate_signatures=request.param, api_token=TOKEN, recordings_dir=str(tmp_path_factory.mktemp("fuzz"))
            )
        )
        yield application
        shutdown(application)


def route_paths(app):
    """Each rule's path, with its variables to be filled in."""
    return sorted({rule.rule for rule in app.url_map.iter_rules() if rule.endpoint != "static"})


@settings(
    max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    data=st.data(),
    method=st.sampled_from(["POST"] * 8 + METHODS),
    query=st.one_of(
        st.fixed_dictionaries({"room": st.just("+15550001111")}, optional={"call": sids}),
        st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=8)), values, max_size=4),
    ),
    request_headers=headers,
)
def test_no_route_answers_500_or_logs_a_traceback(fuzz_app, caplog, data, method, query, request_headers):
    paths = route_paths(fuzz_app)
    rule = data.draw(st.one_of(st.sampled_from([p for p in paths if p.startswith("/voice/")]), st.sampled_from(paths)))
    form = data.draw(FORMS.get(rule, random_forms))
    path = rule
    while "<" in path:
        start, end = path.index("<"), path.index(">")
        filler = data.draw(st.one_of(st.text(min_size=1, max_size=20), st.sampled_from(["mix.wav", "x" * 200])))
        path = path[:start] + quote(filler, safe="") + path[end + 1 :]
    query_string = "&".join(f"{quote(k)}={quote(v)}" for k, v in query.items())
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        response = fuzz_app.test_client().open(
            path,
            method=method,
            query_string=query_string,
            data=form if method not in ("GET", "HEAD") else None,
            headers={k: latin1(v) for k, v in request_headers.items()},
        )
    event(f"{rule} {response.status_code}")  # shown by --hypothesis-show-statistics: what the fuzzing reached
    assert response.status_code < 500, (method, path, response.status_code)
    assert not [r for r in caplog.records if r.exc_info], caplog.text
    assert "Traceback" not in caplog.text
