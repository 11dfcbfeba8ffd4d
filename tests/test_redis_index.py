"""The archive's Redis index against a real redis-server: the same answers as the SQLite index and the file scan,
synced like it, safe when several hosts sync and save at once, and unusable (never hung) when Redis is."""

import json
import signal
import tempfile
import threading
import uuid
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, given, settings, strategies as st

from conversations.archive_index import NOT_BUILT, ArchiveIndex, IndexUnusable, Query, ScanView
from conversations.record import iso
from conversations.redis_index import RedisIndex
from support import sid, start_redis_server

ROOMS = ("+15550005555", "+15550006666", "+15550007777")
NUMBERS = ("+15551230001", "+15551234567", "+442071234567", "+15559994567")
T0 = 1_800_000_000.0


def record(n: int, room=ROOMS[0], status="ready", minute=None, callers=()) -> dict:
    """An archived conversation; `minute` None gives no start time (it sorts last)."""
    return {
        "id": sid(f"conv{n}"),
        "room": room,
        "status": status,
        "started_at": "" if minute is None else iso(T0 + 60 * minute),
        "channels": [{"from": number, "to": room} for number in callers],
    }


def directory(item: dict) -> str:
    """Where the archive would keep a record."""
    return f"{item['room']}/2027-01-15/{item['id']}"


class Files:
    """The archive's files as the index sees them: directory -> (text, version)."""

    def __init__(self, items=()):
        self.texts = {directory(item): (json.dumps(item), 1) for item in items}

    def write(self, item: dict, version: int = 1) -> str:
        """Write a record's file; its directory."""
        self.texts[directory(item)] = (json.dumps(item), version)
        return directory(item)

    def listing(self):
        """(directory, version) of every file."""
        return [(d, version) for d, (_, version) in list(self.texts.items())]

    def load(self, name: str):
        """A file's text, or None if it has gone."""
        found = self.texts.get(name)
        return None if found is None else found[0]

    def sync(self, index):
        """Sync an index with these files."""
        return index.sync(self.listing, self.load)


def clean(client: redis.Redis, prefix: str) -> None:
    """Delete every key under a prefix."""
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture
def make_index(redis_url):
    """make_index(prefix=None) -> a RedisIndex on the session's Redis, under a prefix of its own unless given."""
    made = []

    def make(prefix=None):
        index = RedisIndex.from_url(redis_url, prefix or f"t{uuid.uuid4().hex[:8]}:archive:")
        made.append(index)
        return index

    yield make
    for index in made:
        clean(index._redis, index._prefix)


def listed(index) -> list:
    """Every row's id, newest first."""
    return index.read(lambda view: [c["id"] for c in view.page(Query(), 0, 10**6)])


# The same answers as the SQLite index and the file scan

records = st.lists(
    st.tuples(
        st.integers(0, 40),
        st.sampled_from([*ROOMS, None]),
        st.sampled_from(["ready", "failed", None]),
        st.one_of(st.none(), st.integers(0, 12)),
        st.lists(st.sampled_from(NUMBERS), max_size=3),
    ),
    max_size=25,
    unique_by=lambda r: r[0],
)
minutes = st.one_of(st.none(), st.none(), st.integers(-1, 13).map(lambda m: iso(T0 + 60 * m)))


def queries(hidden):
    """Queries of every filter (each filter absent at least half the time), hiding ids drawn from `hidden`."""
    return st.builds(
        Query,
        room=st.sampled_from([None] * 3 + [*ROOMS]),
        status=st.sampled_from([None] * 3 + ["ready", "failed"]),
        hidden=hidden,
        caller=st.sampled_from([None] * 6 + ["4567", "0001", "+15551234567", "123", "999", "+44 20 7123 4567"]),
        since=minutes,
        until=minutes,
    )


def answers(view, query: Query, newer_than, offset: int, limit: int):
    """What a list asks of a view."""
    return view.count(query), view.count(query, newer_than), view.page(query, offset, limit), view.rooms()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(records, st.integers(0, 25), st.data())
