"""Crossing to command: how long after a threshold-crossing callback arrives its pause or resume leaves Quorum.

Many conferences are live at once (default 400), each with a host and a guest; every `--period-s`
(jittered) the guest leaves or rejoins, so the recording must pause or resume. Callbacks are paced, as
SignalWire sends them, not fired as fast as possible (`wrk_bench.py` measures throughput). A SignalWire
fake answers REST commands after ~80 ms. Quorum times each crossing itself
(`quorum_crossing_to_command_seconds` in /metrics); the p50 and p99 reported are the histogram bucket
bounds they fall under (target: p99 <= 15 ms), with the callbacks' own answer times as the client saw them.

    python bench/crossing_bench.py [--conferences 400] [--period-s 4] [--duration 20] \\
        [--variants memory,redis-1,redis-2]
"""

from __future__ import annotations

import argparse
import heapq
import os
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate
from pathlib import Path

import requests
from twilio.request_validator import RequestValidator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from webhook_bench import PROJECT, ROOT, SIGNING_KEY, PUBLIC_URL, LatencyFake, RedisServer, bench_sid  # noqa: E402
from wrk_bench import TOKEN, start  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

SENDERS = 32  # client threads posting callbacks


class Room:
    """One conference's callbacks, built as SignalWire would send them."""

    def __init__(self, n: int):
        self.room, self.conf, self.rec = f"+1556{n:07d}", bench_sid(f"x-conf-{n}"), bench_sid(f"x-rec-{n}")
        self.host, self.guest, self.cycle = bench_sid(f"x-{n}-host"), bench_sid(f"x-{n}-guest-0"), 0

    def status(self, event: str, call: str | None = None) -> tuple:
        """A conference-status callback stamped now."""
        form = {
            "AccountSid": PROJECT,
            "ConferenceSid": self.conf,
            "FriendlyName": self.room,
            "StatusCallbackEvent": event,
            "Timestamp": formatdate(time.time(), usegmt=True),
        }
        return "/voice/conference-status", form | ({"CallSid": call} if call else {})

    def opening(self) -> list:
        """Two joins, the start, the recording's in-progress."""
        return [
            self.status("participant-join", self.host),
            self.status("participant-join", self.guest),
            self.status("conference-start"),
            (
                f"/voice/recording-status?room=%2B{self.room[1:]}",
                {"AccountSid": PROJECT, "RecordingSid": self.rec, "RecordingStatus": "in-progress"},
            ),
        ]

    def crossing(self) -> tuple:
        """The guest leaves, or a new guest call joins: either way the threshold is crossed."""
        if self.cycle % 2 == 0:
            event = self.status("participant-leave", self.guest)
        else:
            self.guest = bench_sid(f"x-{self.room}-guest-{self.cycle}")
            event = self.status("participant-join", self.guest)
        self.cycle += 1
        return event


def post(session_local, base: str, validator, path: str, form: dict) -> float:
    """POST one signed callback; returns its answer time."""
    session = getattr(session_local, "s", None) or setattr(session_local, "s", requests.Session()) or session_local.s
    started = time.perf_counter()
    answer = session.post(
        base + path,
        data=form,
        timeout=30,
        headers={"X-SignalWire-Signature": validator.compute_signature(PUBLIC_URL + path, form)},
    )
    if answer.status_code >= 300:
        raise RuntimeError(f"{path}: HTTP {answer.status_code}")
    return time.perf_counter() - started


def drive(base: str, conferences: int, period_s: float, duration_s: float, seed: int) -> list:
    """Open every conference, then send each one's crossings on schedule; returns callback answer times."""
    rng, validator, local = random.Random(seed), RequestValidator(SIGNING_KEY), threading.local()
    rooms = [Room(n) for n in range(conferences)]
    with ThreadPoolExecutor(SENDERS) as pool:
        for room in rooms:
            for path, form in room.opening():
                post(local, base, validator, path, form)
        time.sleep(1.1)  # the next event of a call lands in a later second, as SignalWire's Timestamps need
        t0 = time.monotonic()
        due = [(t0 + rng.uniform(0, period_s), n) for n in range(conferences)]
        heapq.heapify(due)
        futures = []
        while due and due[0][0] < t0 + duration_s:
            at, n = heapq.heappop(due)
            time.sleep(max(0.0, at - time.monotonic()))
            path, form = rooms[n].crossing()
            futures.append(pool.submit(post, local, base, validator, path, form))
            # No call's next event in the same second as its last (SignalWire's one-second Timestamps).
            heapq.heappush(due, (at + max(1.1, rng.uniform(0.5, 1.5) * period_s), n))
        return [f.result() for f in futures]


def histogram(base: str) -> list:
    """(bucket bound, cumulative count) of the crossing histogram."""
    body = requests.get(base + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).text
    return sorted(
        (float(s.labels["le"]), s.value)
        for f in text_string_to_metric_families(body)
        for s in f.samples
        if s.name == "quorum_crossing_to_command_seconds_bucket"
    )


def quantile_bound(buckets: list, q: float) -> float:
    """The smallest bucket bound (ms) holding at least `q` of the observations."""
    total = buckets[-1][1]
    return next(round(1000 * bound, 1) for bound, count in buckets if count >= q * total)


def main() -> int:
    """Run each variant and print the table; exit 1 if any p99 is over 15 ms."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="memory,redis-1,redis-2")
    parser.add_argument("--conferences", type=int, default=400)
    parser.add_argument("--period-s", type=float, default=4.0, help="mean seconds between one room's crossings")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--latency-ms", type=float, default=80)
    args = parser.parse_args()
    fake = LatencyFake(args.latency_ms / 1000)
    threading.Thread(target=fake.serve_forever, daemon=True).start()
    workdir = ROOT / "bench" / "results"
    workdir.mkdir(parents=True, exist_ok=True)
    redis_server = RedisServer(workdir) if "redis" in args.variants else None
    rows = []
    try:
        for variant in args.variants.split(","):
            server = start(variant, fake, redis_server)
            try:
                answers = sorted(drive(server.url, args.conferences, args.period_s, args.duration, seed=1))
                time.sleep(1.0)  # the last commands leave
                buckets = histogram(server.url)
            finally:
                server.stop()
            rows.append(
                (
                    variant,
                    len(answers),
                    int(buckets[-1][1]),
                    quantile_bound(buckets, 0.5),
                    quantile_bound(buckets, 0.99),
                    round(1000 * answers[len(answers) // 2], 1),
                    round(1000 * answers[int(0.99 * len(answers))], 1),
                )
            )
    finally:
        fake.shutdown()
        if redis_server:
            redis_server.stop()
    print(
        f"{args.conferences} live conferences, one crossing each every ~{args.period_s:g} s for {args.duration:g} s; "
        f"REST fake {args.latency_ms:.0f} ms; {os.cpu_count()} cores shared; load {os.getloadavg()[0]:.2f}"
    )
    print(
        "| variant | crossings sent | commands timed | crossing p50 ms (≤) | crossing p99 ms (≤) | "
        "callback p50 ms | callback p99 ms |\n|---|---|---|---|---|---|---|"
    )
    for row in rows:
        print("| " + " | ".join(str(v) for v in row) + " |")
    return 1 if any(row[4] > 15 for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
