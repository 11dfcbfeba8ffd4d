"""Fault drill: many concurrent conferences against Quorum while the emulator misbehaves.

Bounded for CI (one round, seconds). Set QUORUM_SOAK_S=300 to repeat rounds for that
long, reusing the rooms so every round also exercises "same room, new ConferenceSid".
Quorum's reconciler (REST reads) runs under the faults every QUORUM_DRILL_RECONCILE_S
seconds (default 3; 0 turns it off).
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List

from e2e_support import Stack, quorum_stack
from emulator.faults import Faults
from emulator.scenarios import Player, hang_up_everyone, random_session

CONFERENCES = 30
STEPS = 8
MINIMUM = 2
SOAK_S = float(os.environ.get("QUORUM_SOAK_S", "0"))
RECONCILE_S = float(os.environ.get("QUORUM_DRILL_RECONCILE_S", "3"))
DRILL_FAULTS = Faults(seed=20240607, callback_duplicate=0.2, callback_reorder=0.15, callback_reorder_hold_s=0.3,
                      callback_delay_s=0.1, rest_latency_s=0.01, rest_jitter_s=0.1, rest_error=0.08,
                      rest_timeout=0.02, rest_hang_s=1.2)
ROOMS = [f"+1555020{i:04d}" for i in range(CONFERENCES)]


def _play_all(sessions: Dict[str, List[tuple]], players: Dict[str, Player]) -> None:
    """Play each room's steps on its own thread, all at once."""
    with ThreadPoolExecutor(max_workers=len(sessions)) as pool:
        for future in [pool.submit(players[room].play, steps) for room, steps in sessions.items()]:
            future.result()


def _policy_violations(stack: Stack) -> List[str]:
    """Live recordings whose state (on the emulator, and as Quorum wants it) differs from the policy."""
    problems = []
    for conf in stack.emulator.conferences():
        if conf.status != "in-progress":
            continue
        wanted = "in-progress" if len(conf.present) >= MINIMUM else "paused"
        for sid in conf.recording_sids:
            status = stack.emulator.recording(sid).status
            if status != wanted:
                problems.append(f"{conf.name}: recording {sid} is {status} with {len(conf.present)} on the line")
        known = stack.store.get(conf.name)
        if conf.recording_sids and (known is None or known.wanted != ("recording" if wanted == "in-progress"
                                                                      else "paused")):
            problems.append(f"{conf.name}: Quorum wants {known and known.wanted} with {len(conf.present)} present")
    return problems


def _leftovers(stack: Stack) -> List[str]:
    """Anything still live or unfinished after every call hung up, on either side."""
    problems = [f"Quorum still holds room {room}" for room in stack.store.rooms()]
    problems += [f"call failed in {e.room}: {e.detail}" for e in stack.emulator.sim.events if e.kind == "call-failed"]
    for conf in stack.emulator.conferences():
        if conf.status != "completed":
            problems.append(f"emulator conference {conf.name} still {conf.status}")
        for sid in conf.recording_sids:
            rec = stack.emulator.recording(sid)
            frames = stack.emulator.audio(sid).shape[0]
            if not rec.finished or abs(frames / 8000 - rec.duration()) > 0.01:
                problems.append(f"recording {sid}: {rec.status}, {frames} frames for {rec.duration():.3f} s")
    return problems


def _round(stack: Stack, rng: random.Random, number: int) -> List[str]:
    """One round: random sessions in every room, check at rest, everyone hangs up, check clean."""
    sessions = {room: random_session(rng, room, STEPS, prefix=f"{number}.{i}.") for i, room in enumerate(ROOMS)}
    players = {room: Player(stack.emulator) for room in ROOMS}
    _play_all(sessions, players)
    violations = [] if stack.settle(30) else ["did not settle after the sessions"]
    violations += _policy_violations(stack)
    _play_all({room: hang_up_everyone(steps, 0.05) for room, steps in sessions.items()}, players)
    violations += [] if stack.settle(30) else ["did not settle after the hangups"]
    stack.wait_for_empty_store(5)
    return violations + _leftovers(stack)


def test_fault_drill_keeps_the_policy_and_leaves_nothing_behind(capsys):
    rng = random.Random(DRILL_FAULTS.seed)
    started = time.time()
    with quorum_stack(faults=DRILL_FAULTS, min_participants=MINIMUM, end_grace_s=0.5, api_timeout_s=1.0,
                      reconcile_interval_s=RECONCILE_S, numbers=ROOMS) as stack:
        violations, rounds = [], 0
        while rounds == 0 or time.time() - started < SOAK_S:
            rounds += 1
            violations += _round(stack, rng, rounds)
        attempts = stack.emulator.callback_attempts()
        answered = Counter(a.status for a in attempts if a.number > 0)
        server_5xx = [a for a in attempts if a.status is not None and a.status >= 500]
        failed_transport = [a for a in attempts if a.number > 0 and a.status is None]
        errors = stack.log.errors()
        events = len({id(a.callback) for a in attempts if a.callback.event != "voice"})
        figures = {
            "rounds": rounds, "conferences": len(stack.emulator.conferences()),
            "calls": len(stack.emulator.sim.calls), "callback events": events,
            "callback attempts": sum(answered.values()), "answers by status": dict(answered),
            "faults injected": dict(stack.emulator.injector.injected),
            "REST requests": dict(stack.emulator.rest_log.counts()),
            "Quorum warnings": stack.log.warnings(), "seconds": round(time.time() - started, 1),
            "violations": len(violations) + len(server_5xx) + len(failed_transport) + len(errors),
        }
    with capsys.disabled():
        print("\nfault drill:", *(f"  {k}: {v}" for k, v in figures.items()), sep="\n")
    assert not violations, violations[:10]
    assert not server_5xx and not failed_transport, "Quorum failed valid callbacks"
    assert not errors, errors[:10]
    assert stack.emulator.injector.injected["callback_duplicate"] > 0
    assert stack.emulator.injector.injected["rest_error"] > 0
    assert figures["violations"] == 0
