"""The memory store's state file: what a restart keeps (real SQLite files, the real app, SignalWire faked over HTTP)."""

import json
import logging
import os
import sqlite3
import tempfile
import threading
import time
from contextlib import closing
from email.utils import formatdate
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from app import create_app, services, shutdown
from config import STATE_FILE_NAME, ConfigError
from quorum.state_file import FileBackedStore, StateFile
from recording_state import Conference, MemoryStore, Transition, evolve, parked_key
from support import MEDIA_BASE, SignedCallbacks, make_config, recording_updates, sid

ROOM, OTHER_ROOM = "+15550001111", "+15550002222"
HOST_NUMBER, GUEST_NUMBER = "+15550009999", "+15550003333"
CONF, NEXT_CONF, DONE_CONF = sid("conf"), sid("next-conf"), sid("done-conf")
REC, NEXT_REC, DONE_REC = sid("rec"), sid("next-rec"), sid("done-rec")
HOST, GUEST, THIRD, FOURTH = sid("host"), sid("guest"), sid("third"), sid("fourth")


class Phone(SignedCallbacks):
    """Signed callbacks to one app, as SignalWire sends them, each a second after the last."""

    at = time.time() - 100  # the class's: the phone of a restarted app goes on from the last one's clock

    def dial(self, call: str, number: str, room: str = ROOM) -> None:
        """The call's voice webhook: Quorum learns who it is."""
        assert self.post("/voice/inbound", {"CallSid": call, "From": number, "To": room}).status_code == 200

    def conference(self, event: str, call: str = None, conference: str = CONF, room: str = ROOM) -> str:
        """A conference status callback; returns Quorum's X-Quorum-Outcome."""
        Phone.at += 1
        form = {
            "AccountSid": "acct",
            "ConferenceSid": conference,
            "FriendlyName": room,
            "StatusCallbackEvent": event,
            "Timestamp": formatdate(Phone.at, usegmt=True),
        }
        response = self.post("/voice/conference-status", form | ({"CallSid": call} if call else {}))
        assert response.status_code == 204, response.data
        return response.headers["X-Quorum-Outcome"]

    def recording(self, status: str, recording: str = REC, room: str = ROOM, **extra) -> str:
        """A recording status callback; returns Quorum's X-Quorum-Outcome."""
        form = {"AccountSid": "acct", "RecordingSid": recording, "RecordingStatus": status, **extra}
        response = self.post("/voice/recording-status", form, query={"room": room})
        assert response.status_code == 204, response.data
        return response.headers["X-Quorum-Outcome"]


def started(settings: dict) -> Phone:
    """An app on `settings`, with its phone."""
    return Phone(create_app(make_config(reconcile_interval_s=0, **settings)))


def restarted(phone: Phone, settings: dict) -> Phone:
    """Stop the phone's app and start a fresh one on the same RECORDINGS_DIR (and `settings`)."""
    shutdown(phone.app)
    return started(settings)


def wait_for(condition, timeout: float = 10) -> bool:
    """Whether `condition()` came true within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def rest_reads(signalwire) -> list:
    """GETs sent to SignalWire."""
    return [
        call.request.url
        for call in signalwire.calls
        if call.request.method == "GET" and not call.request.url.startswith(MEDIA_BASE)
    ]


@pytest.fixture
def settings(tmp_path, signalwire):
    """One RECORDINGS_DIR for every app of the test, the room's hosts set by its rules file."""
    rules = tmp_path / "rules.toml"
    rules.write_text(f'["{ROOM}"]\nhost_numbers = ["{HOST_NUMBER}"]\nmin_participants = 2\n')
    return dict(recordings_dir=str(tmp_path / "recordings"), room_rules_file=str(rules))


def test_a_conference_its_known_calls_and_its_rule_survive_a_restart(settings, signalwire, tmp_path):
    phone = started(settings)
    phone.dial(GUEST, GUEST_NUMBER)
    phone.dial(HOST, HOST_NUMBER)  # joins after the restart
    phone.dial(THIRD, GUEST_NUMBER)
    phone.conference("conference-start")
    phone.conference("participant-join", GUEST)
    phone.conference("participant-join", THIRD)
    phone.recording("in-progress")
    phone.settle()
    before = phone.state(ROOM)
    assert before.wanted == "paused"  # no host yet

    (tmp_path / "rules.toml").write_text(f'["{ROOM}"]\nmin_participants = 4\n')  # no hosts, four on the line
    phone = restarted(phone, {**settings, "min_participants": 5})
    assert phone.state(ROOM) == before
    assert phone.conference("participant-join", HOST) == "queued"  # known as the host: resume
    phone.settle()
    assert phone.state(ROOM).participants[HOST].host
    assert phone.state(ROOM).rule.host_numbers == (HOST_NUMBER,)
    phone.conference("participant-leave", THIRD)  # two, one of them the host: the old rule records on
    phone.settle()
    assert [form["Status"] for _, form in recording_updates(signalwire)] == ["paused", "in-progress"]
    assert rest_reads(signalwire) == []
    shutdown(phone.app)


