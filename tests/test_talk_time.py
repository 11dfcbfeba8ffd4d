"""Talk time: speaker events kept through the store's mutate, the spans they give, and the record's figures."""

import math
from collections import Counter
import random
import time
from email.utils import formatdate

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from app import create_app, services, shutdown
from config import RoomRule
from conversations import record as conversation
from conversations import talk_time
from quorum import laml, policy, talk
from quorum.talk import SPEECH_START, SPEECH_STOP
from recording_state import MemoryStore, TalkEvents
from support import PUBLIC_URL, SignedCallbacks, make_config, sid
from talk_support import figures_of, oracle

A, B = sid("a"), sid("b")
T0 = 1_800_000_000.0


def conference(at=T0):
    """A started conference in room R with A and B on the line, seen from `at` (our clock too)."""
    conf = policy.conference_started(policy.new_conference("R", "conf-1", at, RoomRule(), now=at))
    for call in (A, B):
        conf = policy.participant_event(conf, call, True, at)
        conf = policy.connection_event(conf, call, True, at)
    return conf


def spoken(conf, *events):
    """`conf` after speech events (kind, call, at), applied in the order given."""
    for kind, call, at in events:
        conf = talk.speech_event(conf, kind, call, at)
    return conf


def recorded(conf, *spans):
    """`conf` with its recording `rec-1` confirmed recording over each (start, end) and paused between."""
    conf = policy.recording_status(conf, "rec-1", "in-progress", spans[0][0])
    for (_, end), (start, _) in zip(spans, spans[1:]):
        conf = policy.command_result(conf, "rec-1", "paused", end)
        conf = policy.command_result(conf, "rec-1", "recording", start)
    return policy.command_result(conf, "rec-1", "paused", spans[-1][1])


# --- the events and their spans -----------------------------------------------------------------


def test_each_start_is_paired_with_the_next_stop_in_timestamp_order():
    conf = spoken(
        conference(),
        (SPEECH_STOP, A, T0 + 5),
        (SPEECH_START, A, T0 + 1),
        (SPEECH_START, A, T0 + 7),
        (SPEECH_STOP, A, T0 + 9),
    )
    assert talk.spans(conf.talk[A], None) == [(T0 + 1, T0 + 5), (T0 + 7, T0 + 9)]


def test_a_start_while_talking_or_a_stop_while_silent_changes_nothing():
    events = TalkEvents(starts=(T0 + 1, T0 + 3), stops=(T0 + 0, T0 + 6, T0 + 8))
    assert talk.spans(events, None) == [(T0 + 1, T0 + 6)]


@pytest.mark.parametrize(
    "events, expected",
    [
        # Talking since T0 + 1, a stop at T0 + 9 to come: a stop and a start in T0 + 4 are a pause inside the turn.
        (TalkEvents(starts=(T0 + 1, T0 + 4), stops=(T0 + 4, T0 + 9)), [(T0 + 1, T0 + 9)]),
        # Silent before T0 + 4, a start at T0 + 6 to come: a start and a stop in T0 + 4 are talk of under a second.
        (TalkEvents(starts=(T0 + 4, T0 + 6), stops=(T0 + 4, T0 + 9)), [(T0 + 6, T0 + 9)]),
        # Talking since T0 + 1, nothing after: a stop, a start and a stop in T0 + 5 end the turn there.
        (TalkEvents(starts=(T0 + 1, T0 + 5), stops=(T0 + 5,)), [(T0 + 1, T0 + 5)]),
        # Silent, then a start and a stop in T0 + 2 before a stop at T0 + 6: a start, a stop and a start in T0 + 2.
        (TalkEvents(starts=(T0 + 2,), stops=(T0 + 2, T0 + 6)), [(T0 + 2, T0 + 6)]),
    ],
)
def test_a_second_with_a_start_and_a_stop_ends_as_the_next_event_needs(events, expected):
    assert talk.spans(events, None) == expected


def test_an_open_span_ends_at_the_leave_or_at_the_end():
    conf = spoken(conference(), (SPEECH_START, A, T0 + 2), (SPEECH_START, B, T0 + 3))
    conf = policy.participant_event(conf, A, False, T0 + 7)
    assert talk.talk_spans(conf, T0 + 20) == {A: [(T0 + 2, T0 + 7)], B: [(T0 + 3, T0 + 20)]}


def test_a_duplicate_changes_nothing_and_each_call_keeps_only_its_newest_events():
    conf = spoken(conference(), (SPEECH_START, A, T0 + 1))
    assert talk.speech_event(conf, SPEECH_START, A, T0 + 1) is conf
    assert talk.speech_event(conf, "participant-join", A, T0 + 2) is conf
    for n in range(talk.TALK_EVENTS_LIMIT + 5):
        conf = spoken(conf, (SPEECH_START, A, T0 + 10 + 2 * n), (SPEECH_STOP, A, T0 + 11 + 2 * n))
    kept = conf.talk[A]
    assert len(kept.starts) == len(kept.stops) == talk.TALK_EVENTS_LIMIT
    assert kept.stops[-1] == T0 + 11 + 2 * (talk.TALK_EVENTS_LIMIT + 4) and kept.starts[0] == T0 + 20


