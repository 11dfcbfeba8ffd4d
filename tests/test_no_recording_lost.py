"""No recording is lost while SignalWire holds it: before a conference is archived its recordings are listed at
SignalWire, a `completed` callback for a conference Quorum does not hold is kept, and a failing media download is
retried until the recording is archived or SignalWire says it is gone; the record says why audio is missing.

SignalWire is faked at the HTTP level (`responses`), then the emulator plays the same faults end to end.
"""

from __future__ import annotations

import json
import re
import signal
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import create_app, services, shutdown
from e2e_support import quorum_stack, wait_until
from emulator.faults import Faults
from emulator.scenarios import DEMO_NUMBER, Player
from conversations import reconcile
from quorum.gateway import ListedRecording
from recording_state import ABANDONED, GONE, PROCESSING, Conference, MemoryStore, RecordingInfo
from support import (
    API_BASE,
    CALL_RECORDINGS_LIST,
    CONFERENCE_RECORDINGS_LIST,
    LAML_MEDIA,
    LAML_RECORDINGS,
    RECORDING_DELETE,
    RECORDING_RESOURCE,
    SignedCallbacks,
    conference_form,
    make_config,
    start_redis_server,
    recording_resource,
    recordings_page,
    sid,
    wav_bytes,
)

ROOM = "+15550009999"
CONF = sid("conf-n")
MIX, OWN = sid("mix-n"), sid("own-n")
HOST, GUEST = sid("host-n"), sid("guest-n")
HOST_NUMBER, GUEST_NUMBER = "+15551239001", "+15551239002"
TOKEN = "no-recording-lost-token"
ANY_CONFERENCE_RECORDINGS = re.compile(rf"{re.escape(API_BASE)}/Conferences/([^/]+)/Recordings\.json(?:\?.*)?$")
CALL_RECORDING_CREATE = re.compile(rf"{re.escape(API_BASE)}/Calls/([^/]+)/Recordings\.json")
CALL_RECORDING_UPDATE = re.compile(rf"{re.escape(API_BASE)}/Calls/([^/]+)/Recordings/([^/]+)\.json")


class SignalWireHolds:
    """SignalWire's recordings at the HTTP level: listed per conference and per call, fetched one by one, and
    their media, which may answer a few errors first. Requests are counted by kind."""

    def __init__(self, fake):
        self.resources = {}  # recording sid -> its resource
        self.media_errors = {}  # recording sid -> statuses the media answers before it is served
        self.list_errors = []  # statuses the conference listing answers before it lists
        self.asked = []  # (kind, recording or conference sid) of every request, in order
        for pattern in (CONFERENCE_RECORDINGS_LIST, CALL_RECORDINGS_LIST, RECORDING_RESOURCE, LAML_MEDIA):
            fake.remove(responses.GET, pattern)
        fake.add_callback(responses.GET, ANY_CONFERENCE_RECORDINGS, callback=self._conference)
        fake.add_callback(responses.GET, CALL_RECORDINGS_LIST, callback=self._calls)
        fake.add_callback(responses.GET, RECORDING_RESOURCE, callback=self._one)
        fake.add_callback(responses.GET, LAML_MEDIA, callback=self._media)
        # A conference read (after a restart) finds it over: nobody on the line.
        fake.add(
            responses.GET,
            f"{API_BASE}/Conferences/{CONF}/Participants.json",
            json={"participants": [], "page": 0, "page_size": 50, "next_page_uri": None, "uri": "/p"},
        )
        fake.add(
            responses.GET,
            f"{API_BASE}/Conferences/{CONF}.json",
            json={"sid": CONF, "friendly_name": ROOM, "status": "completed"},
        )

    def hold(self, recording_sid, status="completed", duration=2, call=None):
        """SignalWire has this recording (a conference recording of CONF, or `call`'s own)."""
        self.resources[recording_sid] = recording_resource(
            recording_sid, status, duration, conference=None if call else CONF, call=call
        )

    def count(self, kind):
        return sum(1 for asked, _ in self.asked if asked == kind)

    def _conference(self, request):
        conference = ANY_CONFERENCE_RECORDINGS.match(request.url).group(1)
        self.asked.append(("list", conference))
        if self.list_errors:
            return self.list_errors.pop(0), {}, '{"code": 20503, "message": "down", "status": 503}'
        items = [r for r in self.resources.values() if r["conference_sid"] == conference]
        return 200, {}, json.dumps(recordings_page(items))

    def _calls(self, request):
        (call,) = parse_qs(urlsplit(request.url).query)["CallSid"]
        self.asked.append(("list-call", call))
        return 200, {}, json.dumps(recordings_page([r for r in self.resources.values() if r["call_sid"] == call]))

    def _one(self, request):
        recording_sid = RECORDING_RESOURCE.match(request.url).group(1)
        self.asked.append(("fetch", recording_sid))
        if recording_sid not in self.resources:
            return 404, {}, '{"code": 20404, "message": "Not Found", "status": 404}'
        return 200, {}, json.dumps(self.resources[recording_sid])

    def _media(self, request):
        recording_sid = LAML_MEDIA.match(request.url).group(1)
        self.asked.append(("media", recording_sid))
        errors = self.media_errors.get(recording_sid)
        if errors:
            return errors.pop(0), {}, ""
        resource = self.resources.get(recording_sid)
        if resource is None or resource["status"] != "completed":
            return 404, {}, ""
        return 200, {"Content-Type": "audio/x-wav"}, wav_bytes(2.0)  # whatever duration it is listed with


