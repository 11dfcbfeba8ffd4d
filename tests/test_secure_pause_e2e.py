"""Secure pause (PCI) end to end: Quorum on the SignalWire emulator, paused and resumed through the API, whatever
the quorum says; its timeout; a restart in the middle (the state file, and Redis with two gunicorn workers); the
audit in the archived record; the events at the user's server."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import requests
from werkzeug.serving import make_server

from app import services
from cluster_support import quorum_cluster
from e2e_support import quorum_stack, wait_until
from emulator.faults import Faults
from emulator.scenarios import DEMO_NUMBER, Player

TOKEN = "secure-e2e-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
TOLERANCE_S = 0.5  # a crossing's callback-to-command time on a shared CPU, with room to spare
SECRET = "events-secret"


class Receiver:
    """The user's server for event callbacks: a real HTTP server on loopback keeping each event's body."""

    def __init__(self):
        self.events = []
        self._server = make_server("127.0.0.1", 0, self, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}/events"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def __call__(self, environ, start_response):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        self.events.append(json.loads(environ["wsgi.input"].read(length)))
        start_response("204 No Content", [])
        return [b""]

    def of(self, kind: str) -> list:
        """The data of each event of one type, in arrival order."""
        return [event["data"] for event in self.events if event["type"] == kind]

    def close(self):
        self._server.shutdown()


def secure(url: str, what: str, reason: str = "") -> tuple:
    """POST secure-pause or secure-resume for DEMO_NUMBER; (status, JSON answer, when it was sent)."""
    sent = time.time()
    answer = requests.post(
        f"{url}/api/conferences/{DEMO_NUMBER}/secure-{what}",
        headers=BEARER,
        data={"reason": reason} if reason else None,
        timeout=10,
    )
    return answer.status_code, answer.json(), sent


def states(emulator, sid: str) -> list:
    """(state, start) of each span of one emulator recording."""
    return [(span.state, span.start) for span in emulator.recording(sid).timeline.spans]


def state_since(emulator, sid: str, state: str, since: float, timeout: float = 5.0) -> float:
    """When the recording entered `state` at or after `since` (waiting for it), its span's start."""

    def entered():
        return next((start for s, start in states(emulator, sid) if s == state and start >= since), None)

    assert wait_until(lambda: entered() is not None, timeout), (sid, state, states(emulator, sid))
    return entered()


def archived(stack) -> list:
    """Every archived conversation record, once the store is empty."""
    assert stack.wait_for_empty_store(15)
    return [json.loads(p.read_text()) for p in Path(stack.config.recordings_dir).glob("*/*/*/conversation.json")]