def test_recording_urls_a_parked_conference_and_retired_sids_survive_restarts(settings, signalwire):
    phone = started(settings)
    for call in (HOST, GUEST):
        phone.dial(call, GUEST_NUMBER, OTHER_ROOM)
    phone.conference("conference-start", conference=DONE_CONF, room=OTHER_ROOM)
    for call in (HOST, GUEST):
        phone.conference("participant-join", call, conference=DONE_CONF, room=OTHER_ROOM)
    phone.recording("in-progress", DONE_REC, OTHER_ROOM)
    phone.recording("completed", DONE_REC, OTHER_ROOM, RecordingUrl=MEDIA_BASE + DONE_REC, RecordingDuration="2")
    phone.conference("conference-start")  # ROOM: ends before its recording does, and the next conference parks it
    phone.conference("participant-join", THIRD)
    phone.recording("in-progress")
    phone.conference("conference-end")
    phone.conference("conference-start", conference=NEXT_CONF)
    phone.settle()
    before = dict(services(phone.app).store.conferences())
    assert sorted(before) == sorted([OTHER_ROOM, ROOM, parked_key(ROOM, CONF)])

    phone = restarted(phone, settings)
    assert dict(services(phone.app).store.conferences()) == before
    for call in (HOST, GUEST):
        phone.conference("participant-leave", call, conference=DONE_CONF, room=OTHER_ROOM)
    assert phone.conference("conference-end", conference=DONE_CONF, room=OTHER_ROOM) == "processing"
    assert phone.recording("completed", REC, RecordingUrl=MEDIA_BASE + REC, RecordingDuration="2") == "processing"
    assert services(phone.app).processor.wait_idle(20)
    archive = services(phone.app).archive
    assert archive.find(DONE_CONF)["audio"]["duration_ms"] == 2000  # fetched from the URL kept before the restart
    assert archive.find(CONF)["status"] == "ready"

    phone = restarted(phone, settings)
    assert [room for room, _ in services(phone.app).store.conferences()] == [ROOM]  # deletions stay deleted
    assert phone.conference("participant-join", GUEST, conference=DONE_CONF, room=OTHER_ROOM) == "stale"
    assert phone.recording("completed", DONE_REC, OTHER_ROOM) == "stale"
    assert phone.recording("completed", REC) == "stale"
    assert phone.state(OTHER_ROOM) is None
    shutdown(phone.app)


def test_speaker_events_survive_a_restart_and_a_file_written_before_them_loads(settings, signalwire, tmp_path):
    phone = started({**settings, "talk_time": True})
    for call, number in ((HOST, HOST_NUMBER), (GUEST, GUEST_NUMBER)):
        phone.dial(call, number)
        phone.conference("participant-join", call)
    phone.conference("participant-speech-start", HOST)
    phone.conference("participant-speech-start", GUEST)
    phone.conference("participant-speech-stop", HOST)
    phone.settle()
    before = phone.state(ROOM)
    assert {call: (len(events.starts), len(events.stops)) for call, events in before.talk.items()} == {
        HOST: (1, 1),
        GUEST: (1, 0),
    }

    phone = restarted(phone, settings)
    assert phone.state(ROOM) == before
    shutdown(phone.app)
    path = Path(settings["recordings_dir"]) / STATE_FILE_NAME
    with closing(sqlite3.connect(path)) as db, db:
        (text,) = db.execute("SELECT conference FROM conferences WHERE room = ?", (ROOM,)).fetchone()
        row = json.loads(text)
        del row["talk"]  # as a release before TALK_TIME wrote it
        db.execute("UPDATE conferences SET conference = ? WHERE room = ?", (json.dumps(row), ROOM))
    phone = started(settings)
    assert phone.state(ROOM) == evolve(before, talk={})
    shutdown(phone.app)


def test_a_clean_stop_leaves_the_file_checkpointed(settings, tmp_path):
    phone = started(settings)
    phone.conference("conference-start")
    shutdown(phone.app)
    path = Path(settings["recordings_dir"]) / STATE_FILE_NAME
    assert path.stat().st_size > 0 and not Path(f"{path}-wal").exists()


