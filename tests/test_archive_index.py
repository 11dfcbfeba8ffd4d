"""The archive's SQLite index on real files: written with each save, synced with files changed behind its
back, rebuilt when deleted or corrupt, shared by processes, and listing exactly what the file scan lists."""

import json
import logging
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from app import create_app, services, shutdown
from conversations import archive_index
from conversations.archive import Archive
from conversations.archive_index import IndexUnusable, Query, ScanView
from conversations.queries import listing
from conversations.record import iso
from recording_state import LIVE, PROCESSING, Conference, MemoryStore
from support import make_config, sid

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "index-0123456789-token"
ROOMS = ("+15550005555", "+15550006666", "+15550007777")
T0 = 1_800_000_000.0


def conversation(n: int, room: str = ROOMS[0], at: float = None, status: str = "ready") -> dict:
    """A small archived conversation record."""
    started = T0 + 60 * n if at is None else at
    return {
        "id": sid(f"conv{n}"),
        "room": room,
        "status": status,
        "started_at": iso(started),
        "ended_at": iso(started + 30),
        "audio": {"wav_file": "mix.wav", "snr": 20.0},
        "recording_timeline": [],
        "channels": [],
    }


def save(archive: Archive, record: dict) -> Path:
    """Archive a record as the processor does; its directory."""
    at = datetime.fromisoformat(record["started_at"]).timestamp()
    directory = archive.directory_for(record["room"], at, record["id"])
    archive.save(directory, record)
    return directory


def write_by_hand(root: Path, record: dict) -> Path:
    """A conversation.json written without the index, as another host or an older release would."""
    directory = Archive(root).directory_for(record["room"], T0, record["id"])
    directory.mkdir(parents=True)
    (directory / "conversation.json").write_text(json.dumps(record, indent=2, sort_keys=True))
    return directory


def rows(archive: Archive) -> dict:
    """directory -> (id, room, status, started_at, record) straight from the SQLite file."""
    with sqlite3.connect(archive.index.path) as db:
        return {
            d: tuple(rest)
            for d, *rest in db.execute("SELECT directory, id, room, status, started_at, record FROM conversations")
        }


def indexed(archive: Archive) -> list:
    """Every conversation as the index lists it (raises IndexUnusable if it cannot)."""
    return archive.index.read(lambda view: view.page(Query(), 0, 10**6))


# Written with each save


def test_each_save_writes_its_row_and_remove_deletes_it(tmp_path):
    archive = Archive(tmp_path)
    first, second = conversation(1), conversation(2, ROOMS[1], status="failed")
    directory = save(archive, first)
    save(archive, second)
    found = rows(archive)
    relative = "/".join(directory.relative_to(tmp_path).parts)
    assert found[relative][:4] == (first["id"], ROOMS[0], "ready", first["started_at"])
    assert found[relative][4] == (directory / "conversation.json").read_text()
    assert len(found) == 2
    assert archive.find(first["id"]) == first

    assert archive.remove(directory) is True
    assert not directory.exists()  # and its emptied day and room directories with it
    assert relative not in rows(archive) and archive.find(first["id"]) is None
    assert archive.remove(directory) is False
    for outside in (tmp_path.parent / "elsewhere", tmp_path / ROOMS[0], directory / ".." / ".." / ".." / ".."):
        with pytest.raises(ValueError):
            archive.remove(outside)


def test_lists_read_the_files_until_a_sync_has_built_the_index(tmp_path):
    archive = Archive(tmp_path)
    for n in range(3):
        write_by_hand(tmp_path, conversation(n))
    with pytest.raises(IndexUnusable):
        indexed(archive)
    assert archive.view(lambda view: view.count(Query())) == 3  # from the files; starts a sync
    assert archive.wait_synced(10)
    assert (
        [c["id"] for c in indexed(archive)] == [c["id"] for c in archive.all()] == [sid(f"conv{n}") for n in (2, 1, 0)]
    )
    archive.stop()