class Line(SignedCallbacks):
    """One conference in ROOM driven through signed callbacks: the host and the guest, the mix recording."""

    def __init__(self, app, at=1_800_000_000):
        super().__init__(app)
        self.at = at

    def ok(self, path, form, query=None):
        response = self.post(path, form, query)
        assert response.status_code < 300, response.data
        return response.headers.get("X-Quorum-Outcome")

    def event(self, kind, call=None):
        self.at += 1
        return self.ok("/voice/conference-status", conference_form(kind, CONF, ROOM, call, at=self.at))

    def recording(self, recording_sid, status, duration="2", call=None):
        query = {"room": ROOM} | ({"call": call} if call else {})
        return self.ok(
            "/voice/recording-status",
            {
                "RecordingSid": recording_sid,
                "RecordingStatus": status,
                "RecordingUrl": LAML_RECORDINGS + recording_sid,
                "RecordingDuration": duration,
            },
            query,
        )

    def begin(self):
        """Both callers dial in and join, the conference starts, its recording runs."""
        for call, number in ((HOST, HOST_NUMBER), (GUEST, GUEST_NUMBER)):
            self.ok("/voice/inbound", {"CallSid": call, "From": number, "To": ROOM})
            self.event("participant-join", call)
        self.event("conference-start")
        self.recording(MIX, "in-progress")
        self.settle()

    def end(self):
        """Both callers leave and the conference ends."""
        for call in (GUEST, HOST):
            self.event("participant-leave", call)
        self.event("conference-end")
        self.settle()

    def archived(self, timeout=15.0):
        """The archived conversation, once there."""
        archive = services(self.app).archive
        assert wait_until(lambda: archive.find(CONF) is not None, timeout), services(self.app).store.conferences()
        assert services(self.app).processor.wait_idle(10)
        return archive.find(CONF)


def make_line(tmp_path, offset=None, **settings) -> Line:
    """A line to an app whose grace period is short and whose archive clock is `time.time() + offset[0]`."""
    config = make_config(recordings_dir=str(tmp_path), end_grace_s=0.2, api_token=TOKEN, **settings)
    clock = (lambda: time.time() + offset[0]) if offset is not None else None
    return Line(create_app(config, archive_clock=clock))


@pytest.fixture
def holds(signalwire):
    return SignalWireHolds(signalwire)


@pytest.fixture
def line(tmp_path, holds):
    made = make_line(tmp_path)
    yield made
    shutdown(made.app)


def audio_of(record) -> list:
    """(wav_file, missing) of the mix, then of each channel."""
    return [(a["wav_file"], a.get("missing")) for a in [record["audio"]] + [c["audio"] for c in record["channels"]]]


# --- 1. the archive reconciles against SignalWire ------------------------------------------------


def test_a_recording_whose_completed_callback_was_lost_is_archived_from_what_signalwire_lists(line, holds):
    """Row 4: the callbacks of a call's end were answered 503 until SignalWire gave up: the grace period runs out
    with the recording never reported ended, yet SignalWire holds all of it."""
    holds.hold(MIX)
    line.begin()
    line.end()  # and no completed callback ever comes
    record = line.archived()
    assert record["status"] == "ready"
    assert audio_of(record)[0] == ("mix.wav", None) and record["audio"]["duration_ms"] == 2000
    assert ("media", MIX) in holds.asked  # from the URL SignalWire serves it at


