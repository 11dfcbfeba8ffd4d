"""The dashboard's view data, as pure functions: the templates only lay it out."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, List, Optional

from console.talk_view import TALK_H, TALK_INSET, talk_marks
from conversations import record as conversation
from conversations.archive import MEDIA_TYPES
from conversations.record import READY, UNFINISHED
from conversations.sealing import SEALED
from config import RoomRule
from recording_state import ABANDONED, DOUBT, GONE, LIVE, PAUSED, PROCESSING, RECORDING, UNSURE, Caller, Conference

PER_PAGE = 20
WAITING = "waiting"  # no conference recording yet: SignalWire starts it with the second caller
STATE_WORDS = {
    WAITING: "not started",
    RECORDING: "recording",
    PAUSED: "paused",
    UNSURE: "unconfirmed",
    DOUBT: "checking",
    GONE: "stopped",
    ABANDONED: "failed",
}
STATUS_WORDS = {
    LIVE: "live",
    PROCESSING: "processing (fetching and measuring the audio)",
    READY: "ready",
    UNFINISHED: "failed (the recording never reported its end)",
}
ON_HOLD, ON_THE_CALL = "on hold", "on the call"


def rule_words(rule: RoomRule) -> str:
    """A room's rule in one sentence, as its live card shows it."""
    words = f"Records with {rule.min_participants} or more on the line"
    words += ", a host among them" if rule.host_numbers else ""
    words += "; callers on hold count" if rule.hold_counts_as_present else "; callers on hold do not count"
    return words + ("; announces the recording" if rule.recording_announcement else "") + "."


def retention_words(delete_from_signalwire: bool, retention_days: int) -> str:
    """What becomes of the recordings once archived (DELETE_FROM_SIGNALWIRE, ARCHIVE_RETENTION_DAYS), in one line."""
    theirs = (
        "deleted once archived and checked"
        if delete_from_signalwire
        else "kept at SignalWire (anyone with a recording's URL can fetch it)"
    )
    ours = f"kept {retention_days} day{'' if retention_days == 1 else 's'}" if retention_days else "kept forever"
    return f"SignalWire's copies: {theirs}. Archive: {ours}."


def duration_words(seconds: float) -> str:
    """A short duration: '4.2 s', '37 s', '3 min 05 s', '1 h 02 min'."""
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def clock(at: float) -> str:
    """Time of day in UTC."""
    return time.strftime("%H:%M:%S UTC", time.gmtime(at))


def elapsed(ms: int, tenths: bool = True) -> str:
    """Time into the conversation: '1:35.1' (or '1:35'), '1:02:03.4' past an hour."""
    steps = round(ms / 100) if tenths else round(ms / 1000) * 10
    whole, tenth = divmod(steps, 10)
    hours, rest = divmod(whole, 3600)
    text = f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
    return f"{text}.{tenth}" if tenths else text


def recording_now(conf: Conference) -> tuple:
    """(state, since): the mix recording's confirmed state and when it was confirmed (our clock)."""
    mix = conversation.mix_recording(conf)
    if mix is None:
        return WAITING, conf.opened_at
    confirmed = [t.at for t in conf.timeline if t.kind == "confirmed" and t.recording_sid == mix]
    return conf.recordings.get(mix, WAITING), confirmed[-1] if confirmed else None


def live_conference(conf: Conference, now: float, default_rule: Optional[RoomRule] = None) -> dict:
    """One live conference as the live page shows it; `own_rule`: its rule is not the page's `default_rule`, so
    its card says it (the page states the default once)."""
    state, since = recording_now(conf)
    present = conf.present()
    held = [sid for sid in present if conf.participants[sid].hold]
    on_line = sorted(present, key=lambda sid: (conf.callers.get(sid) or Caller()).joined_at or now)
    participants = [_participant(conf, sid, now) for sid in on_line]
    return {
        "room": conf.room,
        "id": conf.conference_sid,
        "state": state,
        "state_words": STATE_WORDS.get(state, state),
        "for": f"for {duration_words(now - since)}" if since is not None else "",
        "present": len(present),
        "rule": rule_words(conf.rule),
        "own_rule": conf.rule != default_rule,
        "present_words": f"{len(present)} on the line" + (f" ({len(held)} on hold)" if held else ""),
        "opened": f"opened {clock(conf.opened_at)}",
        "participants": participants,
        **secure_pause_card(conf),
    }