def test_the_redis_index_answers_as_the_sqlite_index_and_the_file_scan(make_index, drawn, saved, data):
    """Equal start times, missing ones, rooms and statuses of None, shared callers, hidden ids (mostly archived
    ones) and `newer_than` keys (mostly those of archived rows) are all drawn; the first `saved` rows are written
    by `put` (as saves do), the rest by a sync."""
    items = [record(n, room, status, minute, callers) for n, room, status, minute, callers in drawn]
    ids = [item["id"] for item in items] + [sid("conv99")]
    keys = [(item["started_at"], item["id"]) for item in items] + [("", ""), (iso(T0 + 90), sid("conv5"))]
    files = Files(items)
    index = make_index()
    with tempfile.TemporaryDirectory() as scratch:
        sqlite = ArchiveIndex(Path(scratch) / "index.sqlite3")
        for name, version in files.listing()[:saved]:
            index.put(name, files.load(name), version)
        files.sync(index)
        files.sync(sqlite)
        scan = ScanView(items)
        for _ in range(data.draw(st.integers(1, 6))):
            query = data.draw(queries(st.frozensets(st.sampled_from(ids), max_size=4)))
            newer_than = data.draw(st.sampled_from(keys))
            offset, limit = data.draw(st.integers(0, 8)), data.draw(st.integers(0, 6))
            expected = answers(scan, query, newer_than, offset, limit)
            assert index.read(lambda view: answers(view, query, newer_than, offset, limit)) == expected
            assert sqlite.read(lambda view: answers(view, query, newer_than, offset, limit)) == expected
    clean(index._redis, index._prefix)


# Synced like the SQLite index


def test_lists_refuse_until_a_sync_and_a_sync_reads_what_changed(make_index):
    index = make_index()
    files = Files([record(n, minute=n) for n in range(5)])
    with pytest.raises(IndexUnusable) as refused:
        listed(index)
    assert refused.value.args == (NOT_BUILT,)
    assert files.sync(index) == (5, 0)
    assert listed(index) == [sid(f"conv{n}") for n in (4, 3, 2, 1, 0)]
    assert files.sync(index) == (0, 0)

    files.write(record(1, status="failed", minute=1), version=2)  # rewritten
    del files.texts[directory(record(3))]  # removed
    files.write(record(9, ROOMS[2], minute=9))  # added
    assert files.sync(index) == (2, 2)  # the rewrite counts as a row dropped and one written, as in SQLite
    assert listed(index) == [sid(f"conv{n}") for n in (9, 4, 2, 1, 0)]
    assert index.read(lambda view: [c["id"] for c in view.page(Query(status="failed"), 0, 10)]) == [sid("conv1")]
    assert index.read(lambda view: view.rooms()) == [ROOMS[0], ROOMS[2]]
    assert files.sync(index) == (0, 0)


def test_a_file_that_is_no_longer_a_conversation_loses_its_row(make_index):
    index = make_index()
    files = Files([record(1, minute=1), record(2, minute=2)])
    files.sync(index)
    files.texts[directory(record(1))] = ("not json", 2)
    assert files.sync(index) == (0, 1)
    index.put(directory(record(2)), json.dumps({"no": "id"}), 3)
    assert listed(index) == [] and index.read(lambda view: view.rooms()) == []
    assert index.directory_of(sid("conv2")) is None


def test_put_replaces_and_delete_drops_a_row_and_its_filters(make_index):
    index = make_index()
    Files().sync(index)
    name = directory(record(1))
    index.put(name, json.dumps(record(1, ROOMS[0], "ready", 1, ["+15551234567"])), 1)
    index.put(name, json.dumps(record(1, ROOMS[0], "failed", 2, ["+15550000001"])), 2)
    assert index.read(lambda view: view.count(Query(status="ready"))) == 0
    assert index.read(lambda view: view.count(Query(caller="4567"))) == 0
    assert index.read(lambda view: view.count(Query(ROOMS[0], "failed", caller="0001"))) == 1
    index.delete(name)
    assert index.read(lambda view: (view.count(Query()), view.rooms())) == (0, [])
    assert index._redis.keys(index._prefix + "z:*") == []  # nothing left behind


def test_directory_of_is_the_newest_row_of_an_id(make_index):
    index = make_index()
    old, new = record(1, ROOMS[0], minute=1), record(1, ROOMS[1], minute=5)
    Files([old, new]).sync(index)
    assert index.directory_of(sid("conv1")) == directory(new)
    assert index.directory_of(sid("conv2")) is None


def test_two_deployments_on_one_redis_do_not_see_each_other(make_index):
    first, second = make_index("a:archive:"), make_index("b:archive:")
    Files([record(1, minute=1)]).sync(first)
    Files([record(2, minute=2), record(3, minute=3)]).sync(second)
    assert listed(first) == [sid("conv1")] and listed(second) == [sid("conv3"), sid("conv2")]


# Several hosts at once