def test_a_secure_pause_overrides_the_quorum_for_every_recording_until_resumed():
    receiver = Receiver()
    try:
        with quorum_stack(
            api_token=TOKEN,
            participant_recording="inbound",
            event_callback_url=receiver.url,
            event_callback_secret=SECRET,
        ) as stack:
            player = Player(stack.emulator)
            player.play([("call", "host", DEMO_NUMBER), ("wait", 0.4), ("call", "guest", DEMO_NUMBER), ("wait", 1.0)])
            assert stack.settle()
            (conf,) = stack.emulator.conferences(DEMO_NUMBER)
            recordings = conf.recording_sids + [s for c in ("host", "guest") for s in player.calls[c].recording_sids]
            assert len(recordings) == 3 and all(stack.emulator.recording(s).status == "in-progress" for s in recordings)

            status, state, paused_at = secure(stack.config.public_url, "pause", "card number")
            assert status == 200 and state["secure_paused"] and state["secure_pause"]["by"] == "api"
            for sid in recordings:  # the mix and both callers' own: within a crossing's time
                assert state_since(stack.emulator, sid, "paused", paused_at) - paused_at < TOLERANCE_S
            player.play([("call", "third", DEMO_NUMBER), ("wait", 1.0)])  # three on the line: still nothing
            assert stack.settle()
            assert all(stack.emulator.recording(s).status == "paused" for s in recordings)
            assert player.calls["third"].recording_sids == []  # no recording of its own begins while paused

            status, state, resumed_at = secure(stack.config.public_url, "resume")
            assert status == 200 and not state["secure_paused"] and state["wanted"] == "recording"
            for sid in recordings:
                assert state_since(stack.emulator, sid, "recording", resumed_at) - resumed_at < TOLERANCE_S
            assert wait_until(lambda: player.calls["third"].recording_sids, 5)
            player.play([("hangup", "third"), ("hangup", "guest"), ("wait", 0.3), ("hangup", "host")])
            assert stack.settle()
            (record,) = archived(stack)
            assert stack.log.errors() == []
            assert services(stack.app).events.wait_idle(10)
    finally:
        receiver.close()
    (entry,) = record["secure_pauses"]
    assert {k: entry[k] for k in ("by", "reason", "ended", "resumed_by")} == {
        "by": "api",
        "reason": "card number",
        "ended": "resumed",
        "resumed_by": "api",
    }
    assert abs(entry["end_ms"] - entry["start_ms"] - 1000 * (resumed_at - paused_at)) < 200
    (began,), (ended,) = receiver.of("recording.secure_paused"), receiver.of("recording.secure_resumed")
    assert began["reason"] == "card number" and began["conversation_id"] == record["id"]
    assert (ended["ended"], ended["resumed_by"], ended["started_at"]) == ("resumed", "api", began["at"])
    # The secure pause's (two on the line), then the one when callers hung up; the resume after it.
    assert [e["participants"] for e in sorted(receiver.of("recording.paused"), key=lambda e: e["at"])] == [2, 1]
    assert [e["participants"] for e in receiver.of("recording.resumed")] == [3]


def test_a_resume_below_the_quorum_records_nothing_and_a_pause_of_no_conference_is_404():
    with quorum_stack(api_token=TOKEN) as stack:
        assert secure(stack.config.public_url, "pause")[0] == 404
        player = Player(stack.emulator)
        player.play([("call", "host", DEMO_NUMBER), ("wait", 0.4), ("call", "guest", DEMO_NUMBER), ("wait", 0.8)])
        assert stack.settle()
        (conf,) = stack.emulator.conferences(DEMO_NUMBER)
        (mix,) = conf.recording_sids
        assert secure(stack.config.public_url, "pause")[0] == 200
        player.play([("hangup", "guest"), ("wait", 0.5)])
        status, state, resumed_at = secure(stack.config.public_url, "resume")
        assert status == 200 and state["wanted"] == "paused"  # one on the line: the rule says no
        assert stack.settle()
        assert stack.emulator.recording(mix).status == "paused"
        player.play([("call", "guest", DEMO_NUMBER), ("wait", 0.8)])
        assert stack.settle()
        assert stack.emulator.recording(mix).status == "in-progress"
        player.play([("hangup", "guest"), ("wait", 0.3), ("hangup", "host")])
        assert stack.settle() and stack.log.errors() == []


def test_a_secure_pause_nobody_resumes_times_out_and_the_rule_applies_again():
    receiver = Receiver()
    try:
        with quorum_stack(
            api_token=TOKEN, secure_pause_max_s=1.5, event_callback_url=receiver.url, event_callback_secret=SECRET
        ) as stack:
            player = Player(stack.emulator)
            player.play([("call", "host", DEMO_NUMBER), ("wait", 0.4), ("call", "guest", DEMO_NUMBER), ("wait", 0.8)])
            assert stack.settle()
            (conf,) = stack.emulator.conferences(DEMO_NUMBER)
            (mix,) = conf.recording_sids
            status, _, paused_at = secure(stack.config.public_url, "pause", "card")
            assert status == 200
            resumed = state_since(stack.emulator, mix, "recording", paused_at + 0.1)  # nobody calls meanwhile
            assert 1.5 <= resumed - paused_at < 1.5 + TOLERANCE_S
            player.play([("hangup", "guest"), ("wait", 0.3), ("hangup", "host")])
            assert stack.settle()
            (record,) = archived(stack)
            assert services(stack.app).events.wait_idle(10)
    finally:
        receiver.close()
    (entry,) = record["secure_pauses"]
    assert entry["ended"] == "timed-out" and entry["end_ms"] - entry["start_ms"] == 1500
    (ended,) = receiver.of("recording.secure_resumed")
    assert ended["ended"] == "timed-out" and ended["resumed_by"] is None


