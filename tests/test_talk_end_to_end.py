"""Talk time end to end: the emulator's speaker events and channel audio from scripted turns, and Quorum's figures.

The scenario is known to the millisecond: each caller talks exactly in its scripted turns (seconds after it
joined), the emulator's voices render exactly those turns into the recordings and send exactly those speaker
events (stamped to the second, as SignalWire's Timestamps are), and the guest's hold pauses the recording
in the middle, while both of them talk.
"""

from __future__ import annotations

import math
import tempfile
from datetime import datetime
from pathlib import Path

import pytest

from app import services
from conversations import talk_time, voice_activity
from e2e_support import Sink, quorum_stack
from emulator import audio
from emulator.faults import Behaviour
from emulator.scenarios import DEMO_NUMBER as ROOM
from emulator.scenarios import Player
from emulator.server import Emulator
from talk_support import figures_of, oracle

# Host: one turn in the pause's first second, one wholly in the pause; guest: one wholly in the pause, one into it.
HOST_TURNS = ((0.5, 4.0), (6.0, 9.0), (10.5, 11.5), (15.0, 18.0))
GUEST_TURNS = ((3.0, 5.5), (9.5, 10.8), (13.5, 15.0), (17.0, 19.5))
OPENING = [("call", "host", ROOM, HOST_TURNS), ("wait", 0.2), ("call", "guest", ROOM, GUEST_TURNS)]
REST = [
    ("wait", 8.0),
    ("hold", "guest"),
    ("wait", 4.0),
    ("unhold", "guest"),
    ("wait", 8.0),
    ("hangup", "guest"),
    ("wait", 0.3),
    ("hangup", "host"),
]
AUDIO_TOLERANCE_S = 0.5  # per channel figure, audio-derived against the script


def _recorded(record: dict) -> list:
    """The record's recorded spans (ms)."""
    return [(s["start_ms"], s["end_ms"]) for s in record["recording_timeline"] if s["state"] == "recording"]


def _scripted(stack, record: dict, opened_at: float) -> list:
    """Each channel's scripted turns in ms of the conversation, clipped to its time on the line."""
    calls = {call.sid: call for call in stack.emulator.sim.calls.values()}
    out = []
    for channel in record["channels"]:
        call = calls[channel["call_sid"]]
        turns = [(call.joined_at + a, min(call.joined_at + b, call.left_at)) for a, b in call.talk]
        out.append([(round((a - opened_at) * 1000), round((b - opened_at) * 1000)) for a, b in turns if b > a])
    return out


