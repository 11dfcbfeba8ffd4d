"""Faults a production deployment meets, at the real boundaries: SignalWire faked over HTTP (`responses`),
a redis-server of the test's own stopped and started again, the emulator behind a WSGI fault.

Row 2: one 404 or 422 to a pause is a transient error as often as a finished recording: a read decides.
Row 3: Redis unreachable for 3 s while a pause is in flight: the command is driven again once it is back.
Row 9: a slow announcement never holds back a pause.
The seconds a lone caller is recorded are printed (`-s`) for the report; nothing here asserts a duration.
"""

import io
import json
import re
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
import responses

from app import create_app, services, shutdown
from config import RoomRule
from e2e_support import quorum_stack
from emulator.scenarios import DEMO_NUMBER, Player, logged_quorum, recorded_spans, span_problems
from quorum import policy
from quorum.command_queue import URGENT_READ_ATTEMPTS
from quorum.housekeeper import Housekeeper
from quorum.gateway import Outcome, SignalWireHttp
from quorum.redis_store import RedisStore
from recording_state import DOUBT, GONE, PAUSED, RECORDING, UNSURE, bump
from support import API_BASE, RECORDING_UPDATE, free_port, make_config, sid

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from fault_table import RedisServer  # noqa: E402
from test_lone_caller import CALL_A, CALL_B, CONF, REC, ROOM, T0, Line, answer_reads, update_path, wait_for
from test_recording_core import REC as CORE_REC, ROOM as CORE_ROOM, B, Core, FakeGateway

PAUSE = (update_path(CONF, REC), {"Status": "paused", "PauseBehavior": "skip"})
RESUME = (update_path(CONF, REC), {"Status": "in-progress"})
NOTICE = "This call is recorded."
EVENTS_URL = "https://hooks.example.com/quorum"
CALL_RECORDING = re.compile(rf"{re.escape(API_BASE)}/Calls/([^/]+)/Recordings/([^/]+)\.json")


@pytest.fixture
def line(signalwire):
    app = create_app(make_config())
    yield Line(app, signalwire)
    shutdown(app)


def timed_updates(fake, *answers):
    """Answer recording updates with the HTTP statuses `answers` in turn, the last repeating; returns the
    monotonic time of each update."""
    fake.remove(responses.POST, RECORDING_UPDATE)
    times = []

    def answer(request):
        times.append(time.monotonic())
        status = answers[min(len(times), len(answers)) - 1]
        body = (
            {"sid": REC, "status": "paused"} if status == 200 else {"code": 20404, "message": "nope", "status": status}
        )
        return status, {}, json.dumps(body)

    fake.add_callback(responses.POST, RECORDING_UPDATE, callback=answer)
    return times


# Row 2: never conclude "gone" from one answer.


def doubted(before=False):
    """Known A and B recorded, B left, and the pause answered 404: the recording is in doubt (`before`: the
    conference just before that answer)."""
    conf = policy.conference_started(policy.new_conference("R", "conf-1", 100.0, RoomRule()))
    for call in ("A", "B"):
        conf = bump(conf, policy.participant_event(conf, call, True, 101.0, known=True))
    conf = bump(conf, policy.recording_status(conf, "rec-1", "in-progress", 102.0))
    conf = bump(conf, policy.participant_event(conf, "B", False, 103.0, known=True))
    return conf if before else bump(conf, policy.command_result(conf, "rec-1", DOUBT, 104.0, PAUSED))


def test_a_recording_in_doubt_asks_an_urgent_read_and_no_command():
    conf = doubted()
    action = policy.next_action(conf)
    assert action == policy.Action("conf-1", None, policy.RECOVER) and action.urgent
    assert conf.recordings == {"rec-1": DOUBT} and DOUBT not in {t.state for t in conf.timeline}  # unconfirmed


