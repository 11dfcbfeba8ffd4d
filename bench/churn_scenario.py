"""The churn benchmark's scenario: each room's seeded joins, leaves, rejoins and holds, its host, and an agent's
secure pauses."""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emulator.scenarios import caller_number  # noqa: E402

PEOPLE = 5  # callers in each room's pool
MAX_ON_LINE = 4
GAP_S = (0.2, 1.2)  # between two joins/leaves of one room
REJOIN_CHANCE = 0.08  # a leave followed by the same person's rejoin within a second
REJOIN_GAP_S = (0.2, 0.9)
JOIN_CHANCE = {0: 1.0, 1: 0.75, 2: 0.5, 3: 0.35, MAX_ON_LINE: 0.0}  # by callers on the line: hovers around 2
HOLD_CHANCE = 0.1  # a step that puts someone on the line on hold
HOLD_S = (0.4, 3.0)  # planned length of a hold; it ends at the first step after (some within their second)
SECURE_GAP_S = (3.0, 15.0)  # between the end of one room's secure pause and the next
SECURE_SETTLED_S = 1.5  # a secure pause is asked once the room's conference has been live this long
SECURE_RESUMED = 0.6  # the chance an agent resumes it; the others time out (SECURE_PAUSE_MAX_S)
SECURE_KINDS = ("secure-pause", "secure-resume")
AGENT = "agent"


@dataclass(frozen=True)
class Step:
    """One caller dialing in, hanging up, going on hold or coming back, `at` seconds after the run starts."""

    at: float
    kind: str  # call | hangup | hold | unhold, or secure-pause | secure-resume (the room's agent, at the API)
    label: str


def host_label(room: int) -> str:
    """The room's host: its first caller of the pool."""
    return f"r{room:02d}c0"


def room_schedule(rng: random.Random, room: int, seconds: float, holds: bool = True) -> List[Step]:
    """One room's joins, leaves (and holds) for `seconds`, then everyone left hangs up, one at a time."""
    labels = [host_label(room)] + [f"r{room:02d}c{k}" for k in range(1, PEOPLE)]
    on: List[str] = []
    held: Dict[str, float] = {}  # label -> when its hold is to end
    steps: List[Step] = []
    at = rng.uniform(0, GAP_S[1])  # rooms do not all move in step
    while at < seconds or on:
        back = [who for who, until in held.items() if until <= at]
        if back:
            del held[back[0]]
            steps.append(Step(at, "unhold", back[0]))
        elif at >= seconds:
            who = on.pop(0)
            held.pop(who, None)
            steps.append(Step(at, "hangup", who))
        elif on and rng.random() < REJOIN_CHANCE:
            who = rng.choice(on)
            held.pop(who, None)
            steps.append(Step(at, "hangup", who))
            at += rng.uniform(*REJOIN_GAP_S)
            steps.append(Step(at, "call", who))
        # Short-circuits without `holds`, so --plain draws exactly the numbers the schedule drew before holds.
        elif holds and len(held) < len(on) and rng.random() < HOLD_CHANCE:
            who = rng.choice([label for label in on if label not in held])
            held[who] = at + rng.uniform(*HOLD_S)
            steps.append(Step(at, "hold", who))
        elif rng.random() < JOIN_CHANCE[len(on)]:
            who = rng.choice([label for label in labels if label not in on])
            on.append(who)
            steps.append(Step(at, "call", who))
        else:
            who = on.pop(rng.randrange(len(on)))
            held.pop(who, None)
            steps.append(Step(at, "hangup", who))
        at += rng.uniform(*GAP_S)
    return steps


def room_number(n: int) -> str:
    """The dialed number of room `n`."""
    return f"+1555020{n:04d}"


def scenario(seed: int, conferences: int, seconds: float, holds: bool = True) -> Dict[str, List[Step]]:
    """Every room's schedule, keyed by the room's number; the same for the same arguments."""
    return {room_number(n): room_schedule(random.Random(f"{seed}/{n}"), n, seconds, holds) for n in range(conferences)}


def host_numbers(conferences: int) -> set:
    """Every room's host's number (a host of one room is a host of any, as with HOST_NUMBERS)."""
    return {caller_number(host_label(n)) for n in range(conferences)}


def live_spans(steps: List[Step]) -> List[tuple]:
    """(start, end) of each stretch with someone on the line, held or not: the room's conference is live."""
    spans, count, since = [], 0, 0.0
    for step in steps:
        if step.kind == "call":
            count += 1
            since = step.at if count == 1 else since
        elif step.kind == "hangup":
            count -= 1
            if count == 0:
                spans.append((since, step.at))
    return spans


def secure_schedule(rng: random.Random, steps: List[Step], max_s: float) -> List[Step]:
    """An agent's secure pauses in one room: each asked once the room has been live a while and stays live a
    moment more, some resumed before `max_s`, the others left to time out; never two at once."""
    out: List[Step] = []
    at = rng.uniform(*SECURE_GAP_S)
    for start, end in live_spans(steps):
        at = max(at, start + SECURE_SETTLED_S)
        while at + 0.5 < end:
            out.append(Step(at, "secure-pause", AGENT))
            held = rng.uniform(0.5, max_s - 0.3) if rng.random() < SECURE_RESUMED else None
            if held is not None:
                out.append(Step(at + held, "secure-resume", AGENT))
            at += (held if held is not None else max_s) + rng.uniform(*SECURE_GAP_S)
    return out


def secure_pauses(seed: int, schedule: Dict[str, List[Step]], max_s: float) -> Dict[str, List[Step]]:
    """Every room's secure pauses, from a stream of their own (the joins and holds stay as they were drawn)."""
    return {
        room: secure_schedule(random.Random(f"{seed}/{room}/secure"), steps, max_s) for room, steps in schedule.items()
    }
