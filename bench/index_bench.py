"""Index benchmark: the SQLite index (ArchiveIndex) beside the Redis one (RedisIndex) over 10,000 conversations.

Fills both with the same synthetic conversation.json texts (bench/archive_bench.py's records: several rooms,
about 7% failed, 2-3 channels with E.164 `from` numbers, one of them a regular caller's in 30% of them,
starts spread over 60 days) by a sync each, then
times what one page of a list asks of the index, exactly as `listing` asks it (queries._merged: a count per
live conversation, the total, the page), with 3 conversations live (so hidden), for each kind of list:

    first page of 50, page 20, a room, a status (ready: 93%, failed: 7%), a caller's last 4 digits, the regular
    caller's (3,000 rows: the caller search's cost grows with the rows the digits match), a date range (a week),
    and room + status + the regular caller + a week at once

(p50/p95 in ms over `--requests` each, kinds taken in turn, both backends in the same run), and whether the two
backends gave the same pages. Redis is a redis-server of its own on a free port unless `--redis-url` is given.

    .venv/bin/python bench/index_bench.py [--conversations 10000] [--rooms 25] [--requests 200]
                                          [--redis-url redis://...] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Dict, List, Tuple, Union

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]

import redis  # noqa: E402

from archive_bench import conversation, room_name  # noqa: E402
from conversations.archive_index import ArchiveIndex, Query, fields, numbers, sort_key  # noqa: E402
from conversations.queries import _merged  # noqa: E402  (the listing's own use of a view)
from conversations.redis_index import RedisIndex  # noqa: E402
from support import start_redis_server  # noqa: E402  (the tests' redis-server)

START = datetime(2026, 10, 1, tzinfo=timezone.utc)
DAYS = 60
PER_PAGE = 50
REGULAR, REGULAR_SHARE = "+15552229876", 0.3


def records(count: int, rooms: int, seed: int) -> Dict[str, str]:
    """directory -> conversation.json text, as Archive.save writes it."""
    rng = random.Random(seed)
    texts = {}
    for second in rng.sample(range(DAYS * 86400), count):
        started = START + timedelta(seconds=second, milliseconds=rng.randint(0, 999))
        record = conversation(rng, started, room_name(rng.randrange(rooms)))
        record["channels"] = record["channels"][: rng.randint(2, 3)]
        if rng.random() < REGULAR_SHARE:  # the one who calls in to many conversations: a search's worst case
            record["channels"][-1]["from"] = record["channels"][-1]["connection_id"] = REGULAR
        texts[f"{record['room']}/{started:%Y-%m-%d}/{record['id']}"] = json.dumps(record, indent=2, sort_keys=True)
    return texts


def kinds(texts: Dict[str, str]) -> Dict[str, Tuple[Query, int]]:
    """What is timed: name -> (query without its hidden ids, offset)."""
    some = json.loads(next(iter(texts.values())))
    digits = some["channels"][0]["from"][-4:]
    since, until = (START + timedelta(days=20)).isoformat(), (START + timedelta(days=27)).isoformat()
    return {
        "first page": (Query(), 0),
        "page 20": (Query(), 19 * PER_PAGE),
        "room": (Query(room=some["room"]), 0),
        "status=ready": (Query(status="ready"), 0),
        "status=failed": (Query(status="failed"), 0),
        f"caller {digits}": (Query(caller=digits), 0),
        "a week": (Query(since=since, until=until), 0),
        "regular caller": (Query(caller=REGULAR[-4:]), 0),
        "room+status+regular+week": (Query(some["room"], "ready", caller=REGULAR[-4:], since=since, until=until), 0),
    }


def live_of(texts: Dict[str, str], query: Query) -> Tuple[Query, List[dict]]:
    """The query with 3 live conversations hidden (just archived: the 3 newest), and those of them it shows."""
    newest = sorted((json.loads(t) for t in texts.values()), key=sort_key, reverse=True)[:3]
    hidden = frozenset(c["id"] for c in newest)
    shown = [
        c for c in newest if (found := fields(c)) and query.matches(found, numbers(c))
    ]  # as `listing` filters them
    return Query(query.room, query.status, hidden, query.caller, query.since, query.until), shown


def timed(read: Callable, query: Query, live: List[dict], offset: int) -> Tuple[float, List[str]]:
    """One list's index work: (ms, the page's ids)."""
    began = time.perf_counter()
    listing = read(lambda view: _merged(view, query, live, lambda total: offset, PER_PAGE))
    return (time.perf_counter() - began) * 1000, [c["id"] for c in listing.conversations]


def percentile(values: List[float], p: float) -> float:
    """The p-th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def redis_server() -> Tuple[subprocess.Popen, str]:
    """A redis-server of the bench's own on a free loopback port, and its URL, once it answers."""
    try:
        return start_redis_server(tempfile.mkdtemp(prefix="quorum-index-bench-redis-"))
    except RuntimeError as problem:
        raise SystemExit(str(problem)) from None


def main() -> None:
    """Fill both indexes, time each kind of list on both, print (and optionally write) the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--rooms", type=int, default=25)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--redis-url")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json")
    args = parser.parse_args()
    server, url = (None, args.redis_url) if args.redis_url else redis_server()
    prefix = f"bench-{uuid.uuid4().hex[:8]}:archive:"
    texts = records(args.conversations, args.rooms, args.seed)
    files = [(d, 1) for d in texts]
    scratch = Path(tempfile.mkdtemp(prefix="index-bench-"))
    backends: Dict[str, Union[ArchiveIndex, RedisIndex]] = {
        "sqlite": ArchiveIndex(scratch / "index.sqlite3"),
        "redis": RedisIndex.from_url(url, prefix),
    }
    result: dict = {"conversations": args.conversations, "requests": args.requests, "build_s": {}, "ms": {}}
    try:
        for name, index in backends.items():
            began = time.perf_counter()
            index.sync(lambda: files, texts.get)
            result["build_s"][name] = round(time.perf_counter() - began, 2)
        plans = {kind: (*live_of(texts, query), offset) for kind, (query, offset) in kinds(texts).items()}
        samples: Dict[Tuple[str, str], List[float]] = {(k, b): [] for k in plans for b in backends}
        pages: Dict[Tuple[str, str], List[str]] = {}
        for _ in range(args.requests):
            for kind, (query, live, offset) in plans.items():
                for name, index in backends.items():
                    ms, ids = timed(index.read, query, live, offset)
                    samples[(kind, name)].append(ms)
                    pages[(kind, name)] = ids
        result["same_pages"] = all(pages[(k, "sqlite")] == pages[(k, "redis")] for k in plans)
        print(f"{args.conversations} conversations; index built by a sync in", result["build_s"])
        print(f"{'list':26} {'backend':7} {'p50 ms':>8} {'p95 ms':>8} {'rows':>5}")
        for (kind, name), values in samples.items():
            p50, p95 = percentile(values, 50), percentile(values, 95)
            result["ms"][f"{kind} / {name}"] = {"p50": round(p50, 2), "p95": round(p95, 2)}
            print(f"{kind:26} {name:7} {p50:8.2f} {p95:8.2f} {len(pages[(kind, name)]):5}")
        print("both backends gave the same pages:", result["same_pages"])
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))
    finally:
        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        shutil.rmtree(scratch, ignore_errors=True)
        if server is not None:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
