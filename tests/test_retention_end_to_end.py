"""Retention end to end, a real Quorum server against the SignalWire emulator: SignalWire's copies are
deleted only once the archive holds checked ones, kept while a download fails, retried by the sweeper
through 5xx and across a restart, a 404 counts as done; old conversations expire, new ones stay."""

from __future__ import annotations

import json
import logging
import time
import wave
from datetime import datetime
from pathlib import Path

import requests

from app import create_app, shutdown
from conversations.signalwire_copies import PENDING_DIR
from e2e_support import quorum_stack, wait_until
from emulator.faults import Faults
from emulator.scenarios import DEMO_NUMBER, Player

DAY_S = 86400
SESSION = [
    ("call", "host", DEMO_NUMBER),
    ("wait", 0.3),
    ("call", "guest", DEMO_NUMBER),
    ("wait", 1.2),
    ("hangup", "guest"),
    ("wait", 0.2),
    ("hangup", "host"),
]
DELETES_FAIL = Faults(rest_error=1.0, rest_error_methods=frozenset({"DELETE"}))


def conversation_dirs(stack) -> list:
    """Every archived conversation's directory, oldest first."""
    return sorted(
        (p.parent for p in Path(stack.config.recordings_dir).glob("*/*/*/conversation.json")),
        key=lambda d: json.loads((d / "conversation.json").read_text())["started_at"],
    )


def record_of(directory: Path) -> dict:
    """The conversation.json in `directory`."""
    return json.loads((directory / "conversation.json").read_text())


def audio_entries(record: dict) -> dict:
    """call sid (None for the mix) -> audio entry."""
    return {None: record["audio"], **{c["call_sid"]: c["audio"] for c in record["channels"]}}


def recordings(stack) -> dict:
    """The emulator's recordings of the room's conferences: sid -> Recording."""
    sids = [sid for conf in stack.emulator.conferences(DEMO_NUMBER) for sid in conf.recording_sids]
    own = [r.sid for r in stack.emulator.sim.recordings.values() if r.call_sid]
    return {sid: stack.emulator.recording(sid) for sid in sids + own}


def deletes(stack) -> list:
    """(recording sid, status) of every DELETE Quorum sent."""
    return [
        (c.path.rsplit("/", 1)[1].removesuffix(".json"), c.status)
        for c in stack.emulator.rest_log.calls
        if c.method == "DELETE"
    ]


def pending(stack) -> list:
    """The names of the pending-deletion files."""
    directory = Path(stack.config.recordings_dir) / PENDING_DIR
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def play_and_archive(stack, timeout: float = 15) -> None:
    """One session, played to its end and archived."""
    Player(stack.emulator).play(SESSION)
    assert stack.settle()
    assert stack.wait_for_empty_store(timeout)


def test_each_recording_is_deleted_at_signalwire_only_once_its_archived_copy_is_checked():
    with quorum_stack(participant_recording="inbound", delete_from_signalwire=True) as stack:
        archive_at_delete = []

        def look_at_the_archive(event):
            if event.kind == "recording-deleted":  # the emulator has just applied a DELETE
                (directory,) = Path(stack.config.recordings_dir).glob("*/*/*")
                files = {p.name: p.stat().st_size for p in directory.iterdir()}
                archive_at_delete.append(
                    (event.detail, record_of(directory) if "conversation.json" in files else None, files)
                )

        stack.emulator.sim.listeners.append(look_at_the_archive)
        play_and_archive(stack)
        everything = recordings(stack)
        assert len(everything) == 3  # the mix and each caller's own
        assert wait_until(lambda: all(r.deleted for r in everything.values()), 10)
        assert sorted(deletes(stack)) == sorted((sid, 204) for sid in everything)  # each once
        assert wait_until(lambda: pending(stack) == [], 5)
        (directory,) = conversation_dirs(stack)
        assert sorted(sid for sid, _, _ in archive_at_delete) == sorted(everything)
        for sid, record, files in archive_at_delete:
            assert record is not None, "deleted before conversation.json was written"
            wav = audio_entries(record)[everything[sid].call_sid]["wav_file"]
            assert files[wav] == (directory / wav).stat().st_size  # the whole file was in place already
            with wave.open(str(directory / wav)) as reader:
                assert abs(reader.getnframes() / reader.getframerate() - everything[sid].duration()) < 0.01
        assert [e["deleted_from_signalwire"] for e in audio_entries(record_of(directory)).values()] == [True] * 3
        media = stack.emulator.sim.recording_url(next(iter(everything)))
        assert requests.get(media + ".wav", timeout=5).status_code == 404  # nobody can fetch it any more
        assert stack.log.errors() == []