@pytest.mark.parametrize(
    "listed, state, then",
    [
        ({"rec-1": "in-progress"}, RECORDING, PAUSED),  # transient: the pause is sent again
        ({"rec-1": "paused"}, PAUSED, None),
        ({"rec-1": "completed"}, GONE, None),
        ({}, GONE, None),  # the conference's list is complete: a recording it leaves out is over
    ],
)
def test_a_read_settles_a_doubt(listed, state, then):
    conf = doubted()
    read = policy.recover(conf, policy.Snapshot("in-progress", ("A",), listed), 105.0, policy.read_start(conf))
    assert read.recordings == {"rec-1": state}
    action = policy.next_action(read)
    assert (action.target if action else None) == then


def test_a_read_begun_before_the_doubt_does_not_settle_it():
    start = policy.read_start(doubted(before=True))
    read = policy.recover(doubted(), policy.Snapshot("in-progress", ("A",), {}), 105.0, start)
    assert read.recordings == {"rec-1": DOUBT} and policy.next_action(read).target == policy.RECOVER


def test_the_live_page_says_a_recording_in_doubt_is_being_checked():
    from console.views import live_conference

    assert live_conference(doubted(), 110.0)["state_words"] == "checking"


def test_when_the_api_refuses_reads_a_doubt_becomes_unsure_never_gone():
    conf = policy.assume_verified(doubted())
    assert conf.recordings == {"rec-1": UNSURE} and policy.next_action(conf).target == PAUSED


@pytest.mark.parametrize("status", [404, 422])
def test_one_404_to_a_pause_is_checked_by_a_read_and_the_pause_is_sent_again(line, status):
    answered = timed_updates(line.fake, status, 200)
    line.two_known_callers()
    line.settle()
    answer_reads(line.fake, present=[CALL_A], recordings={REC: "in-progress"})  # SignalWire still records
    left = time.monotonic()
    line.conference("participant-leave", CALL_B, at=T0 + 1)
    line.settle()
    stopped = line.state().recordings == {REC: PAUSED}
    print(
        f"\nrow 2 ({status}): lone caller recorded "
        + (f"{answered[-1] - left:.3f} s" if stopped else "for the rest of the call (nothing paused it)")
    )
    assert line.updates() == [PAUSE, PAUSE]
    assert line.state().recordings == {REC: PAUSED}
    assert any(path.endswith(f"/Conferences/{CONF}/Recordings.json") for path in line.reads())


def test_a_404_the_read_confirms_makes_the_recording_gone(line):
    timed_updates(line.fake, 404)
    line.two_known_callers()
    line.settle()
    answer_reads(line.fake, present=[CALL_A], recordings={})  # the conference lists it no more
    line.conference("participant-leave", CALL_B, at=T0 + 1)
    line.settle()
    assert line.updates() == [PAUSE]
    assert line.state().recordings == {REC: GONE}


@pytest.mark.slow
def test_when_reads_keep_failing_the_wanted_state_is_sent_again_never_given_up(line):
    timed_updates(line.fake, 404, 200)
    line.two_known_callers()
    line.settle()
    for path in ("Participants.json", "Recordings.json", ""):
        line.fake.add(
            responses.GET,
            f"{API_BASE}/Conferences/{CONF}{'/' + path if path else '.json'}",
            status=503,
            json={"code": 503, "message": "busy", "status": 503},
        )
    line.conference("participant-leave", CALL_B, at=T0 + 1)
    line.settle(timeout=20)
    assert len(line.reads()) >= URGENT_READ_ATTEMPTS
    assert line.updates() == [PAUSE, PAUSE]
    assert line.state().recordings == {REC: PAUSED}


OWN = {CALL_A: sid("own-a"), CALL_B: sid("own-b")}  # each caller's own recording (PARTICIPANT_RECORDING)


def own_recordings(fake):
    """Starting a caller's own recording answers the sid OWN gives it."""
    for call, recording in OWN.items():
        fake.add(
            responses.POST,
            f"{API_BASE}/Calls/{call}/Recordings.json",
            status=201,
            json={"sid": recording, "call_sid": call, "status": "in-progress"},
        )


