"""Which live conferences to read, and when: reads find lost callbacks, so they go where one would break the rule."""

from __future__ import annotations

import math

from recording_state import RECORDING, Conference


def at_threshold(conf: Conference) -> bool:
    """Whether one lost participant event would leave the recording on the wrong side of the rule: recording
    with exactly the minimum counted (or only one host among them, where the room has hosts), so a lost leave
    or hold would keep it recording below a quorum; or paused one short of a quorum (or with no host), so a
    lost join or unhold would leave a quorum unrecorded."""
    counted = conf.counted()
    minimum = conf.rule.min_participants
    if conf.wanted != RECORDING:
        return len(counted) >= minimum - 1
    hosts = sum(1 for sid in counted if conf.participants[sid].host)
    return len(counted) == minimum or (bool(conf.rule.host_numbers) and hosts == 1)


def next_read_at(conf: Conference, repair_s: float, routine_s: float) -> float:
    """When a live conference's next routine read is due (our clock): `repair_s` after its last read (or its
    opening) at the threshold, `routine_s` otherwise; never once it has ended."""
    if conf.ended or conf.conference_sid is None:
        return math.inf
    return max(conf.read_at, conf.opened_at) + (repair_s if at_threshold(conf) else routine_s)
