"""Fault drill: many concurrent conferences against Quorum while the emulator misbehaves.

Bounded for CI (one round, seconds). Set QUORUM_SOAK_S=300 to repeat rounds for that
long, reusing the rooms so every round also exercises "same room, new ConferenceSid".
Quorum's reconciler (REST reads) runs under the faults every QUORUM_DRILL_RECONCILE_S
seconds (default 3; 0 turns it off).

The cluster drill runs the same rounds, as waves, against two gunicorn workers on one Redis
behind a balancer, and while conferences are live SIGKILLs a worker (its master starts another)
and, separately, FLUSHDBs Quorum's Redis database. In CI it is one wave of CLUSTER_ROOMS
conferences, killed then flushed; QUORUM_SOAK_CONFERENCES=500 runs waves of 50 conferences at
once until at least that many have run, the kill a third of the way in and the flush two thirds.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List, Tuple

from cluster_support import is_conference_list, quorum_cluster
from e2e_support import Stack, quorum_stack
from emulator.faults import Faults
from emulator.scenarios import Player, hang_up_everyone, random_session

CONFERENCES = 30
STEPS = 8
MINIMUM = 2
SOAK_S = float(os.environ.get("QUORUM_SOAK_S", "0"))
RECONCILE_S = float(os.environ.get("QUORUM_DRILL_RECONCILE_S", "3"))
DRILL_FAULTS = Faults(
    seed=20240607,
    callback_duplicate=0.2,
    callback_reorder=0.15,
    callback_reorder_hold_s=0.3,
    callback_delay_s=0.1,
    rest_latency_s=0.01,
    rest_jitter_s=0.1,
    rest_error=0.08,
    rest_timeout=0.02,
    rest_hang_s=1.2,
)
ROOMS = [f"+1555020{i:04d}" for i in range(CONFERENCES)]
SOAK_CONFERENCES = int(os.environ.get("QUORUM_SOAK_CONFERENCES", "0"))
# Two cores run the emulator, the balancer, two workers and Redis: 50 live conferences at once in the soak.
CLUSTER_ROOMS = 50 if SOAK_CONFERENCES else 6
CLUSTER_RECONCILE_S = 1.0
KILL_AFTER_S = 0.4  # into a wave's sessions: callbacks and commands are in flight
# Sessions last about 1.4 s: by then some rooms have gone quiet (only the reconciler can find them again)
# while others still send callbacks (rebuilt from callbacks of calls Quorum no longer knows).
FLUSH_AFTER_S = 1.2
# The balancer's timeout: a request in flight on a killed worker was sent at most this long before the kill
# and answered at most this long after it (voice webhook attempts carry their answer's time, not their sending's).
KILL_WINDOW_S = 10.0
# The default read budget (RECONCILE_MAX_READS_PER_S) covers a read of every live room each second, as the
# 1 s reconcile interval asks (2 GETs a conference; 50 rooms in the soak).
CLUSTER_SETTINGS = {"MIN_PARTICIPANTS": str(MINIMUM), "END_GRACE_S": "0.5", "SIGNALWIRE_TIMEOUT_S": "1.0"}


Fault = Tuple[float, Callable[[], None]]  # (seconds into the sessions, what to break then)


def _play_all(sessions: Dict[str, List[tuple]], players: Dict[str, Player], faults: List[Fault] = ()) -> None:
    """Play each room's steps on its own thread, all at once; `faults` run alongside, one after another."""
    with ThreadPoolExecutor(max_workers=len(sessions) + 1) as pool:
        futures = [pool.submit(players[room].play, steps) for room, steps in sessions.items()]
        futures.append(pool.submit(_inject, faults, time.monotonic()))
        for future in futures:
            future.result()


def _inject(faults: List[Fault], began: float) -> None:
    """Run each fault at its time (or once the one before it is over)."""
    for offset, fault in faults:
        time.sleep(max(0.0, began + offset - time.monotonic()))
        fault()


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
        if conf.recording_sids and (
            known is None or known.wanted != ("recording" if wanted == "in-progress" else "paused")
        ):
            problems.append(f"{conf.name}: Quorum wants {known and known.wanted} with {len(conf.present)} present")
    return problems


