"""Webhook throughput and latency of Quorum under gunicorn, against a bare Flask route.

Many concurrent conferences send signed callbacks (start, two joins, the recording's
in-progress, then leave/join churn that crosses the threshold each time) straight to the
server over HTTP; a SignalWire fake answers the REST commands after ~80 ms. Every server
variant runs in this one process's run, on this machine, with the same load:

    bare        a Flask route that does nothing (the ceiling)
    memory      Quorum, one worker, in-memory store written through to its state file (STATE_FILE, the default)
    memory-nofile  the same with STATE_FILE=off (`--state-file both` runs each memory variant both ways)
    redis-N     Quorum, N workers sharing one redis-server

Printed: events/s, p50/p99 webhook latency, server CPU per event, REST reads and writes per
event, Redis commands per event, conferences whose final recording state is wrong (must be 0), and each
variant's throughput as a ratio of the bare route's; then the Redis variants' commands per event by name
(INFO commandstats, a Lua script's own included: round trips are the EVALSHAs plus what no script runs),
and each memory variant's cost of its state file: CPU per event and latency with the file over without.
Every Quorum server archives into a fresh temporary RECORDINGS_DIR (so its state file starts empty).

    python bench/webhook_bench.py [--quick] [--variants bare,memory,redis-1,redis-2,redis-4] [--baseline DIR]
                                  [--state-file on|off|both]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing import Pool
from pathlib import Path
from urllib.parse import parse_qs, urlencode

import redis
import requests
from twilio.request_validator import RequestValidator

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "9d3b7c1a-2f4e-4b6d-8a1c-5e7f9b0d2c4a"
SIGNING_KEY = "PSK_bench"
PUBLIC_URL = "https://quorum.bench.invalid"


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LatencyFake(ThreadingHTTPServer):
    """SignalWire's REST API reduced to what the benchmark needs, answering after `latency_s`."""

    daemon_threads = True

    def __init__(self, latency_s: float):
        super().__init__(("127.0.0.1", free_port()), _FakeHandler)
        self.latency_s = latency_s
        self.lock = threading.Lock()
        self.reads = 0
        self.writes = 0
        self.status = {}  # recording sid -> last Status set

    @property
    def url(self) -> str:
        """Base URL for SIGNALWIRE_API_URL."""
        return f"http://127.0.0.1:{self.server_address[1]}"


class _FakeHandler(BaseHTTPRequestHandler):
    """Counts reads and writes; remembers each recording's last status."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else headers and body in two packets cost ~40 ms of delayed ACK

    def log_message(self, *args) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        """Any read: an empty list."""
        with self.server.lock:
            self.server.reads += 1
        self._answer({"participants": [], "recordings": [], "status": "in-progress", "next_page_uri": None})

    def do_POST(self) -> None:
        """A recording update: remember its Status."""
        form = parse_qs(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode())
        recording = self.path.rsplit("/", 1)[-1].removesuffix(".json")
        with self.server.lock:
            self.server.writes += 1
            self.server.status[recording] = form.get("Status", [""])[0]
        self._answer({"sid": recording, "status": form.get("Status", [""])[0]})

    def _answer(self, body: dict) -> None:
        """Wait like the real API, then answer JSON."""
        time.sleep(self.server.latency_s)
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def bench_sid(label: str) -> str:
    """A UUID sid named by `label`: Quorum refuses ids that are not sid-shaped."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, label))


def conference_events(n: int, churn: int) -> list:
    """The callbacks of conference `n`: (path, query, form); ends paused for odd `n`, recording for even."""
    room, conf, rec = f"+1555{n:07d}", bench_sid(f"conf-{n}"), bench_sid(f"rec-{n}")
    at = iter(range(1_800_000_000, 1_800_100_000))

    def status(event, call=None):
        form = {
            "AccountSid": PROJECT,
            "ConferenceSid": conf,
            "FriendlyName": room,
            "StatusCallbackEvent": event,
            "Timestamp": formatdate(next(at), usegmt=True),
        }
        return ("/voice/conference-status", "", form | ({"CallSid": call} if call else {}))

    events = [
        status("conference-start"),
        status("participant-join", bench_sid(f"{n}-host")),
        status("participant-join", bench_sid(f"{n}-guest-0")),
        (
            "/voice/recording-status",
            urlencode({"room": room}),
            {"AccountSid": PROJECT, "RecordingSid": rec, "RecordingStatus": "in-progress"},
        ),
    ]
    for cycle in range(churn):
        events.append(status("participant-leave", bench_sid(f"{n}-guest-{cycle}")))
        events.append(status("participant-join", bench_sid(f"{n}-guest-{cycle + 1}")))
    if n % 2:
        events.append(status("participant-leave", bench_sid(f"{n}-guest-{churn}")))
    return events