speech = st.tuples(st.sampled_from([SPEECH_START, SPEECH_STOP]), st.sampled_from([A, B]), st.integers(0, 12))


@settings(max_examples=300, deadline=None)
@given(events=st.lists(speech, max_size=24), seed=st.integers(0, 2**32), data=st.data())
def test_no_delivery_order_or_duplicate_changes_the_talk(events, seed, data):
    """SignalWire's callbacks are unordered and retried, and its Timestamps share seconds: the store's state
    and the spans come from the set of (Timestamp, kind) events alone."""
    resent = events + data.draw(st.lists(st.sampled_from(events), max_size=6)) if events else []
    random.Random(seed).shuffle(resent)
    stores = [MemoryStore(), MemoryStore()]
    for store, order in zip(stores, (events, resent)):
        store.mutate("R", lambda _: conference())
        for kind, call, second in order:
            store.mutate("R", lambda conf: talk.speech_event(conf, kind, call, T0 + second))
    first, second = (store.get("R") for store in stores)
    assert first.talk == second.talk
    assert talk.talk_spans(first, T0 + 20) == talk.talk_spans(second, T0 + 20)


@settings(max_examples=300, deadline=None)
@given(lengths=st.lists(st.floats(0.05, 4.0), min_size=2, max_size=16))
def test_spans_from_whole_second_timestamps_are_the_true_ones_to_the_second(lengths):
    """A well-formed turn sequence (start, stop, start, ...) at real times, stamped to the second, with at most a
    start and a stop in any one second: when no two events share a second the spans are exactly the stamped
    ones; otherwise each true turn is off by under two seconds (its two edges, and the pause or blip of under a
    second the same-second rule absorbs)."""
    times = [T0 + sum(lengths[: n + 1]) for n in range(len(lengths) - len(lengths) % 2)]
    events = TalkEvents(
        starts=tuple(sorted({math.floor(t) for t in times[::2]})),
        stops=tuple(sorted({math.floor(t) for t in times[1::2]})),
    )
    derived = talk.spans(events, None)
    # Whatever shares a second: each span runs from a start to a stop, and the last stop closes every turn.
    assert all(a in events.starts and b in events.stops for a, b in derived)
    assert talk.spans(events, T0 + 1000) == derived
    assume(max(Counter(math.floor(t) for t in times).values()) <= 2)
    stamped = [(math.floor(a), math.floor(b)) for a, b in zip(times[::2], times[1::2])]
    if len({math.floor(t) for t in times}) == len(times):
        assert derived == stamped
    true_total = sum(b - a for a, b in zip(times[::2], times[1::2]))
    assert abs(sum(b - a for a, b in derived) - true_total) < 2 * len(stamped)
    assert all(a < b for a, b in derived) and all(b <= c for (_, b), (c, _) in zip(derived, derived[1:]))


# --- the figures ------------------------------------------------------------------------------


def test_talk_figures_of_a_scripted_conversation_count_recorded_time_only():
    # Recorded 0-10 s and 14-30 s; paused 10-14 s (a pause in the middle).
    conf = recorded(conference(), (T0, T0 + 10), (T0 + 14, T0 + 30))
    conf = spoken(
        conf,
        (SPEECH_START, A, T0 + 1),
        (SPEECH_STOP, A, T0 + 6),  # A alone 1-3, with B 3-6
        (SPEECH_START, B, T0 + 3),
        (SPEECH_STOP, B, T0 + 4),
        (SPEECH_START, A, T0 + 8),
        (SPEECH_STOP, A, T0 + 16),  # 8-10 counted, 10-14 paused, 14-16
        (SPEECH_START, B, T0 + 11),
        (SPEECH_STOP, B, T0 + 13),  # all in the pause: never counted
        (SPEECH_START, B, T0 + 20),
        (SPEECH_STOP, B, T0 + 26),
        (SPEECH_START, A, T0 + 27),
        (SPEECH_STOP, A, T0 + 28),
        (SPEECH_START, A, T0 + 29),
    )
    conf = policy.conference_ended(conf, T0 + 30)
    record = conversation.record(conf, T0 + 30)
    a, b = (channel["talk"] for channel in record["channels"])
    # A: 1-6, 8-10, 14-16, 27-28, 29-30 (open: ends with the conference) = 11 s; B: 3-4, 20-26 = 7 s; both 3-4.
    # Of the 26 s recorded, 17 s have someone talking.
    assert record["talk"] == {"silence_s": 9.0, "source": "speaker-events"}
    # A's longest alone: 4-10, its own 2 s pause 6-8 included (B's talk ends 1-3, the recording's pause 8-16).
    assert figures_of(a) == (11.0, 0.611, 6.0, 1.0)
    assert figures_of(b) == (7.0, 0.389, 6.0, 1.0)
    assert a["spans"][:2] == [{"start_ms": 1000, "end_ms": 6000}, {"start_ms": 8000, "end_ms": 10000}]
    assert [s["state"] for s in record["recording_timeline"]] == ["recording", "paused", "recording"]


