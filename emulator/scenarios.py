"""Scenarios as data, a player for them, and what a scenario should have produced.

A scenario is a list of steps:
    ("call", LABEL, TO)   LABEL dials TO (a new call each time, so a rejoin is a new CallSid)
    ("call", LABEL, TO, TALK)   ... and talks exactly then: TALK is ((start, end), ...) seconds after joining
    ("hangup", LABEL)     LABEL's current call hangs up
    ("hold", LABEL)       LABEL's current call is put on hold
    ("unhold", LABEL)     ... and taken off hold
    ("wait", SECONDS)     real time passes
Labels name people; each label always dials from the same number, so it keeps its voice.
"""

from __future__ import annotations

import random
import time
import zlib
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from emulator.calls import Event
from emulator.model import Call, Conference, RECORDING

Step = Tuple
DEMO_NUMBER = "+15550100"

# A host dials in alone, a guest joins, drops and rejoins, is put on hold and taken off it, a third caller
# comes and goes, everyone hangs up. A call's events are seconds apart, as SignalWire's Timestamps can order.
DEMO: List[Step] = [
    ("call", "host", DEMO_NUMBER),
    ("wait", 1.0),
    ("call", "guest", DEMO_NUMBER),
    ("wait", 1.5),
    ("hangup", "guest"),
    ("wait", 1.0),
    ("call", "guest", DEMO_NUMBER),
    ("wait", 2.5),
    ("hold", "guest"),
    ("wait", 2.5),
    ("unhold", "guest"),
    ("wait", 1.0),
    ("call", "third", DEMO_NUMBER),
    ("wait", 1.0),
    ("hangup", "third"),
    ("wait", 1.0),
    ("hangup", "host"),
    ("wait", 0.8),
    ("hangup", "guest"),
]

SCENARIOS: Dict[str, List[Step]] = {"demo": DEMO}


def caller_number(label: str) -> str:
    """The From number of a label: stable, so the same person sounds the same."""
    return f"+1555{zlib.crc32(label.encode()) % 10_000_000:07d}"


def scaled(steps: Sequence[Step], factor: float) -> List[Step]:
    """The same scenario with every wait multiplied by `factor` (tests run the demo faster)."""
    return [("wait", step[1] * factor) if step[0] == "wait" else step for step in steps]


def on_the_line(steps: Iterable[Step]) -> List[str]:
    """Labels still on a call after the steps, in the order they last dialled."""
    present: List[str] = []
    for step in steps:
        if step[0] == "call":
            present = [label for label in present if label != step[1]] + [step[1]]
        elif step[0] == "hangup":
            present = [label for label in present if label != step[1]]
    return present


def hang_up_everyone(steps: Sequence[Step], gap_s: float = 0.0) -> List[Step]:
    """Steps that hang up whoever is still on the line after `steps`."""
    out: List[Step] = []
    for label in on_the_line(steps):
        out += [("hangup", label)] + ([("wait", gap_s)] if gap_s else [])
    return out


def random_session(
    rng: random.Random,
    to: str,
    steps: int,
    people: int = 4,
    wait_s: Tuple[float, float] = (0.05, 0.3),
    prefix: str = "",
) -> List[Step]:
    """Random joins, leaves and rejoins of up to `people` callers; does not end the conference."""
    labels = [f"{prefix}p{i}" for i in range(people)]
    out: List[Step] = [("call", labels[0], to)]
    for _ in range(steps):
        out.append(("wait", round(rng.uniform(*wait_s), 3)))
        present = on_the_line(out)
        absent = [label for label in labels if label not in present]
        if absent and (len(present) <= 1 or rng.random() < 0.55):
            out.append(("call", rng.choice(absent), to))
        else:
            out.append(("hangup", rng.choice(present)))
    return out


class Player:
    """Plays steps against an emulator (anything with `dial(to, from_, label)`, `hangup(sid)`, `hold(sid, on)`);
    a hold or hangup of a call that is not in its conference (Quorum refused it, say) is skipped."""

    def __init__(self, emulator, on_step: Optional[Callable[[Step], None]] = None):
        self._emulator = emulator
        self._on_step = on_step
        self.calls: Dict[str, Call] = {}  # label -> its latest call

    def play(self, steps: Iterable[Step]) -> None:
        """Run the steps in real time; may be called again to continue the same session."""
        for step in steps:
            if self._on_step:
                self._on_step(step)
            kind = step[0]
            if kind == "call":
                talk = {"talk": step[3]} if len(step) > 3 else {}  # scripted turns: the emulator's own voices else
                self.calls[step[1]] = self._emulator.dial(step[2], caller_number(step[1]), step[1], **talk)
            elif kind == "hangup":
                self._emulator.hangup(self.calls[step[1]].sid)
            elif kind in ("hold", "unhold"):
                call = self.calls[step[1]]
                if call.conference_sid is not None and call.left_at is None:  # else it failed (said already) or left
                    self._emulator.hold(call.sid, kind == "hold")
            elif kind == "wait":
                time.sleep(step[1])
            else:
                raise ValueError(f"unknown scenario step {step!r}")