def _send_conference(args) -> list:
    """Post one conference's callbacks in order; returns each request's latency in seconds."""
    base, n, churn = args
    session = _session()
    validator = RequestValidator(SIGNING_KEY)
    latencies = []
    for path, query, form in conference_events(n, churn):
        target = path + (f"?{query}" if query else "")
        signature = validator.compute_signature(PUBLIC_URL + target, form)
        started = time.perf_counter()
        response = session.post(base + target, data=form, headers={"X-SignalWire-Signature": signature}, timeout=30)
        latencies.append(time.perf_counter() - started)
        if response.status_code >= 300:
            raise RuntimeError(f"{target}: HTTP {response.status_code} {response.text[:200]}")
    return latencies


_SESSION = threading.local()


def _session() -> requests.Session:
    """One keep-alive session per load thread."""
    if not hasattr(_SESSION, "value"):
        _SESSION.value = requests.Session()
    return _SESSION.value


def _drive_slice(args) -> list:
    """One load process: its conferences, `threads` at a time."""
    base, numbers, churn, threads = args
    with ThreadPoolExecutor(threads) as pool:
        return [lat for lats in pool.map(_send_conference, [(base, n, churn) for n in numbers]) for lat in lats]


def drive(base: str, conferences: int, churn: int, processes: int, threads: int):
    """All conferences through `processes` × `threads` clients; returns (latencies, seconds)."""
    slices = [(base, list(range(p, conferences, processes)), churn, threads) for p in range(processes)]
    started = time.perf_counter()
    with Pool(processes) as pool:
        latencies = [lat for part in pool.map(_drive_slice, slices) for lat in part]
    return latencies, time.perf_counter() - started


