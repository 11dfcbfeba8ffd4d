"""End to end: a real Quorum server and the SignalWire emulator on loopback ports.

Assertions are on what the emulator saw and recorded: the recording's timeline against
the spans when at least MIN_PARTICIPANTS were on the line, the media's length, and the
REST calls Quorum made.
"""

from __future__ import annotations

import io
import time
import wave
from pathlib import Path

import numpy as np
import pytest
import requests

from e2e_support import live_reads, quorum_stack, wait_until
from emulator.audio import RATE
from emulator.faults import Faults
from emulator.scenarios import (
    DEMO,
    DEMO_NUMBER,
    Player,
    expected_writes,
    logged_quorum,
    presence,
    quorum_spans,
    recorded_spans,
    scaled,
    span_problems,
)

TOLERANCE_S = 0.25  # per span edge: callback delivery plus Quorum's REST round trip
FAST_DEMO = scaled(DEMO, 0.4)
SESSION = [
    ("call", "host", DEMO_NUMBER),
    ("wait", 0.3),
    ("call", "guest", DEMO_NUMBER),
    ("wait", 0.5),
    ("hangup", "guest"),
    ("wait", 0.4),
    ("hangup", "host"),
]


def _completed_callback(stack, recording_sid):
    """The `completed` recording callback Quorum received for a recording."""
    return next(
        a.callback.params
        for a in stack.emulator.callback_attempts()
        if a.callback.event == "recording:completed" and a.callback.params["RecordingSid"] == recording_sid
    )


def _same_second_stays(stack) -> int:
    """Calls that joined and left within one second of SignalWire's clock."""
    return sum(
        1
        for call in stack.emulator.sim.calls.values()
        if call.left_at is not None and int(call.joined_at) == int(call.left_at)
    )


def _download_wav(url: str) -> np.ndarray:
    """Fetch RecordingUrl + .wav as SignalWire serves it (no auth) and return its samples."""
    response = requests.get(url + ".wav", timeout=10)
    assert response.status_code == 200 and response.headers["Content-Type"] == "audio/wav"
    with wave.open(io.BytesIO(response.content)) as wav:
        assert (wav.getframerate(), wav.getsampwidth(), wav.getnchannels()) == (RATE, 2, 1)
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")


@pytest.mark.parametrize("minimum, behavior", [(2, "skip"), (2, "silence"), (3, "skip")])
def test_demo_records_exactly_while_a_quorum_is_on_the_line(minimum, behavior):
    with quorum_stack(min_participants=minimum, pause_behavior=behavior) as stack:
        Player(stack.emulator).play(FAST_DEMO)
        assert stack.settle()
        (conf,) = stack.emulator.conferences(DEMO_NUMBER)
        (recording_sid,) = conf.recording_sids
        rec = stack.emulator.recording(recording_sid)
        expected, crossings = logged_quorum(stack.emulator.sim.events, DEMO_NUMBER, minimum)  # the guest's hold too

        assert span_problems(recorded_spans(rec), expected, TOLERANCE_S) == []
        recorded, paused = rec.timeline.seconds("recording"), rec.timeline.seconds("paused")
        assert abs(recorded - sum(b - a for a, b in expected)) <= TOLERANCE_S * (2 * len(expected) + 1)

        samples = _download_wav(_completed_callback(stack, recording_sid)["RecordingUrl"])
        media_s = recorded if behavior == "skip" else recorded + paused
        assert abs(len(samples) / RATE - media_s) < 0.01
        assert np.abs(samples).max() > 1000  # there is speech in it
        offset = 0
        for piece in rec.timeline.pieces(rec.origin):
            length = piece.end - piece.start
            if piece.silent:
                assert not samples[offset : offset + length].any()  # a silence pause is digital silence
            offset += length

        # No reads on the hot path; only a call that joins and leaves within one second (SignalWire's
        # Timestamp resolution) may be confirmed with a read (its participants and its recordings): not when
        # the call's own end (its status callback or <Dial action>) settles it first.
        reads = live_reads(stack)
        assert reads % 2 == 0 and reads <= 2 * _same_second_stays(stack)
        writes = stack.emulator.rest_log.writes()
        assert len(writes) == crossings
        assert all(w.status == 200 for w in writes)
        # PauseBehavior belongs to Status=paused only (Update a Conference Recording).
        assert all(w.form.get("PauseBehavior") == (behavior if w.form["Status"] == "paused" else None) for w in writes)
        assert all(a.ok for a in stack.emulator.callback_attempts())
        assert stack.wait_for_empty_store(5)
        (archived,) = Path(stack.config.recordings_dir).glob("*/*/*/mix.wav")
        assert archived.read_bytes() == stack.emulator.wav(recording_sid)  # Quorum kept what SignalWire served
        assert stack.log.errors() == []


def _within(spans, start, end):
    """`spans` cut to [start, end]."""
    return [(max(a, start), min(b, end)) for a, b in spans if min(b, end) > max(a, start)]