def test_a_participant_recording_in_doubt_is_read_on_its_own(signalwire):
    """A 404 to the pause of a caller's own recording: the conference read does not list it, so it is fetched."""
    app = create_app(make_config(participant_recording="inbound"))
    line = Line(app, signalwire)
    own = OWN
    try:
        own_recordings(signalwire)
        paused = []

        def update(request):
            paused.append(CALL_RECORDING.fullmatch(request.url).group(1))
            if len(paused) == 1:
                return 404, {}, json.dumps({"code": 20404, "message": "not found", "status": 404})
            return 200, {}, json.dumps({"sid": own[CALL_A], "status": "paused"})

        signalwire.add_callback(responses.POST, CALL_RECORDING, callback=update)
        signalwire.add(
            responses.GET,
            f"{API_BASE}/Calls/{CALL_A}/Recordings/{own[CALL_A]}.json",
            json={"sid": own[CALL_A], "call_sid": CALL_A, "status": "in-progress"},
        )
        line.two_known_callers(CALL_B)
        line.settle()
        answer_reads(signalwire, present=[CALL_A])
        line.conference("participant-leave", CALL_B, at=T0 + 1)
        line.settle()
        assert paused == [CALL_A, CALL_A]  # A's own recording: its 404, then the pause again once fetched
        assert line.state().recordings[own[CALL_A]] == PAUSED
        fetched = [c for c in signalwire.calls if c.request.method == "GET" and CALL_RECORDING.fullmatch(c.request.url)]
        assert len(fetched) == 1
    finally:
        shutdown(app)


def test_a_participant_recording_the_api_no_longer_has_is_gone(signalwire):
    app = create_app(make_config(participant_recording="inbound"))
    line = Line(app, signalwire)
    own = OWN[CALL_A]
    try:
        own_recordings(signalwire)
        signalwire.add(responses.POST, CALL_RECORDING, status=404, json={"code": 20404, "status": 404})
        signalwire.add(
            responses.GET,
            f"{API_BASE}/Calls/{CALL_A}/Recordings/{own}.json",
            status=404,
            json={"code": 20404, "status": 404},
        )
        line.two_known_callers(CALL_B)
        line.settle()
        answer_reads(signalwire, present=[CALL_A])
        line.conference("participant-leave", CALL_B, at=T0 + 1)
        line.settle()
        assert line.state().recordings[own] == GONE
    finally:
        shutdown(app)


