"""Churn benchmark: how long each implementation's recording disagrees with the quorum rule.

Concurrent conferences (one room per dialed number) are played through the bundled SignalWire
emulator: in each room a caller joins or leaves every 0.2-1.2 s (seeded), rooms drop to one or
no caller and climb to three or four, and now and then someone leaves and rejoins within a
second. One of each room's five callers is its host (in HOST_NUMBERS: the rule needs the host),
and now and then someone on the line goes on hold for 0.4-3 s. An agent asks for a secure pause
(PCI) every 3-15 s of a live conference, through the API, and resumes most within
`--secure-max-s` (3 s); the others time out. `--plain` plays no holds, hosts or secure pauses (its
joins and leaves are exactly those played before they existed), `--no-secure` no secure pauses.
The emulator answers REST calls after 80 ms. The same scenario is played against:

    quorum   this repo's `python app.py` (or `--quorum-dir`'s), RECONCILE_INTERVAL_S=1
    seed     bench/seed_app.py, SignalWire's guide: list participants on every join/leave

Ground truth is the emulator's own record (each call's joined_at/left_at, its holds from the event
log, each recording's spans) and the times the agent's requests were sent. Wrong seconds: the
recording disagrees with the rule (record while MIN_PARTICIPANTS or more are on the line and not on
hold, the host among them, and no secure pause holds: from its request to its resume, its timeout
or the room's emptying) beyond the grace after each change of the rule or start of a conference,
split into recorded below quorum, recorded in a secure pause, and paused (or not recorded at all)
at quorum. The seed script knows nothing of holds, hosts or secure pauses (its API answers 404): it
is judged by the same rule, which is what its users would get. A lone caller before anyone joins has
no recording on SignalWire, which is right. REST reads and writes come from the emulator's request
log, per conference callback delivered (the seed script does not subscribe to hold events).

    python bench/churn_bench.py [--quick] [--seconds 250] [--conferences 16] [--grace-ms 400]
                                [--implementations quorum,seed] [--quorum-dir DIR] [--quorum-env NAME=VALUE]
                                [--plain] [--no-secure] [--secure-max-s 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emulator.faults import Faults  # noqa: E402
from emulator.server import Emulator  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from churn_measure import Stay, on_line_seconds, presence, seconds_of, secure_windows, wrong_stretches  # noqa: E402
from churn_scenario import SECURE_KINDS, Step, caller_number, host_numbers, scenario, secure_pauses  # noqa: E402

MIN_PARTICIPANTS = 2
CONFERENCE_EVENTS = (
    "conference-start",
    "conference-end",
    "participant-join",
    "participant-leave",
    "participant-hold",
    "participant-unhold",
)
RESULTS = ROOT / "bench" / "results"
STARTUP_TIMEOUT_S = 30.0
SETTLE_S = 3.0  # after the last hang-up: late commands land, then REST counting stops
BENCH_TOKEN = "churn-bench-api-token"  # Quorum's API_TOKEN: the agent's secure pauses use it


# Playing the scenario


def play(emulator: Emulator, schedule: Dict[str, List[Step]], agent=lambda room, kind: None) -> Dict[str, list]:
    """Play every room on its own thread against absolute times (secure-pause steps through `agent(room, kind)`);
    returns each room's calls."""
    calls: Dict[str, list] = {room: [] for room in schedule}
    start = time.time() + 0.5

    def run(room: str) -> None:
        latest = {}
        for step in schedule[room]:
            time.sleep(max(0.0, start + step.at - time.time()))
            if step.kind in SECURE_KINDS:
                agent(room, step.kind)
            elif step.kind == "call":
                latest[step.label] = emulator.dial(room, caller_number(step.label), step.label)
                calls[room].append(latest[step.label])
            elif step.kind == "hangup":
                emulator.hangup(latest[step.label].sid)
            else:
                emulator.hold(latest[step.label].sid, step.kind == "hold")

    threads = [threading.Thread(target=run, args=(room,), name=f"churn-{room}") for room in schedule]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return calls


# Reading the emulator