def test_a_failing_download_keeps_signalwires_copy_until_a_checked_copy_is_archived_and_never_logs_the_url():
    with quorum_stack(faults=Faults(media_error=1.0), delete_from_signalwire=True) as stack:
        Player(stack.emulator).play(SESSION)
        assert stack.settle()
        assert wait_until(
            lambda: stack.emulator.injector.injected["media_error"] >= 3, 15
        )  # three tries, 1 s and 2 s apart
        time.sleep(1.0)  # a few sweeps
        # Not given up on (the next try is put off), and nothing is deleted: nothing safe stands in for it yet.
        assert conversation_dirs(stack) == [] and deletes(stack) == [] and pending(stack) == []
        (recording,) = recordings(stack).values()
        assert not recording.deleted
        failed = [r.getMessage() for r in stack.log.records if "not downloaded" in r.getMessage()]
        assert failed and all(recording.sid in message for message in failed)
        stack.emulator.set_faults(Faults())  # SignalWire serves the media again
        assert stack.wait_for_empty_store(20)
        assert wait_until(lambda: recording.deleted, 10)
        (directory,) = conversation_dirs(stack)
        assert wait_until(lambda: record_of(directory)["audio"]["deleted_from_signalwire"] is True, 5)
        assert not any(stack.emulator.url in r.getMessage() for r in stack.log.records)


def test_the_sweeper_retries_a_failing_delete_until_it_succeeds():
    with quorum_stack(faults=DELETES_FAIL, delete_from_signalwire=True) as stack:
        play_and_archive(stack)
        (recording,) = recordings(stack).values()
        assert wait_until(lambda: len(deletes(stack)) >= 2, 10)  # the first try, then the sweeper's
        assert {status for _, status in deletes(stack)} <= {500, 503} and not recording.deleted
        (directory,) = conversation_dirs(stack)
        assert record_of(directory)["audio"]["deleted_from_signalwire"] is False
        assert len(pending(stack)) == 1
        stack.emulator.set_faults(Faults())  # SignalWire recovers
        assert wait_until(lambda: recording.deleted, 10)
        assert wait_until(lambda: record_of(directory)["audio"]["deleted_from_signalwire"] is True, 5)
        assert deletes(stack)[-1] == (recording.sid, 204) and wait_until(lambda: pending(stack) == [], 5)
        assert stack.log.errors() == []


def test_pending_deletions_survive_a_restart_and_a_404_counts_as_done():
    with quorum_stack(faults=DELETES_FAIL, participant_recording="inbound", delete_from_signalwire=True) as stack:
        play_and_archive(stack)
        assert wait_until(lambda: len(deletes(stack)) >= 3, 10)
        shutdown(stack.app)  # Quorum stops with every deletion still pending
        everything = recordings(stack)
        (mix,) = [sid for sid, r in everything.items() if r.call_sid is None]
        stack.emulator.sim.delete_recording(mix)  # someone deleted it by hand meanwhile: Quorum's DELETE will 404
        stack.emulator.set_faults(Faults())
        again = create_app(stack.config)  # a new process: nothing in memory, the archive on disk
        try:
            assert wait_until(lambda: all(r.deleted for r in everything.values()), 10)
            assert wait_until(lambda: pending(stack) == [], 5)
            (directory,) = conversation_dirs(stack)
            assert all(e["deleted_from_signalwire"] for e in audio_entries(record_of(directory)).values())
            assert (mix, 404) in deletes(stack)
        finally:
            shutdown(again)


def test_retention_removes_the_old_conversation_and_keeps_the_new_one(caplog):
    caplog.set_level(logging.INFO, logger="quorum.retention")
    offset = [0.0]
    with quorum_stack(archive_retention_days=30, archive_clock=lambda: time.time() + offset[0]) as stack:
        play_and_archive(stack)
        play_and_archive(stack)
        old, new = conversation_dirs(stack)
        ends = [record_of(d)["ended_at"] for d in (old, new)]
        assert ends[0] < ends[1]
        first_end, second_end = (_epoch(e) for e in ends)
        # 30 days after the first call ended and before the second one did.
        offset[0] = first_end + 30 * DAY_S + (second_end - first_end) / 2 - time.time()
        passes = lambda: [r.getMessage() for r in caplog.records if r.name == "quorum.retention"]  # noqa: E731
        assert wait_until(lambda: passes(), 5)  # logged once the pass is over
        assert passes() == ["archive retention: removed 1 conversation that ended more than 30 days ago"]
        assert not old.exists() and new.is_dir() and conversation_dirs(stack) == [new]
        assert stack.log.errors() == []


def test_an_expired_conversation_waits_for_its_signalwire_copies_to_be_deleted_first():
    offset = [0.0]
    with quorum_stack(
        faults=DELETES_FAIL,
        delete_from_signalwire=True,
        archive_retention_days=1,
        archive_clock=lambda: time.time() + offset[0],
    ) as stack:
        play_and_archive(stack)
        (directory,) = conversation_dirs(stack)
        (recording,) = recordings(stack).values()
        offset[0] = 2 * DAY_S
        time.sleep(1.0)  # sweeps run; the deletion keeps failing
        assert directory.is_dir() and not recording.deleted  # ours is kept while SignalWire's is there
        stack.emulator.set_faults(Faults())
        assert wait_until(lambda: recording.deleted and pending(stack) == [], 10)
        assert record_of(directory)["audio"]["deleted_from_signalwire"] is True
        offset[0] = 3 * DAY_S  # the next retention pass
        assert wait_until(lambda: not directory.exists(), 5)


def _epoch(iso_time: str) -> float:
    """An ISO 8601 time as epoch seconds."""
    return datetime.fromisoformat(iso_time).timestamp()
