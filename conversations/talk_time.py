"""Talk time of a conversation: who talked how much, over whom, for how long alone, and the silence; recorded time only.

Pure functions over the conversation record (times in ms from its start), from one of two sources:
SignalWire's speaker events (TALK_TIME, quorum/talk.py), or else each channel's own recording
(PARTICIPANT_RECORDING=inbound) through conversations/voice_activity.py. Every figure counts only time
the conference recording was recording (its `recording_timeline`), so paused time never counts.

    channel `talk`:      {seconds, share, longest_monologue_s, overlap_s, spans: [{start_ms, end_ms}]}
    conversation `talk`: {silence_s, source: "speaker-events" | "audio" | null}
"""

from __future__ import annotations

import logging
import wave
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, TypedDict

from conversations import voice_activity
from quorum import talk
from recording_state import PAUSED, RECORDING, Conference

log = logging.getLogger("quorum.conversations")

SPEAKER_EVENTS, AUDIO = "speaker-events", "audio"
# A monologue goes on through its speaker's own pauses up to this long, while nobody else talks.
MONOLOGUE_PAUSE_MS = 2000


class ChannelTalk(TypedDict):
    """A channel's `talk` in the record (None: not measured)."""

    seconds: Optional[float]
    share: Optional[float]
    longest_monologue_s: Optional[float]
    overlap_s: Optional[float]
    spans: List[Dict[str, int]]


UNMEASURED: ChannelTalk = {"seconds": None, "share": None, "longest_monologue_s": None, "overlap_s": None, "spans": []}
Spans = List[Tuple[int, int]]  # (start_ms, end_ms), ordered and disjoint


