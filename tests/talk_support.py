"""Talk-time helpers for tests: an independent oracle of the figures, counted millisecond by millisecond."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from conversations.talk_time import MONOLOGUE_PAUSE_MS


def mask(spans: Sequence[Tuple[int, int]], length: int) -> np.ndarray:
    """One boolean per ms of [0, length): inside any of the spans."""
    out = np.zeros(length, dtype=bool)
    for start, end in spans:
        out[max(0, start) : max(0, end)] = True
    return out


def runs(flags: np.ndarray) -> List[Tuple[int, int]]:
    """The (start, end) ms of each run of True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flags.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def oracle(recorded: Sequence[Tuple[int, int]], channels: Sequence[Sequence[Tuple[int, int]]]) -> Tuple[list, float]:
    """Per channel (seconds, share, longest monologue, overlap) and the silence, from ms masks."""
    length = max([end for _, end in recorded] + [end for spans in channels for _, end in spans] + [1])
    rec = mask(recorded, length)
    talking = [mask(spans, length) & rec for spans in channels]
    everyone = sum(int(t.sum()) for t in talking)
    out = []
    for index, own in enumerate(talking):
        others = np.zeros(length, dtype=bool)
        for n, other in enumerate(talking):
            if n != index:
                others |= other
        out.append(
            (
                own.sum() / 1000,
                round(own.sum() / everyone, 3) if everyone else None,
                _monologue(own & ~others, others, rec) / 1000,
                (own & others).sum() / 1000,
            )
        )
    anyone = np.zeros(length, dtype=bool)
    for own in talking:
        anyone |= own
    return out, (rec & ~anyone).sum() / 1000


def _monologue(solo: np.ndarray, others: np.ndarray, rec: np.ndarray) -> int:
    """The longest stretch of solo talk, through its own pauses up to MONOLOGUE_PAUSE_MS of recorded silence."""
    best, begin, last = 0, None, None
    for start, end in runs(solo):
        if begin is None or start - last > MONOLOGUE_PAUSE_MS or others[last:start].any() or not rec[last:start].all():
            begin = start
        best, last = max(best, end - begin), end
    return best


def figures_of(channel_talk: dict) -> Tuple[Optional[float], ...]:
    """A record channel's talk as the oracle's tuple."""
    return (
        channel_talk["seconds"],
        channel_talk["share"],
        channel_talk["longest_monologue_s"],
        channel_talk["overlap_s"],
    )