def secure_pause_card(conf: Conference) -> dict:
    """A live card's secure pause: whether one is on, a sentence of whose, why and until when, the button's words."""
    pause = conf.secure_pause()
    if pause is None:
        return {"secure": False, "secure_words": "", "secure_button": "Secure pause"}
    why = f" ({pause.reason})" if pause.reason else ""
    return {
        "secure": True,
        "secure_button": "Resume recording",
        "secure_words": f"Secure pause by {pause.by} since {clock(pause.start)}{why}: nothing is recorded; "
        f"it ends by itself at {clock(pause.until)}.",
    }


def _participant(conf: Conference, call_sid: str, now: float) -> dict:
    """One caller on a live card: number, since when, on hold or not, host or not."""
    caller, presence = conf.callers.get(call_sid) or Caller(), conf.participants[call_sid]
    return {
        "number": caller.from_ or "unknown number",
        "hold": presence.hold,
        "host": presence.host,
        "joined": f"joined {clock(caller.joined_at)}, {duration_words(now - caller.joined_at)} ago"
        if caller.joined_at is not None
        else "joined (time unknown)",
    }


def live_summary(conferences: List[dict]) -> str:
    """One sentence per change worth announcing (no ticking durations, so screen readers stay calm)."""
    if not conferences:
        return "No live conferences."
    rooms = " ".join(f"{c['room']}: {c['state_words']}, {c['present_words']}." for c in conferences)
    count = len(conferences)
    return f"{count} live conference{'s' if count != 1 else ''}. {rooms}"


@dataclass(frozen=True)
class Reading:
    """A figure, its plain-words reading and a level for styling (good, fair, poor, unknown)."""

    value: str
    words: str
    level: str


@dataclass(frozen=True)
class Band:
    """One band of a figure's scale: what it reads as and the range, as shown on the page."""

    figure: str
    range: str
    words: str
    level: str
    holds: Callable[[float], bool]


NOT_ENOUGH = "not enough audio to tell"
SNR_CLEAR_DB, SNR_NOISY_DB = 20.0, 10.0
RT60_DRY_S, RT60_ECHOEY_S = 0.3, 0.6
SNR_BANDS = (
    Band("SNR", f"{SNR_CLEAR_DB:g} dB or more", "clear line", "good", lambda v: v >= SNR_CLEAR_DB),
    Band(
        "SNR", f"{SNR_NOISY_DB:g} to {SNR_CLEAR_DB:g} dB", "some background noise", "fair", lambda v: v >= SNR_NOISY_DB
    ),
    Band("SNR", f"under {SNR_NOISY_DB:g} dB", "noisy line", "poor", lambda v: True),
)
RT60_BANDS = (
    Band("RT60", f"{RT60_DRY_S:g} s or less", "dry room", "good", lambda v: v <= RT60_DRY_S),
    Band("RT60", f"over {RT60_DRY_S:g} to {RT60_ECHOEY_S:g} s", "some echo", "fair", lambda v: v <= RT60_ECHOEY_S),
    Band("RT60", f"over {RT60_ECHOEY_S:g} s", "echoey room", "poor", lambda v: True),
)
THRESHOLDS = SNR_BANDS + RT60_BANDS + (Band("SNR or RT60", "no figure", NOT_ENOUGH, "unknown", lambda v: False),)


def _read(value: Optional[float], bands: tuple, text: str) -> Reading:
    """The first band that holds for `value`."""
    if value is None:
        return Reading("—", NOT_ENOUGH, "unknown")
    band = next(b for b in bands if b.holds(value))
    return Reading(text.format(value), band.words, band.level)


def snr_reading(snr: Optional[float]) -> Reading:
    """SNR in plain words (higher is better)."""
    return _read(snr, SNR_BANDS, "{:.1f} dB")


def rt60_reading(rt60: Optional[float]) -> Reading:
    """RT60 in plain words (lower is better)."""
    return _read(rt60, RT60_BANDS, "{:.2f} s")


def _parse(stamp: Optional[str]) -> Optional[datetime]:
    """An ISO 8601 time from a conversation record."""
    return datetime.fromisoformat(stamp) if stamp else None


def conversation_facts(record: dict) -> dict:
    """The headline facts of a conversation, for the history table and the conversation page."""
    started, ended = _parse(record.get("started_at")), _parse(record.get("ended_at"))
    spans = record.get("recording_timeline") or []
    total = {
        state: sum(s["end_ms"] - s["start_ms"] for s in spans if s["state"] == state) for state in (RECORDING, PAUSED)
    }
    return {
        "id": record["id"],
        "room": record["room"],
        "status": record["status"],
        "status_words": STATUS_WORDS.get(record["status"], record["status"]),
        "started": started.strftime("%Y-%m-%d %H:%M:%S UTC") if started else "—",
        "started_iso": record.get("started_at"),
        "ended_iso": record.get("ended_at") if ended else None,
        "ended": ended.strftime("%Y-%m-%d %H:%M:%S UTC") if ended else "not yet",
        "id_parts": record["id"].split("-"),
        "length": duration_words((ended - started).total_seconds()) if started and ended else "still on the line",
        "recorded": duration_words(total[RECORDING] / 1000),
        "paused": duration_words(total[PAUSED] / 1000),
        "callers": callers_words(record.get("channels") or []),
        "secure_pauses": len(record.get("secure_pauses") or []),
        "mix": snr_reading((record.get("audio") or {}).get("snr")),
    }