def test_a_rest_failure_while_listing_is_retried_and_never_archived_as_no_audio(tmp_path, holds):
    offset = [0.0]
    line = make_line(tmp_path, offset)
    try:
        holds.hold(MIX)
        holds.list_errors = [503, 503]
        line.begin()
        line.end()
        assert wait_until(lambda: holds.count("list") >= 1, 5)
        assert services(line.app).processor.wait_idle(5)
        assert services(line.app).archive.find(CONF) is None  # not archived on a failed check
        assert line.state(ROOM).status == PROCESSING
        for _ in range(2):  # the next tries are put off, then come
            offset[0] += 700
            time.sleep(0.3)
        record = line.archived()
        assert record["status"] == "ready" and audio_of(record)[0] == ("mix.wav", None)
        assert holds.count("list") == 3
    finally:
        shutdown(line.app)


def test_a_recording_still_in_progress_at_signalwire_holds_the_archive_back(tmp_path, holds):
    offset = [0.0]
    line = make_line(tmp_path, offset)
    try:
        holds.hold(MIX, status="in-progress", duration=-1)
        line.begin()
        line.end()
        assert wait_until(lambda: holds.count("list") >= 1, 5) and services(line.app).processor.wait_idle(5)
        assert services(line.app).archive.find(CONF) is None and line.state(ROOM).status == PROCESSING
        holds.hold(MIX)  # SignalWire finishes it
        offset[0] += 700
        record = line.archived()
        assert record["status"] == "ready" and audio_of(record)[0] == ("mix.wav", None)
    finally:
        shutdown(line.app)


def test_a_recording_that_never_finishes_at_signalwire_is_waited_for_an_hour_then_the_record_says_why(tmp_path, holds):
    offset = [0.0]
    line = make_line(tmp_path, offset)
    try:
        holds.hold(MIX, status="in-progress", duration=-1)
        line.begin()
        line.end()
        assert wait_until(lambda: holds.count("list") >= 1, 5) and services(line.app).processor.wait_idle(5)
        offset[0] += 3700
        record = line.archived()
        assert record["status"] == "failed"
        assert record["audio"]["wav_file"] is None
        assert "in-progress at SignalWire" in record["audio"]["missing"]
    finally:
        shutdown(line.app)


@pytest.mark.parametrize("status", ["absent", "failed"])
def test_a_recording_signalwire_lists_without_media_says_why(line, holds, status):
    holds.hold(MIX, status=status, duration=0)
    line.begin()
    line.end()
    record = line.archived()
    assert record["status"] == "ready" and record["audio"]["wav_file"] is None
    assert f"SignalWire lists it as {status}" in record["audio"]["missing"]
    assert ("media", MIX) not in holds.asked  # nothing to fetch


def test_a_recording_listed_0_s_long_is_fetched_and_says_why_when_it_has_no_media(line, holds):
    """Durations are whole seconds: 0 s may still be some media, so it is asked for."""
    holds.hold(MIX, duration=0)
    holds.media_errors[MIX] = [404]
    line.begin()
    line.end()
    record = line.archived()
    assert record["audio"]["wav_file"] is None and "0 s long" in record["audio"]["missing"]
    assert holds.count("media") == 1 and ("fetch", MIX) in holds.asked


def test_a_recording_signalwire_no_longer_has_says_so_and_is_not_asked_for_again(line, holds):
    line.begin()
    line.end()
    line.recording(MIX, "completed")  # its media and its resource answer 404: deleted at SignalWire
    record = line.archived()
    assert record["audio"]["wav_file"] is None and "404" in record["audio"]["missing"]
    assert holds.count("media") == 1 and ("fetch", MIX) in holds.asked


def test_the_conversation_page_shows_why_the_audio_is_missing(line, holds):
    holds.hold(MIX, status="absent", duration=0)
    line.begin()
    line.end()
    line.archived()
    operator = line.app.test_client()
    assert operator.post("/login", data={"token": TOKEN}).status_code == 303
    html = operator.get(f"/conversations/{CONF}").get_data(as_text=True)
    assert "No audio: SignalWire lists it as absent" in html


# --- per-call recordings -------------------------------------------------------------------------


@pytest.fixture
def own_recordings(signalwire):
    """The host's own recording is created as OWN; updates are accepted."""
    signalwire.add(responses.POST, CALL_RECORDING_CREATE, json={"sid": OWN, "status": "in-progress"}, status=201)
    signalwire.add(responses.POST, CALL_RECORDING_UPDATE, json={"status": "paused"})