def test_participant_recordings_run_only_while_the_conference_recording_does():
    with quorum_stack(participant_recording="inbound") as stack:
        Player(stack.emulator).play(FAST_DEMO)
        assert stack.settle()
        (conf,) = stack.emulator.conferences(DEMO_NUMBER)
        calls = stack.emulator.sim.calls
        quorum, _ = logged_quorum(stack.emulator.sim.events, DEMO_NUMBER, 2)
        own = [r for r in stack.emulator.sim.recordings.values() if r.call_sid]
        overlapping = {sid for sid in conf.call_sids if _within(quorum, calls[sid].joined_at, calls[sid].left_at)}
        assert {r.call_sid for r in own} == overlapping  # everyone heard during a quorum, once each
        for rec in own:
            call = calls[rec.call_sid]
            assert (rec.source, rec.track, rec.channels, rec.status) == (
                "StartCallRecordingApi",
                "inbound",
                1,
                "completed",
            )
            expected = _within(quorum, call.joined_at, call.left_at)
            assert span_problems(recorded_spans(rec), expected, TOLERANCE_S) == []
        assert all(w.status in (200, 201) for w in stack.emulator.rest_log.writes())
        reads = live_reads(stack)  # a same-second stay's confirmation, if its end came later
        assert reads % 2 == 0 and reads <= 2 * _same_second_stays(stack)
        assert stack.wait_for_empty_store(5)
        channels = sorted(Path(stack.config.recordings_dir).glob("*/*/*/channel-*.wav"))
        assert sorted(p.read_bytes() for p in channels) == sorted(stack.emulator.wav(r.sid) for r in own)
        assert stack.log.errors() == []


def test_a_room_dialled_again_is_a_new_conference_recorded_on_its_own():
    with quorum_stack() as stack:
        player = Player(stack.emulator)
        for _ in range(2):
            player.play(SESSION)
            assert stack.settle()
        first, second = stack.emulator.conferences(DEMO_NUMBER)
        assert first.sid != second.sid
        writes = 0
        for conf in (first, second):
            (sid,) = conf.recording_sids
            rec = stack.emulator.recording(sid)
            assert rec.status == "completed"
            changes = presence(conf, stack.emulator.sim.calls)
            assert span_problems(recorded_spans(rec), quorum_spans(changes, 2), TOLERANCE_S) == []
            writes += expected_writes(changes, 2)
        paths = [w.path for w in stack.emulator.rest_log.writes()]
        assert len(paths) == writes == 2  # the guest leaving pauses each conference's own recording
        assert first.sid in paths[0] and second.sid in paths[1]
        assert stack.wait_for_empty_store(3)


def test_callbacks_signed_with_another_key_are_refused_and_nothing_happens():
    with quorum_stack(wrong_signing_key=True) as stack:
        Player(stack.emulator).play(SESSION)
        assert stack.settle()
        assert {a.status for a in stack.emulator.callback_attempts()} == {403}
        assert [e.kind for e in stack.emulator.sim.events] == ["call-failed", "call-failed"]
        assert stack.emulator.rest_log.calls == [] and stack.store.rooms() == []


def test_a_command_that_took_effect_but_timed_out_is_still_corrected():
    """The pause is applied but its answer is late; the guest is back before Quorum retries."""
    late_answers = Faults(rest_timeout=1.0, rest_timeout_applies=True, rest_hang_s=0.4)
    with quorum_stack(faults=late_answers, api_timeout_s=0.2) as stack:
        player = Player(stack.emulator)
        player.play(
            [
                ("call", "host", DEMO_NUMBER),
                ("wait", 0.3),
                ("call", "guest", DEMO_NUMBER),
                ("wait", 0.5),
                ("hangup", "guest"),
                ("wait", 0.15),
                ("call", "guest", DEMO_NUMBER),
                ("wait", 0.3),
            ]
        )
        (conf,) = stack.emulator.conferences(DEMO_NUMBER)
        # Every answer times out, so the recording stays unsure and is resent while the call lasts
        # (never given up on): wait for the resume to land rather than for Quorum to fall idle.
        assert wait_until(
            lambda: stack.emulator.recording(conf.recording_sids[0]).status == "in-progress"
            and any(w.form["Status"] == "in-progress" for w in stack.emulator.rest_log.writes()),
            15,
        )
        first = stack.emulator.rest_log.writes()[0]
        assert (first.form["Status"], first.status, first.injected) == ("paused", 200, "timeout")  # applied, late
        assert len(conf.present) == 2
        player.play([("hangup", "guest"), ("hangup", "host")])
        assert stack.settle()


def test_a_lost_conference_start_needs_no_read_and_a_same_second_leave_still_pauses():
    """conference-start is lost; both calls came through the voice webhook, so Quorum trusts their
    callbacks without a recovery read; the guest's leave within the second of its join pauses at once
    and is then confirmed by one read (one-second Timestamps cannot order the two)."""
    with quorum_stack(
        faults=Faults(callback_drop_events=frozenset({"conference-start"})), reconcile_interval_s=0
    ) as stack:
        player = Player(stack.emulator)
        player.play([("call", "host", DEMO_NUMBER)])
        time.sleep(1.05 - time.time() % 1)  # just past a second boundary
        player.play([("call", "guest", DEMO_NUMBER), ("wait", 0.6), ("hangup", "guest")])
        assert stack.settle()
        assert _same_second_stays(stack) == 1
        # The confirmation (participants, recordings), unless the call's own end settled the second first.
        assert stack.emulator.rest_log.counts()["GET"] in (0, 2)
        (conf,) = stack.emulator.conferences(DEMO_NUMBER)
        assert stack.emulator.recording(conf.recording_sids[0]).status == "paused"
        player.play([("hangup", "host")])