def _stamped(stack, record: dict, opened_at: float) -> list:
    """Each channel's turns as the speaker events Quorum was sent say: start and stop Timestamps, paired."""
    sent = [
        a.callback.params
        for a in stack.emulator.callback_attempts()
        if a.ok and a.callback.event.startswith("participant-speech-")
    ]
    out = []
    for channel in record["channels"]:
        mine = sorted(
            (datetime.strptime(p["Timestamp"], "%a, %d %b %Y %H:%M:%S %z").timestamp(), p["StatusCallbackEvent"])
            for p in sent
            if p["CallSid"] == channel["call_sid"]
        )
        assert len({at for at, _ in mine}) == len(mine)  # the script keeps every event of a call in its own second
        assert [kind for _, kind in mine] == ["participant-speech-start", "participant-speech-stop"] * (len(mine) // 2)
        out.append(
            [
                (round((mine[n][0] - opened_at) * 1000), round((mine[n + 1][0] - opened_at) * 1000))
                for n in range(0, len(mine), 2)
            ]
        )
    return out


def _play(stack) -> float:
    """Play the scenario; Quorum's opened_at (the origin of the record's times), read while it is live."""
    player = Player(stack.emulator)
    player.play(OPENING)
    opened_at = stack.store.get(ROOM).opened_at
    player.play(REST)
    assert stack.settle() and stack.wait_for_empty_store(10)
    return opened_at


def _assert_close(record: dict, expected: tuple, tolerance: float) -> None:
    """Every channel figure (and the silence) within `tolerance` s of the oracle's."""
    talks, silence = expected
    for channel, want in zip(record["channels"], talks):
        got = figures_of(channel["talk"])
        assert all(abs(g - w) <= tolerance for g, w in zip(got[::2], want[::2])), (got, want)  # seconds, monologue
        assert abs(got[3] - want[3]) <= tolerance, (got, want)  # overlap
    assert abs(record["talk"]["silence_s"] - silence) <= tolerance


def test_talk_time_from_speaker_events_is_exact_and_the_audio_agrees_within_half_a_second():
    with quorum_stack(participant_recording="inbound", talk_time=True) as stack:
        opened_at = _play(stack)
        (record,) = services(stack.app).archive.all()
        assert record["talk"]["source"] == "speaker-events"
        assert [s["state"] for s in record["recording_timeline"]][:3] == ["recording", "paused", "recording"]

        # Exact: what the events Quorum was sent say, counted ms by ms over the recorded time.
        talks, silence = oracle(_recorded(record), _stamped(stack, record, opened_at))
        assert [figures_of(c["talk"]) for c in record["channels"]] == talks
        assert record["talk"]["silence_s"] == silence
        assert all(c["talk"]["seconds"] > 5 for c in record["channels"])  # both talked, in recorded time too

        # The same conversation's channel recordings, through the voice-activity detector.
        directory = next(Path(stack.config.recordings_dir).glob("*/*/*/conversation.json")).parent
        unmeasured = {**record, "talk": {"silence_s": None, "source": None}}
        from_audio = talk_time.with_audio_talk(unmeasured, directory, "skip")
        assert from_audio["talk"]["source"] == "audio"
        truth = oracle(_recorded(record), _scripted(stack, record, opened_at))
        _assert_close(from_audio, truth, AUDIO_TOLERANCE_S)
        assert stack.log.errors() == []


@pytest.mark.parametrize("behaviour", ["skip", "silence"])
def test_without_speaker_events_processing_takes_talk_time_from_the_channels_audio(behaviour):
    with quorum_stack(participant_recording="inbound", pause_behavior=behaviour) as stack:
        opened_at = _play(stack)
        (record,) = services(stack.app).archive.all()
        assert record["talk"]["source"] == "audio"
        assert not any(a.callback.event.startswith("participant-speech-") for a in stack.emulator.callback_attempts())
        _assert_close(record, oracle(_recorded(record), _scripted(stack, record, opened_at)), AUDIO_TOLERANCE_S)
        paused = [(s["start_ms"], s["end_ms"]) for s in record["recording_timeline"] if s["state"] == "paused"]
        spans = [(s["start_ms"], s["end_ms"]) for c in record["channels"] for s in c["talk"]["spans"]]
        assert talk_time.intersect(talk_time.union(spans), talk_time.union(paused)) == []  # paused never counts
        assert stack.log.errors() == []


# --- the emulator's speaker events on their own ----------------------------------------------------------

SPEAKER = {"statusCallback": "{base}/status", "statusCallbackEvent": "join leave speaker"}


def _events(sink) -> list:
    """(event, CallSid, Timestamp as epoch seconds) of every conference callback, in arrival order."""
    return [
        (
            r.form["StatusCallbackEvent"],
            r.form.get("CallSid"),
            datetime.strptime(r.form["Timestamp"], "%a, %d %b %Y %H:%M:%S %z").timestamp(),
        )
        for r in sink.at("/status")
    ]


@pytest.mark.parametrize("asked", [True, False])
def test_speaker_events_come_at_the_scripted_turns_only_when_the_first_participant_asked(asked):
    with (
        Sink(lambda form: SPEAKER if asked else {**SPEAKER, "statusCallbackEvent": "join leave"}) as sink,
        Emulator() as emulator,
    ):
        emulator.add_number(ROOM, sink.base + "/voice")
        call = emulator.dial(ROOM, "+15551110001", talk=((0.3, 1.4), (2.6, 3.5)))
        Player(emulator).play([("wait", 4.0)])
        emulator.hangup(call.sid)
        assert emulator.settle()
        speech = [(kind, at) for kind, sid, at in _events(sink) if kind.startswith("participant-speech-")]
        boundaries = [call.joined_at + s for turn in call.talk for s in turn]
        expected = [
            (kind, float(math.floor(at)))
            for kind, at in zip(["participant-speech-start", "participant-speech-stop"] * 2, boundaries)
        ]
        assert speech == (expected if asked else [])


@pytest.mark.parametrize("stop_on_leave", [True, False])
def test_a_caller_who_leaves_while_talking_follows_the_knob(stop_on_leave):
    with Sink(lambda form: SPEAKER) as sink, Emulator(behaviour=Behaviour(speech_stop_on_leave=stop_on_leave)) as emu:
        emu.add_number(ROOM, sink.base + "/voice")
        call = emu.dial(ROOM, "+15551110001", talk=((0.2, 30.0),))
        Player(emu).play([("wait", 0.6)])
        emu.hangup(call.sid)
        assert emu.settle()
        kinds = [kind for kind, _, _ in _events(sink)]
        assert kinds == ["participant-join", "participant-speech-start"] + (
            ["participant-speech-stop"] if stop_on_leave else []
        ) + ["participant-leave"]


def test_a_voice_of_its_own_reports_the_turns_its_audio_has():
    """Unscripted, a caller talks in its voice's own turns: the events follow `Voice.speech`, and the
    voice-activity detector finds those turns in the voice's audio."""
    with Sink(lambda form: SPEAKER) as sink, Emulator() as emulator:
        emulator.add_number(ROOM, sink.base + "/voice")
        call = emulator.dial(ROOM, "+15551110002")
        Player(emulator).play([("wait", 12.0)])
        emulator.hangup(call.sid)
        assert emulator.settle()
        conf = emulator.conferences(ROOM)[0]
        voice = audio.Voice(call.voice_seed)
        start = round((call.joined_at - conf.created_at) * audio.RATE)
        turns = []
        for a, b in voice.speech(start):
            if a >= (call.left_at - conf.created_at) * audio.RATE:
                break
            turns.append((a, b))
        times = [conf.created_at + n / audio.RATE for turn in turns for n in turn]
        sent = [at for kind, _, at in _events(sink) if kind.startswith("participant-speech-")]
        assert len(turns) >= 2 and sent[: len(times) - 1] == [float(math.floor(t)) for t in times][: len(times) - 1]

        rendered = voice.render(start, round((call.left_at - call.joined_at) * audio.RATE))
        with tempfile.NamedTemporaryFile(suffix=".wav") as wav:
            Path(wav.name).write_bytes(audio.wav_bytes(rendered[:, None]))
            found = voice_activity.file_spans(Path(wav.name))
        heard = [((a - start) / audio.RATE, min(b - start, rendered.size) / audio.RATE) for a, b in turns]
        assert len(found) == len(heard)
        assert abs(sum(b - a for a, b in found) - sum(b - a for a, b in heard)) < 0.5
