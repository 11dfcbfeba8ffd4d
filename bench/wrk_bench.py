"""Webhook throughput driven by wrk (a compiled load generator), as a ratio to the bare route served the same way.

On 2 cores a Python client is itself the bottleneck, so wrk replays pre-signed callbacks from a file
(`wrk_replay.lua`): conferences 400 at a time, each with start, two joins, the recording's in-progress and
leave/join churn that crosses the threshold, interleaved as concurrent conferences send them. A SignalWire
fake answers the REST commands after ~80 ms. Per variant, in one run:

    bare         the bare Flask route (bench/bare_app.py) under gunicorn, as Quorum is served
    memory       Quorum under gunicorn, one worker, in-memory store
    bare-dev     the bare route under Werkzeug's threaded server (`python app.py` serves Quorum so)
    memory-dev   Quorum via `python app.py`
    redis-N      Quorum under gunicorn, N workers sharing one redis-server

Printed: requests/s and its ratio to the bare route served the same way, server CPU per request (and
Redis's), wrk's p50/p99, non-2xx answers (must be 0), and for Quorum the crossing-to-command p99 from
/metrics (the bucket bound it falls under).

    python bench/wrk_bench.py [--duration 10] [--variants bare,memory,memory-nofile,bare-dev,memory-dev,redis-1,redis-2]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlencode

import requests
from prometheus_client.parser import text_string_to_metric_families
from twilio.request_validator import RequestValidator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from webhook_bench import (
    PUBLIC_URL,
    ROOT,
    SIGNING_KEY,
    LatencyFake,
    RedisServer,
    Server,  # noqa: E402
    conference_events,
    free_port,
    quorum_env,
)

WRK_THREADS = 2
BATCH = 400  # conferences sending callbacks at the same time
TOKEN = "bench-metrics-token"


def write_calls(path: Path, conferences: int, churn: int) -> int:
    """The pre-signed callbacks, conferences BATCH at a time with their events interleaved; returns the count."""
    validator, lines = RequestValidator(SIGNING_KEY), []
    for first in range(0, conferences, BATCH):
        batch = [conference_events(n, churn) for n in range(first, min(first + BATCH, conferences))]
        for step in range(max(map(len, batch))):
            for events in batch:
                if step < len(events):
                    route, query, form = events[step]
                    target = route + (f"?{query}" if query else "")
                    lines.append(
                        f"{target}\t{validator.compute_signature(PUBLIC_URL + target, form)}\t{urlencode(form)}"
                    )
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


class DevServer(Server):
    """`python app.py` (or the bare app on Werkzeug's threaded server): one process, no gunicorn."""

    def __init__(self, bare: bool, env: dict):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        code = f"from bench.bare_app import create_app; create_app().run(port={self.port}, threaded=True)"
        argv = [sys.executable, "-c", code] if bare else [sys.executable, "app.py"]
        full_env = {**os.environ, **env, "PORT": str(self.port), "LOG_LEVEL": "WARNING"}
        self._log = tempfile.TemporaryFile(mode="w+")
        self._process = subprocess.Popen(argv, cwd=ROOT, env=full_env, stdout=subprocess.DEVNULL, stderr=self._log)
        try:
            self._wait()
        except BaseException:
            self.stop()
            raise

    def cpu_seconds(self) -> float:
        """CPU time of the one server process."""
        return process_cpu(self._process.pid)


def process_cpu(pid: int) -> float:
    """CPU seconds a process has used (utime + stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(variant: str, fake: LatencyFake, redis_server) -> Server:
    """The server of one variant."""
    if variant == "bare":
        return Server("bench.bare_app:create_app()", 1, {}, ROOT)
    if variant == "bare-dev":
        return DevServer(True, {})
    # memory-nofile: the memory store alone, as before it wrote through to its state file.
    env = {
        **quorum_env(
            fake,
            redis_server.url if variant.startswith("redis") else None,
            tempfile.mkdtemp(prefix="quorum-wrk-"),
            "off" if variant == "memory-nofile" else "",
        ),
        "API_TOKEN": TOKEN,
    }
    if variant == "memory-dev":
        return DevServer(False, env)
    workers = int(variant.split("-")[1]) if variant.startswith("redis") else 1
    if workers > 1:
        env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="quorum-prom-")
    return Server("app:create_app()", workers, env, ROOT)


def run_wrk(url: str, calls: Path, duration: float, connections: int) -> dict:
    """wrk's requests, rate, latency and non-2xx answers."""
    out = subprocess.run(
        [
            "wrk",
            f"-t{WRK_THREADS}",
            f"-c{connections}",
            f"-d{duration:g}s",
            "--latency",
            "-s",
            str(ROOT / "bench" / "wrk_replay.lua"),
            url,
            "--",
            str(calls),
            str(WRK_THREADS),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    count = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "requests": count,
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": _ms(re.search(r"50%\s+([\d.]+\w+)", out).group(1)),
        "p99_ms": _ms(re.search(r"99%\s+([\d.]+\w+)", out).group(1)),
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(1) if errors else "",
    }


def _ms(text: str) -> float:
    """wrk's '1.23ms' / '456.00us' / '1.02s' in ms."""
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return round(float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit], 2)


def crossing_p99_ms(url: str) -> float | None:
    """The bucket bound under which 99% of crossings reached their command (Quorum's /metrics)."""
    body = requests.get(url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).text
    buckets = sorted(
        (float(s.labels["le"]), s.value)
        for f in text_string_to_metric_families(body)
        for s in f.samples
        if s.name == "quorum_crossing_to_command_seconds_bucket"
    )
    total = buckets[-1][1] if buckets else 0
    if not total:
        return None
    return next(round(1000 * bound, 1) for bound, count in buckets if count >= 0.99 * total)


def run_variant(variant: str, args, calls: Path, lines: int, fake: LatencyFake, redis_server) -> dict:
    """Serve one variant, drive it with wrk, read its CPU and metrics."""
    if redis_server:
        redis_server._client.flushall()
    server = start(variant, fake, redis_server)
    try:
        redis_pid = redis_server._process.pid if redis_server and variant.startswith("redis") else None
        cpu, redis_cpu = server.cpu_seconds(), process_cpu(redis_pid) if redis_pid else 0.0
        figures = run_wrk(server.url, calls, args.duration, args.connections)
        cpu, redis_cpu = server.cpu_seconds() - cpu, (process_cpu(redis_pid) - redis_cpu) if redis_pid else None
        crossing = None if variant.startswith("bare") else crossing_p99_ms(server.url)
    finally:
        server.stop()
    return {
        "variant": variant,
        **figures,
        "passes": round(figures["requests"] / lines, 2),
        "server_cpu_ms_per_request": round(1000 * cpu / figures["requests"], 3),
        "redis_cpu_ms_per_request": round(1000 * redis_cpu / figures["requests"], 3) if redis_cpu else None,
        "crossing_p99_ms": crossing,
    }


def print_table(rows: list, baseline: dict) -> None:
    """Rows with their throughput and CPU against the bare route served the same way."""
    header = (
        "variant",
        "req/s",
        "vs bare",
        "server CPU ms/req",
        "bare CPU / this",
        "Redis CPU ms/req",
        "p50 ms",
        "p99 ms",
        "crossing p99 ms",
        "non-2xx",
        "passes",
    )
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for r in rows:
        bare = baseline.get("bare-dev" if r["variant"].endswith("-dev") else "bare")
        ratio = f"{r['requests_per_s'] / bare['requests_per_s']:.2f}" if bare else "-"
        cpu_ratio = f"{bare['server_cpu_ms_per_request'] / r['server_cpu_ms_per_request']:.2f}" if bare else "-"
        print(
            f"| {r['variant']} | {r['requests_per_s']:.0f} | {ratio} | {r['server_cpu_ms_per_request']} | "
            f"{cpu_ratio} | {r['redis_cpu_ms_per_request'] or '-'} | {r['p50_ms']} | {r['p99_ms']} | "
            f"{r['crossing_p99_ms'] if r['crossing_p99_ms'] is not None else '-'} | {r['non_2xx']} | {r['passes']} |"
        )


def main() -> int:
    """Run the variants, print the table; exit 1 on any non-2xx answer."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="bare,memory,bare-dev,memory-dev,redis-1,redis-2")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per variant")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--conferences", type=int, default=4000)
    parser.add_argument("--churn", type=int, default=6, help="leave/join cycles per conference")
    parser.add_argument("--latency-ms", type=float, default=80)
    args = parser.parse_args()
    variants = args.variants.split(",")
    fake = LatencyFake(args.latency_ms / 1000)
    threading.Thread(target=fake.serve_forever, daemon=True).start()
    workdir = ROOT / "bench" / "results"
    workdir.mkdir(parents=True, exist_ok=True)
    redis_server = RedisServer(workdir) if any(v.startswith("redis") for v in variants) else None
    calls = workdir / "wrk_calls.txt"
    lines = write_calls(calls, args.conferences, args.churn)
    try:
        rows = [run_variant(v, args, calls, lines, fake, redis_server) for v in variants]
    finally:
        fake.shutdown()
        if redis_server:
            redis_server.stop()
    print(
        f"wrk -t{WRK_THREADS} -c{args.connections} -d{args.duration:g}s replaying {lines} signed callbacks "
        f"({args.conferences} conferences, {BATCH} at a time); REST fake {args.latency_ms:.0f} ms; "
        f"{os.cpu_count()} cores shared by wrk, fake, Redis and server; load before: {os.getloadavg()[0]:.2f}"
    )
    print_table(rows, {r["variant"]: r for r in rows if r["variant"].startswith("bare")})
    (workdir / "wrk_bench.json").write_text(json.dumps(rows, indent=2))
    return 1 if any(r["non_2xx"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