def _leftovers(stack: Stack) -> List[str]:
    """Anything still live or unfinished after every call hung up, on either side."""
    problems = [f"Quorum still holds room {room}" for room in stack.store.rooms()]
    for conf in stack.emulator.conferences():
        if conf.status != "completed":
            problems.append(f"emulator conference {conf.name} still {conf.status}")
        for sid in conf.recording_sids:
            rec = stack.emulator.recording(sid)
            frames = stack.emulator.audio(sid).shape[0]
            if not rec.finished or abs(frames / 8000 - rec.duration()) > 0.01:
                problems.append(f"recording {sid}: {rec.status}, {frames} frames for {rec.duration():.3f} s")
    return problems


def _failed_calls(stack: Stack, excused: frozenset = frozenset()) -> List[str]:
    """Calls that never reached their conference (their voice webhook failed), but for `excused` CallSids."""
    answers = {
        a.callback.lane: a.status or a.error for a in stack.emulator.callback_attempts() if a.callback.event == "voice"
    }
    return [
        f"call {sid} to {call.to} failed: voice webhook answered {answers.get(sid)}"
        for sid, call in list(stack.emulator.sim.calls.items())
        if call.status == "failed" and sid not in excused
    ]


def _round(
    stack: Stack, rng: random.Random, number: int, rooms: List[str] = ROOMS, faults: List[Fault] = ()
) -> List[str]:
    """One round: random sessions in every room (and `faults` amid them), check at rest, everyone hangs up,
    check clean."""
    sessions = {room: random_session(rng, room, STEPS, prefix=f"{number}.{i}.") for i, room in enumerate(rooms)}
    players = {room: Player(stack.emulator) for room in rooms}
    _play_all(sessions, players, faults)
    violations = [] if stack.settle(30) else ["did not settle after the sessions"]
    violations += _policy_violations(stack)
    _play_all({room: hang_up_everyone(steps, 0.05) for room, steps in sessions.items()}, players)
    violations += [] if stack.settle(30) else ["did not settle after the hangups"]
    # A check at SignalWire that failed (REST faults) puts a conversation's archiving off, each time as long again as
    # it has waited since its conference ended: three failures in a row take it past half a minute.
    stack.wait_for_empty_store(60)
    return violations + _leftovers(stack)