def callers_words(channels: List[dict]) -> str:
    """How many people called, and how many calls that took when some called again (one lane each)."""
    people = len({c.get("connection_id") or c.get("call_sid") for c in channels})
    if people == len(channels):
        return str(people)
    again = len(channels) - people
    return f"{people} ({len(channels)} calls: {again} called again)"


LANE_H, BAR_Y, BAR_H, TOP, AXIS_H = 50, 22, 20, 4, 24
TICK_STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200)
SECURE = "secure pause"  # a span of the recording lane: paused during an agent's secure pause (PCI)
SPAN_WORDS = {RECORDING: "recorded", PAUSED: "paused", SECURE: "secure pause"}
SECURE_ENDS = {"resumed": "resumed by {by}", "timed-out": "timed out", "conference-ended": "ended with the call"}
ANNOUNCEMENT_WORDS = {"played": "played", "failed": "failed (tried twice)", "skipped": "skipped (paused at once)"}


def timeline_view(record: dict) -> dict:
    """SVG geometry of the timeline: a recording lane, one lane per channel, an axis; x and width in %."""
    channels = record.get("channels") or []
    ends = [s["end_ms"] for s in record.get("recording_timeline") or []] + [c["end_ms"] for c in channels]
    started, ended = _parse(record.get("started_at")), _parse(record.get("ended_at"))
    if started and ended:
        ends.append(round((ended - started).total_seconds() * 1000))
    total = max([1] + [e for e in ends if e is not None])
    secure = record.get("secure_pauses") or []
    windows = [(p["start_ms"], total if p["end_ms"] is None else p["end_ms"]) for p in secure]
    lanes = [
        _lane(
            "Conference recording",
            "recording",
            secure_shaded(
                [(s["state"], s["start_ms"], s["end_ms"]) for s in record.get("recording_timeline") or []], windows
            ),
            total,
        )
    ]
    for number, channel in enumerate(channels, start=1):
        who = channel.get("from") or channel.get("connection_id") or "unknown"
        host = " (host)" if channel.get("host") else ""
        holds = [(ON_HOLD, h["start_ms"], h["end_ms"]) for h in channel.get("holds") or []]
        lanes.append(
            _lane(
                f"Channel {number:02d}: {who}{host}",
                "channel",
                [(ON_THE_CALL, channel["start_ms"], channel["end_ms"])] + holds,
                total,
            )
        )
        lanes[-1]["talk"] = talk_marks(channel, total)  # drawn inside the channel's bar
    for index, lane in enumerate(lanes):
        lane["label_y"] = TOP + index * LANE_H + 15
        lane["bar_y"] = TOP + index * LANE_H + BAR_Y
        lane["talk_y"] = lane["bar_y"] + TALK_INSET
    bottom = TOP + len(lanes) * LANE_H
    marks = [
        {
            "x": round(100 * a["at_ms"] / total, 3),
            "outcome": a["outcome"],
            "text": f"announcement {ANNOUNCEMENT_WORDS.get(a['outcome'], a['outcome'])} at {elapsed(a['at_ms'])}",
        }
        for a in record.get("announcements") or []
    ]
    # Pins hang below the recording's bar: above it they would cover its label.
    return {
        "lanes": lanes,
        "total_ms": total,
        "bar_h": BAR_H,
        "axis_y": bottom + 16,
        "height": bottom + AXIS_H,
        "grid_bottom": bottom - (LANE_H - BAR_Y - BAR_H),
        "ticks": ticks(total),
        "total": elapsed(total),
        "talk_h": TALK_H,
        "talking": any(lane.get("talk") for lane in lanes),
        "marks": marks,
        "mark_top": lanes[0]["bar_y"],
        "mark_pin": lanes[0]["bar_y"] + BAR_H + 7,
        "secure": [_secure_row(p, end) for p, (_, end) in zip(secure, windows)],
    }


def secure_shaded(spans: list, windows: list) -> list:
    """The recording lane's (state, start, end) spans, each paused stretch inside a secure pause's window (start,
    end) told apart as SECURE: quorum pauses and secure pauses are shaded differently."""
    shaded = []
    for state, start, end in spans:
        cuts = sorted({start, end, *(t for window in windows for t in window if start < t < end)})
        for a, b in zip(cuts, cuts[1:]) if state == PAUSED else [(start, end)]:
            inside = state == PAUSED and any(first <= a and b <= last for first, last in windows)
            shaded.append((SECURE if inside else state, a, b))
    return shaded