def test_a_callers_own_recording_whose_end_was_lost_is_found_by_listing_the_callers_recordings(
    tmp_path, holds, own_recordings
):
    line = make_line(tmp_path, participant_recording="inbound", record_participants=HOST_NUMBER)
    try:
        holds.hold(MIX)
        holds.hold(OWN, call=HOST)
        line.begin()
        line.end()  # no recording reports its end
        record = line.archived()
        assert audio_of(record) == [("mix.wav", None), ("channel-01.wav", None), (None, None)]
        assert ("list-call", HOST) in holds.asked and ("list-call", GUEST) in holds.asked
    finally:
        shutdown(line.app)


def test_a_callers_own_recording_whose_creation_timed_out_and_whose_callbacks_were_lost_is_still_archived(
    tmp_path, holds, signalwire
):
    """The create took effect at SignalWire but its answer never came (not retried: that would record the caller
    twice), and none of its callbacks got through: listing the caller's recordings finds it."""
    signalwire.add(responses.POST, CALL_RECORDING_CREATE, body=requests.ConnectionError("answer lost"))
    line = make_line(tmp_path, participant_recording="inbound", record_participants=HOST_NUMBER)
    try:
        holds.hold(MIX)
        holds.hold(OWN, call=HOST)
        line.begin()
        line.end()
        line.recording(MIX, "completed")
        record = line.archived()
        assert audio_of(record) == [("mix.wav", None), ("channel-01.wav", None), (None, None)]
    finally:
        shutdown(line.app)


def test_without_participant_recording_no_caller_is_listed(line, holds):
    holds.hold(MIX)
    line.begin()
    line.end()
    line.archived()
    assert holds.count("list-call") == 0


# --- 2. a completed callback for a conference Quorum does not hold -------------------------------


@pytest.mark.parametrize("store", ["memory", pytest.param("redis", marks=pytest.mark.slow)])
def test_a_completed_callback_for_a_conference_no_one_holds_is_kept_and_archived_as_its_conference(
    request, tmp_path, holds, store
):
    settings = {}
    if store == "redis":
        settings = {"redis_url": request.getfixturevalue("redis_url"), "redis_namespace": f"t{uuid.uuid4().hex[:8]}"}
    line = make_line(tmp_path, **settings)
    try:
        holds.hold(MIX)
        assert line.recording(MIX, "completed") == "processing"  # kept, not forgotten
        record = line.archived()
        assert record["id"] == CONF and record["room"] == ROOM and record["status"] == "ready"
        assert audio_of(record)[0] == ("mix.wav", None)
        assert ("fetch", MIX) in holds.asked  # its conference, asked of SignalWire
        assert line.recording(MIX, "completed") == "stale"  # a retry of the callback, after the archive
        assert services(line.app).store.rooms() == []
    finally:
        shutdown(line.app)


def test_after_a_restart_the_completed_callback_is_archived_with_the_conference_it_belongs_to(tmp_path, holds):
    """Row 5: Quorum restarts with the memory store mid-call; the last callers hang up before the first read
    lands, and the recording's completed callback names a conference the new process does not hold."""
    holds.hold(MIX)
    first = make_line(tmp_path)
    first.begin()
    shutdown(first.app)
    again = Line(
        create_app(make_config(recordings_dir=str(tmp_path), end_grace_s=0.2), store=MemoryStore()), at=first.at
    )
    try:
        again.end()
        again.recording(MIX, "completed")
        record = again.archived()
        assert record["status"] == "ready" and audio_of(record)[0] == ("mix.wav", None)
        assert len(list(Path(tmp_path).glob(f"*/*/{CONF}"))) == 1  # one conversation, not two
        assert services(again.app).store.rooms() == []
    finally:
        shutdown(again.app)


LAST_EVENTS = [("participant-leave", GUEST), ("participant-leave", HOST), ("conference-end", None), ("recording", MIX)]


