"""Time to repair a lost callback: a thousand live two-party conferences on the emulator, Quorum with its defaults.

Every conference gets a host and a guest (so it records, at the threshold). Then, for a sample of them, an
event that crosses the threshold is lost on purpose (the emulator drops that one callback, and sends no
call-status callbacks: only a REST read can find it):
    leave   the guest hangs up, its participant-leave lost: recording below quorum until repaired (paused)
    hold    the guest is put on hold, its participant-hold lost: the same
    join    in conferences paused one short (their guest left, delivered), a new guest joins, its
            participant-join lost: a quorum unrecorded until repaired (resumed)
Repair time is from the action at the emulator until the recording's status there is the right one again;
the lost events of every kind are interleaved at random, --spacing-s apart.
Also reported: the CPU one conference read costs Quorum's client (two GETs through the SDK and
gateway.SignalWireHttp, thread CPU), REST reads per second, and CPU of Quorum's process(es), of the bench
process (the emulator, in-process, and this driver) and of Redis, in % of one core.

The emulator answers every REST request after --rest-latency-s (SignalWire's ~100 ms a GET). The variants:
memory (one gunicorn worker, the memory store) and redis (--workers gunicorn workers on one Redis).

    python bench/repair_bench.py [--conferences 1000] [--sample 100] [--variants memory,redis] [--workers 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from webhook_bench import ROOT, RedisServer, Server  # noqa: E402
from config import Config  # noqa: E402
from emulator.faults import Faults  # noqa: E402
from emulator.server import Emulator  # noqa: E402
from quorum.gateway import SignalWireGateway, build_client  # noqa: E402

TOKEN = "bench-repair-token"
KINDS = (
    ("leave", "participant-leave", "paused"),
    ("hold", "participant-hold", "paused"),
    ("join", "participant-join", "in-progress"),
)
GIVE_UP_S = 60.0  # a repair not seen by then counts as never


def live_recording(session: requests.Session, url: str) -> int:
    """How many live conferences the dashboard shows as recording."""
    return sum(c["state"] == "recording" for c in session.get(url + "/live.json", timeout=60).json()["conferences"])


def percentile(values: list, share: float) -> float:
    """The `share` percentile (nearest rank) of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(share * len(ordered))) - 1))]