# What should have happened


def presence(conf: Conference, calls: Dict[str, Call]) -> List[Tuple[float, int]]:
    """(time, participants on the line) after each join or leave of a conference."""
    changes = []
    for sid in conf.call_sids:
        call = calls[sid]
        changes.append((call.joined_at, 1))
        if call.left_at is not None:
            changes.append((call.left_at, -1))
    out, count = [], 0
    for at, delta in sorted(changes):
        count += delta
        out.append((at, count))
    return out


def quorum_spans(changes: Sequence[Tuple[float, int]], minimum: int) -> List[Tuple[float, float]]:
    """When the recording should run: at least `minimum` on the line, once record-from-start began (2 in)."""
    spans, opened, started = [], None, False
    for at, count in changes:
        started = started or count >= 2
        wanted = started and count >= minimum
        if wanted and opened is None:
            opened = at
        elif not wanted and opened is not None:
            spans.append((opened, at))
            opened = None
    if opened is not None:
        spans.append((opened, changes[-1][0]))
    return spans


def expected_writes(changes: Sequence[Tuple[float, int]], minimum: int) -> int:
    """REST writes a perfect controller makes: one per threshold crossing while the recording runs."""
    state, writes = None, 0
    for _, count in changes:
        if count == 0:
            break  # the conference ends: nothing left to pause
        if state is None and count < 2:
            continue  # no recording until the second caller
        wanted = count >= minimum
        if state is None:
            state = True  # record-from-start begins recording
        if wanted != state:
            writes += 1
            state = wanted
    return writes


def logged_quorum(
    events: Iterable[Event], room: str, minimum: int, hosts: Sequence[str] = (), hold_counts: bool = False
) -> Tuple[List[Tuple[float, float]], int]:
    """From the emulator's event log: when the room's recording should run, and the REST writes a perfect
    controller makes (one per crossing while the recording runs).

    The recording runs from SignalWire's start on while at least `minimum` count (callers on hold only with
    `hold_counts`) and, where `hosts` (labels) are given, one of them is a host.
    """
    on, held, spans, opened, recording, writes = set(), set(), [], None, None, 0
    for event in events:
        if event.room != room:
            continue
        if event.kind == "joined":
            on.add(event.label)
        elif event.kind == "left":
            on.discard(event.label), held.discard(event.label)
        elif event.kind in ("held", "unheld"):
            (held.add if event.kind == "held" else held.discard)(event.label)
        elif event.kind == "recording-started":
            recording = True
        elif event.kind == "conference-end":
            recording = None
        counted = on if hold_counts else on - held
        wanted = len(counted) >= minimum and (not hosts or bool(counted & set(hosts)))
        if recording is not None and on and wanted != recording:
            writes, recording = writes + 1, wanted
        if recording is not None and wanted and opened is None:
            opened = event.at
        elif (recording is None or not wanted) and opened is not None:
            spans.append((opened, event.at))
            opened = None
    return spans, writes


def recorded_spans(recording) -> List[Tuple[float, float]]:
    """A recording's closed `recording` spans."""
    return [(s.start, s.end) for s in recording.timeline.spans if s.state == RECORDING and s.end is not None]


def span_problems(
    actual: Sequence[Tuple[float, float]], expected: Sequence[Tuple[float, float]], tolerance_s: float
) -> List[str]:
    """How `actual` differs from `expected` beyond `tolerance_s` per edge (empty: they match).

    Spans no longer than the tolerance are ignored on both sides: a pause that lands a
    callback's latency after record-from-start leaves such a sliver, as on SignalWire.
    """
    actual = [s for s in actual if s[1] - s[0] > tolerance_s]
    expected = [s for s in expected if s[1] - s[0] > tolerance_s]
    if len(actual) != len(expected):
        return [f"{len(actual)} recorded spans, expected {len(expected)}: {_fmt(actual)} vs {_fmt(expected)}"]
    problems = []
    for (a0, a1), (e0, e1) in zip(actual, expected):
        if abs(a0 - e0) > tolerance_s or abs(a1 - e1) > tolerance_s:
            problems.append(f"recorded {a0:.3f}-{a1:.3f}, expected {e0:.3f}-{e1:.3f}")
    return problems


def _fmt(spans: Sequence[Tuple[float, float]]) -> str:
    """Spans as short text."""
    return ", ".join(f"{a:.2f}-{b:.2f}" for a, b in spans) or "none"