def _secure_row(pause: dict, end_ms: int) -> dict:
    """One secure pause as the timeline's table lists it: who asked, why, how it ended."""
    why = f" ({pause['reason']})" if pause.get("reason") else ""
    ended = SECURE_ENDS.get(pause["ended"], "still on").format(by=pause.get("resumed_by") or "someone")
    return {
        "text": f"secure pause by {pause['by']}{why}, {ended}",
        "from": elapsed(pause["start_ms"]),
        "to": elapsed(end_ms),
    }


def _lane(label: str, kind: str, spans: list, total: int) -> dict:
    """One lane: its label, its spans placed in % of `total`, and a sentence describing them."""
    placed = [
        {
            "state": state,
            "words": SPAN_WORDS.get(state, state),
            "start_ms": start,
            "end_ms": end,
            "from": elapsed(start),
            "to": elapsed(end),
            "x": round(100 * start / total, 3),
            "width": round(100 * (end - start) / total, 3),
        }
        for state, start, end in spans
    ]
    for span in placed:
        span["text"] = f"{span['words']} {span['from']}–{span['to']}"
    sentence = "; ".join(s["text"] for s in placed) or "nothing yet"
    return {"label": label, "kind": kind, "spans": placed, "description": f"{label}: {sentence}."}


def ticks(total_ms: int, most: int = 6) -> List[dict]:
    """Axis ticks at a round step giving at most `most` intervals; edge labels anchored inside the picture."""
    step = next((s for s in TICK_STEPS_S if total_ms / 1000 / s <= most), TICK_STEPS_S[-1]) * 1000
    out = []
    for at in range(0, total_ms + 1, step):
        x = round(100 * at / total_ms, 3)
        anchor = "start" if at == 0 else "end" if x > 92 else "middle"
        out.append({"x": x, "label": elapsed(at, tenths=False), "anchor": anchor})
    return out


def recordings_view(record: dict, media_url: Callable[[str], str]) -> List[dict]:
    """The mix and each channel that had a recording of its own: audio sources (MP3 first, smaller), downloads,
    length, SNR and RT60 readings. A channel without one (participant recording off, or not chosen) has no card."""
    entries = [("Full mix", record.get("audio") or {})]
    entries += [
        (f"Channel {n:02d}: {c.get('from') or c.get('connection_id')}", c.get("audio") or {})
        for n, c in enumerate(record.get("channels") or [], start=1)
        if _had_recording(c.get("audio"))
    ]
    rows = []
    for name, audio in entries:
        named = [(audio.get("mp3_file"), MEDIA_TYPES["mp3"]), (audio.get("wav_file"), MEDIA_TYPES["wav"])]
        # Encrypted at rest (ARCHIVE_PUBLIC_KEY): Quorum holds no key to serve them with.
        files = [(f, t) for f, t in named if f and not f.endswith(SEALED)]
        duration = audio.get("duration_ms")
        rows.append(
            {
                "name": name,
                "sources": [{"url": media_url(f), "type": t} for f, t in files if f],
                "downloads": [
                    {"url": media_url(f), "format": f.rsplit(".", 1)[-1].upper()} for f, _ in reversed(files) if f
                ],
                "length": duration_words(duration / 1000) if duration is not None else None,
                "missing": audio.get("missing"),
                "sealed": len(files) < sum(1 for f, _ in named if f),
                "snr": snr_reading(audio.get("snr")),
                "rt60": rt60_reading(audio.get("rt60")),
            }
        )
    return rows


def _had_recording(audio: Optional[dict]) -> bool:
    """Whether a channel's audio entry is of a recording (kept, or missing for a stated reason)."""
    return bool(audio and any(audio.get(key) for key in ("wav_file", "mp3_file", "missing")))


def unrecorded_channels(record: dict) -> int:
    """Channels without a recording of their own, which get no card."""
    return sum(not _had_recording(c.get("audio")) for c in record.get("channels") or [])


def paginate(total: int, page: int, per_page: int = PER_PAGE) -> dict:
    """Page `page` of a list of `total` (clamped into range): where it starts and its neighbours."""
    pages = max(1, math.ceil(total / per_page))
    page = min(max(1, page), pages)
    return {
        "page": page,
        "pages": pages,
        "total": total,
        "offset": (page - 1) * per_page,
        "previous": page - 1 if page > 1 else None,
        "next": page + 1 if page < pages else None,
    }