class FirstPauseAnswers404:
    """WSGI middleware around the emulator's REST app: the first pause of a recording is answered 404 and
    not applied, as a transient error at SignalWire would be."""

    def __init__(self, app):
        self.app, self.answered = app, 0

    def __call__(self, environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(body)
        if not self.answered and "/Recordings/" in environ["PATH_INFO"] and b"Status=paused" in body:
            self.answered += 1
            start_response("404 NOT FOUND", [("Content-Type", "application/json")])
            return [
                json.dumps({"code": 20404, "message": "The requested resource was not found", "status": 404}).encode()
            ]
        return self.app(environ, start_response)


@pytest.mark.slow
def test_end_to_end_a_transient_404_still_pauses_the_lone_caller():
    with quorum_stack() as stack:
        fault = FirstPauseAnswers404(stack.emulator.app.wsgi_app)
        stack.emulator.app.wsgi_app = fault
        Player(stack.emulator).play(
            [
                ("call", "host", DEMO_NUMBER),
                ("wait", 0.6),
                ("call", "guest", DEMO_NUMBER),
                ("wait", 1.2),
                ("hangup", "guest"),
                ("wait", 1.5),
                ("hangup", "host"),
            ]
        )
        assert stack.settle()
        (conf,) = stack.emulator.conferences(DEMO_NUMBER)
        (recording_sid,) = conf.recording_sids
        expected, _ = logged_quorum(stack.emulator.sim.events, DEMO_NUMBER, 2)
        actual = recorded_spans(stack.emulator.recording(recording_sid))
        alone = sum(end for _, end in actual[-1:]) - sum(end for _, end in expected[-1:])
        print(f"\nrow 2 end to end: the lone host recorded {alone:.3f} s after the guest left")
        assert fault.answered == 1
        assert span_problems(actual, expected, 0.3) == []
        assert stack.log.errors() == []


class SlowAnnouncements:
    """WSGI middleware around the emulator's REST app: every Update Conference with an AnnounceUrl is answered
    `delay_s` late (and applied then), as a slow SignalWire would."""

    def __init__(self, app, delay_s):
        self.app, self.delay_s, self.delayed = app, delay_s, 0

    def __call__(self, environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(body)
        if b"AnnounceUrl=" in body:
            self.delayed += 1
            time.sleep(self.delay_s)
        return self.app(environ, start_response)


@pytest.mark.slow
def test_end_to_end_a_slow_announcement_never_holds_back_the_pause():
    with quorum_stack(recording_announcement=NOTICE) as stack:
        slow = SlowAnnouncements(stack.emulator.app.wsgi_app, 1.5)
        stack.emulator.app.wsgi_app = slow
        Player(stack.emulator).play(
            [
                ("call", "host", DEMO_NUMBER),
                ("wait", 0.6),
                ("call", "guest", DEMO_NUMBER),
                ("wait", 0.5),
                ("hangup", "guest"),
                ("wait", 2.0),
                ("hangup", "host"),
            ]
        )
        assert stack.settle()
        (conf,) = stack.emulator.conferences(DEMO_NUMBER)
        (recording_sid,) = conf.recording_sids
        expected, _ = logged_quorum(stack.emulator.sim.events, DEMO_NUMBER, 2)
        actual = recorded_spans(stack.emulator.recording(recording_sid))
        alone = sum(end for _, end in actual[-1:]) - sum(end for _, end in expected[-1:])
        print(f"\nrow 9 end to end: the lone host recorded {alone:.3f} s after the guest left")
        assert slow.delayed == 1
        assert span_problems(actual, expected, 0.3) == []
        assert stack.log.errors() == []


# Row 3: nothing the store dropped is forgotten.


class OwnRedis(RedisServer):
    """The fault table's redis-server of one test's own (same port and append-only data across a stop and a
    start), with a client, and an outage on a timer."""

    def __init__(self, workdir):
        super().__init__(workdir, free_port())
        self.client = redis.Redis.from_url(self.url)

    def outage(self, seconds):
        """Stop now, start again `seconds` later (on a thread); returns an Event set once it is back."""
        self.stop()
        back = threading.Event()
        threading.Timer(seconds, lambda: (self.up(), back.set())).start()
        return back


@pytest.fixture
def own_redis(tmp_path):
    server = OwnRedis(tmp_path)
    yield server
    server.stop()


@pytest.mark.slow
def test_a_pause_whose_outcome_the_store_dropped_is_driven_again(own_redis, signalwire):
    app = create_app(make_config(redis_url=own_redis.url, redis_namespace="faults"))
    line = Line(app, signalwire)
    outage = []
    signalwire.remove(responses.POST, RECORDING_UPDATE)

    def update(request):
        if not outage:
            outage.append(own_redis.outage(3.0))  # Redis goes away while the pause is in flight
        return 200, {}, json.dumps({"sid": REC, "status": "paused"})

    signalwire.add_callback(responses.POST, RECORDING_UPDATE, callback=update)
    try:
        line.two_known_callers()
        line.settle()
        line.conference("participant-leave", CALL_B, at=T0 + 1)
        assert wait_for(lambda: outage and outage[0].is_set(), timeout=15)
        back = time.monotonic()
        lock = f"faults:lock:room:{ROOM}"
        released = wait_for(lambda: not own_redis.client.exists(lock), timeout=10)
        print(
            f"\nrow 3: the room's lock released {time.monotonic() - back:.2f} s after Redis came back"
            if released
            else "\nrow 3: the room's lock still held 10 s after Redis came back"
        )
        assert released, "the lock waited for its TTL"
        rejoined = time.monotonic()
        line.conference("participant-join", CALL_B, at=T0 + 2)
        resumed = wait_for(lambda: line.updates()[-1] == RESUME, timeout=15)
        print(
            f"row 3: two callers paused {time.monotonic() - rejoined:.2f} s after the rejoin"
            if resumed
            else "row 3: two callers still paused 15 s after the rejoin"
        )
        assert resumed
        line.settle(timeout=20)
        assert line.state().recordings == {REC: RECORDING}
    finally:
        shutdown(app)


@pytest.mark.slow
def test_a_read_whose_merge_the_store_dropped_is_asked_again(own_redis, signalwire):
    app = create_app(make_config(redis_url=own_redis.url, redis_namespace="faults"))
    line = Line(app, signalwire)
    outage = []
    try:
        # Calls we never saw come in (a restart): Quorum reads before deciding; Redis goes away during the read.
        answer_reads(signalwire, present=[CALL_A], during=lambda: outage or outage.append(own_redis.outage(3.0)))
        line.conference("participant-join", CALL_A)
        line.conference("participant-join", CALL_B)
        line.conference("participant-leave", CALL_B, at=T0 + 1)
        line.recording("in-progress")
        assert wait_for(lambda: outage and outage[0].is_set(), timeout=15)
        back = time.monotonic()
        paused = wait_for(lambda: PAUSE in line.updates(), timeout=15)
        print(
            f"\nrow 3 (read): the lone caller paused {time.monotonic() - back:.2f} s after Redis came back"
            if paused
            else "\nrow 3 (read): the lone caller still recorded 15 s after Redis came back"
        )
        assert paused
        line.settle(timeout=20)
        assert line.state().recordings == {REC: PAUSED} and line.state().verified
    finally:
        shutdown(app)


def test_the_redrive_tick_drives_a_room_nobody_is_driving():
    """A due command left by a process that died before recording its outcome (or its kick) is sent again."""
    core = Core()
    try:
        core.two_recording()
        core.settle()
        # As another process left it: B's leave written, no kick, no command.
        core.store.mutate(
            CORE_ROOM, lambda conf: policy.participant_event(conf, B, False, conf.updated_at + 1, known=True)
        )
        keeper = Housekeeper(core.controller, sweep_s=60.0, reconcile_s=0, redrive_s=0.05)
        keeper.start()
        try:
            until_true(lambda: core.gateway.updates == [(CORE_REC, PAUSED)])
        finally:
            keeper.stop()
        assert core.store.get(CORE_ROOM).recordings[CORE_REC] == PAUSED
    finally:
        core.commands.shutdown()


@pytest.mark.slow
def test_a_redrive_leaves_a_room_another_process_is_commanding_to_it(redis_url):
    """No worker waits on another process's lock because of a re-drive: that process goes on driving the room."""
    core = Core(store=RedisStore.from_url(redis_url, f"t{uuid.uuid4().hex[:8]}", 30))
    try:
        core.two_recording()
        core.settle()
        token = core.store.try_lock(f"room:{CORE_ROOM}", 30)  # its pause in flight there
        core.store.mutate(
            CORE_ROOM, lambda conf: policy.participant_event(conf, B, False, conf.updated_at + 1, known=True)
        )
        assert core.controller.redrive() == 1
        assert core.commands.wait_idle(2) and core.gateway.updates == []
        core.store.unlock(f"room:{CORE_ROOM}", token)
    finally:
        core.commands.shutdown()


def test_the_redrive_leaves_a_room_waiting_out_its_backoff_alone():
    core = Core(FakeGateway(Outcome.RETRY, Outcome.RETRY, Outcome.RETRY))
    try:
        core.two_recording()
        core.event("participant-leave", B)
        until_true(lambda: len(core.gateway.updates) == 1 and core.commands.depth() == 0)
        assert core.controller.redrive() == 0  # its retry is already coming
        core.settle()
    finally:
        core.commands.shutdown()


def until_true(condition, timeout=5.0):
    assert wait_for(condition, timeout), "never happened"


# Row 9: pauses never wait.


@pytest.fixture
def announcing(signalwire):
    """An app that announces, whose announcement request blocks until `release` is set; event callbacks kept."""
    app = create_app(
        make_config(recording_announcement=NOTICE, event_callback_url=EVENTS_URL, event_callback_secret="hook-secret")
    )
    started, release, bodies = threading.Event(), threading.Event(), []

    def announce(request):
        started.set()
        release.wait(8)
        return 200, {}, json.dumps({"sid": CONF, "status": "in-progress"})

    def receive(request):
        bodies.append(json.loads(request.body))
        return 200, {}, ""

    signalwire.add_callback(responses.POST, f"{API_BASE}/Conferences/{CONF}.json", callback=announce)
    signalwire.add_callback(responses.POST, EVENTS_URL, callback=receive)
    yield Line(app, signalwire), started, release, bodies
    release.set()
    shutdown(app)


def test_a_pause_and_a_resume_never_wait_for_a_slow_announcement(announcing):
    line, started, release, bodies = announcing
    times = timed_updates(line.fake, 200)
    line.two_known_callers()
    assert started.wait(5)  # the announcement of the recording's start is in flight, and slow
    left = time.monotonic()
    line.conference("participant-leave", CALL_B, at=T0 + 1)
    paused = wait_for(lambda: PAUSE in line.updates(), timeout=3)
    print(
        f"\nrow 9: lone caller recorded {times[0] - left:.3f} s"
        if paused
        else "\nrow 9: the pause still waits 3 s into the announcement"
    )
    assert paused, "the pause waited for the announcement"
    line.conference("participant-join", CALL_B, at=T0 + 2)
    assert wait_for(lambda: line.updates()[-1:] == [RESUME], timeout=3), "the resume waited for the announcement"
    release.set()
    line.settle()
    assert services(line.app).events.wait_idle(10)
    kinds = [(b["type"], b["data"]["announcement"]) for b in sorted(bodies, key=lambda b: b["created_at"])]
    # The start's announcement was overtaken by the pause; the resume's one played.
    assert kinds == [("recording.resumed", "skipped"), ("recording.paused", None), ("recording.resumed", "played")]
    assert [t.state for t in line.state().timeline if t.kind == "announced"] == ["skipped", "played"]


def test_an_announcement_that_plays_first_keeps_the_event_order(announcing):
    line, started, release, bodies = announcing
    release.set()
    line.two_known_callers()
    line.settle()
    line.conference("participant-leave", CALL_B, at=T0 + 1)
    line.settle()
    assert services(line.app).events.wait_idle(10)
    kinds = [(b["type"], b["data"]["announcement"]) for b in sorted(bodies, key=lambda b: b["created_at"])]
    assert kinds == [("recording.resumed", "played"), ("recording.paused", None)]


class _Slow(BaseHTTPRequestHandler):
    """GET /slow answers once `release` is set; anything else at once."""

    arrived, release = threading.Event(), threading.Event()

    def do_GET(self):
        _Slow.arrived.set()
        _Slow.release.wait(5)
        self._answer()

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer()

    def _answer(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        """Quiet."""


def test_the_shared_connection_pool_never_makes_a_command_wait():
    """Reads, deletions and commands share one pool; a full pool opens another connection rather than wait."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    http = SignalWireHttp(timeout=5, pool_size=1, proxy=None)
    slow = threading.Thread(target=http.request, args=("GET", base + "/slow"))
    try:
        slow.start()
        assert _Slow.arrived.wait(5)  # the pool's one connection is taken by a slow read
        answer = http.request("POST", base + "/fast", data={"Status": "paused"})
        assert answer.status_code == 200 and not _Slow.release.is_set() and slow.is_alive()
    finally:
        _Slow.release.set()
        slow.join(5)
        server.shutdown()
        server.server_close()