def read_cpu_ms(emulator: Emulator, conference_sid: str, reads: int = 500) -> float:
    """Median thread CPU (ms) of one conference read through the SDK and SignalWireHttp, as Quorum sends it."""
    config = Config(
        signalwire_project_id=emulator.project,
        signalwire_api_token=emulator.token,
        signalwire_space_url="emulator.invalid",
        signalwire_api_url=emulator.url,
        validate_signatures=False,
        public_url="http://bench.invalid",
    )
    gateway = SignalWireGateway(build_client(config))
    took = []
    for _ in range(reads):
        started = time.thread_time()
        gateway.read_conference(conference_sid)
        took.append(time.thread_time() - started)
    return 1000 * statistics.median(took[reads // 10 :])


class Meter:
    """CPU of Quorum, of this process (the emulator) and of Redis, and the emulator's REST log, over a window."""

    def __init__(self, emulator: Emulator, server: Server, redis_client):
        self._emulator, self._server, self._redis = emulator, server, redis_client
        self._start = self._sample()

    def _sample(self) -> tuple:
        """(wall, Quorum CPU s, own CPU s, Redis CPU s, REST log length)."""
        own = resource.getrusage(resource.RUSAGE_SELF)
        info = self._redis.info("cpu") if self._redis else {}
        return (
            time.monotonic(),
            self._server.cpu_seconds(),
            own.ru_utime + own.ru_stime,
            info.get("used_cpu_user", 0.0) + info.get("used_cpu_sys", 0.0),
            len(self._emulator.rest_log.calls),
        )

    def figures(self) -> dict:
        """What the window used: CPU in % of one core, GETs and conference reads per second."""
        end = self._sample()
        wall = end[0] - self._start[0]
        calls = self._emulator.rest_log.calls[self._start[4] : end[4]]
        gets = sum(call.method == "GET" for call in calls)
        reads = sum(call.path.endswith("/Participants.json") for call in calls)
        return {
            "seconds": wall,
            "quorum_cpu_pct": 100 * (end[1] - self._start[1]) / wall,
            "emulator_cpu_pct": 100 * (end[2] - self._start[2]) / wall,
            "redis_cpu_pct": 100 * (end[3] - self._start[3]) / wall,
            "gets_per_s": gets / wall,
            "conference_reads_per_s": reads / wall,
            "quorum_cpu_ms_per_read": 1000 * (end[1] - self._start[1]) / max(1, reads),
        }


def lose(emulator: Emulator, base: Faults, event: str, action) -> None:
    """Run `action` with `event` callbacks dropped (the emulator decides a callback's fate as it sends it)."""
    emulator.set_faults(dataclasses.replace(base, callback_drop_events=frozenset({event})))
    try:
        action()
    finally:
        emulator.set_faults(base)


def time_repairs(emulator: Emulator, base: Faults, samples: dict, calls: dict, spacing_s: float, seed: int) -> dict:
    """Lose one event in each sampled room (kinds interleaved at random, `spacing_s` apart, so no event falls
    at a chosen phase of the read schedule); seconds until each recording is repaired, by kind."""
    pending, took, done = {}, {kind: [] for kind, _, _ in KINDS}, threading.Event()
    lost = [(kind, event, repaired, room) for kind, event, repaired in KINDS for room in samples[kind]]
    random.Random(seed).shuffle(lost)

    def watch() -> None:
        while not (done.is_set() and not pending):
            now = time.monotonic()
            for room, (kind, repaired, started, recording) in list(pending.items()):
                if recording.status == repaired or now - started > GIVE_UP_S:
                    took[kind].append(now - started if recording.status == repaired else float("inf"))
                    del pending[room]
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    for kind, event, repaired, room in lost:
        (conference,) = [c for c in emulator.conferences(room) if c.status != "completed"]
        recording = emulator.recording(conference.recording_sids[0])
        started = time.monotonic()
        if kind == "leave":
            lose(emulator, base, event, lambda: emulator.hangup(calls[room][1]))
        elif kind == "hold":
            lose(emulator, base, event, lambda: emulator.hold(calls[room][1]))
        else:
            lose(emulator, base, event, lambda: emulator.dial(room, "+1556" + room[-7:], f"late-{room}"))
        pending[room] = (kind, repaired, started, recording)
        time.sleep(spacing_s)
    done.set()
    watcher.join(GIVE_UP_S + 5)
    return took


def run_variant(name: str, args) -> dict:
    """Fill, measure the steady state, lose events and time their repair; returns the figures."""
    workdir = ROOT / "bench" / "results"
    workdir.mkdir(parents=True, exist_ok=True)
    redis_server = RedisServer(workdir) if name == "redis" else None
    emulator = Emulator().start()
    env = {
        "SIGNALWIRE_PROJECT_ID": emulator.project,
        "SIGNALWIRE_API_TOKEN": emulator.token,
        "SIGNALWIRE_SPACE_URL": "emulator.invalid",
        "SIGNALWIRE_SIGNING_KEY": emulator.signing_key,
        "SIGNALWIRE_API_URL": emulator.url,
        "API_TOKEN": TOKEN,
        "END_GRACE_S": "1",
        "RECORDINGS_DIR": tempfile.mkdtemp(prefix="quorum-repair-"),
    }
    if redis_server:
        env.update(REDIS_URL=redis_server.url, PROMETHEUS_MULTIPROC_DIR=tempfile.mkdtemp(prefix="quorum-prom-"))
    server = Server("app:create_app()", args.workers if redis_server else 1, env, ROOT)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    redis_client = redis.Redis.from_url(redis_server.url) if redis_server else None
    figures = {"variant": name, "workers": args.workers if redis_server else 1}
    try:
        rooms, calls = [], {}
        started = time.monotonic()
        for n in range(args.conferences):
            room = f"+1557{n:07d}"
            emulator.add_number(room, server.url + "/voice/inbound")
            calls[room] = (
                emulator.dial(room, f"+1558{n:07d}", f"host-{n}").sid,
                emulator.dial(room, f"+1559{n:07d}", f"guest-{n}").sid,
            )
            rooms.append(room)
        emulator.settle(300)
        deadline = time.monotonic() + 120
        while live_recording(session, server.url) < args.conferences and time.monotonic() < deadline:
            time.sleep(1.0)
        figures["filled_s"] = time.monotonic() - started
        figures["recording"] = live_recording(session, server.url)
        (first,) = emulator.conferences(rooms[0])
        figures["read_cpu_ms"] = read_cpu_ms(emulator, first.sid)
        base = Faults(rest_latency_s=args.rest_latency_s)
        emulator.set_faults(base)
        samples = {kind: rooms[i * args.sample : (i + 1) * args.sample] for i, (kind, _, _) in enumerate(KINDS)}
        for room in samples["join"]:
            emulator.hangup(calls[room][1])  # delivered: paused one short
        emulator.settle(60)
        time.sleep(args.warm_s)  # the schedule settles: reads spread over each conference's interval
        meter = Meter(emulator, server, redis_client)
        time.sleep(args.watch_s)
        figures["steady"] = meter.figures()
        meter = Meter(emulator, server, redis_client)
        figures.update(time_repairs(emulator, base, samples, calls, args.spacing_s, args.conferences))
        figures["repairing"] = meter.figures()
        emulator.set_faults(Faults())
        for room in rooms:
            for call in calls[room]:
                emulator.hangup(call)
        emulator.settle(300)
    finally:
        server.stop()
        emulator.stop()
        if redis_server:
            redis_server.stop()
    return figures


def seconds(value: float) -> str:
    """A repair time for the table."""
    return "never" if value == float("inf") else f"{value:.2f}"


def report(runs: list, args) -> None:
    """Print the tables."""
    print(
        f"{args.conferences} live two-party conferences, {args.sample} lost events of each kind, REST answers "
        f"after {args.rest_latency_s * 1000:.0f} ms, Quorum's defaults; the emulator and this driver share the "
        f"machine's {os.cpu_count()} cores with Quorum"
    )
    print("\n| variant | lost event | repaired | p50 s | p99 s | max s |\n|---|---|---|---|---|---|")
    for run in runs:
        for kind, _, _ in KINDS:
            took = run[kind]
            fine = [t for t in took if t != float("inf")]
            print(
                f"| {run['variant']} | {kind} | {len(fine)}/{len(took)} | {seconds(percentile(took, 0.5))} | "
                f"{seconds(percentile(took, 0.99))} | {seconds(max(took))} |"
            )
    print(
        "\n| variant | window | conference reads/s | GETs/s | Quorum CPU % | Quorum CPU ms/read | emulator+driver "
        "CPU % | Redis CPU % |\n|---|---|---|---|---|---|---|---|"
    )
    for run in runs:
        for window in ("steady", "repairing"):
            f = run[window]
            print(
                f"| {run['variant']} ({run['workers']} worker{'s' if run['workers'] > 1 else ''}) | {window} "
                f"{f['seconds']:.0f} s | {f['conference_reads_per_s']:.1f} | {f['gets_per_s']:.1f} | "
                f"{f['quorum_cpu_pct']:.0f} | {f['quorum_cpu_ms_per_read']:.2f} | {f['emulator_cpu_pct']:.0f} | "
                f"{f['redis_cpu_pct']:.0f} |"
            )
    for run in runs:
        print(
            f"\n{run['variant']}: filled in {run['filled_s']:.0f} s ({run['recording']} recording); one conference "
            f"read costs Quorum's client {run['read_cpu_ms']:.2f} ms CPU (2 GETs, median, no REST latency)"
        )


def main() -> int:
    """Run each variant; print the tables; fail if any repair was never seen."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conferences", type=int, default=1000)
    parser.add_argument("--sample", type=int, default=100, help="conferences that lose an event, per kind")
    parser.add_argument("--variants", default="memory,redis")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers of the redis variant")
    parser.add_argument("--rest-latency-s", type=float, default=0.1)
    parser.add_argument("--warm-s", type=float, default=20.0, help="seconds of reads before measuring")
    parser.add_argument("--watch-s", type=float, default=30.0, help="seconds of the steady window")
    parser.add_argument("--spacing-s", type=float, default=0.1, help="seconds between two lost events")
    args = parser.parse_args()
    if 3 * args.sample > args.conferences:
        parser.error("--sample: each kind needs conferences of its own")
    runs = [run_variant(name, args) for name in args.variants.split(",")]
    report(runs, args)
    return 0 if all(t != float("inf") for run in runs for kind, _, _ in KINDS for t in run[kind]) else 1


if __name__ == "__main__":
    sys.exit(main())
