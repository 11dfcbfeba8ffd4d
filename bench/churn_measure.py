"""The churn benchmark's measurement, pure: times in seconds on one clock.

A room's line-up is a list of changes (time, callers counted, a host among them): callers on hold
count only when holds count, and in a room without hosts the host flag is always True. The rule
records while at least `minimum` are counted and a host is among them, and no secure pause holds
(an agent's, from its request to its resume, its timeout or the room's emptying).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

Change = Tuple[float, int, bool]  # (time, callers counted, a host among them)
Window = Tuple[float, float]  # a secure pause held from, to


@dataclass(frozen=True)
class Stay:
    """One call in its conference: when it joined and left (None: still on), its holds, whether a host."""

    joined: float
    left: Optional[float]
    holds: Tuple[Tuple[float, Optional[float]], ...] = ()  # (start, end); end None: held until it left
    host: bool = False


@dataclass(frozen=True)
class Wrong:
    """A stretch of time when the recording disagreed with the rule beyond the grace."""

    start: float
    end: float
    kind: str  # below (recorded while the rule is not met) | paused (paused or not recording while it is) | secure
    # (recorded during a secure pause)
    on_line: int  # callers counted
    hosted: bool = True  # a host was among them


def counted_spans(stay: Stay, end: float, hold_counts: bool) -> List[Tuple[float, float]]:
    """When a call counts toward the quorum: its time on the line, less its holds unless they count."""
    left = stay.left if stay.left is not None else end
    spans, start = [], stay.joined
    for held, back in [] if hold_counts else sorted(stay.holds):
        spans.append((start, held))
        start = back if back is not None else left
    spans.append((start, left))
    return [(a, b) for a, b in spans if a < b]


def presence(stays: Sequence[Stay], end: float, hold_counts: bool = False, hosts: bool = False) -> List[Change]:
    """The changes after each join, leave, hold or unhold; calls still on the line leave at `end`."""
    deltas = sorted(
        (at, delta, delta if stay.host else 0)
        for stay in stays
        for a, b in counted_spans(stay, end, hold_counts)
        for at, delta in ((a, 1), (b, -1))
    )
    out, count, hosted = [], 0, 0
    for at, delta, host_delta in deltas:
        count, hosted = count + delta, hosted + host_delta
        out.append((at, count, hosted > 0 or not hosts))
    return out


def meets(change: Change, minimum: int) -> bool:
    """Whether the quorum rule records at this change: enough counted, a host among them."""
    return change[1] >= minimum and change[2]


def held(windows: Sequence[Window], at: float) -> bool:
    """Whether a secure pause holds at `at`."""
    return any(start <= at < end for start, end in windows)


def secure_windows(asked: Sequence[Tuple[float, str]], line: Sequence[Change], max_s: float) -> List[Window]:
    """When secure pauses held, from the (time, secure-pause | secure-resume) requests and the room's line (holds
    counted): from a pause asked while someone is on the line to its resume, `max_s` after it, or the room's
    emptying (its conference ends), whichever comes first; a pause asked while one holds changes nothing."""

    def count_at(at: float) -> int:
        return next((c[1] for c in reversed(line) if c[0] <= at), 0)

    def limit(start: float) -> float:
        emptied = next((c[0] for c in line if c[0] > start and c[1] == 0), float("inf"))
        return min(start + max_s, emptied)

    windows: List[Window] = []
    since: Optional[float] = None
    for at, kind in sorted(asked):
        if since is not None and at >= limit(since):
            windows.append((since, limit(since)))
            since = None
        if kind == "secure-pause" and since is None and count_at(at) > 0:
            since = at
        elif kind == "secure-resume" and since is not None:
            windows.append((since, at))
            since = None
    return windows + ([(since, limit(since))] if since is not None else [])


def records(
    changes: Sequence[Change], times: Sequence[float], windows: Sequence[Window], minimum: int, at: float
) -> bool:
    """Whether the rule records at `at`: the quorum rule met, and no secure pause holding."""
    index = bisect.bisect_right(times, at) - 1
    return index >= 0 and meets(changes[index], minimum) and not held(windows, at)


def policy_changes(changes: Sequence[Change], minimum: int, windows: Sequence[Window] = ()) -> List[float]:
    """When the rule's answer (record or not) flips; it starts as 'not recording'."""
    times = [change[0] for change in changes]
    flips, wanted = [], False
    for at in sorted(set(times) | {t for window in windows for t in window}):
        if records(changes, times, windows, minimum, at) != wanted:
            wanted = not wanted
            flips.append(at)
    return flips


def wrong_stretches(
    changes: Sequence[Change],
    recorded: Sequence[Tuple[float, float]],
    minimum: int,
    grace_s: float,
    starts: Sequence[float] = (),
    windows: Sequence[Window] = (),
) -> List[Wrong]:
    """Where `recorded` spans disagree with the rule (secure pauses `windows` included), more than `grace_s`
    after its last change or the last of the conference `starts` (record-from-start records from there even
    when the rule says not to)."""
    if not changes:
        return []
    times = [change[0] for change in changes]
    flips = sorted(policy_changes(changes, minimum, windows) + list(starts))
    edges = sorted(
        set(
            times
            + [t for span in recorded for t in span]
            + [t for w in windows for t in w]
            + [f + grace_s for f in flips]
        )
    )
    edges = [t for t in edges if times[0] <= t <= times[-1]]
    out: List[Wrong] = []
    for a, b in zip(edges, edges[1:]):
        mid = (a + b) / 2
        change = changes[bisect.bisect_right(times, mid) - 1]
        last_flip = flips[bisect.bisect_right(flips, mid) - 1] if flips and flips[0] <= mid else None
        if last_flip is not None and mid - last_flip < grace_s:
            continue
        is_recorded = any(s <= mid < e for s, e in recorded)
        if is_recorded == records(changes, times, windows, minimum, mid):
            continue
        kind = ("secure" if held(windows, mid) else "below") if is_recorded else "paused"
        wrong = Wrong(a, b, kind, change[1], change[2])
        if (
            out
            and out[-1].end == a
            and (out[-1].kind, out[-1].on_line, out[-1].hosted) == (wrong.kind, wrong.on_line, wrong.hosted)
        ):
            out[-1] = Wrong(out[-1].start, b, wrong.kind, wrong.on_line, wrong.hosted)
        else:
            out.append(wrong)
    return out


def seconds_of(stretches: Sequence[Wrong], kind: Optional[str] = None) -> float:
    """Total length of the stretches (of one kind)."""
    return sum(w.end - w.start for w in stretches if kind is None or w.kind == kind)


def on_line_seconds(changes: Sequence[Change]) -> float:
    """Time with at least one caller counted."""
    return sum(b[0] - a[0] for a, b in zip(changes, changes[1:]) if a[1] > 0)