@settings(max_examples=24, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.permutations(LAST_EVENTS))
def test_after_a_restart_the_end_of_a_call_in_any_order_is_archived_once_with_its_audio(tmp_path_factory, order):
    """A new process with an empty store gets the end of a call it never saw begin, in any order."""
    tmp_path = tmp_path_factory.mktemp("restart")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as fake:
        SignalWireHolds(fake).hold(MIX)
        line = Line(create_app(make_config(recordings_dir=str(tmp_path), end_grace_s=0.2), store=MemoryStore()))
        try:
            for at, (kind, sid_or_call) in enumerate(order, start=1):
                if kind == "recording":
                    line.recording(sid_or_call, "completed")
                else:  # SignalWire's Timestamps are in the order things happened, whatever the order they came in
                    at = 1_800_000_000 + [e for e, _ in LAST_EVENTS].index(kind) + (sid_or_call == HOST)
                    line.ok("/voice/conference-status", conference_form(kind, CONF, ROOM, sid_or_call, at=at))
            record = line.archived()
            assert record["status"] == "ready" and audio_of(record)[0] == ("mix.wav", None)
            assert len(list(tmp_path.glob(f"*/*/{CONF}"))) == 1
            assert wait_until(lambda: services(line.app).store.rooms() == [], 10)
        finally:
            shutdown(line.app)


def test_a_completed_callback_naming_a_recording_of_the_held_conference_is_merged_into_it(line, holds):
    """The recording's in-progress was lost: its completed finds no one who knows it, yet it is this
    conference's, as SignalWire says."""
    holds.hold(MIX)
    for call, number in ((HOST, HOST_NUMBER), (GUEST, GUEST_NUMBER)):
        line.ok("/voice/inbound", {"CallSid": call, "From": number, "To": ROOM})
        line.event("participant-join", call)
    line.event("conference-start")
    line.end()
    line.recording(MIX, "completed")
    record = line.archived()
    assert audio_of(record)[0] == ("mix.wav", None)
    assert [c["from"] for c in record["channels"]] == [HOST_NUMBER, GUEST_NUMBER]  # the conference's own record
    assert len(list(Path(line.app.config["QUORUM"].recordings_dir).glob(f"*/*/{CONF}"))) == 1


# --- 3. media downloads are retried with backoff --------------------------------------------------


@pytest.mark.slow
def test_media_answering_503_is_retried_until_it_is_archived_and_the_log_names_the_conversation(
    tmp_path, holds, caplog
):
    offset = [0.0]
    line = make_line(tmp_path, offset)
    try:
        holds.hold(MIX)
        holds.media_errors[MIX] = [503] * 4
        line.begin()
        line.end()
        line.recording(MIX, "completed")
        assert wait_until(lambda: holds.count("media") >= 3, 10) and services(line.app).processor.wait_idle(10)
        assert services(line.app).archive.find(CONF) is None  # three quick tries failed: put off, not given up
        offset[0] += 700
        record = line.archived()
        assert audio_of(record)[0] == ("mix.wav", None)
        assert holds.count("media") == 5
        failed = [r.getMessage() for r in caplog.records if MIX in r.getMessage() and "HTTP 503" in r.getMessage()]
        assert failed and all(f"room={ROOM}" in m and f"conference={CONF}" in m for m in failed)
        assert not any("/Recordings/" in r.getMessage() for r in caplog.records)  # never the media URL
    finally:
        shutdown(line.app)


# --- 4. deletion at SignalWire only after a checked copy ------------------------------------------


@pytest.mark.parametrize("listed_s, deleted", [(2, True), (5, False)])
def test_a_recording_found_only_by_the_reconcile_is_deleted_only_once_its_copy_is_checked(
    tmp_path, holds, signalwire, listed_s, deleted
):
    seen = []

    def delete(request):
        directory = next(Path(tmp_path).glob(f"*/*/{CONF}"))
        seen.append((RECORDING_DELETE.fullmatch(request.url).group(1), sorted(p.name for p in directory.iterdir())))
        return 204, {}, ""

    signalwire.add_callback(responses.DELETE, RECORDING_DELETE, callback=delete)
    line = make_line(tmp_path, delete_from_signalwire=True)
    try:
        holds.hold(MIX, duration=listed_s)
        line.begin()
        line.end()
        line.archived()
        assert services(line.app).copies.wait_idle(10)
        if deleted:
            assert seen == [(MIX, ["conversation.json", "mix.wav"])]  # after the archive was written
        else:
            assert seen == []  # the listed 5 s does not match the 2 s WAV: SignalWire keeps its copy
    finally:
        shutdown(line.app)


# --- the pure decisions (conversations/reconcile.py) ----------------------------------------------


