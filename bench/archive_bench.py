"""Archive benchmark: the conversation API and the history pages over 10,000 archived conversations.

Writes synthetic archived conversations (realistic conversation.json files in ROOM/YYYY-MM-DD/ID/,
no audio) into a temporary RECORDINGS_DIR, then, for this checkout and each `--quorum-dir` checkout
(e.g. the release before the index), in a process of its own, serves that archive with the
checkout's `create_app`; with `--backends`, this checkout also serves the same conversations from an S3 bucket
(moto's server, started here; each conversation a manifest, as Quorum writes them) listed through its own
SQLite index (`s3`) and through Redis (`s3-redis`, a redis-server started here). Each is timed through Flask's
test client, with the API token:

    GET /api/conversations, ?room=R, ?status=ready, ?page=250, /history, /history?room=R&page=3,
    searches by caller (last digits) and by date range

(p50/p95 over `--requests` each, endpoints taken in turn), and, where the checkout has an index,
its rebuild from the files or manifests (index deleted) and its check of unchanged ones (median of 3 each).
Every checkout and backend must give byte-identical answers; the bench says whether they did.

    python bench/archive_bench.py [--conversations 10000] [--rooms 25] [--requests 40]
                                  [--backends file,s3,s3-redis] [--quorum-dir DIR ...] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "bench/"
BACKENDS = ("file", "s3", "s3-redis")
TOKEN = "bench-archive-token"
ROOM = 3  # the room the filtered requests ask for
START = datetime(2026, 1, 1, tzinfo=timezone.utc)


def endpoints(room: str) -> Dict[str, str]:
    """What is timed: name -> path and query."""
    quoted = room.replace("+", "%2B")
    return {
        "api": "/api/conversations",
        "api room": f"/api/conversations?room={quoted}",
        "api status=ready": "/api/conversations?status=ready",
        "api page=250": "/api/conversations?page=250",
        "history": "/history",
        "history room page 3": f"/history?room={quoted}&page=3",
        # Callers dial from +1555111XXXX: four last digits match a few conversations, "111" all of them.
        "api caller": "/api/conversations?caller=4321",
        "api caller, all match": "/api/conversations?caller=111",
        "api one month": "/api/conversations?from=2026-03-01&to=2026-03-31",
        "history caller and month": "/history?caller=4321&from=2026-03-01&to=2026-06-30",
    }


def room_name(number: int) -> str:
    """The dialed number that names room `number`."""
    return f"+1555030{number:04d}"


# The synthetic archive


def iso(at: datetime) -> str:
    """As conversations/record.py writes times."""
    return at.isoformat(timespec="milliseconds")


def audio(rng: random.Random, name: str, duration_ms: int) -> dict:
    """One recording's audio entry."""
    return {
        "wav_file": f"{name}.wav",
        "mp3_file": f"{name}.mp3" if rng.random() < 0.5 else None,
        "duration_ms": duration_ms,
        "snr": round(rng.uniform(-5, 30), 1),
        "rt60": round(rng.uniform(0.15, 1.2), 2) if rng.random() < 0.8 else None,
    }