def recorded_spans(emulator: Emulator, conference_sids: set, end: float) -> List[Tuple[float, float]]:
    """Every `recording` span of these conferences' recordings; an open one runs to `end`."""
    spans = []
    for conf in emulator.conferences():
        if conf.sid in conference_sids:
            for sid in conf.recording_sids:
                spans += [
                    (s.start, s.end if s.end is not None else end)
                    for s in emulator.recording(sid).timeline.spans
                    if s.state == "recording"
                ]
    return spans


def holds_of(emulator: Emulator, room: str) -> Dict[str, List[Tuple[float, float]]]:
    """Each label's holds in the room, from the emulator's event log; a hang-up ends a hold."""
    holds: Dict[str, List[Tuple[float, float]]] = {}
    since: Dict[str, float] = {}
    for event in emulator.sim.events:
        if event.room == room and event.kind == "held":
            since[event.label] = event.at
        elif event.room == room and event.kind in ("unheld", "left") and event.label in since:
            holds.setdefault(event.label, []).append((since.pop(event.label), event.at))
    return holds


def stays(emulator: Emulator, room: str, calls: list, hosts: set) -> List[Stay]:
    """Each call that joined the room, with its holds and whether it dialed in from a host number."""
    holds = holds_of(emulator, room)
    return [
        Stay(
            c.joined_at,
            c.left_at,
            tuple(
                h for h in holds.get(c.label, ()) if c.joined_at <= h[0] and (c.left_at is None or h[0] <= c.left_at)
            ),
            c.from_ in hosts,
        )
        for c in calls
        if c.joined_at is not None
    ]


def measure_room(
    emulator: Emulator,
    room: str,
    calls: list,
    end: float,
    grace_s: float,
    hosts: set,
    asked: tuple = (),
    secure_max_s: float = 0.0,
) -> dict:
    """One room's line-up under the rule, recording and wrong stretches, from the emulator's own times and the
    (time, kind, status) of the agent's secure-pause requests."""
    line = stays(emulator, room, calls, hosts)
    changes = presence(line, end, hosts=bool(hosts))
    windows = secure_windows([(at, kind) for at, kind, _ in asked], presence(line, end, hold_counts=True), secure_max_s)
    sids = {c.conference_sid for c in calls if c.joined_at is not None}
    spans = recorded_spans(emulator, sids, end)
    # A host joining a guest on hold starts the conference, and record-from-start with it, though the rule
    # says not to record: the earliest anyone can pause is the recording's callback, so the grace applies.
    starts = [conf.started_at for conf in emulator.conferences() if conf.sid in sids and conf.started_at]
    return {
        "changes": changes,
        "spans": spans,
        "on_line_s": on_line_seconds(presence(line, end, hold_counts=True)),
        "secure_s": sum(b - a for a, b in windows),
        "wrong": wrong_stretches(changes, spans, MIN_PARTICIPANTS, grace_s, starts, windows),
    }


def rest_counts(emulator: Emulator, until: float) -> Tuple[int, int]:
    """(GETs, POSTs) the emulator's REST API answered up to `until`."""
    calls = [c for c in emulator.rest_log.calls if c.at <= until]
    return sum(c.method == "GET" for c in calls), sum(c.method == "POST" for c in calls)


def callbacks_delivered(emulator: Emulator) -> Tuple[int, int]:
    """(conference callbacks answered 2xx, conference callback attempts answered otherwise)."""
    attempts = [a for a in emulator.callback_attempts() if a.callback.event in CONFERENCE_EVENTS and a.number > 0]
    return sum(a.ok for a in attempts), sum(not a.ok for a in attempts)


