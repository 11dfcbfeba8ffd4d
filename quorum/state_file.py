"""The memory store's state file: every change written through to SQLite on local disk, loaded at start.

One process owns the file (STATE_FILE, default RECORDINGS_DIR/.quorum-state.sqlite3) and keeps every read
in memory; the file only makes a restart find what the process knew: each room's Conference (parked ones
too), the calls the voice webhook introduced (hosts among them) and the retired sids. Each change is queued
under the lock that ordered it in memory, and one writer thread commits the queue in its order, so the file
holds the same changes in the same order (ordered by construction: one FIFO, one writer). A stop writes
the whole queue before closing. WAL with synchronous=NORMAL: a commit is a write to the WAL, not an fsync,
and survives the process crashing, which loses only what the writer had not committed yet (the last
milliseconds); a power loss may lose the last commits (never the file). The reconciler's first round after
a start re-reads every conference held, which repairs either.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from dataclasses import fields
from functools import cache
from typing import Dict, List, Optional, Tuple

from config import ConfigError
from recording_state import Conference, MemoryStore

log = logging.getLogger("quorum.state_file")

SCHEMA_VERSION = 1  # PRAGMA user_version; a file of a newer one is refused
SCHEMA = """
CREATE TABLE IF NOT EXISTS conferences (room TEXT PRIMARY KEY, conference TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS calls (seq INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS retired (seq INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, value TEXT);
"""
# The bounded sets' statements (both tables alike; a retired sid has no value): `seq` orders them oldest first.
_KEEP = {
    kind: (f"INSERT OR REPLACE INTO {kind} (key, value) VALUES (?, ?)", f"DELETE FROM {kind} WHERE key = ?")
    for kind in ("calls", "retired")
}
# gunicorn's graceful_timeout: a reload starts the new worker while the old one finishes, so wait for it.
LOCK_WAIT_S = 20.0


@cache
def _field_names(kind: type) -> Tuple[str, ...]:
    """A dataclass's field names, looked up once per class."""
    return tuple(f.name for f in fields(kind))


def _state(obj) -> dict:
    """What JSON keeps of one of recording_state's frozen dataclasses: its fields, as `Conference.to_dict` has them
    (but read from `__dict__`, not copied: the C encoder then walks the dicts, lists and scalars itself)."""
    # A class is hashable, but mypy does not see `type[...]` as Hashable (python/mypy#20409).
    state, names = obj.__dict__, _field_names(type(obj))  # type: ignore[arg-type]
    return state if len(state) == len(names) else {name: state[name] for name in names}  # less a `_memo`'s value


# Made once: `json.dumps` with options builds an encoder per call. A Conference is a tree: no cycle checks.
_JSON = json.JSONEncoder(separators=(",", ":"), check_circular=False, default=_state)


class StateFile:
    """The SQLite file, held by one process (an flock on `PATH.lock`); one writer thread writes every change.

    Changes are queued in the order the store made them (each under the lock that ordered it) and the
    writer commits what has queued up in one transaction, a room's latest conference only: the request
    threads never wait for SQLite, and a busy second costs a few commits, not one per change.
    """

    def __init__(self, path: str, lock_wait_s: float = LOCK_WAIT_S):
        self.path = path
        self._holder = _hold(path, lock_wait_s)
        try:
            self._db = _open(path)
        except BaseException:
            os.close(self._holder)
            raise
        self._queued: List[tuple] = []  # ("conference", room, conf or None) | (kind, key, value, evicted)
        self._wake = threading.Condition()
        self._closing = False
        self._writer = threading.Thread(target=self._write_queued, name="quorum-state-file", daemon=True)
        self._writer.start()

    def load(self) -> Tuple[Dict[str, Conference], "OrderedDict[str, dict]", "OrderedDict[str, None]"]:
        """Every readable row: conferences by room, then known calls and retired sids, oldest first."""
        try:
            rows = self._db.execute("SELECT room, conference FROM conferences")
            conferences = {
                room: conf
                for room, text in rows
                if (conf := self._readable(f"room {room}", text, _conference)) is not None
            }
            rows = self._db.execute("SELECT key, value FROM calls ORDER BY seq")
            calls = OrderedDict(
                (sid, caller)
                for sid, text in rows
                if (caller := self._readable(f"call {sid}", text, _caller)) is not None
            )
            retired = OrderedDict((sid, None) for (sid,) in self._db.execute("SELECT key FROM retired ORDER BY seq"))
        except sqlite3.DatabaseError as error:
            raise ConfigError("STATE_FILE", f"cannot read {self.path}: {error}") from None
        log.info(
            "state file %s: %d conferences, %d known calls, %d retired sids",
            self.path,
            len(conferences),
            len(calls),
            len(retired),
        )
        return conferences, calls, retired

    def _readable(self, what: str, text, decode):
        """`decode(text)`, or None with one warning: one bad row never stops a start."""
        try:
            return decode(text)
        except Exception as error:  # whatever a damaged or foreign row raises, it is that row's problem only
            log.warning(
                "state file %s: %s skipped, its row is unreadable (%s: %s)",
                self.path,
                what,
                type(error).__name__,
                error,
            )
            return None

    def conference(self, room: str, conf: Optional[Conference]) -> None:
        """Queue the room's new conference (None: delete its row)."""
        self._queue(("conference", room, conf))

    def keep(self, kind: str, key: str, value: Optional[dict], evicted: List[str]) -> None:
        """Queue `key` as the newest of a bounded set ("calls" or "retired") and the deletion of the evicted keys."""
        self._queue((kind, key, value, evicted))

    def _queue(self, change: tuple) -> None:
        """Append a change for the writer (the caller holds the lock that ordered it)."""
        with self._wake:
            if self._closing:
                log.warning("state file %s is closed: a change after the stop is not written", self.path)
                return
            self._queued.append(change)
            self._wake.notify()

    def _write_queued(self) -> None:
        """The writer thread: commit what has queued up, until closed and every change is written."""
        while True:
            with self._wake:
                while not self._queued and not self._closing:
                    self._wake.wait()
                changes, self._queued = self._queued, []
            if changes:
                self._commit_until_done(changes)
            elif self._closing:
                return

    def _commit_until_done(self, changes: List[tuple]) -> None:
        """Commit `changes`; while the file refuses (a full disk), log it and try again each second."""
        while True:
            try:
                return self._commit(changes)
            except sqlite3.Error as error:
                log.error(
                    "state file %s: %d changes not written yet (%s: %s); trying again",
                    self.path,
                    len(changes),
                    type(error).__name__,
                    error,
                )
            except Exception:  # a bug, not the disk: trying again cannot help, and the writer must go on
                log.exception("state file %s: %d changes dropped", self.path, len(changes))
                return
            with self._wake:
                if self._closing:  # a stop waits for no disk: what is still queued is lost
                    log.error("state file %s: stopping with %d changes not written", self.path, len(changes))
                    return
                self._wake.wait(1.0)

    def _commit(self, changes: List[tuple]) -> None:
        """One transaction: each room's latest conference, then the sets' changes in their order."""
        latest = {change[1]: change[2] for change in changes if change[0] == "conference"}
        rows = [(room, _JSON.encode(conf)) for room, conf in latest.items() if conf is not None]
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany("INSERT OR REPLACE INTO conferences VALUES (?, ?)", rows)
            self._db.executemany(
                "DELETE FROM conferences WHERE room = ?", [(room,) for room, conf in latest.items() if conf is None]
            )
            for kind, key, value, evicted in (change for change in changes if change[0] != "conference"):
                insert, delete = _KEEP[kind]
                self._db.execute(insert, (key, None if value is None else _JSON.encode(value)))
                self._db.executemany(delete, [(gone,) for gone in evicted])
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:  # a failed COMMIT may have rolled back already
                self._db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Write what is queued, close the file (SQLite checkpoints the WAL into it and syncs it), then let the
        next process have it; again: nothing."""
        with self._wake:
            if self._closing:
                return
            self._closing = True
            self._wake.notify()
        self._writer.join()
        self._db.close()
        os.close(self._holder)


class FileBackedStore(MemoryStore):
    """The memory store, starting from a StateFile and writing every change through to it; reads stay in memory."""

    def __init__(self, state_file: StateFile):
        super().__init__()
        self.state_file = state_file
        self._conferences, self._calls, self._retired = state_file.load()

    def _put(self, room: str, conf: Optional[Conference]) -> None:
        """Memory, then the file's queue, both under the room's lock: the file gets the room's changes in order."""
        super()._put(room, conf)
        self.state_file.conference(room, conf)

    def _keep(self, kind: str, items: "OrderedDict", key: str, value) -> List[str]:
        """Memory, then the file's queue with what memory dropped, both under the sets' lock."""
        evicted = super()._keep(kind, items, key, value)
        self.state_file.keep(kind, key, value, evicted)
        return evicted

    def close(self) -> None:
        """Close the file: at shutdown, after the last change."""
        self.state_file.close()


def _hold(path: str, wait_s: float) -> int:
    """A descriptor holding `PATH.lock` exclusively, waited for up to `wait_s` (another process may be finishing)."""
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        holder = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as error:
        raise ConfigError("STATE_FILE", f"cannot open {path}: {error.strerror}") from None
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return holder
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(holder)
                raise ConfigError(
                    "STATE_FILE",
                    f"{path} is in use by another Quorum process (one process per state file: several need REDIS_URL)",
                ) from None
            time.sleep(0.1)


def _open(path: str) -> sqlite3.Connection:
    """The connection, in WAL mode with the schema in place, or a ConfigError saying why not."""
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as error:
        raise ConfigError("STATE_FILE", f"cannot open {path}: {error}") from None
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ConfigError(
                "STATE_FILE",
                f"{path} was written by a newer Quorum (schema {version}; this one "
                f"reads {SCHEMA_VERSION}): upgrade, or move the file away",
            )
        db.execute("PRAGMA synchronous = NORMAL")  # no fsync per commit: see the module's docstring
        db.execute("PRAGMA journal_mode = WAL")  # a commit appends to the WAL: no rewrite of the file's pages
        db.executescript(f"BEGIN; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
        return db
    except sqlite3.DatabaseError as error:
        db.close()
        raise ConfigError("STATE_FILE", f"{path} is not a Quorum state file ({error}): move it away") from None
    except BaseException:
        db.close()
        raise


def _conference(text) -> Conference:
    """A conference row's Conference."""
    return Conference.from_dict(json.loads(text))


def _caller(text) -> dict:
    """A known call's row: who it is, as the voice webhook kept it."""
    caller = json.loads(text)
    if not (isinstance(caller, dict) and all(isinstance(caller.get(k), str) for k in ("from", "to"))):
        raise ValueError(f"not a caller: {text!r}")
    return caller
