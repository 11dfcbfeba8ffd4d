"""SignalWire's copies through Flask's test client with SignalWire faked over HTTP: which archived copies are
checked, which of SignalWire's copies are deleted and when, what the record says, and what a restart or a
second process finds."""

import io
import logging
import re
import time
import uuid
import wave
from pathlib import Path

import pytest
import responses

from app import create_app, services, shutdown
from conversations.signalwire_copies import PENDING_DIR, check_copy, with_deleted
from support import (
    API_BASE,
    MEDIA_BASE,
    RECORDING_DELETE,
    SignedCallbacks,
    conference_form,
    make_config,
    sid,
    wav_bytes,
)

ROOM = "+15550007777"
CONF = sid("conf-r")
MIX, OWN = sid("mix-r"), sid("own-r")
HOST, GUEST = sid("host-r"), sid("guest-r")
HOST_NUMBER = "+15551230001"
CALL_RECORDINGS = re.compile(rf"{re.escape(API_BASE)}/Calls/([^/]+)/Recordings\.json")
CALL_RECORDING_UPDATE = re.compile(rf"{re.escape(API_BASE)}/Calls/([^/]+)/Recordings/([^/]+)\.json")
WAV = re.compile(re.escape(MEDIA_BASE) + r"([^/]+)\.wav")
T = 1_800_000_000.0


class Line(SignedCallbacks):
    """One conference driven through signed callbacks: two callers, the mix and the host's own recording."""

    def __init__(self, app):
        super().__init__(app)
        self.at = 1_800_000_000

    def ok(self, path, form, query=None):
        response = self.post(path, form, query)
        assert response.status_code < 300, response.data

    def event(self, kind, call=None):
        self.at += 1
        self.ok("/voice/conference-status", conference_form(kind, CONF, ROOM, call, at=self.at))

    def recording(self, recording_sid, status, duration="2", call=None):
        query = {"room": ROOM} | ({"call": call} if call else {})
        self.ok(
            "/voice/recording-status",
            {
                "RecordingSid": recording_sid,
                "RecordingStatus": status,
                "RecordingUrl": MEDIA_BASE + recording_sid,
                "RecordingDuration": duration,
            },
            query,
        )

    def call(self, durations=("2", "2")):
        """The whole conference; `durations`: the RecordingDuration reported for the mix and the host's own."""
        self.talk()
        self.finish(durations)

    def talk(self):
        """Both callers join, both recordings run, both callers leave and the conference ends."""
        for call, number in ((HOST, HOST_NUMBER), (GUEST, "+15551230002")):
            self.ok("/voice/inbound", {"CallSid": call, "From": number, "To": ROOM})
            self.event("participant-join", call)
        self.event("conference-start")
        self.recording(MIX, "in-progress")
        self.settle()
        self.recording(OWN, "in-progress", call=HOST)
        for call in (GUEST, HOST):
            self.event("participant-leave", call)
        self.event("conference-end")
        self.settle()

    def finish(self, durations=("2", "2")):
        """Both recordings report completed; processing (and any deletion it starts) runs."""
        self.recording(MIX, "completed", durations[0])
        self.recording(OWN, "completed", durations[1], call=HOST)
        assert services(self.app).processor.wait_idle(20)
        assert services(self.app).copies.wait_idle(10)

    def archived(self) -> dict:
        return services(self.app).archive.find(CONF)


@pytest.fixture
def fake(signalwire, deletions):
    """The host's own recording is created as OWN; DELETE answers 204; `fake.deleted` lists what was asked."""
    signalwire.add(responses.POST, CALL_RECORDINGS, json={"sid": OWN, "status": "in-progress"}, status=201)
    signalwire.add(responses.POST, CALL_RECORDING_UPDATE, json={"status": "paused"})
    signalwire.deleted = deletions
    return signalwire


def make_line(tmp_path, clock=None, **settings) -> Line:
    """A line to an app that records the host's own voice too and, unless told otherwise, deletes at SignalWire."""
    config = make_config(
        **{
            "recordings_dir": str(tmp_path),
            "participant_recording": "inbound",
            "record_participants": HOST_NUMBER,
            "delete_from_signalwire": True,
            **settings,
        }
    )
    return Line(create_app(config, archive_clock=clock))