# Implementations under test


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def quorum_env(emulator: Emulator, port: int, archive: str) -> dict:
    """Every setting Quorum reads, so a developer's `.env` cannot leak in; defaults except the reconciler."""
    return {
        "SIGNALWIRE_PROJECT_ID": emulator.project,
        "SIGNALWIRE_API_TOKEN": emulator.token,
        "SIGNALWIRE_SPACE_URL": "emulator.invalid",
        "SIGNALWIRE_SIGNING_KEY": emulator.signing_key,
        "SIGNALWIRE_API_URL": emulator.url,
        "SIGNALWIRE_PHONE_NUMBER": "",
        "PUBLIC_URL": f"http://127.0.0.1:{port}",
        "PORT": str(port),
        "USE_NGROK": "false",
        "NGROK_AUTHTOKEN": "",
        "LOG_LEVEL": "INFO",
        "MIN_PARTICIPANTS": str(MIN_PARTICIPANTS),
        "PAUSE_BEHAVIOR": "skip",
        "CONFERENCE_ROOM": "per-number",
        "VALIDATE_SIGNATURES": "true",
        "RECORDINGS_DIR": archive,
        "PARTICIPANT_RECORDING": "off",
        "REDIS_URL": "",
        "EVENT_CALLBACK_URL": "",
        "API_TOKEN": "",
        "RECONCILE_INTERVAL_S": "1",
        "HOST_NUMBERS": "",
        "HOLD_COUNTS_AS_PRESENT": "false",
        "RECORDING_ANNOUNCEMENT": "",
        "ROOM_RULES_FILE": "",
    }


def seed_env(emulator: Emulator, port: int, archive: str) -> dict:
    """The guide's script needs only the credentials, its public URL and the port."""
    return {
        "SIGNALWIRE_PROJECT_ID": emulator.project,
        "SIGNALWIRE_API_TOKEN": emulator.token,
        "SIGNALWIRE_SPACE_URL": "emulator.invalid",
        "SIGNALWIRE_API_URL": emulator.url,
        "PUBLIC_URL": f"http://127.0.0.1:{port}",
        "PORT": str(port),
    }


def implementation(name: str, args):
    """(command, working directory, env builder, extra settings) of an implementation."""
    if name == "quorum":
        extra = {
            "HOST_NUMBERS": ",".join(sorted(rule_hosts(args))),
            "API_TOKEN": BENCH_TOKEN,
            "SECURE_PAUSE_MAX_S": str(args.secure_max_s),
            **dict(setting.split("=", 1) for setting in args.quorum_env),
        }
        return [sys.executable, "app.py"], Path(args.quorum_dir).resolve(), quorum_env, extra
    if name == "seed":
        return [sys.executable, str(ROOT / "bench" / "seed_app.py")], ROOT / "bench", seed_env, {}
    raise SystemExit(f"unknown implementation {name!r} (quorum, seed)")


def rule_hosts(args) -> set:
    """The host numbers the rule requires one of: every room's host, none with --plain."""
    return set() if args.plain else host_numbers(args.conferences)