def test_fault_drill_keeps_the_policy_and_leaves_nothing_behind(capsys):
    rng = random.Random(DRILL_FAULTS.seed)
    started = time.time()
    with quorum_stack(
        faults=DRILL_FAULTS,
        min_participants=MINIMUM,
        end_grace_s=0.5,
        api_timeout_s=1.0,
        reconcile_interval_s=RECONCILE_S,
        numbers=ROOMS,
    ) as stack:
        violations, rounds = [], 0
        while rounds == 0 or time.time() - started < SOAK_S:
            rounds += 1
            violations += _round(stack, rng, rounds)
        violations += _failed_calls(stack)
        attempts = stack.emulator.callback_attempts()
        server_5xx = [a for a in attempts if a.status is not None and a.status >= 500]
        failed_transport = [a for a in attempts if a.number > 0 and a.status is None]
        errors = stack.log.errors()
        figures = {
            "rounds": rounds,
            **_figures(stack, started),
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


def _figures(stack, started: float) -> dict:
    """What a drill did: conferences, calls, callbacks, faults, REST requests, warnings, time."""
    attempts = stack.emulator.callback_attempts()
    answered = Counter(a.status for a in attempts if a.number > 0)
    events = len({id(a.callback) for a in attempts if a.callback.event != "voice"})
    rest = stack.emulator.rest_log.calls
    reads = [call for call in rest if call.method == "GET"]
    return {
        "conferences": len(stack.emulator.conferences()),
        "calls": len(stack.emulator.sim.calls),
        "callback events": events,
        "callback attempts": sum(answered.values()),
        "answers by status": dict(answered),
        "faults injected": dict(stack.emulator.injector.injected),
        "REST requests": dict(stack.emulator.rest_log.counts()),
        "REST reads": {
            "total": len(reads),
            "conference lists": sum(is_conference_list(c.path) for c in reads),
            "per callback event": round(len(reads) / max(1, events), 3),
        },
        "Quorum warnings": stack.log.warnings(),
        "seconds": round(time.time() - started, 1),
    }


def _lost_to_kills(attempts: list, kills: List[dict]) -> list:
    """Attempts (voice webhooks included) not answered 2xx around a SIGKILL (see `_stray_502s`)."""
    return [
        a
        for a in attempts
        if a.number > 0 and not a.ok and any(abs(a.at - kill["at"]) <= KILL_WINDOW_S for kill in kills)
    ]


def _stray_502s(failures: list, kills: List[dict]) -> list:
    """The balancer's 502s that are not from a killed worker while it was down: each one is a violation."""
    return [
        (at, backend, error)
        for at, backend, error in failures
        if not any(backend == kill["backend"] and kill["at"] - 1 <= at <= kill["back_at"] for kill in kills)
    ]


def _unanswered_events(attempts: list) -> list:
    """Callback events (not voice webhooks) that no attempt got a 2xx for."""
    answered = {id(a.callback) for a in attempts if a.ok}
    return list(
        {
            id(a.callback): a.callback
            for a in attempts
            if a.callback.event != "voice" and id(a.callback) not in answered
        }.values()
    )


def test_fault_drill_on_two_gunicorn_workers_survives_a_sigkill_and_a_redis_flush(tmp_path, redis_url, capsys):
    rng = random.Random(DRILL_FAULTS.seed)
    rooms = [f"+1555030{i:04d}" for i in range(CLUSTER_ROOMS)]
    waves = max(1, math.ceil(SOAK_CONFERENCES / CLUSTER_ROOMS))
    kill_wave, flush_wave = max(1, waves // 3), max(1, 2 * waves // 3)
    started, flushes = time.time(), []
    with quorum_cluster(
        redis_url, tmp_path, DRILL_FAULTS, rooms, reconcile_s=CLUSTER_RECONCILE_S, **CLUSTER_SETTINGS
    ) as cluster:

        def flush() -> None:
            live = sum(c.status != "completed" for c in cluster.emulator.conferences())
            flushes.append({"keys": cluster.flush(), "live conferences": live})

        faults = {wave: [] for wave in range(1, waves + 1)}
        faults[kill_wave].append((KILL_AFTER_S, cluster.kill_worker))
        faults[flush_wave].append((FLUSH_AFTER_S, flush))
        violations = []
        for wave in range(1, waves + 1):
            violations += [f"wave {wave}: {v}" for v in _round(cluster, rng, wave, rooms, faults[wave])]
        attempts = cluster.emulator.callback_attempts()
        lost = _lost_to_kills(attempts, cluster.kills)
        unexplained = [a for a in attempts if a.number > 0 and not a.ok and a not in lost]
        unanswered = _unanswered_events(attempts)
        stray = _stray_502s(cluster.balancer.failures, cluster.kills)
        # A caller whose voice webhook died with the worker heard an error: SIGKILL's cost, not Quorum's logic.
        dropped_calls = frozenset(a.callback.lane for a in lost if a.callback.event == "voice")
        violations += _failed_calls(cluster, dropped_calls)
        errors = cluster.log.errors()
        figures = {
            "waves": waves,
            "conferences at once": len(rooms),
            **_figures(cluster, started),
            "balancer spread": sorted(cluster.balancer.sent.values()),
            "SIGKILL": [
                {"wave": kill_wave, "pid": k["pid"], "replaced after s": round(k["back_at"] - k["at"], 1)}
                for k in cluster.kills
            ],
            "FLUSHDB": [{"wave": flush_wave, **f} for f in flushes],
            "adopted by the reconciler": sum("action=adopt" in line for line in cluster.log.lines()),
            "attempts lost to the SIGKILL": len(lost),
            "calls lost to the SIGKILL": len(dropped_calls),
            "balancer 502s (when, backend, error)": [
                (round(at - started, 1), backend.rsplit(":", 1)[-1], error)
                for at, backend, error in cluster.balancer.failures
            ],
            "violations": len(violations) + len(unexplained) + len(unanswered) + len(stray) + len(errors),
        }
    with capsys.disabled():
        print("\ncluster fault drill:", *(f"  {k}: {v}" for k, v in figures.items()), sep="\n")
    assert figures["conferences"] >= SOAK_CONFERENCES
    assert not violations, violations[:10]
    assert not unexplained and not unanswered and not stray, (unexplained[:5], unanswered[:5], stray[:5])
    assert not errors, errors[:10]
    assert cluster.kills and flushes and flushes[0]["live conferences"] > 0
    assert figures["violations"] == 0