def test_without_speaker_events_there_are_no_figures_until_the_audio_gives_some(tmp_path):
    record = conversation.record(policy.conference_ended(conference(), T0 + 30), T0 + 30)
    assert record["talk"] == {"silence_s": None, "source": None}
    assert [channel["talk"] for channel in record["channels"]] == [talk_time.UNMEASURED] * 2
    assert talk_time.with_audio_talk(record, tmp_path, "skip") == record  # no channel has a WAV of its own


spans_ms = st.lists(st.tuples(st.integers(0, 3000), st.integers(1, 800)).map(lambda s: (s[0], s[0] + s[1])), max_size=6)


@settings(max_examples=300, deadline=None)
@given(recording=spans_ms, channels=st.lists(spans_ms, min_size=1, max_size=4))
def test_the_figures_are_what_counting_each_millisecond_gives(recording, channels):
    recorded_spans = talk_time.union(recording)
    talks, silence = talk_time.figures(recorded_spans, channels)
    expected, expected_silence = oracle(recorded_spans, channels)
    assert [figures_of(t) for t in talks] == [tuple(float(x) if x is not None else None for x in e) for e in expected]
    assert silence == expected_silence


@pytest.mark.parametrize(
    "behaviour, expected",
    [
        # Recorded 1-4 s and 6-9 s of the conversation, paused 4-6: skip leaves the pause out of the audio ...
        ("skip", [(1500, 3500), (3800, 4000), (6000, 6300), (8000, 8500)]),
        ("silence", [(1500, 3500), (3800, 4300), (6000, 6500)]),  # ... silence keeps it, silent
    ],
)
def test_channel_audio_time_maps_to_conversation_time_through_its_recording_timeline(behaviour, expected):
    timeline = [
        {"state": "recording", "start_ms": 1000, "end_ms": 4000},
        {"state": "paused", "start_ms": 4000, "end_ms": 6000},
        {"state": "recording", "start_ms": 6000, "end_ms": 9000},
    ]
    audio = [(500, 2500), (2800, 3300), (5000, 5500), (9000, 9500)]  # the last is past the timeline's end
    assert talk_time.to_conversation(audio, timeline, behaviour) == expected


# --- through the webhooks ----------------------------------------------------------------------


@pytest.mark.parametrize("talk_time", [False, True])
def test_the_laml_asks_for_speaker_events_only_with_talk_time(talk_time):
    document = laml.conference_laml("R", PUBLIC_URL, "do-not-trim", talk_time=talk_time)
    events = document.split('statusCallbackEvent="')[1].split('"')[0].split()
    assert events == ["start", "end", "join", "leave", "hold"] + (["speaker"] if talk_time else [])


@pytest.fixture
def phone(signalwire):
    """Signed callbacks to an app with TALK_TIME on."""
    app = create_app(make_config(talk_time=True))
    yield SignedCallbacks(app, app.test_client())
    shutdown(app)


def test_speech_events_are_applied_and_the_live_record_has_their_talk(phone):
    def event(kind, call, at):
        form = {
            "AccountSid": "acct",
            "ConferenceSid": sid("conf"),
            "FriendlyName": "+15550001111",
            "StatusCallbackEvent": kind,
            "CallSid": call,
            "Timestamp": formatdate(at, usegmt=True),
        }
        response = phone.post("/voice/conference-status", form)
        assert response.status_code == 204
        return response.headers["X-Quorum-Outcome"]

    now = time.time() - 30
    assert phone.post("/voice/inbound", {"CallSid": A, "From": "+15550002222", "To": "+15550001111"}).status_code == 200
    assert (
        'statusCallbackEvent="start end join leave hold speaker"'
        in phone.post("/voice/inbound", {"CallSid": B, "From": "+15550003333", "To": "+15550001111"}).text
    )
    event("participant-join", A, now)
    event("participant-join", B, now)
    assert event(SPEECH_START, A, now + 2) == "applied"
    assert event(SPEECH_START, A, now + 2) == "applied"  # a retry: nothing changes
    assert event(SPEECH_STOP, A, now + 5) == "applied"
    state = phone.state("+15550001111")
    assert state.talk == {A: TalkEvents(starts=(float(int(now + 2)),), stops=(float(int(now + 5)),))}
    live = conversation.record(services(phone.app).store.get("+15550001111"), now + 30)
    assert live["talk"]["source"] == "speaker-events"
    assert [c["talk"]["seconds"] for c in live["channels"]] == [0.0, 0.0]  # no recording ran: nothing counted