@contextlib.contextmanager
def served(name: str, args, emulator: Emulator, log_path: Path) -> Iterator[str]:
    """Run an implementation as a subprocess on a free port; yields its base URL; always stopped."""
    command, cwd, make_env, extra = implementation(name, args)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="churn-archive-") as archive, open(log_path, "w") as log:
        env = {**os.environ, **make_env(emulator, port, archive), **extra, "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_up(url, process)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_until_up(url: str, process: subprocess.Popen) -> None:
    """Until the server answers HTTP at all (any status), or fail if it exits or never does."""
    deadline = time.time() + STARTUP_TIMEOUT_S
    while time.time() < deadline and process.poll() is None:
        try:
            requests.get(url + "/", timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"{process.args} did not start (exit code {process.poll()}); see its log")


# One run


def run(name: str, schedule: Dict[str, List[Step]], secure: Dict[str, List[Step]], args) -> dict:
    """Play the scenario (and the agents' secure pauses) against one implementation; its figures and wrong
    stretches."""
    log_path = RESULTS / f"churn-{name}.log"
    asked: Dict[str, list] = {room: [] for room in schedule}
    emulator, calls, end = play_against(name, schedule, args, log_path, secure, asked)
    return summarize(name, emulator, calls, end, args, log_path, asked)


def agent_at(url: str, asked: Dict[str, list]):
    """The agents: `agent(room, kind)` POSTs the secure pause or resume and keeps (sent at, kind, status)."""

    def agent(room: str, kind: str) -> None:
        sent = time.time()
        try:
            status = requests.post(
                f"{url}/api/conferences/{room}/{kind}",
                data={"reason": "churn bench"},
                headers={"Authorization": f"Bearer {BENCH_TOKEN}"},
                timeout=5,
            ).status_code
        except requests.RequestException:
            status = 0
        asked[room].append((sent, kind, status))

    return agent


def play_against(
    name: str,
    schedule: Dict[str, List[Step]],
    args,
    log_path: Path,
    secure: Optional[Dict[str, List[Step]]] = None,
    asked: Optional[Dict[str, list]] = None,
):
    """(the stopped emulator, each room's calls, time of the last hang-up) after one run on a fresh emulator;
    `secure`'s steps are played too, what they were answered kept in `asked`."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    faults = Faults(seed=args.seed, rest_latency_s=args.latency_ms / 1000)
    secure = secure or {}
    merged = {room: sorted(steps + secure.get(room, []), key=lambda step: step.at) for room, steps in schedule.items()}
    with Emulator(faults=faults, seed=args.seed) as emulator:
        with served(name, args, emulator, log_path) as url:
            for room in schedule:
                emulator.add_number(room, f"{url}/voice/inbound", f"{url}/voice/call-status")
            calls = play(emulator, merged, agent_at(url, asked if asked is not None else {r: [] for r in schedule}))
            end = time.time()
            emulator.settle(SETTLE_S)
            time.sleep(max(0.0, end + SETTLE_S - time.time()))
    return emulator, calls, end


def summarize(
    name: str,
    emulator: Emulator,
    calls: Dict[str, list],
    end: float,
    args,
    log_path: Path,
    asked: Optional[Dict[str, list]] = None,
) -> dict:
    """The row of figures for one implementation, plus each room's wrong stretches."""
    hosts, asked = rule_hosts(args), asked or {}
    rooms = {
        room: measure_room(
            emulator,
            room,
            room_calls,
            end,
            args.grace_ms / 1000,
            hosts,
            tuple(asked.get(room, ())),
            getattr(args, "secure_max_s", 0.0),
        )
        for room, room_calls in calls.items()
    }
    pauses = [status for requests_of in asked.values() for _, kind, status in requests_of if kind == "secure-pause"]
    wrong = [w for r in rooms.values() for w in r["wrong"]]
    reads, writes = rest_counts(emulator, end + SETTLE_S)
    delivered, refused = callbacks_delivered(emulator)
    per_room = {room: round(seconds_of(r["wrong"]), 2) for room, r in rooms.items()}
    origin = rooms_start(rooms)
    return {
        "implementation": name,
        "wrong_s": round(seconds_of(wrong), 2),
        "recorded_below_quorum_s": round(seconds_of(wrong, "below"), 2),
        "recorded_in_secure_pause_s": round(seconds_of(wrong, "secure"), 2),
        "paused_at_quorum_s": round(seconds_of(wrong, "paused"), 2),
        "worst_conference_s": max(per_room.values(), default=0.0),
        "conference_s": round(sum(r["on_line_s"] for r in rooms.values()), 1),
        "secure_pause_s": round(sum(r["secure_s"] for r in rooms.values()), 1),
        "secure_pauses_asked": len(pauses),
        "secure_pauses_refused": sum(status != 200 for status in pauses),
        "rest_reads_per_event": round(reads / max(1, delivered), 3),
        "rest_writes_per_event": round(writes / max(1, delivered), 3),
        "callbacks_delivered": delivered,
        "callbacks_not_2xx": refused,
        "log": str(log_path),
        "origin_epoch": origin,  # stretches are in seconds from here: add it to find them in the log
        "wrong_by_conference_s": per_room,
        "wrong_stretches": [
            dict(asdict(w), room=room, start=round(w.start - origin, 3), end=round(w.end - origin, 3))
            for room, r in rooms.items()
            for w in r["wrong"]
        ],
    }


def rooms_start(rooms: dict) -> float:
    """The first join of the run: stretches are reported in seconds from it."""
    return min((r["changes"][0][0] for r in rooms.values() if r["changes"]), default=0.0)


# Output


COLUMNS = (
    ("implementation", "implementation"),
    ("wrong s", "wrong_s"),
    ("recorded below quorum s", "recorded_below_quorum_s"),
    ("recorded in secure pause s", "recorded_in_secure_pause_s"),
    ("paused at quorum s", "paused_at_quorum_s"),
    ("worst conference s", "worst_conference_s"),
    ("conference s", "conference_s"),
    ("secure pause s", "secure_pause_s"),
    ("REST reads/event", "rest_reads_per_event"),
    ("REST writes/event", "rest_writes_per_event"),
    ("callbacks delivered", "callbacks_delivered"),
)


def print_report(params: dict, rows: List[dict]) -> None:
    """The scenario, one table row per implementation, then the longest wrong stretches of each."""
    print(", ".join(f"{k}={v}" for k, v in params.items()))
    print("| " + " | ".join(title for title, _ in COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for row in rows:
        print("| " + " | ".join(str(row[key]) for _, key in COLUMNS) + " |")
    for row in rows:
        longest = sorted(row["wrong_stretches"], key=lambda w: w["start"] - w["end"])[:8]
        print(
            f"\n{row['implementation']}: {len(row['wrong_stretches'])} wrong stretches, "
            f"{row['callbacks_not_2xx']} callback attempts not answered 2xx, "
            f"{row['secure_pauses_refused']} of {row['secure_pauses_asked']} secure pauses not answered 200; "
            f"log {row['log']}; longest "
            f"(seconds from the first join, {time.strftime('%H:%M:%S', time.gmtime(row['origin_epoch']))} UTC):"
        )
        for w in longest:
            print(
                f"  {w['room']}  {w['start']:8.2f}-{w['end']:8.2f}s  {w['end'] - w['start']:5.2f}s  {w['kind']:<6} "
                f"({w['on_line']} counted{'' if w['hosted'] else ', no host'})"
            )


def main() -> int:
    """Play the scenario against each implementation in turn and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conferences", type=int, default=16, help="concurrent rooms")
    parser.add_argument("--seconds", type=float, default=250, help="churn time of each room")
    parser.add_argument("--quick", action="store_true", help="30 s of churn instead")
    parser.add_argument("--grace-ms", type=float, default=400, help="allowed lag after each change of the rule")
    parser.add_argument("--latency-ms", type=float, default=80, help="the emulator's REST answer time")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--implementations", default="quorum,seed")
    parser.add_argument("--quorum-dir", default=str(ROOT), help="a Quorum checkout to run (default: this one)")
    parser.add_argument(
        "--quorum-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a further Quorum setting (repeatable), e.g. END_GRACE_S=2",
    )
    parser.add_argument(
        "--plain", action="store_true", help="no holds, hosts or secure pauses: the scenario before they were"
    )
    parser.add_argument("--no-secure", action="store_true", help="no secure pauses")
    parser.add_argument(
        "--secure-max-s",
        type=float,
        default=3.0,
        help="Quorum's SECURE_PAUSE_MAX_S: secure pauses not resumed end after this (at least 1)",
    )
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    if args.quick:
        args.seconds = 30
    if args.secure_max_s < 1:
        parser.error("--secure-max-s must be at least 1")
    schedule = scenario(args.seed, args.conferences, args.seconds, holds=not args.plain)
    secure = {} if args.plain or args.no_secure else secure_pauses(args.seed, schedule, args.secure_max_s)
    kinds = [step.kind for steps in schedule.values() for step in steps]
    params = {
        "conferences": args.conferences,
        "seconds": args.seconds,
        "seed": args.seed,
        "joins_and_leaves": sum(k in ("call", "hangup") for k in kinds),
        "holds": kinds.count("hold"),
        "secure_pauses": sum(step.kind == "secure-pause" for steps in secure.values() for step in steps),
        "secure_pause_max_s": args.secure_max_s,
        "hosts": "none" if args.plain else "one per room, required",
        "min_participants": MIN_PARTICIPANTS,
        "grace_ms": args.grace_ms,
        "rest_latency_ms": args.latency_ms,
        "reconcile_interval_s": 1,
        "quorum_dir": str(Path(args.quorum_dir).resolve()),
        "quorum_env": " ".join(args.quorum_env) or "-",
    }
    rows = [run(name, schedule, secure, args) for name in args.implementations.split(",")]
    print_report(params, rows)
    if args.json:
        Path(args.json).write_text(json.dumps({"scenario": params, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
