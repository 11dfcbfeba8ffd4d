"""A thousand live conferences on the emulator, served by gunicorn workers sharing Redis: what each one costs.

Every conference gets a host and a guest (so it records), then stays live while the reconciler runs.
Reported: worker memory and Redis memory per live conference, the REST reads per second the
reconciler makes (against RECONCILE_MAX_READS_PER_S), and how long /live.json and the live page take
(p50/p95 of 20 requests each) with every conference on them.

    python bench/scale_bench.py [--conferences 1000] [--workers 2] [--watch-s 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import redis
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from webhook_bench import ROOT, RedisServer, Server  # noqa: E402
from emulator.server import Emulator  # noqa: E402

TOKEN = "bench-scale-token"
READS_PER_S = 5
RECONCILE_S = 5


def rss_mb(parent: int) -> float:
    """Resident memory of the gunicorn workers (children of `parent`), in MB."""
    total = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except OSError:
            continue
        if int(fields.get("PPid", "0").strip()) == parent:
            total += int(fields["VmRSS"].split()[0])
    return total / 1024


def timed(session: requests.Session, url: str, times: int = 20) -> tuple:
    """p50 and p95 (ms) of GET `url`."""
    took = []
    for _ in range(times):
        started = time.perf_counter()
        answer = session.get(url, timeout=30)
        took.append(1000 * (time.perf_counter() - started))
        answer.raise_for_status()
    took.sort()
    return round(statistics.median(took), 1), round(took[int(0.95 * len(took)) - 1], 1)


def live_recording(session: requests.Session, url: str) -> int:
    """How many live conferences the dashboard shows as recording."""
    return sum(c["state"] == "recording" for c in session.get(url + "/live.json", timeout=30).json()["conferences"])


def main() -> int:
    """Fill, measure, empty; print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conferences", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--watch-s", type=float, default=30.0, help="seconds of reconciler rounds to count reads over")
    args = parser.parse_args()
    workdir = ROOT / "bench" / "results"
    workdir.mkdir(parents=True, exist_ok=True)
    redis_server, emulator = RedisServer(workdir), Emulator().start()
    env = {
        "SIGNALWIRE_PROJECT_ID": emulator.project,
        "SIGNALWIRE_API_TOKEN": emulator.token,
        "SIGNALWIRE_SPACE_URL": "emulator.invalid",
        "SIGNALWIRE_SIGNING_KEY": emulator.signing_key,
        "SIGNALWIRE_API_URL": emulator.url,
        "REDIS_URL": redis_server.url,
        "API_TOKEN": TOKEN,
        "RECONCILE_INTERVAL_S": str(RECONCILE_S),
        "RECONCILE_MAX_READS_PER_S": str(READS_PER_S),
        "RECORDINGS_DIR": tempfile.mkdtemp(prefix="quorum-scale-"),
        "END_GRACE_S": "1",
        "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(prefix="quorum-prom-"),
    }
    server = Server("app:create_app()", args.workers, env, ROOT)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    client = redis.Redis.from_url(redis_server.url)
    try:
        time.sleep(1.0)
        rss0, redis0 = rss_mb(server._process.pid), client.info("memory")["used_memory"]
        calls, started = [], time.perf_counter()
        for n in range(args.conferences):
            number = f"+1557{n:07d}"
            emulator.add_number(number, server.url + "/voice/inbound", server.url + "/voice/call-status")
            calls += [
                emulator.dial(number, f"+1558{n:07d}", f"host-{n}").sid,
                emulator.dial(number, f"+1559{n:07d}", f"guest-{n}").sid,
            ]
        emulator.settle(300)
        deadline = time.monotonic() + 120
        while live_recording(session, server.url) < args.conferences and time.monotonic() < deadline:
            time.sleep(1.0)
        filled_s = time.perf_counter() - started
        recording = live_recording(session, server.url)
        rss1, redis1 = rss_mb(server._process.pid), client.info("memory")["used_memory"]
        live_json, live_page = timed(session, server.url + "/live.json"), timed(session, server.url + "/")
        gets0 = emulator.rest_log.counts()["GET"]
        time.sleep(args.watch_s)
        reads_per_s = (emulator.rest_log.counts()["GET"] - gets0) / args.watch_s
        for sid in calls:
            emulator.hangup(sid)
        emulator.settle(300)
    finally:
        server.stop()
        emulator.stop()
        redis_server.stop()
    n = args.conferences
    print(
        f"{n} live conferences ({recording} recording after {filled_s:.0f} s), {args.workers} gunicorn workers on "
        f"one Redis, emulator in the same 2 cores; reconciler every {RECONCILE_S} s, {READS_PER_S} reads/s budget"
    )
    print("| figure | value |\n|---|---|")
    print(f"| worker memory per live conference | {1024 * (rss1 - rss0) / n:.1f} KB ({rss0:.0f} → {rss1:.0f} MB) |")
    print(f"| Redis memory per live conference | {(redis1 - redis0) / n / 1024:.1f} KB |")
    print(f"| REST reads per second over {args.watch_s:g} s | {reads_per_s:.2f} (budget {READS_PER_S}) |")
    print(f"| GET /live.json p50 / p95 | {live_json[0]} / {live_json[1]} ms |")
    print(f"| GET / (live page) p50 / p95 | {live_page[0]} / {live_page[1]} ms |")
    return 0 if recording == n and reads_per_s <= READS_PER_S else 1


if __name__ == "__main__":
    sys.exit(main())