def test_state_file_off_keeps_state_in_memory_only(settings):
    phone = started({**settings, "state_file": "off"})
    phone.conference("conference-start")
    phone.dial(GUEST, GUEST_NUMBER)
    assert type(services(phone.app).store) is MemoryStore
    phone = restarted(phone, {**settings, "state_file": "OFF"})
    assert phone.state(ROOM) is None
    shutdown(phone.app)
    assert list(Path(settings["recordings_dir"]).glob(".quorum-state*")) == []


def test_state_file_may_be_anywhere_and_its_directory_is_made(settings, tmp_path):
    path = tmp_path / "state" / "here" / "quorum.sqlite3"
    phone = started({**settings, "state_file": str(path)})
    phone.conference("conference-start")
    phone = restarted(phone, {**settings, "state_file": str(path)})
    assert phone.state(ROOM).conference_sid == CONF
    shutdown(phone.app)
    assert path.exists() and not (Path(settings["recordings_dir"]) / STATE_FILE_NAME).exists()


def test_changes_the_file_refuses_are_kept_and_written_once_it_takes_them(settings, caplog):
    phone = started(settings)
    writer = services(phone.app).store.state_file._db
    writer.execute("PRAGMA query_only = ON")  # every commit now fails, as on a full disk
    assert phone.conference("conference-start") == "applied"  # the callback never waits for the file
    assert wait_for(lambda: "changes not written yet" in caplog.text)
    writer.execute("PRAGMA query_only = OFF")
    phone = restarted(phone, settings)  # the stop writes what is still queued
    assert phone.state(ROOM).conference_sid == CONF
    shutdown(phone.app)


# --- the file itself -------------------------------------------------------------------------------


def test_an_unreadable_row_is_skipped_with_one_warning(tmp_path, caplog):
    path = str(tmp_path / "state.sqlite3")
    store = FileBackedStore(StateFile(path))
    for room in (ROOM, OTHER_ROOM):
        store.mutate(room, lambda conf, room=room: Conference(room, CONF))
    store.remember_call(HOST, {"from": HOST_NUMBER, "to": ROOM})
    store.remember_call(GUEST, {"from": GUEST_NUMBER, "to": ROOM})
    store.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE conferences SET conference = '{\"room\": 1}' WHERE room = ?", (OTHER_ROOM,))
        db.execute("UPDATE calls SET value = '[1, 2]' WHERE key = ?", (GUEST,))
    db.close()
    again = FileBackedStore(StateFile(path))
    assert [room for room, _ in again.conferences()] == [ROOM]
    assert again.recall_call(HOST) == {"from": HOST_NUMBER, "to": ROOM} and again.recall_call(GUEST) is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and f"room {OTHER_ROOM} skipped" in warnings[0] and f"call {GUEST}" in warnings[1]
    again.close()


def test_the_writer_commits_while_the_process_runs(tmp_path):
    """What a crash would leave: every change is committed soon after it is made, not only at the stop."""
    path = str(tmp_path / "state.sqlite3")
    store = FileBackedStore(StateFile(path))
    store.mutate(ROOM, lambda conf: Conference(ROOM, CONF))
    store.retire(DONE_CONF)

    def committed():
        with closing(sqlite3.connect(path)) as db:
            return (
                db.execute("SELECT room FROM conferences").fetchall(),
                db.execute("SELECT key FROM retired").fetchall(),
            )

    assert wait_for(lambda: committed() == ([(ROOM,)], [(DONE_CONF,)]))
    store.mutate(ROOM, lambda conf: None)
    assert wait_for(lambda: committed() == ([], [(DONE_CONF,)]))
    store.close()


def test_bounded_sets_stay_bounded_in_the_file(tmp_path):
    path = str(tmp_path / "state.sqlite3")
    store = FileBackedStore(StateFile(path))
    store.CALLS_LIMIT, store.RETIRED_LIMIT = 3, 2
    for n in range(6):
        store.remember_call(sid(f"call-{n}"), {"from": GUEST_NUMBER, "to": ROOM})
        store.retire(sid(f"conf-{n}"))
    store.remember_call(sid("call-3"), {"from": HOST_NUMBER, "to": ROOM})  # again: now the newest
    store.close()
    with sqlite3.connect(path) as db:
        calls = [key for (key,) in db.execute("SELECT key FROM calls ORDER BY seq")]
        retired = [key for (key,) in db.execute("SELECT key FROM retired ORDER BY seq")]
    db.close()
    assert calls == [sid("call-4"), sid("call-5"), sid("call-3")]
    assert retired == [sid("conf-4"), sid("conf-5")]