def test_a_row_another_host_writes_during_a_sync_is_kept(make_index):
    """Deterministic interleavings: the other host acts from inside this sync's reads of the files."""
    index = make_index()
    other = make_index(index._prefix)
    files = Files([record(n, minute=n) for n in range(3)])
    files.sync(index)
    late = record(7, minute=7)
    rewritten = record(1, status="failed", minute=1)

    def listing():
        found = files.listing()
        files.write(late)  # saved by the other host after this sync listed the files...
        other.put(directory(late), files.load(directory(late)), 1)
        return found

    def load(name):
        text = files.load(name)
        if name == directory(record(1)):  # ... and rewritten by it after this sync read the file
            files.write(rewritten, version=3)
            other.put(name, files.load(name), 3)
        return text

    files.write(record(1, status="processing", minute=1), version=2)
    index.sync(listing, load)
    assert index.read(lambda view: [(c["id"], c["status"]) for c in view.page(Query(), 0, 10)]) == [
        (sid("conv7"), "ready"),
        (sid("conv2"), "ready"),
        (sid("conv1"), "failed"),  # not this sync's older read of it
        (sid("conv0"), "ready"),
    ]
    assert files.sync(index) == (0, 0)


def test_a_removal_by_another_host_during_a_sync_is_not_undone(make_index):
    index = make_index()
    other = make_index(index._prefix)
    files = Files()
    files.sync(index)
    gone = record(4, minute=4)
    files.write(gone)

    def load(name):
        del files.texts[name]  # removed by the other host after this sync listed it: the file and its row
        other.delete(name)
        return None

    assert index.sync(files.listing, load) == (0, 0)
    assert listed(index) == []


def test_a_row_another_host_writes_again_during_a_sync_is_not_dropped(make_index):
    index = make_index()
    other = make_index(index._prefix)
    again = record(4, status="failed", minute=4)
    files = Files([record(4, minute=4)])
    files.sync(index)

    def listing():
        del files.texts[directory(again)]  # removed, then archived again by the other host, as this sync lists
        found = files.listing()
        other.put(files.write(again, version=2), files.load(directory(again)), 2)
        return found

    assert index.sync(listing, files.load) == (0, 0)
    assert index.read(lambda view: [c["status"] for c in view.page(Query(), 0, 10)]) == ["failed"]
    assert files.sync(index) == (0, 0)


def test_a_list_read_while_another_host_writes_is_read_again(make_index):
    index = make_index()
    other = make_index(index._prefix)
    files = Files([record(1, minute=1)])
    files.sync(index)
    late = record(2, minute=2)

    def work(view):
        total = view.count(Query())
        if total == 1:  # the other host saves between this list's count and its page
            other.put(directory(late), json.dumps(late), 1)
        return total, [c["id"] for c in view.page(Query(), 0, 10)]

    assert index.read(work) == (2, [sid("conv2"), sid("conv1")])  # not (1, [both]): the total and page agree


def test_concurrent_syncs_and_saves_lose_and_double_no_row(make_index):
    prefix = make_index()._prefix
    files = Files([record(n, ROOMS[n % 3], minute=n % 50) for n in range(300)])
    hosts = [make_index(prefix) for _ in range(3)]
    start = threading.Barrier(4)
    errors = []

    def syncing(index):
        start.wait()
        for _ in range(3):
            files.sync(index)

    def saving(index):
        start.wait()
        for n in range(300, 400):
            name = files.write(record(n, ROOMS[1], minute=n % 50))  # the file first, then its row, as saves do
            index.put(name, files.load(name), 1)
            if n % 4 == 0:
                removed = directory(record(n - 300, ROOMS[(n - 300) % 3]))
                del files.texts[removed]
                index.delete(removed)

    def run(target, index):
        try:
            target(index)
        except Exception as error:  # reported below: a thread's failure must fail the test
            errors.append(error)

    threads = [threading.Thread(target=run, args=(syncing, hosts[i % 2])) for i in range(3)]
    threads.append(threading.Thread(target=run, args=(saving, hosts[2])))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    rows = hosts[0].read(lambda view: [c["id"] for c in view.page(Query(), 0, 10**6)])
    assert sorted(rows) == sorted(json.loads(text)["id"] for text, _ in files.texts.values())
    assert len(rows) == 375 and hosts[0].read(lambda view: view.count(Query())) == 375
    assert files.sync(hosts[0]) == (0, 0)


# When Redis is not there


def test_a_redis_that_stops_answering_makes_the_index_unusable_not_a_hang(tmp_path):
    server, url = start_redis_server(tmp_path)
    try:
        index = RedisIndex.from_url(url, "quorum:archive:")
        Files([record(1, minute=1)]).sync(index)
        assert listed(index) == [sid("conv1")]
        server.send_signal(signal.SIGSTOP)  # hung: the socket timeout ends the wait
        with pytest.raises(IndexUnusable, match="Timeout"):
            listed(index)
        assert index.directory_of(sid("conv1")) is None
        server.send_signal(signal.SIGCONT)
        assert listed(index) == [sid("conv1")]
        server.terminate()  # gone: refused at once
        server.wait(10)
        with pytest.raises(IndexUnusable):
            listed(index)
    finally:
        server.kill()
        server.wait(10)