def test_a_save_that_cannot_reach_the_index_still_archives_and_a_sync_catches_up(tmp_path, monkeypatch, caplog):
    archive = Archive(tmp_path)
    archive.sync()
    monkeypatch.setattr(archive_index, "BUSY_TIMEOUT_S", 0.1)
    holder = sqlite3.connect(archive.index.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process writing for longer than the busy timeout
    try:
        directory = save(archive, conversation(1))
        assert archive.wait_synced(10)  # the sync this started waited for the same lock, and failed too
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert (directory / "conversation.json").is_file() and "archive index not updated" in caplog.text
    assert indexed(archive) == []
    assert archive.sync() == (1, 0)
    assert [c["id"] for c in indexed(archive)] == [sid("conv1")]
    archive.stop()


# Synced with the files at start-up


@pytest.fixture
def served(signalwire, tmp_path):
    """start() -> an app on tmp_path's archive whose start-up sync has finished; all shut down afterwards."""
    apps = []

    def start():
        app = create_app(make_config(api_token=TOKEN, recordings_dir=str(tmp_path), validate_signatures=False))
        apps.append(app)
        assert services(app).archive.wait_synced(20)
        return app

    yield start
    for app in apps:
        shutdown(app)


def api_ids(app, query: str = "") -> list:
    """The ids the API lists on one page of 100."""
    response = app.test_client().get(
        f"/api/conversations?per_page=100{query}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status_code == 200
    return [c["id"] for c in response.get_json()["conversations"]]


def test_a_restart_syncs_files_added_rewritten_and_removed_behind_the_index(served, tmp_path):
    first = served()
    directories = [save(services(first).archive, conversation(n)) for n in range(4)]
    assert api_ids(first) == [sid(f"conv{n}") for n in (3, 2, 1, 0)]
    shutdown(first)

    write_by_hand(tmp_path, conversation(9, ROOMS[2]))  # another host, or a release without the index
    shutil.rmtree(directories[0])  # removed by hand
    rewritten = directories[1] / "conversation.json"
    rewritten.write_text(json.dumps(conversation(1, status="failed")))
    again = served()
    assert api_ids(again) == [sid(f"conv{n}") for n in (9, 3, 2, 1)]
    assert api_ids(again, "&status=failed") == [sid("conv1")]
    assert api_ids(again, f"&room=%2B{ROOMS[2][1:]}") == [sid("conv9")]
    assert services(again).archive.sync() == (0, 0)  # nothing left to do


def test_a_deleted_index_is_rebuilt_at_start_up(served, tmp_path):
    first = served()
    for n in range(5):
        save(services(first).archive, conversation(n))
    listed = api_ids(first)
    shutdown(first)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{services(first).archive.index.path}{suffix}").unlink(missing_ok=True)
    again = served()
    assert [c["id"] for c in indexed(services(again).archive)] == listed == api_ids(again)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_index_is_rebuilt_and_never_a_500(served, tmp_path, damage, caplog):
    app = served()
    archive = services(app).archive
    for n in range(40):
        save(archive, conversation(n, ROOMS[n % 3]))
    listed = api_ids(app)
    with sqlite3.connect(archive.index.path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = archive.index.path.stat().st_size
    with open(archive.index.path, "r+b") as index:  # what a bad disk or a careless copy leaves
        if damage == "garbage":
            index.write(b"\x00not a database" * 4096)
        else:
            index.seek(4096)
            index.write(b"\xff" * (size - 8192))
    caplog.set_level(logging.WARNING)
    assert api_ids(app) == listed  # from the files, while a sync rebuilds the index
    assert archive.wait_synced(20)
    assert [c["id"] for c in indexed(archive)] == listed == api_ids(app)
    assert "archive index unusable" in caplog.text and "is corrupt: building it again" in caplog.text


# The same list from every process


WORKER = textwrap.dedent("""
    import sys
    from pathlib import Path
    sys.path[:0] = ["{root}", "{root}/tests"]
    from conversations.archive import Archive
    from conversations.archive_index import Query
    from test_archive_index import conversation, save

    root, first, count = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    archive = Archive(root)
    archive.start()  # the other process may be saving meanwhile
    mine = set()
    for n in range(first, first + count):
        mine.add(save(archive, conversation(n, ("+15550005555", "+15550006666")[n % 2])).name)
        listed = archive.view(lambda view: {{c["id"] for c in view.page(Query(), 0, 10**6)}})
        assert mine <= listed, sorted(mine - listed)
    assert archive.wait_synced(60)
    archive.stop()
""")


@pytest.mark.slow
def test_two_processes_saving_into_one_archive_see_one_list(tmp_path):
    for n in range(200):  # an archive whose index is missing: the processes build it while they save
        write_by_hand(tmp_path, conversation(1000 + n, ROOMS[2]))
    script = WORKER.format(root=ROOT)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path), str(first), "60"], cwd=ROOT, stderr=subprocess.PIPE, text=True
        )
        for first in (0, 100)
    ]
    for worker in workers:
        assert worker.wait(120) == 0, worker.stderr.read()
    archive = Archive(tmp_path)  # a restart: a third process
    listed = [c["id"] for c in indexed(archive)]
    assert listed == [c["id"] for c in archive.all()] and len(listed) == 320
    assert archive.sync() == (0, 0)


