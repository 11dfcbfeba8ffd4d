"""The conversation page's talk time, as pure functions: each channel's talk spans in its lane, and the table."""

from __future__ import annotations

from typing import List, Optional

SOURCE_WORDS = {
    "speaker-events": "From SignalWire's speaker events (TALK_TIME): when each caller began and stopped speaking, "
    "to the second.",
    "audio": "From each caller's own recording (PARTICIPANT_RECORDING): a voice-activity detector over its audio.",
}
NO_SOURCE = (
    "No talk figures: SignalWire sent no speaker events (TALK_TIME) and no caller had a recording of "
    "their own (PARTICIPANT_RECORDING)."
)
NOT_YET = (
    "Talk figures appear as SignalWire reports who speaks (TALK_TIME), or once each caller's recording is processed."
)
TALK_INSET, TALK_H = 5, 10  # the talk band inside a channel's 20 px bar


def _elapsed(ms: int) -> str:
    """'1:35.1': time into the conversation."""
    whole, tenth = divmod(round(ms / 100), 10)
    return f"{whole // 60}:{whole % 60:02d}.{tenth}"


def _seconds(value: Optional[float]) -> str:
    """'12.3 s', or a dash when not measured."""
    return "—" if value is None else f"{value:.1f} s"


def talk_marks(channel: dict, total_ms: int) -> List[dict]:
    """A channel's counted talk spans placed in % of the timeline, each with its words."""
    marks = []
    for span in (channel.get("talk") or {}).get("spans") or []:
        start, end = span["start_ms"], span["end_ms"]
        marks.append(
            {
                "x": round(100 * start / total_ms, 3),
                "width": round(100 * (end - start) / total_ms, 3),
                "start_ms": start,
                "end_ms": end,
                "from": _elapsed(start),
                "to": _elapsed(end),
                "text": f"talking {_elapsed(start)}–{_elapsed(end)}",
            }
        )
    return marks


def talk_view(record: dict) -> dict:
    """The talk table: one row per channel (talk, share, longest monologue, overlap), the silence, the source."""
    talk = record.get("talk") or {}
    source = talk.get("source")
    rows = []
    for number, channel in enumerate(record.get("channels") or [], start=1):
        figures = channel.get("talk") or {}
        share = figures.get("share")
        rows.append(
            {
                "name": f"Channel {number:02d}: {channel.get('from') or channel.get('connection_id')}",
                "seconds": _seconds(figures.get("seconds")),
                "share": "—" if share is None else f"{share:.0%}",
                "monologue": _seconds(figures.get("longest_monologue_s")),
                "overlap": _seconds(figures.get("overlap_s")),
            }
        )
    if source is None:
        words = NOT_YET if record.get("status") in ("live", "processing") else NO_SOURCE
    else:
        words = SOURCE_WORDS.get(source, source)
    return {
        "source": source,
        "source_words": words,
        "rows": rows if source else [],
        "silence": _seconds(talk.get("silence_s")),
    }