def conversation(rng: random.Random, started: datetime, room: str) -> dict:
    """A conversation record as the processor archives it: 2-4 callers, pauses, holds, announcements."""
    length_ms = rng.randint(60_000, 3_600_000)
    cuts = sorted(rng.sample(range(1000, length_ms), rng.randint(1, 7)))
    edges = [rng.randint(0, 5000)] + cuts + [length_ms]
    timeline = [
        {"state": "recording" if n % 2 == 0 else "paused", "start_ms": a, "end_ms": b}
        for n, (a, b) in enumerate(zip(edges, edges[1:]))
    ]
    channels = []
    for n in range(rng.randint(2, 4)):
        number = f"+1555111{rng.randint(0, 9999):04d}"
        start = 0 if n == 0 else rng.randint(0, length_ms // 2)
        hold = rng.randint(start, length_ms - 1)
        channels.append(
            {
                "connection_id": number,
                "call_sid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "from": number,
                "to": room,
                "host": n == 0,
                "start_ms": start,
                "end_ms": length_ms,
                "holds": [{"start_ms": hold, "end_ms": min(length_ms, hold + 30_000)}] if n == 1 else [],
                "audio": audio(rng, f"channel-{n + 1:02d}", length_ms - start),
            }
        )
    return {
        "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "room": room,
        "status": "ready" if rng.random() < 0.93 else "failed",
        "started_at": iso(started),
        "ended_at": iso(started + timedelta(milliseconds=length_ms)),
        "audio": audio(rng, "mix", length_ms),
        "recording_timeline": timeline,
        "channels": channels,
        "announcements": [{"at_ms": s["start_ms"], "outcome": "played"} for s in timeline if s["state"] == "recording"],
    }


def write_archive(root: Path, count: int, rooms: int, seed: int) -> int:
    """`count` conversations over a year, each start a distinct second; bytes written."""
    rng = random.Random(seed)
    written = 0
    for second in rng.sample(range(365 * 86400), count):
        started = START + timedelta(seconds=second, milliseconds=rng.randint(0, 999))
        record = conversation(rng, started, room_name(rng.randrange(rooms)))
        directory = root / record["room"] / started.strftime("%Y-%m-%d") / record["id"]
        directory.mkdir(parents=True)
        body = json.dumps(record, indent=2, sort_keys=True).encode()  # as Archive.save writes it
        (directory / "conversation.json").write_bytes(body)
        written += len(body)
    return written


def bucket_rows(archive: Path, scratch: Path, backends: List[str], args, params: dict) -> List[dict]:
    """The same conversations as manifests in a bucket, served by this checkout through each index backend."""
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the S3 server the tests start
    from s3_server import start_s3_server

    server = start_s3_server()
    try:
        name = server.create_bucket()
        began = time.perf_counter()
        upload_manifests(server.client(), name, archive)
        params["manifests_put_s"] = round(time.perf_counter() - began, 1)
        env = {**server.env, "ARCHIVE_URL": f"s3://{name}/{PREFIX}"}
        rows = []
        for backend in backends:
            if backend == "s3":
                rows.append({"label": "s3", **run_checkout(ROOT, scratch / "staging-s3", args, env)})
            elif backend == "s3-redis":
                with redis_server() as url:
                    rows.append(
                        {
                            "label": "s3-redis",
                            **run_checkout(ROOT, scratch / "staging-redis", args, {**env, "REDIS_URL": url}),
                        }
                    )
        return rows
    finally:
        server.stop()


def upload_manifests(client, bucket: str, archive: Path) -> None:
    """Each conversation.json of `archive` as the manifest Quorum writes of a conversation without media."""
    from concurrent.futures import ThreadPoolExecutor

    def put(path: Path) -> None:
        relative = path.parent.relative_to(archive).as_posix()
        manifest = {"format": 1, "encrypted": False, "objects": {}, "record": json.loads(path.read_text())}
        body = json.dumps(manifest, indent=1, sort_keys=True).encode()
        client.put_object(Bucket=bucket, Key=f"{PREFIX}{relative}/manifest.json", Body=body)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, archive.glob("*/*/*/conversation.json")))


@contextlib.contextmanager
def redis_server():
    """A throwaway redis-server on a free loopback port: its URL."""
    from support import start_redis_server  # on sys.path since bucket_rows

    with tempfile.TemporaryDirectory(prefix="quorum-bench-redis-") as directory:
        process, url = start_redis_server(directory)
        try:
            yield url
        finally:
            process.terminate()
            process.wait(10)


# One checkout, in a process of its own


def percentile(samples: List[float], fraction: float) -> float:
    """The sample at `fraction` of the sorted samples (nearest rank)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def measure(checkout: Path, archive: Path, requests: int, room: str, extra: Dict[str, str]) -> dict:
    """Serve `archive` (with `extra` settings: a bucket) with `checkout`'s app; time each endpoint and, if it has
    one, the index rebuild."""
    sys.path.insert(0, str(checkout))
    from app import create_app, services, shutdown  # noqa: E402  (the checkout's, not necessarily ours)
    from config import Config  # noqa: E402

    settings = {
        "SIGNALWIRE_PROJECT_ID": "bench",
        "SIGNALWIRE_API_TOKEN": "bench",
        "SIGNALWIRE_SPACE_URL": "bench.signalwire.invalid",
        "PUBLIC_URL": "https://quorum.invalid",
        "VALIDATE_SIGNATURES": "false",
        "API_TOKEN": TOKEN,
        "RECORDINGS_DIR": str(archive),
        "RECONCILE_INTERVAL_S": "0",
        "LOG_LEVEL": "WARNING",
        **extra,
    }
    began = time.perf_counter()
    app = create_app(Config.from_env(settings))
    held = services(app).archive
    result = {"create_app_s": round(time.perf_counter() - began, 3)}
    try:
        if hasattr(held, "sync"):
            result |= time_index(held, archive)
        client, headers = app.test_client(), {"Authorization": f"Bearer {TOKEN}"}
        samples: Dict[str, List[float]] = {name: [] for name in endpoints(room)}
        digests = {}
        for turn in range(requests + 2):  # two warm-up turns
            for name, path in endpoints(room).items():
                began = time.perf_counter()
                response = client.get(path, headers=headers)
                took = time.perf_counter() - began
                assert response.status_code == 200, (path, response.status_code)
                digests[name] = hashlib.sha256(response.data).hexdigest()[:16]
                if turn >= 2:
                    samples[name].append(took * 1000)
    finally:
        shutdown(app)
    result["endpoints"] = {
        name: {
            "p50_ms": round(statistics.median(s), 2),
            "p95_ms": round(percentile(s, 0.95), 2),
            "answer": digests[name],
        }
        for name, s in samples.items()
    }
    return result


def time_index(held, archive: Path) -> dict:
    """The start-up sync (from no index), then rebuilds after deleting it and checks of unchanged files."""
    began = time.perf_counter()
    assert held.wait_synced(600)
    first = time.perf_counter() - began
    rebuilds, checks = [], []
    for _ in range(3):
        if hasattr(held.index, "path"):
            for suffix in ("", "-wal", "-shm"):
                Path(f"{held.index.path}{suffix}").unlink(missing_ok=True)
        else:  # Redis: its keys
            held.index.clear()
        began = time.perf_counter()
        held.sync()
        rebuilds.append(time.perf_counter() - began)
        began = time.perf_counter()
        assert held.sync() == (0, 0)
        checks.append(time.perf_counter() - began)
    return {
        "startup_sync_s": round(first, 3),
        "rebuild_s": round(statistics.median(rebuilds), 3),
        "check_s": round(statistics.median(checks), 3),
        **({"index_mb": round(held.index.path.stat().st_size / 2**20, 1)} if hasattr(held.index, "path") else {}),
    }


def run_checkout(checkout: Path, archive: Path, args, extra: Optional[Dict[str, str]] = None) -> dict:
    """`measure` in a fresh interpreter with the checkout first on sys.path (`extra`: settings of a backend)."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--measure",
        str(checkout),
        "--archive",
        str(archive),
        "--requests",
        str(args.requests),
        "--room",
        room_name(ROOM),
        "--extra",
        json.dumps(extra or {}),
    ]
    done = subprocess.run(
        command, cwd=checkout, capture_output=True, text=True, check=False, env={**os.environ, **(extra or {})}
    )
    if done.returncode != 0:
        raise SystemExit(f"{checkout}: {done.stderr[-2000:]}")
    return {"checkout": str(checkout), **json.loads(done.stdout.splitlines()[-1])}