# The same answers as the file scan


def reference(live: list, archived: list, room, status, offset: int, limit: int):
    """The list as the API built it before the index: every file read, live ones first by id, sorted, cut."""
    known = {c["id"] for c in live}
    every = sorted(
        live + [c for c in archived if c["id"] not in known], key=lambda c: (c["started_at"], c["id"]), reverse=True
    )
    found = [c for c in every if room in (None, c["room"]) and status in (None, c["status"])]
    return found[offset : offset + limit], len(found)


records = st.lists(
    st.tuples(st.integers(0, 40), st.sampled_from(ROOMS), st.sampled_from(["ready", "failed"]), st.integers(0, 12)),
    max_size=25,
    unique_by=lambda r: r[0],
)
lives = st.lists(
    st.tuples(st.integers(0, 50), st.sampled_from(ROOMS[:2]), st.sampled_from([LIVE, PROCESSING]), st.integers(0, 12)),
    max_size=5,
    unique_by=lambda r: (r[0], r[1]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    records,
    lives,
    st.sampled_from([None, None, *ROOMS[:2]]),
    st.sampled_from([None, None, "ready", LIVE]),
    st.integers(1, 5),
    st.integers(1, 4),
)
def test_lists_match_the_file_scan(archived, live, room, status, page, per_page):
    """Equal start times (a small pool of minutes) and live conversations just archived are both drawn."""
    with tempfile.TemporaryDirectory() as scratch:
        archive = Archive(Path(scratch))
        files = [conversation(n, r, T0 + 60 * minute, s) for n, r, s, minute in archived]
        for record in files:
            write_by_hand(Path(scratch), record)
        archive.sync()
        store = MemoryStore()
        for n, r, s, minute in live:
            store.mutate(
                f"{r}#{n}",
                lambda _, c=Conference(room=r, conference_sid=sid(f"conv{n}"), status=s, opened_at=T0 + 60 * minute): c,
            )
        live_records = [conversation(n, r, T0 + 60 * minute, s) for n, r, s, minute in live]
        offset = (page - 1) * per_page
        got = listing(store, archive, lambda total: offset, per_page, room=room, status=status)
        expected, total = reference(live_records, files, room, status, offset, per_page)
        assert [(c["id"], c["status"]) for c in got.conversations] == [(c["id"], c["status"]) for c in expected]
        assert got.total == total
        query = Query(room, status, hidden=frozenset(c["id"] for c in live_records))
        scan = ScanView(archive.all())
        assert archive.index.read(
            lambda view: (view.count(query), view.page(query, offset, per_page), view.rooms())
        ) == (scan.count(query), scan.page(query, offset, per_page), scan.rooms())