class Server:
    """A gunicorn process serving Quorum (or the bare app) on a free port."""

    def __init__(self, app: str, workers: int, env: dict, cwd: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {
            **os.environ,
            "PUBLIC_URL": self.url,
            **env,
            "PORT": str(self.port),
            "WEB_CONCURRENCY": str(workers),
            "GUNICORN_THREADS": "16",
            "LOG_LEVEL": "WARNING",
        }
        gunicorn = str(Path(sys.executable).with_name("gunicorn"))
        # Every variant uses its checkout's gunicorn.conf.py, so they differ only in the app.
        # A file, not a pipe: a server that logs more than a pipe holds would block on it.
        self._log = tempfile.TemporaryFile(mode="w+")
        self._process = subprocess.Popen(
            [gunicorn, "-c", str(cwd / "gunicorn.conf.py"), app],
            cwd=cwd,
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        try:
            self._wait()
        except BaseException:
            self.stop()  # never leave a server behind
            raise

    def _wait(self) -> None:
        """Until /healthz answers."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._log.seek(0)
                raise RuntimeError(f"server exited: {self._log.read()[-2000:]}")
            try:
                requests.get(self.url + "/healthz", timeout=5)
                return
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    def settle(self, timeout: float = 60) -> None:
        """Until no REST command is queued (every worker answers /healthz in turn, so ask a few times)."""
        deadline = time.monotonic() + timeout
        quiet = 0
        while time.monotonic() < deadline and quiet < 20:
            depth = requests.get(self.url + "/healthz", timeout=5).json().get("queue_depth", 0)
            quiet = quiet + 1 if depth == 0 else 0
            time.sleep(0.05)

    def cpu_seconds(self) -> float:
        """CPU time used so far by the gunicorn workers (children of the master)."""
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self._process.pid:  # fields[1] is the parent pid
                total += int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """Terminate and reap."""
        self._process.terminate()
        self._process.wait(30)


def quorum_env(fake: LatencyFake, redis_url: str | None, recordings_dir: str, state_file: str) -> dict:
    """Settings for a Quorum server under test."""
    env = {
        "SIGNALWIRE_PROJECT_ID": PROJECT,
        "SIGNALWIRE_API_TOKEN": "bench",
        "SIGNALWIRE_SPACE_URL": "bench.invalid",
        "SIGNALWIRE_SIGNING_KEY": SIGNING_KEY,
        "SIGNALWIRE_API_URL": fake.url,
        "PUBLIC_URL": PUBLIC_URL,
        "RECONCILE_INTERVAL_S": "0",
        "SIGNALWIRE_TIMEOUT_S": "5",
        "RECORDINGS_DIR": recordings_dir,
        "STATE_FILE": state_file,
    }
    if redis_url:
        env.update(REDIS_URL=redis_url, REDIS_NAMESPACE=f"bench{time.monotonic_ns()}")
    return env


def expected_status(n: int) -> str:
    """What conference `n`'s recording must end as."""
    return "paused" if n % 2 else "in-progress"


def run_variant(name: str, args, fake: LatencyFake, redis_server) -> dict:
    """Serve one variant (NAME@baseline: from --baseline), drive the load, check the outcome; returns its figures."""
    workers = int(name.split("-")[1].split("@")[0]) if name.startswith("redis-") else 1
    recordings = tempfile.TemporaryDirectory(prefix="quorum-bench-")
    if name == "bare":
        # From the root, as Quorum is served: gunicorn.conf.py imports the project's modules.
        server = Server("bench.bare_app:create_app()", 1, {}, ROOT)
    else:
        redis_url = redis_server.url if name.startswith("redis-") else None
        checkout = Path(args.baseline).resolve() if name.endswith("@baseline") else ROOT
        state_file = "off" if "-nofile" in name or args.state_file == "off" else ""
        server = Server("app:create_app()", workers, quorum_env(fake, redis_url, recordings.name, state_file), checkout)
    commands_before = redis_server.commands_by_name() if redis_server else {}
    reads_before, writes_before = fake.reads, fake.writes
    with fake.lock:
        fake.status.clear()
    try:
        cpu_before = server.cpu_seconds()
        latencies, seconds = drive(server.url, args.conferences, args.churn, args.processes, args.threads)
        if name != "bare":
            server.settle()
        cpu = server.cpu_seconds() - cpu_before
    finally:
        server.stop()
        recordings.cleanup()
    events = len(latencies)
    latencies.sort()
    wrong = (
        0
        if name == "bare"
        else sum(
            fake.status.get(bench_sid(f"rec-{n}"), "in-progress") != expected_status(n) for n in range(args.conferences)
        )
    )
    return {
        "variant": name,
        "events": events,
        "seconds": round(seconds, 2),
        "events_per_s": round(events / seconds),
        "server_cpu_ms_per_event": round(1000 * cpu / events, 2),
        "p50_ms": round(1000 * latencies[events // 2], 1),
        "p99_ms": round(1000 * latencies[int(events * 0.99)], 1),
        "rest_reads_per_event": round((fake.reads - reads_before) / events, 3),
        "rest_writes_per_event": round((fake.writes - writes_before) / events, 3),
        "redis_commands_by_name": (
            per_event(redis_server.commands_by_name(), commands_before, events)
            if redis_server and name.startswith("redis")
            else {}
        ),
        "wrong_final_states": wrong,
    }


def per_event(after: dict, before: dict, events: int) -> dict:
    """Each command's calls between two `commands_by_name`, per event."""
    return {
        name: round((calls - before.get(name, 0)) / events, 3)
        for name, calls in after.items()
        if calls > before.get(name, 0)
    }


class RedisServer:
    """A throwaway redis-server on a loopback port."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process = subprocess.Popen(
            [
                shutil.which("redis-server"),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
            ],
            stdout=subprocess.DEVNULL,
        )
        self._client = redis.Redis(port=self.port)
        for _ in range(100):
            try:
                self._client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def commands_by_name(self) -> dict:
        """Calls so far of each command (INFO commandstats; INFO itself counts, negligibly), scripts' own too."""
        stats = self._client.info("commandstats")
        return {name.removeprefix("cmdstat_"): figures["calls"] for name, figures in stats.items()}

    def stop(self) -> None:
        """Terminate and reap."""
        self._process.terminate()
        self._process.wait(10)


def median_row(runs: list) -> dict:
    """One row per variant: the median of each figure over its runs; wrong states added up."""
    row = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, (int, float)) and key != "wrong_final_states":
            row[key] = statistics.median(r[key] for r in runs)
    row["wrong_final_states"] = sum(r["wrong_final_states"] for r in runs)
    row["redis_commands_by_name"] = {
        name: statistics.median(r["redis_commands_by_name"].get(name, 0) for r in runs)
        for name in runs[0]["redis_commands_by_name"]
    }
    row["runs"] = len(runs)
    return row


def print_table(rows: list) -> None:
    """The figures, with throughput as a ratio of the bare route measured in this run."""
    bare = next((r["events_per_s"] for r in rows if r["variant"] == "bare"), None)
    header = (
        "variant",
        "events",
        "events/s",
        "vs bare",
        "p50 ms",
        "p99 ms",
        "server CPU ms/ev",
        "REST reads/ev",
        "REST writes/ev",
        "Redis cmds/ev",
        "wrong states",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        ratio = f"{r['events_per_s'] / bare:.2f}" if bare else "-"
        trips = round(sum(r["redis_commands_by_name"].values()), 2) if r["redis_commands_by_name"] else "-"
        print(
            f"| {r['variant']} | {r['events']} | {r['events_per_s']} | {ratio} | {r['p50_ms']} | {r['p99_ms']} | "
            f"{r['server_cpu_ms_per_event']} | "
            f"{r['rest_reads_per_event']} | {r['rest_writes_per_event']} | {trips} | {r['wrong_final_states']} |"
        )
    for r in (r for r in rows if r["redis_commands_by_name"]):
        counts = sorted(r["redis_commands_by_name"].items(), key=lambda item: -item[1])
        print(f"{r['variant']} Redis commands/ev: " + ", ".join(f"{n} {c:g}" for n, c in counts if c >= 0.01))
    by_name = {r["variant"]: r for r in rows}
    for on, off in (
        (r, by_name.get(r["variant"].replace("memory", "memory-nofile", 1)))
        for r in rows
        if r["variant"].startswith("memory") and "-nofile" not in r["variant"]
    ):
        if off:
            figures = {"server CPU ms/ev": "server_cpu_ms_per_event", "p50 ms": "p50_ms", "p99 ms": "p99_ms"}
            print(
                f"{on['variant']} with its state file / without: "
                + ", ".join(
                    f"{label} {on[key]} / {off[key]} = {on[key] / off[key]:.2f}" for label, key in figures.items()
                )
            )


def main() -> int:
    """Run the chosen variants and print the table; exit 1 if any final state is wrong."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small run (seconds), for CI smoke tests")
    parser.add_argument("--variants", default="bare,memory,redis-1,redis-2,redis-4")
    parser.add_argument("--conferences", type=int, default=400)
    parser.add_argument("--churn", type=int, default=6, help="leave/join cycles per conference")
    parser.add_argument("--processes", type=int, default=2, help="load-generating processes")
    parser.add_argument("--threads", type=int, default=16, help="concurrent conferences per load process")
    parser.add_argument("--latency-ms", type=float, default=80, help="the SignalWire fake's answer time")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run every variant this many times, interleaved, and report medians (this VM is noisy)",
    )
    parser.add_argument(
        "--baseline",
        help="another Quorum checkout (e.g. before a change): each Quorum variant "
        "also runs from it, right after this one's, as NAME@baseline",
    )
    parser.add_argument(
        "--state-file",
        choices=("on", "off", "both"),
        default="on",
        help="memory variants: with their state file (on), without (off), or each both ways, "
        "in turn, the one without named NAME-nofile",
    )
    args = parser.parse_args()
    if args.quick:
        args.conferences, args.churn = 40, 3
    variants = [
        run
        for v in args.variants.split(",")
        for run in ([v, f"{v}@baseline"] if args.baseline and v != "bare" else [v])
    ]
    variants = [
        run
        for v in variants
        for run in (
            [v, v.replace("memory", "memory-nofile", 1)]
            if args.state_file == "both" and v.startswith("memory")
            else [v]
        )
    ]
    fake = LatencyFake(args.latency_ms / 1000)
    threading.Thread(target=fake.serve_forever, daemon=True).start()
    workdir = ROOT / "bench" / "results"
    workdir.mkdir(parents=True, exist_ok=True)
    redis_server = RedisServer(workdir) if any(v.startswith("redis") for v in variants) else None
    try:
        runs = [run_variant(v, args, fake, redis_server) for _ in range(args.repeat) for v in variants]
        rows = [median_row([r for r in runs if r["variant"] == v]) for v in variants]
    finally:
        fake.shutdown()
        if redis_server:
            redis_server.stop()
    print(
        f"{args.conferences} conferences × {len(conference_events(0, args.churn))} callbacks, "
        f"{args.processes}×{args.threads} concurrent clients, REST fake {args.latency_ms:.0f} ms, "
        f"{os.cpu_count()} cores shared by clients, fake and server; median of {args.repeat} interleaved run(s)"
    )
    print_table(rows)
    (workdir / "webhook_bench.json").write_text(json.dumps(rows, indent=2))
    return 1 if any(r["wrong_final_states"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