def test_a_file_of_a_newer_schema_is_refused_naming_the_setting(settings, tmp_path):
    path = tmp_path / "state.sqlite3"
    sqlite3.connect(path).execute("PRAGMA user_version = 2")
    with pytest.raises(ConfigError) as refused:  # the entry points print it as one line (tests/test_start_up.py)
        create_app(make_config(state_file=str(path), **settings))
    assert refused.value.setting == "STATE_FILE" and "newer Quorum (schema 2" in str(refused.value)


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda tmp: (tmp / "plain").write_text("x") and tmp / "plain" / "state.sqlite3", "cannot open"),
        (
            lambda tmp: (tmp / "junk").write_bytes(b"not SQLite at all" * 100) and tmp / "junk",
            "not a Quorum state file",
        ),
    ],
)
def test_a_file_that_cannot_serve_is_refused_naming_the_setting(tmp_path, make, problem):
    with pytest.raises(ConfigError) as refused:
        StateFile(str(make(tmp_path)))
    assert refused.value.setting == "STATE_FILE" and problem in str(refused.value)


def test_one_process_at_a_time_holds_the_file(tmp_path):
    path = str(tmp_path / "state.sqlite3")
    first = StateFile(path)
    with pytest.raises(ConfigError, match="in use by another Quorum process"):
        StateFile(path, lock_wait_s=0.2)
    first.close()
    StateFile(path, lock_wait_s=0.2).close()


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({}, f"/r/{STATE_FILE_NAME}"),
        ({"state_file": "off"}, None),
        ({"state_file": "/var/lib/quorum/state.sqlite3"}, "/var/lib/quorum/state.sqlite3"),
        ({"redis_url": "redis://localhost:6379/0"}, None),  # Redis is the store then
    ],
)
def test_state_path_follows_the_setting(overrides, expected):
    assert make_config(recordings_dir="/r", **overrides).state_path() == expected


def test_a_switch_word_is_not_taken_for_a_file_name():
    with pytest.raises(ConfigError, match="STATE_FILE: must be empty"):
        make_config(state_file="false")


# --- concurrency ---------------------------------------------------------------------------------

CHANGES = st.one_of(
    st.tuples(
        st.just("put"), st.sampled_from([ROOM, OTHER_ROOM, parked_key(ROOM, CONF), "+15550005555"]), st.integers(0, 9)
    ),
    st.tuples(st.just("delete"), st.sampled_from([ROOM, OTHER_ROOM, parked_key(ROOM, CONF)]), st.just(0)),
    st.tuples(st.just("call"), st.sampled_from([HOST, GUEST, THIRD, FOURTH, CONF]), st.integers(0, 9)),
    st.tuples(st.just("retire"), st.sampled_from([CONF, NEXT_CONF, DONE_CONF, REC, NEXT_REC]), st.just(0)),
)


def _apply(store: FileBackedStore, change: tuple) -> None:
    """One change, as the controller makes them: through mutate, remember_call or retire."""
    kind, key, n = change
    if kind == "put":
        store.mutate(
            key,
            lambda conf: evolve(
                conf or Conference(key.split("#")[0], CONF),
                updated_at=float(n),
                timeline=(conf.timeline if conf else ()) + (Transition(n, "wanted", "paused"),),
            ),
        )
    elif kind == "delete":
        store.mutate(key, lambda conf: None)
    elif kind == "call":
        store.remember_call(key, {"from": f"+1555000{n:04d}", "to": ROOM})
    else:
        store.retire(key)


@hypothesis_settings(max_examples=30, deadline=None)
@given(threads=st.lists(st.lists(CHANGES, max_size=25), min_size=2, max_size=8))
def test_many_threads_changing_many_rooms_reload_as_memory_holds_them(threads):
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "state.sqlite3")
        store = FileBackedStore(StateFile(path))
        store.CALLS_LIMIT, store.RETIRED_LIMIT = 3, 3  # evictions too
        start = threading.Barrier(len(threads))

        def run(changes):
            start.wait()
            for change in changes:
                _apply(store, change)

        workers = [threading.Thread(target=run, args=(changes,)) for changes in threads]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        store.close()
        again = FileBackedStore(StateFile(path))
        assert dict(again.conferences()) == dict(store.conferences())
        assert list(again._calls.items()) == list(store._calls.items())
        assert list(again._retired) == list(store._retired)
        again.close()