def ended_conference(**changes):
    return Conference(
        **{
            "room": ROOM,
            "conference_sid": CONF,
            "ended": True,
            "ended_at": 1000.0,
            "opened_at": 900.0,
            "status": PROCESSING,
            **changes,
        }
    )


def media_at(recording_sid):
    return f"https://example.signalwire.com/media/{recording_sid}"


def test_merged_fills_in_what_no_callback_told_and_keeps_what_one_did():
    conf = ended_conference(
        recordings={MIX: ABANDONED, OWN: GONE},
        recording_info={OWN: RecordingInfo(url="https://callback/own", duration_s=None)},
    )
    merged = reconcile.merged(
        conf,
        {MIX: ListedRecording("completed", 4.0, CONF), OWN: ListedRecording("completed", 3.0, None, HOST)},
        media_at,
    )
    assert merged.recordings == {MIX: GONE, OWN: GONE}
    assert merged.recording_info[MIX] == RecordingInfo(url=media_at(MIX), duration_s=4.0)
    assert merged.recording_info[OWN] == RecordingInfo(call_sid=HOST, url="https://callback/own", duration_s=3.0)
    assert merged.callers[HOST].joined_at == 900.0  # a channel for it, from when Quorum first heard of the call


def test_merged_says_why_a_recording_listed_without_media_has_none_and_fetches_nothing():
    conf = ended_conference(recordings={MIX: GONE}, recording_info={MIX: RecordingInfo(url=media_at(MIX))})
    merged = reconcile.merged(conf, {MIX: ListedRecording("absent", 0.0, CONF)}, media_at)
    assert merged.recording_info[MIX].url is None
    assert merged.recording_info[MIX].missing == "SignalWire lists it as absent: it has no audio"


def test_a_recording_still_running_at_signalwire_waits_unless_a_callback_reported_its_end():
    listed = {MIX: ListedRecording("in-progress", None, CONF), OWN: ListedRecording("paused", None, None, HOST)}
    conf = ended_conference(recordings={MIX: ABANDONED, OWN: GONE})
    assert reconcile.running(conf, listed) == {MIX: listed[MIX]}
    gave_up = reconcile.gave_up(conf, {MIX: listed[MIX]}, 3720.0)
    assert gave_up.recordings[MIX] == ABANDONED
    assert gave_up.recording_info[MIX].missing == "still in-progress at SignalWire 62 min after the conference ended"


@pytest.mark.parametrize("waited_s, delay_s", [(0.2, 1.0), (30.0, 30.0), (5000.0, 600.0)])
def test_a_try_put_off_waits_as_long_again_as_the_conference_has_waited_within_bounds(waited_s, delay_s):
    assert reconcile.put_off(ended_conference(), 1000.0 + waited_s).process_after == 1000.0 + waited_s + delay_s


def test_an_unclaimed_recording_adopted_by_its_ended_conference_finishes_it():
    holder = ended_conference(status="live", recordings={})
    unclaimed = Conference(
        room=ROOM,
        recordings={MIX: GONE},
        ended=True,
        ended_at=1200.0,
        recording_info={MIX: RecordingInfo(url=media_at(MIX), duration_s=2.0)},
    )
    adopted = reconcile.adopted(holder, unclaimed)
    assert adopted.status == PROCESSING and adopted.recordings == {MIX: GONE}
    assert adopted.recording_info[MIX].url == media_at(MIX)


# --- end to end, against the emulator -------------------------------------------------------------

SESSION = [
    ("call", "host", DEMO_NUMBER),
    ("wait", 0.3),
    ("call", "guest", DEMO_NUMBER),
    ("wait", 0.6),
    ("hangup", "guest"),
    ("wait", 0.2),
    ("hangup", "host"),
]


def _archived_mix(stack):
    """(record, mix WAV bytes) of the one archived conversation."""
    (path,) = Path(stack.config.recordings_dir).glob("*/*/*/conversation.json")
    record = json.loads(path.read_text())
    wav = path.parent / "mix.wav"
    return record, wav.read_bytes() if wav.is_file() else None


def _mix_sid(stack):
    (conf,) = stack.emulator.conferences(DEMO_NUMBER)
    return conf.recording_sids[0]


@pytest.mark.slow
def test_end_to_end_a_lost_completed_callback_is_archived_with_audio_after_the_grace_period():
    with quorum_stack(faults=Faults(callback_drop_events=frozenset({"recording:completed"}))) as stack:
        Player(stack.emulator).play(SESSION)
        assert stack.settle() and stack.wait_for_empty_store(15)
        record, wav = _archived_mix(stack)
        assert record["status"] == "ready" and wav == stack.emulator.wav(_mix_sid(stack))
        assert stack.log.errors() == []


