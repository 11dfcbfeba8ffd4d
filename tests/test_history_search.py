"""History search by caller number and by date range: the index and the file scan agree, the API and the page
filter by both, and an index built by an older release is rebuilt before it answers."""

import sqlite3
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from app import create_app, shutdown
from conversations.archive import Archive
from conversations.archive_index import Query, ScanView
from conversations.queries import date_bounds
from conversations.record import iso
from support import make_config, sid

TOKEN = "search-0123456789-token"
ROOM = "+15550008888"
NUMBERS = ("+15551230001", "+15551234567", "+442071234567")
T0 = datetime(2026, 11, 30, 23, 30, tzinfo=timezone.utc).timestamp()


def record(n: int, callers: tuple, at: float) -> dict:
    """An archived conversation with these callers' numbers."""
    channels = [
        {
            "connection_id": number,
            "call_sid": sid(f"call{n}x{i}"),
            "from": number,
            "to": ROOM,
            "start_ms": 0,
            "end_ms": 1000,
            "holds": [],
            "audio": {},
        }
        for i, number in enumerate(callers)
    ]
    return {
        "id": sid(f"conv{n}"),
        "room": ROOM,
        "status": "ready",
        "started_at": iso(at),
        "ended_at": iso(at + 60),
        "audio": {},
        "recording_timeline": [],
        "channels": channels,
    }


def archive_of(tmp_path, records) -> Archive:
    """An archive holding `records`, its index synced."""
    archive = Archive(tmp_path / "recordings")
    archive.prepare()
    for item in records:
        at = datetime.fromisoformat(item["started_at"]).timestamp()
        archive.save(archive.directory_for(item["room"], at, item["id"]), item)
    archive.sync()
    return archive


def ids(listed) -> list:
    """The ids of listed records, in order."""
    return [item["id"] for item in listed]


def test_the_last_digits_of_a_caller_find_their_conversations(tmp_path):
    archive = archive_of(
        tmp_path, [record(1, NUMBERS[:2], T0), record(2, NUMBERS[1:], T0 + 60), record(3, NUMBERS[2:], T0 + 120)]
    )
    query = Query(caller="4567")
    assert archive.index.read(lambda view: ids(view.page(query, 0, 10))) == [sid("conv3"), sid("conv2"), sid("conv1")]
    assert archive.index.read(lambda view: ids(view.page(Query(caller="+15551234567"), 0, 10))) == [
        sid("conv2"),
        sid("conv1"),
    ]
    assert archive.index.read(lambda view: view.count(Query(caller="0001"))) == 1


def test_a_date_range_is_whole_utc_days_with_the_last_one_included(tmp_path):
    archive = archive_of(
        tmp_path,
        [record(1, NUMBERS[:1], T0), record(2, NUMBERS[:1], T0 + 3600), record(3, NUMBERS[:1], T0 + 2 * 86400)],
    )
    since, until = date_bounds("2026-12-01", "2026-12-01")
    query = Query(since=since, until=until)
    assert archive.index.read(lambda view: ids(view.page(query, 0, 10))) == [sid("conv2")]
    assert date_bounds(None, None) == (None, None)
    assert date_bounds("2026-12-02", "2026-12-01") == date_bounds("2026-12-01", "2026-12-02")
    with pytest.raises(ValueError):
        date_bounds("yesterday", None)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    callers=st.lists(st.lists(st.sampled_from(NUMBERS), max_size=3), min_size=1, max_size=6),
    wanted=st.sampled_from(("0001", "4567", "1234567", "+442071234567", "999")),
    day=st.sampled_from((None, "2026-11-30", "2026-12-01")),
)
def test_the_index_answers_as_the_file_scan_does(tmp_path_factory, callers, wanted, day):
    records = [record(n, tuple(numbers), T0 + 1800 * n) for n, numbers in enumerate(callers)]
    archive = archive_of(tmp_path_factory.mktemp("search"), records)
    since, until = date_bounds(day, day)
    query = Query(caller=wanted, since=since, until=until)
    scan = ScanView(archive.all())
    assert archive.index.read(lambda view: (view.count(query), ids(view.page(query, 0, 100)))) == (
        scan.count(query),
        ids(scan.page(query, 0, 100)),
    )


def test_an_index_from_before_caller_search_is_rebuilt_first(tmp_path):
    archive = archive_of(tmp_path, [record(1, NUMBERS[:1], T0)])
    with sqlite3.connect(archive.index.path) as db:
        db.execute("DROP TABLE callers")
        db.execute("DELETE FROM meta WHERE key = 'schema'")
    archive.sync()
    assert archive.index.read(lambda view: view.count(Query(caller="0001"))) == 1


def test_the_api_and_the_history_page_filter_by_caller_and_dates(tmp_path, signalwire):
    config = make_config(api_token=TOKEN, recordings_dir=str(tmp_path / "recordings"))
    app = create_app(config)
    try:
        archive = app.extensions["quorum"].archive
        for item in (record(1, NUMBERS[:1], T0), record(2, NUMBERS[1:2], T0 + 86400)):
            at = datetime.fromisoformat(item["started_at"]).timestamp()
            archive.save(archive.directory_for(item["room"], at, item["id"]), item)
        archive.sync()
        client, auth = app.test_client(), {"Authorization": f"Bearer {TOKEN}"}
        found = client.get("/api/conversations?caller=4567&from=2026-12-01&to=2026-12-01", headers=auth).get_json()
        assert ids(found["conversations"]) == [sid("conv2")] and found["total"] == 1
        assert client.get("/api/conversations?caller=12", headers=auth).status_code == 400
        assert client.get("/api/conversations?from=2026-13-01", headers=auth).status_code == 400
        page = client.get("/history?caller=0001", headers=auth).get_data(as_text=True)
        assert sid("conv1") in page and sid("conv2") not in page
    finally:
        shutdown(app)