def test_a_restart_in_the_middle_keeps_the_pause_and_ends_it_at_its_deadline():
    """The memory store's state file: the second app, on the same RECORDINGS_DIR, finds the pause and its deadline."""
    with quorum_stack(api_token=TOKEN, secure_pause_max_s=3.0) as stack:
        player = Player(stack.emulator)
        player.play([("call", "host", DEMO_NUMBER), ("wait", 0.4), ("call", "guest", DEMO_NUMBER), ("wait", 0.8)])
        assert stack.settle()
        (conf,) = stack.emulator.conferences(DEMO_NUMBER)
        (mix,) = conf.recording_sids
        status, _, paused_at = secure(stack.config.public_url, "pause", "card")
        assert status == 200 and stack.settle()
        stack.restart()
        assert stack.store.get(DEMO_NUMBER).secure_pause().reason == "card"
        player.play([("call", "third", DEMO_NUMBER), ("wait", 0.5)])  # the new app holds the pause against a join
        assert stack.settle() and stack.emulator.recording(mix).status == "paused"
        resumed = state_since(stack.emulator, mix, "recording", paused_at + 0.1)
        assert 3.0 <= resumed - paused_at < 3.0 + TOLERANCE_S
        player.play([("hangup", "third"), ("hangup", "guest"), ("wait", 0.3), ("hangup", "host")])
        assert stack.settle()
        (record,) = archived(stack)
        assert record["secure_pauses"][0]["ended"] == "timed-out"


def test_two_gunicorn_workers_on_redis_end_a_pause_on_time_though_its_worker_died(redis_url, tmp_path):
    """The pause is asked of one worker, which is killed: the other ends it at its deadline, and the one gunicorn
    starts in its place finds it in Redis."""
    with quorum_cluster(
        redis_url, tmp_path, Faults(), [DEMO_NUMBER], API_TOKEN=TOKEN, SECURE_PAUSE_MAX_S="10", END_GRACE_S="1"
    ) as cluster:
        player = Player(cluster.emulator)
        player.play([("call", "host", DEMO_NUMBER), ("wait", 0.4), ("call", "guest", DEMO_NUMBER), ("wait", 0.8)])
        assert cluster.settle()
        (conf,) = cluster.emulator.conferences(DEMO_NUMBER)
        (mix,) = conf.recording_sids
        status, state, paused_at = secure(cluster.workers[0].url, "pause", "card")
        assert status == 200 and state["secure_pause"]["reason"] == "card"
        assert state_since(cluster.emulator, mix, "paused", paused_at) - paused_at < TOLERANCE_S
        # Killed once its pause is written (a worker killed mid-command holds the room's lock until it expires).
        assert wait_until(lambda: cluster.store.get(DEMO_NUMBER).recordings[mix] == "paused", 5)
        cluster.kill_worker(0)  # its timer dies with it
        assert cluster.store.get(DEMO_NUMBER).secure_pause() is not None
        player.play([("hangup", "guest"), ("wait", 0.5), ("call", "guest", DEMO_NUMBER), ("wait", 0.8)])
        assert cluster.emulator.recording(mix).status == "paused"  # a quorum again, and still paused
        resumed = state_since(cluster.emulator, mix, "recording", paused_at + 0.1, timeout=15)
        assert 10.0 <= resumed - paused_at < 10.0 + TOLERANCE_S
        player.play([("hangup", "guest"), ("wait", 0.3), ("hangup", "host")])
        assert cluster.settle() and cluster.wait_for_empty_store(15)
        assert cluster.log.errors() == []
        (path,) = (tmp_path / "recordings").glob("*/*/*/conversation.json")
        (entry,) = json.loads(path.read_text())["secure_pauses"]
        assert entry["ended"] == "timed-out" and entry["end_ms"] - entry["start_ms"] == 10000