@pytest.mark.slow
def test_end_to_end_the_end_of_a_call_lost_to_an_outage_is_still_archived_with_audio():
    """Row 4: every callback of the call's end is answered 503 until SignalWire gives up (Redis was down)."""
    lost = Faults(callback_drop_events=frozenset({"participant-leave", "conference-end", "recording:completed"}))
    with quorum_stack(reconcile_interval_s=0.3) as stack:
        player = Player(stack.emulator)
        player.play(SESSION[:4])
        assert stack.settle()
        stack.emulator.set_faults(lost)
        player.play(SESSION[4:])
        assert stack.settle() and stack.wait_for_empty_store(20)
        record, wav = _archived_mix(stack)
        assert record["status"] == "ready" and wav == stack.emulator.wav(_mix_sid(stack))


@pytest.fixture
def redis_to_stop(tmp_path):
    """A redis-server of this test's own (the session's is shared), to stop and resume: (its URL, its process)."""
    server, url = start_redis_server(tmp_path)
    yield url, server
    server.send_signal(signal.SIGCONT)
    server.terminate()
    server.wait(10)


@pytest.mark.slow
def test_end_to_end_redis_unreachable_while_a_call_ends_loses_no_audio(redis_to_stop):
    """Row 4 itself: Redis stops answering as the call ends, Quorum answers every callback of its end 503 until
    SignalWire gives up (three attempts each); Redis comes back; SignalWire holds the whole recording."""
    url, server = redis_to_stop
    with quorum_stack(reconcile_interval_s=0.3, redis_url=url) as stack:
        player = Player(stack.emulator)
        player.play(SESSION[:4])
        assert stack.settle()
        server.send_signal(signal.SIGSTOP)
        stopped_at = time.time()
        player.play(SESSION[4:])
        assert stack.emulator.settle(90) and wait_until(lambda: stack.emulator.dispatcher.pending() == 0, 30)
        ends = {(a.callback.event, a.status) for a in stack.emulator.callback_attempts() if a.at > stopped_at}
        # Every callback of the end answered 503: the conference's, the recording's, and the calls' own ends.
        assert {event for event, _ in ends} >= {
            "participant-leave",
            "conference-end",
            "recording:completed",
            "call-status",
        } and {status for _, status in ends} == {503}
        server.send_signal(signal.SIGCONT)
        assert stack.wait_for_empty_store(30)
        record, wav = _archived_mix(stack)
        assert record["status"] == "ready" and wav == stack.emulator.wav(_mix_sid(stack))


@pytest.mark.slow
def test_end_to_end_a_restart_with_a_fresh_memory_store_before_the_call_ends_keeps_its_audio():
    """Row 5: the new process knows nothing of the conference, and its callers hang up before the read it asks
    for lands (SignalWire answers slowly)."""
    with quorum_stack(reconcile_interval_s=0) as stack:
        player = Player(stack.emulator)
        player.play(SESSION[:4])
        assert stack.settle()
        stack.restart(store=MemoryStore())
        stack.emulator.set_faults(Faults(rest_latency_s=0.8))
        player.play([("hangup", "guest"), ("hangup", "host")])
        assert stack.settle() and stack.wait_for_empty_store(15)
        record, wav = _archived_mix(stack)
        assert record["status"] == "ready" and wav == stack.emulator.wav(_mix_sid(stack))


@pytest.mark.slow
def test_end_to_end_media_failing_for_a_while_is_retried_until_archived():
    with quorum_stack(faults=Faults(media_error=1.0)) as stack:
        Player(stack.emulator).play(SESSION)
        assert stack.settle()
        assert wait_until(lambda: stack.emulator.injector.injected["media_error"] >= 3, 15)
        assert services(stack.app).processor.wait_idle(10)
        assert not list(Path(stack.config.recordings_dir).glob("*/*/*/conversation.json"))  # not given up
        stack.emulator.set_faults(Faults())  # SignalWire serves media again
        assert stack.wait_for_empty_store(20)
        record, wav = _archived_mix(stack)
        assert record["status"] == "ready" and wav == stack.emulator.wav(_mix_sid(stack))
        assert not any(stack.emulator.url in r.getMessage() for r in stack.log.records)
