"""Archive retention through Flask's test client: what ended too long ago goes, what did not stays, and
SignalWire's copies are deleted before our own (SignalWire faked over HTTP)."""

import json
import logging
from pathlib import Path

import pytest
import responses

from app import create_app, services, shutdown
from conversations.archive import Archive
from conversations.record import iso
from conversations.retention import expired
from support import RECORDING_DELETE, make_config, sid, wav_bytes

ROOM = "+15550007777"
MIX = sid("mix-r")
DAY_S = 86400.0
T = 1_800_000_000.0


@pytest.mark.parametrize(
    "record, is_expired",
    [
        ({"started_at": iso(T - 40 * DAY_S), "ended_at": iso(T - 31 * DAY_S)}, True),
        ({"started_at": iso(T - 31 * DAY_S), "ended_at": iso(T - 29 * DAY_S)}, False),  # counted from its end
        ({"started_at": iso(T - 31 * DAY_S), "ended_at": None}, True),  # no end: from its start
        ({"started_at": None, "ended_at": None}, False),  # no time at all: kept
        ({"started_at": "garbled", "ended_at": "garbled"}, False),
    ],
)
def test_expired(record, is_expired):
    assert expired(record, T - 30 * DAY_S) is is_expired


def archived_at(app, conversation_id: str, ended: float) -> Path:
    """A finished conversation in the app's archive that ended at `ended`."""
    archive: Archive = services(app).archive
    directory = archive.directory_for(ROOM, ended - 60, conversation_id)
    archive.write_file(directory, "mix.wav", wav_bytes(0.5))
    archive.save(
        directory,
        {
            "id": conversation_id,
            "room": ROOM,
            "status": "ready",
            "started_at": iso(ended - 60),
            "ended_at": iso(ended),
            "audio": {"wav_file": "mix.wav", "deleted_from_signalwire": False},
            "channels": [],
        },
    )
    return directory


def test_retention_removes_what_ended_too_long_ago_and_logs_how_many(tmp_path, deletions, caplog):
    caplog.set_level(logging.INFO, logger="quorum.retention")
    app = create_app(make_config(recordings_dir=str(tmp_path), archive_retention_days=30))
    try:
        old = archived_at(app, sid("old"), T - 31 * DAY_S)
        older = archived_at(app, sid("older"), T - 400 * DAY_S)
        new = archived_at(app, sid("new"), T - 29 * DAY_S)
        assert services(app).retention.expire(T) == 2
    finally:
        shutdown(app)
    assert not old.exists() and not older.exists() and new.is_dir()
    assert [r.getMessage() for r in caplog.records if r.name == "quorum.retention"] == [
        "archive retention: removed 2 conversations that ended more than 30 days ago"
    ]


def test_retention_off_keeps_everything(tmp_path, deletions):
    app = create_app(make_config(recordings_dir=str(tmp_path)))
    try:
        old = archived_at(app, sid("old"), T - 4000 * DAY_S)
        assert services(app).retention.sweep() == 0
    finally:
        shutdown(app)
    assert old.is_dir()


def test_retention_deletes_signalwires_copies_before_our_own(tmp_path, signalwire, deletions):
    app = create_app(make_config(recordings_dir=str(tmp_path), archive_retention_days=1, delete_from_signalwire=True))
    try:
        copies, retention = services(app).copies, services(app).retention
        old = archived_at(app, sid("old"), T - 2 * DAY_S)
        signalwire.replace(responses.DELETE, RECORDING_DELETE, status=503)
        copies.hold(old, {MIX: "mix.wav"})
        assert retention.expire(T) == 0 and copies.wait_idle(5)  # SignalWire's copy is still there: ours stays
        assert old.is_dir() and copies.pending(sid("old"))
        signalwire.replace(responses.DELETE, RECORDING_DELETE, status=204)
        assert retention.expire(T) == 0 and copies.wait_idle(5)  # the deletion went out; ours goes next pass
        assert not copies.pending(sid("old"))
        assert json.loads((old / "conversation.json").read_text())["audio"]["deleted_from_signalwire"] is True
        assert retention.expire(T) == 1 and not old.exists()
    finally:
        shutdown(app)


def test_retention_with_deletion_off_drops_a_leftover_pending_file(tmp_path, deletions):
    before = create_app(make_config(recordings_dir=str(tmp_path), delete_from_signalwire=True))
    try:  # a run with the deletion on, stopped before it could delete
        old = archived_at(before, sid("old"), T - 2 * DAY_S)
        services(before).copies.hold(old, {MIX: "mix.wav"})
    finally:
        shutdown(before)
    app = create_app(make_config(recordings_dir=str(tmp_path), archive_retention_days=1))
    try:
        assert services(app).copies.pending(sid("old"))
        assert services(app).retention.expire(T) == 1
        assert not old.exists() and not services(app).copies.pending(sid("old")) and deletions == []
    finally:
        shutdown(app)