@pytest.fixture
def line(tmp_path, fake):
    made = make_line(tmp_path)
    yield made
    shutdown(made.app)


def entries(record: dict) -> list:
    """(wav_file, deleted_from_signalwire) of the mix, then of each channel."""
    audio = [record["audio"]] + [c["audio"] for c in record["channels"]]
    return [(a["wav_file"], a["deleted_from_signalwire"]) for a in audio]


def test_checked_copies_are_deleted_at_signalwire_and_the_record_says_so(line, fake, tmp_path):
    line.call()
    assert sorted(fake.deleted) == sorted([MIX, OWN])
    assert entries(line.archived()) == [("mix.wav", True), ("channel-01.wav", True), (None, False)]
    assert not (tmp_path / PENDING_DIR).exists() or list((tmp_path / PENDING_DIR).iterdir()) == []


def test_a_copy_whose_length_is_not_what_signalwire_reported_is_kept(line, fake, caplog):
    line.call(durations=("2", "5"))  # the host's own recording was 5 s, the WAV that came is 2 s
    assert fake.deleted == [MIX]
    assert entries(line.archived())[:2] == [("mix.wav", True), ("channel-01.wav", False)]
    (kept,) = [r for r in caplog.records if "SignalWire's copy is kept" in r.getMessage()]
    assert kept.levelno == logging.WARNING and OWN in kept.getMessage() and MEDIA_BASE not in kept.getMessage()


def test_a_failed_download_keeps_signalwires_copy(line, fake):
    def only_the_mix(request):
        return (200, {}, wav_bytes()) if WAV.fullmatch(request.url).group(1) == MIX else (404, {}, "")

    fake.remove(responses.GET, re.compile(re.escape(MEDIA_BASE) + r"[^/]+\.wav"))
    fake.add_callback(responses.GET, WAV, callback=only_the_mix)
    line.call()
    assert fake.deleted == [MIX]
    assert entries(line.archived())[:2] == [("mix.wav", True), (None, False)]
    assert services(line.app).copies.sweep() == 0  # and nothing is left to retry


def test_nothing_is_deleted_unless_asked(tmp_path, fake):
    line = make_line(tmp_path, delete_from_signalwire=False)
    try:
        line.call()
    finally:
        shutdown(line.app)
    assert fake.deleted == []
    assert entries(line.archived()) == [("mix.wav", False), ("channel-01.wav", False), (None, False)]
    assert not (tmp_path / PENDING_DIR).exists()


def test_a_conversation_archived_before_is_not_downloaded_again(line, fake):
    """A process archived it and died before forgetting it: SignalWire's copies may be deleted by now."""
    line.talk()
    archive = services(line.app).archive
    directory = archive.directory_for(ROOM, line.state(ROOM).opened_at, CONF)
    archive.save(directory, {"id": CONF, "room": ROOM, "status": "ready", "by": "the process that died"})
    line.finish()
    assert [c for c in fake.calls if c.request.url.startswith(MEDIA_BASE)] == []
    assert line.archived()["by"] == "the process that died" and line.state(ROOM) is None
    assert fake.deleted == []


def test_a_failing_delete_is_left_pending_and_retried_by_the_sweep(tmp_path, fake):
    now = [T]
    line = make_line(tmp_path, clock=lambda: now[0])
    try:
        fake.replace(
            responses.DELETE, RECORDING_DELETE, status=503, json={"code": 20503, "message": "down", "status": 503}
        )
        line.call()
        assert entries(line.archived())[:2] == [("mix.wav", False), ("channel-01.wav", False)]
        assert [p.name for p in (tmp_path / PENDING_DIR).iterdir()] == [f"{CONF}.json"]
        copies = services(line.app).copies
        assert copies.sweep() == 0  # backing off: the next try is not due yet
        fake.replace(responses.DELETE, RECORDING_DELETE, status=204)
        now[0] += 60
        assert copies.sweep() == 1 and copies.wait_idle(5)
        assert entries(line.archived())[:2] == [("mix.wav", True), ("channel-01.wav", True)]
        assert list((tmp_path / PENDING_DIR).iterdir()) == []
    finally:
        shutdown(line.app)


