"""The archive's index: one SQLite row per conversation.json, so a list reads one page, not every file.

The files stay the truth; the index (`RECORDINGS_DIR/.index.sqlite3`, WAL mode) is a cache of them
that every process sharing the archive reads and writes. `sync` makes it match the files; until
one has completed, `read` refuses and callers answer from the files themselves (`ScanView`).
"""

from __future__ import annotations

import fcntl
import json
import logging
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, FrozenSet, Iterable, List, NamedTuple, Optional, Tuple, TypeVar

log = logging.getLogger("quorum.archive")
T = TypeVar("T")
# Long enough for a save to wait out another process's rebuild of a large archive.
BUSY_TIMEOUT_S = 30.0
SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    directory TEXT PRIMARY KEY,     -- ROOM/YYYY-MM-DD/ID, relative to the archive root
    id TEXT NOT NULL,
    room TEXT,
    status TEXT,
    started_at TEXT NOT NULL,       -- '' when unknown: sorts last, as the file scan sorts it
    ended_at TEXT,
    mtime_ns INTEGER NOT NULL,      -- conversation.json's, so a rewritten file is seen
    record TEXT NOT NULL            -- conversation.json's text, as the lists return it
);
CREATE INDEX IF NOT EXISTS newest ON conversations (started_at, id);
CREATE INDEX IF NOT EXISTS by_room ON conversations (room, started_at, id);
CREATE INDEX IF NOT EXISTS by_status ON conversations (status, started_at, id);
CREATE INDEX IF NOT EXISTS by_id ON conversations (id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- Each caller's number, digits only and reversed: "the last digits" is then a range of this key.
CREATE TABLE IF NOT EXISTS callers (
    reversed TEXT NOT NULL,
    directory TEXT NOT NULL,
    PRIMARY KEY (reversed, directory)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS callers_of ON callers (directory);
"""
SCHEMA_VERSION = "2"  # 2: callers; an index of an older version is rebuilt by the next sync
UPSERT = "INSERT OR REPLACE INTO conversations VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
CALLER_MIN_DIGITS = 3
NEWEST_FIRST = " ORDER BY started_at DESC, id DESC"
BROKEN = {"SQLITE_CORRUPT", "SQLITE_NOTADB"}


NOT_BUILT = "not built yet"


class IndexUnusable(Exception):
    """The index is missing, not built yet, or cannot be read."""


def digits(number: str) -> str:
    """A phone number's digits, the form callers are searched by."""
    return "".join(ch for ch in number if ch.isdigit())


@dataclass(frozen=True)
class Query:
    """Which archived conversations a list shows."""

    room: Optional[str] = None
    status: Optional[str] = None
    hidden: FrozenSet[str] = frozenset()  # ids the list shows live, from the store
    caller: Optional[str] = None  # a caller's number, or its last digits
    since: Optional[str] = None  # started at or after this ISO 8601 UTC time
    until: Optional[str] = None  # ... and before this one

    def matches(self, found: "Fields", numbers: Iterable[str] = ()) -> bool:
        """Whether a conversation (its indexed fields, its callers' numbers) passes every filter."""
        return (
            self.room in (None, found.room)
            and self.status in (None, found.status)
            and (self.since is None or found.started_at >= self.since)
            and (self.until is None or found.started_at < self.until)
            and (self.caller is None or any(digits(n).endswith(digits(self.caller)) for n in numbers))
        )


class Fields(NamedTuple):
    """What the index keeps of a record in columns of their own, in the table's order."""

    id: str
    room: Optional[str]
    status: Optional[str]
    started_at: str
    ended_at: Optional[str]


def fields(record) -> Optional[Fields]:
    """The indexed fields of a record (text or None each), or None for JSON that is not a conversation."""
    if not isinstance(record, dict) or not isinstance(record.get("id"), str):
        return None

    def text(key: str) -> Optional[str]:
        value = record.get(key)
        return value if isinstance(value, str) else None

    return Fields(record["id"], text("room"), text("status"), text("started_at") or "", text("ended_at"))


def numbers(record: dict) -> List[str]:
    """The callers' numbers of a record (its channels' `from`)."""
    channels = record.get("channels") if isinstance(record, dict) else None
    return (
        [c["from"] for c in channels if isinstance(c, dict) and isinstance(c.get("from"), str)]
        if isinstance(channels, list)
        else []
    )


def sort_key(record: dict) -> Tuple[str, str]:
    """What lists sort by, newest first: the start time, then the id (for equal starts)."""
    found = fields(record)
    return (found.started_at, found.id) if found else ("", "")


class IndexView:
    """Queries over one read snapshot of the index."""

    def __init__(self, db: sqlite3.Connection):
        self._db = db

    def count(self, query: Query, newer_than: Optional[Tuple[str, str]] = None) -> int:
        """How many conversations match (only those newer than the sort key `newer_than`, if given)."""
        where, args = _where(query, newer_than)
        return self._db.execute("SELECT COUNT(*) FROM conversations" + where, args).fetchone()[0]

    def page(self, query: Query, offset: int, limit: int) -> List[dict]:
        """Matching conversations `offset` to `offset + limit`, newest first."""
        where, args = _where(query, None)
        rows = self._db.execute(
            f"SELECT record FROM conversations{where}{NEWEST_FIRST} LIMIT ? OFFSET ?", [*args, limit, offset]
        )
        return [json.loads(text) for (text,) in rows]

    def rooms(self) -> List[str]:
        """Every room with an archived conversation, sorted."""
        return [
            room
            for (room,) in self._db.execute(
                "SELECT DISTINCT room FROM conversations WHERE room IS NOT NULL ORDER BY room"
            )
        ]


class ScanView:
    """The same queries over records read from the files (while the index cannot answer)."""

    def __init__(self, records: Iterable[dict]):
        rows = [(found, r) for r in records if (found := fields(r)) is not None]
        self._rows = sorted(rows, key=lambda row: sort_key(row[1]), reverse=True)

    def _matching(self, query: Query) -> List[Tuple[Fields, dict]]:
        """Rows that pass the query, newest first."""
        return [(f, r) for f, r in self._rows if query.matches(f, numbers(r)) and f.id not in query.hidden]

    def count(self, query: Query, newer_than: Optional[Tuple[str, str]] = None) -> int:
        """As IndexView.count."""
        return sum(1 for f, _ in self._matching(query) if newer_than is None or (f.started_at, f.id) > newer_than)

    def page(self, query: Query, offset: int, limit: int) -> List[dict]:
        """As IndexView.page."""
        return [r for _, r in self._matching(query)[offset : offset + limit]]

    def rooms(self) -> List[str]:
        """As IndexView.rooms."""
        return sorted({f.room for f, _ in self._rows if f.room is not None})


def _where(query: Query, newer_than: Optional[Tuple[str, str]]) -> Tuple[str, list]:
    """The WHERE clause of a query, and its arguments."""
    clauses, args = [], []
    for column, value in (("room", query.room), ("status", query.status)):
        if value is not None:
            clauses.append(f"{column} = ?")
            args.append(value)
    if query.caller is not None:
        reversed_digits = digits(query.caller)[::-1]
        clauses.append("directory IN (SELECT directory FROM callers WHERE reversed >= ? AND reversed < ?)")
        args.extend((reversed_digits, reversed_digits + ":"))  # ':' follows '9': every key with that prefix
    for column, bound, value in (("started_at", ">=", query.since), ("started_at", "<", query.until)):
        if value is not None:
            clauses.append(f"{column} {bound} ?")
            args.append(value)
    if query.hidden:
        clauses.append(f"id NOT IN ({', '.join('?' * len(query.hidden))})")
        args.extend(sorted(query.hidden))
    if newer_than is not None:
        clauses.append("(started_at, id) > (?, ?)")
        args.extend(newer_than)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


def _version(db: sqlite3.Connection) -> Optional[str]:
    """The schema version the index was built with (None: before versions were kept)."""
    found = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    return found[0] if found else None


def _upsert(db: sqlite3.Connection, rows: List[tuple]) -> None:
    """Write conversation rows and their callers (inside the caller's transaction)."""
    _drop_callers(db, [(row[0],) for row in rows])
    db.executemany(UPSERT, rows)
    db.executemany(
        "INSERT OR IGNORE INTO callers VALUES (?, ?)",
        [(digits(number)[::-1], row[0]) for row in rows for number in numbers(json.loads(row[-1])) if digits(number)],
    )


def _drop(db: sqlite3.Connection, directories: List[tuple]) -> None:
    """Delete conversation rows and their callers (inside the caller's transaction)."""
    _drop_callers(db, directories)
    db.executemany("DELETE FROM conversations WHERE directory = ?", directories)


def _drop_callers(db: sqlite3.Connection, directories: List[tuple]) -> None:
    """Forget the callers of these conversation directories."""
    db.executemany("DELETE FROM callers WHERE directory = ?", directories)


def _row(directory: str, text: str, mtime_ns: int) -> Optional[tuple]:
    """The index row of one conversation.json's text, or None if it is not a conversation."""
    try:
        found = fields(json.loads(text))
    except ValueError:
        return None
    return None if found is None else (directory, *found, mtime_ns, text)


def _loaded(directory: str, mtime_ns: int, load: Callable[[str], Optional[str]]) -> Optional[tuple]:
    """The row of the conversation.json in `directory` as it reads now, or None."""
    text = load(directory)
    return None if text is None else _row(directory, text, mtime_ns)


class ArchiveIndex:
    """The SQLite file, opened afresh for each use: threads and processes never share a connection."""

    def __init__(self, path: Path):
        self.path = Path(path).absolute()

    def read(self, work: Callable[[IndexView], T]) -> T:
        """`work` over one consistent snapshot; IndexUnusable if the index is missing, unbuilt or unreadable."""
        try:
            with closing(self._connect(create=False)) as db:
                db.execute("BEGIN")  # every query of `work` then reads the same snapshot
                if (
                    db.execute("SELECT 1 FROM meta WHERE key = 'complete'").fetchone() is None
                    or _version(db) != SCHEMA_VERSION
                ):
                    raise IndexUnusable(NOT_BUILT)
                return work(IndexView(db))
        except sqlite3.DatabaseError as error:
            raise IndexUnusable(str(error)) from error

    def put(self, directory: str, text: str, mtime_ns: int) -> None:
        """Add or replace one conversation's row."""
        row = _row(directory, text, mtime_ns)
        if row is None:  # not a conversation, so not listed: as the file scan would have it
            self.delete(directory)
            return
        with closing(self._connect(create=True)) as db:
            db.execute("BEGIN IMMEDIATE")
            _upsert(db, [row])
            db.execute("COMMIT")

    def delete(self, directory: str) -> None:
        """Drop one conversation's row."""
        with closing(self._connect(create=True)) as db:
            db.execute("BEGIN IMMEDIATE")
            _drop(db, [(directory,)])
            db.execute("COMMIT")

    def versions(self) -> Dict[str, int]:
        """Each indexed directory's version (its file's mtime_ns, its manifest's digest); none if unreadable."""
        try:
            with closing(self._connect(create=False)) as db:
                return dict(db.execute("SELECT directory, mtime_ns FROM conversations"))
        except sqlite3.DatabaseError:
            return {}

    def directory_of(self, conversation_id: str) -> Optional[str]:
        """Where the conversation with this id lives, by the index; None if unknown or unreadable."""
        try:
            with closing(self._connect(create=False)) as db:
                found = db.execute(
                    "SELECT directory FROM conversations WHERE id = ?" + NEWEST_FIRST + " LIMIT 1", (conversation_id,)
                ).fetchone()
        except sqlite3.DatabaseError:
            return None
        return found[0] if found else None

    def sync(
        self, files: Callable[[], Iterable[Tuple[str, int]]], load: Callable[[str], Optional[str]]
    ) -> Tuple[int, int]:
        """Make the rows match `files()`, (directory, mtime_ns) each: (rows written, rows dropped).

        A corrupt index file is deleted and built again."""
        try:
            return self._sync(files, load)
        except sqlite3.DatabaseError as error:
            if getattr(error, "sqlite_errorname", None) not in BROKEN:
                raise
            log.warning("archive index %s is corrupt: building it again from the files (%s)", self.path, error)
            self._discard()
            return self._sync(files, load)

    def _sync(
        self, files: Callable[[], Iterable[Tuple[str, int]]], load: Callable[[str], Optional[str]]
    ) -> Tuple[int, int]:
        """One pass under the write lock, so two processes' syncs (and their saves) never interleave."""
        with closing(self._connect(create=True)) as db:
            db.execute("BEGIN IMMEDIATE")
            if _version(db) != SCHEMA_VERSION:  # built by an older release: every row again
                db.execute("DELETE FROM conversations")
                db.execute("DELETE FROM callers")
                db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            known = dict(db.execute("SELECT directory, mtime_ns FROM conversations"))
            found = dict(files())
            stale = [(d,) for d, m in known.items() if found.get(d) != m]  # removed or rewritten
            fresh = [row for d, m in found.items() if known.get(d) != m and (row := _loaded(d, m, load))]
            _drop(db, stale)
            _upsert(db, fresh)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('complete', ?)", (str(len(found)),))
            db.execute("COMMIT")
        return len(fresh), len(stale)

    def _discard(self) -> None:
        """Delete the index file and its WAL if, once we hold the lock, it is still corrupt: two processes
        that found it corrupt together must not delete the one the other has just begun to build."""
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self._broken():
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def _broken(self) -> bool:
        """Whether SQLite finds the index file corrupt (a missing or busy one is not)."""
        try:
            with closing(self._connect(create=False)) as db:
                return db.execute("PRAGMA quick_check").fetchall() != [("ok",)]
        except sqlite3.DatabaseError as error:
            return getattr(error, "sqlite_errorname", None) in BROKEN

    def _connect(self, create: bool) -> sqlite3.Connection:
        """A connection in autocommit mode (transactions are explicit); `create` also makes the file and tables."""
        db = sqlite3.connect(
            self.path.as_uri() + ("" if create else "?mode=rw"), uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None
        )
        try:
            db.execute("PRAGMA synchronous = NORMAL")  # the files are the truth: a lost last commit is resynced
            if create:
                db.execute("PRAGMA journal_mode = WAL")  # readers never wait for a writer, across processes
                db.executescript(SCHEMA)
        except BaseException:
            db.close()
            raise
        return db