def print_report(params: dict, rows: List[dict]) -> None:
    """One table row per endpoint, p50/p95 of each checkout; then the index figures."""
    print(", ".join(f"{k}={v}" for k, v in params.items()))
    print("| request | " + " | ".join(f"{r['label']} p50 ms | {r['label']} p95 ms" for r in rows) + " |")
    print("|---|" + "---|---|" * len(rows))
    for name in rows[0]["endpoints"]:
        cells = " | ".join(f"{r['endpoints'][name]['p50_ms']} | {r['endpoints'][name]['p95_ms']}" for r in rows)
        print(f"| `{endpoints(room_name(ROOM))[name]}` | {cells} |")
    for row in rows:
        index = ", ".join(f"{k}={row[k]}" for k in ("startup_sync_s", "rebuild_s", "check_s", "index_mb") if k in row)
        print(f"{row['label']} ({row['checkout']}): create_app {row['create_app_s']} s; {index or 'no index'}")
    same = all(r["endpoints"][n]["answer"] == rows[0]["endpoints"][n]["answer"] for r in rows for n in r["endpoints"])
    print("same answers from every checkout:", "yes" if same else "NO")


def main() -> int:
    """Write the archive once, measure each checkout on it, print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--rooms", type=int, default=25)
    parser.add_argument("--requests", type=int, default=40, help="timed requests per endpoint")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--quorum-dir",
        action="append",
        default=[],
        help="another checkout to measure first (repeatable), e.g. `git worktree add /tmp/index-before a777e0c`",
    )
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # the child: measure this checkout
    parser.add_argument("--archive", help=argparse.SUPPRESS)
    parser.add_argument("--room", help=argparse.SUPPRESS)
    parser.add_argument("--extra", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--backends", default=",".join(BACKENDS), help="of this checkout: file, s3, s3-redis")
    args = parser.parse_args()
    if args.measure:
        print(
            json.dumps(
                measure(Path(args.measure), Path(args.archive), args.requests, args.room, json.loads(args.extra))
            )
        )
        return 0
    with tempfile.TemporaryDirectory(prefix="quorum-archive-bench-") as scratch:
        archive = Path(scratch) / "recordings"
        began = time.perf_counter()
        size = write_archive(archive, args.conversations, args.rooms, args.seed)
        params = {
            "conversations": args.conversations,
            "rooms": args.rooms,
            "json_mb": round(size / 2**20, 1),
            "written_s": round(time.perf_counter() - began, 1),
            "requests": args.requests,
            "load_average": os.getloadavg()[0],
        }
        backends = [b for b in args.backends.split(",") if b]
        rows = [{"label": c.name, **run_checkout(c, archive, args)} for c in map(Path, args.quorum_dir)]
        if "file" in backends:
            rows.append({"label": "file", **run_checkout(ROOT, archive, args)})
        if {"s3", "s3-redis"} & set(backends):
            rows.extend(bucket_rows(archive, Path(scratch), backends, args, params))
    print_report(params, rows)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"params": params, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