def test_a_pending_file_waits_for_its_conversation_json_and_is_dropped_with_its_directory(tmp_path, fake):
    app = create_app(make_config(recordings_dir=str(tmp_path), delete_from_signalwire=True))
    try:
        archive, copies = services(app).archive, services(app).copies
        directory = archive.directory_for(ROOM, 1_800_000_000, CONF)
        archive.write_file(directory, "mix.wav", wav_bytes())
        copies.hold(directory, {MIX: "mix.wav"})
        copies.submit(CONF)
        assert copies.wait_idle(5) and fake.deleted == []  # not archived yet: processing writes it last
        assert copies.pending(CONF)
        archive.remove(directory)
        copies.submit(CONF)
        assert copies.wait_idle(5) and fake.deleted == [] and not copies.pending(CONF)  # our copy is gone
    finally:
        shutdown(app)


# --- pure decisions -----------------------------------------------------------------------------


def wav_file(tmp_path, data: bytes) -> Path:
    path = tmp_path / "copy.wav"
    path.write_bytes(data)
    return path


def truncated(seconds: float) -> bytes:
    """A WAV whose header promises `seconds` but whose data stops halfway."""
    whole = wav_bytes(seconds)
    return whole[: len(whole) // 2]


@pytest.mark.parametrize(
    "data, reported, ok",
    [
        (wav_bytes(2.0), 2.0, True),
        (wav_bytes(2.4), 2.0, True),  # RecordingDuration is whole seconds
        (wav_bytes(2.0), 3.0, True),  # within the 1 s tolerance
        (wav_bytes(2.0), 3.5, False),
        (wav_bytes(2.0), None, False),  # nothing to check it against
        (truncated(2.0), 2.0, False),
        (b"", 0.0, False),
        (b"ID3 not a wav at all", 2.0, False),
    ],
)
def test_check_copy(tmp_path, data, reported, ok):
    assert (check_copy(wav_file(tmp_path, data), reported) is None) is ok


def test_check_copy_of_an_empty_recording(tmp_path):
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(8000)
    assert check_copy(wav_file(tmp_path, out.getvalue()), 0.0) is None  # a valid header, nothing to leak


def test_with_deleted_marks_only_the_named_files():
    record = {
        "audio": {"wav_file": "mix.wav", "deleted_from_signalwire": False},
        "channels": [
            {"audio": {"wav_file": "channel-01.wav", "deleted_from_signalwire": False}},
            {"audio": {"wav_file": None, "deleted_from_signalwire": False}},
        ],
    }
    marked = with_deleted(record, {"channel-01.wav"})
    assert [a["deleted_from_signalwire"] for a in [marked["audio"]] + [c["audio"] for c in marked["channels"]]] == [
        False,
        True,
        False,
    ]
    assert record["channels"][0]["audio"]["deleted_from_signalwire"] is False  # the input is left alone


@pytest.mark.slow
def test_two_processes_on_one_redis_never_work_on_one_conversation_at_once(tmp_path, signalwire, redis_url):
    deleted = []

    def slow_delete(request):
        time.sleep(0.3)  # long enough for the other process to try meanwhile
        deleted.append(RECORDING_DELETE.fullmatch(request.url).group(1))
        return 204, {}, ""

    signalwire.add_callback(responses.DELETE, RECORDING_DELETE, callback=slow_delete)
    config = make_config(
        recordings_dir=str(tmp_path),
        delete_from_signalwire=True,
        redis_url=redis_url,
        redis_namespace=f"t{uuid.uuid4().hex[:8]}",
    )
    first, second = create_app(config), create_app(config)
    try:
        archive = services(first).archive
        directory = archive.directory_for(ROOM, T, CONF)
        archive.write_file(directory, "mix.wav", wav_bytes())
        services(first).copies.hold(directory, {MIX: "mix.wav"})
        archive.save(directory, {"id": CONF, "audio": {"wav_file": "mix.wav", "deleted_from_signalwire": False}})
        services(first).copies.submit(CONF)
        time.sleep(0.1)
        assert services(second).copies.sweep() == 1  # it finds the same pending file, but the lock is taken
        assert services(first).copies.wait_idle(5) and services(second).copies.wait_idle(5)
        assert deleted == [MIX] and not services(second).copies.pending(CONF)
        assert archive.find(CONF)["audio"]["deleted_from_signalwire"] is True
    finally:
        shutdown(first)
        shutdown(second)