def union(*groups: Sequence[Tuple[int, int]]) -> Spans:
    """The time covered by any of the spans."""
    out: Spans = []
    for start, end in sorted(span for group in groups for span in group if span[1] > span[0]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def intersect(a: Spans, b: Spans) -> Spans:
    """The time covered by both."""
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        start, end = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if end > start:
            out.append((start, end))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def subtract(a: Spans, b: Spans) -> Spans:
    """The time of `a` not covered by `b`."""
    return intersect(a, _complement(b, min([s for s, _ in a] or [0]), max([e for _, e in a] or [0])))


def _complement(spans: Spans, low: int, high: int) -> Spans:
    """[low, high] less the spans."""
    out, at = [], low
    for start, end in spans:
        if start > at:
            out.append((at, min(start, high)))
        at = max(at, end)
    return out + ([(at, high)] if high > at else [])


def total(spans: Spans) -> int:
    """Their length in ms."""
    return sum(end - start for start, end in spans)


def longest_monologue(own: Spans, others: Spans, recorded: Spans) -> int:
    """The longest stretch (ms) of one channel talking alone: its own pauses up to MONOLOGUE_PAUSE_MS are part of
    it while nobody else talks and the recording runs; another's talk or a recording pause ends it."""
    best, begin = 0, 0  # begin is set by the first span: no span came before it (last is None)
    last: Optional[int] = None
    for start, end in subtract(own, others):
        gap: Spans = [(last, start)] if last is not None else []
        if (
            last is None
            or start - last > MONOLOGUE_PAUSE_MS
            or intersect(gap, others)
            or total(intersect(gap, recorded)) < start - last
        ):
            begin = start
        best, last = max(best, end - begin), end
    return best


def figures(recorded: Spans, channels: List[Optional[Spans]]) -> Tuple[List[ChannelTalk], Optional[float]]:
    """Each channel's talk (None: not measured) counted in recorded time, and the silence (None unless all were)."""
    counted = [None if spans is None else intersect(union(spans), recorded) for spans in channels]
    measured = [spans for spans in counted if spans is not None]
    everyone = sum(total(spans) for spans in measured)
    out: List[ChannelTalk] = []
    for index, own in enumerate(counted):
        if own is None:
            out.append(UNMEASURED.copy())
            continue
        others = union(*(spans for n, spans in enumerate(counted) if n != index and spans is not None))
        out.append(
            {
                "seconds": total(own) / 1000,
                "share": round(total(own) / everyone, 3) if everyone else None,
                "longest_monologue_s": longest_monologue(own, others, recorded) / 1000,
                "overlap_s": total(intersect(own, others)) / 1000,
                "spans": [{"start_ms": start, "end_ms": end} for start, end in own],
            }
        )
    silence = None if len(measured) < len(counted) else total(subtract(recorded, union(*measured))) / 1000
    return out, silence


def with_talk(record: dict, channels: List[Optional[Spans]], source: Optional[str]) -> dict:
    """The record with its `talk` figures from per-channel spans (ms; None: that channel not measured)."""
    recorded = [(s["start_ms"], s["end_ms"]) for s in record.get("recording_timeline") or [] if s["state"] == RECORDING]
    if source is None:
        talks, silence = [UNMEASURED.copy() for _ in record["channels"]], None
    else:
        talks, silence = figures(recorded, channels)
    return {
        **record,
        "talk": {"silence_s": silence, "source": source},
        "channels": [{**channel, "talk": figures_} for channel, figures_ in zip(record["channels"], talks)],
    }


def speaker_spans(conf: Conference, until: float) -> Dict[str, Spans]:
    """Call sid -> its talk spans from the speaker events, in ms from the conversation's start."""
    ms = lambda at: max(0, round((at - conf.opened_at) * 1000))  # noqa: E731
    return {call: [(ms(a), ms(b)) for a, b in spans] for call, spans in talk.talk_spans(conf, until).items()}


def with_speaker_talk(record: dict, conf: Conference, until: float) -> dict:
    """The record with talk figures from the conference's speaker events; source null when none came."""
    if not conf.talk:
        return with_talk(record, [], None)
    by_call = speaker_spans(conf, until)
    return with_talk(record, [by_call.get(channel["call_sid"], []) for channel in record["channels"]], SPEAKER_EVENTS)


def with_audio_talk(record: dict, directory: Path, pause_behavior: str) -> dict:
    """Without speaker events, the record's talk figures from each channel's own WAV (unchanged when none has one)."""
    if (record.get("talk") or {}).get("source") is not None:
        return record
    channels = [_channel_spans(directory, channel, pause_behavior) for channel in record["channels"]]
    if all(spans is None for spans in channels):
        return record
    return with_talk(record, channels, AUDIO)


def _channel_spans(directory: Path, channel: dict, pause_behavior: str) -> Optional[Spans]:
    """A channel's talk in conversation time, from its WAV; None without one, or when it cannot be read."""
    name = (channel.get("audio") or {}).get("wav_file")
    if not name:
        return None
    try:
        found = voice_activity.file_spans(directory / name)
    except (wave.Error, EOFError, ValueError) as error:
        log.warning("%s: no talk figures (%s)", name, error)
        return None
    return to_conversation(
        [(round(a * 1000), round(b * 1000)) for a, b in found], channel.get("recording_timeline") or [], pause_behavior
    )


def to_conversation(spans: Spans, timeline: List[dict], pause_behavior: str) -> Spans:
    """Spans in ms of a channel recording's audio as ms of the conversation, through that recording's timeline.

    PauseBehavior skip leaves paused time out of the audio: its recorded pieces follow one another. With silence
    the audio runs on through pauses (silent). Audio past the timeline's end (our clock heard of the recording's
    start and end a little after SignalWire's) is dropped.
    """
    kept = [s for s in timeline if s["state"] == RECORDING or (pause_behavior == "silence" and s["state"] == PAUSED)]
    out, offset = [], 0
    for piece in kept:
        length = piece["end_ms"] - piece["start_ms"]
        for start, end in intersect(spans, [(offset, offset + length)]):
            out.append((start - offset + piece["start_ms"], end - offset + piece["start_ms"]))
        offset += length
    return union(out)
