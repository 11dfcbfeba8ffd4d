"""The durable conversation archive: `RECORDINGS_DIR/ROOM/YYYY-MM-DD/ID/`.

Each conversation directory holds `conversation.json`, `mix.wav` (and `mix.mp3` when
SignalWire served one) and one WAV per channel. Every file is written to a temporary name
and renamed into place, and `conversation.json` is written last, so a crash never leaves a
directory that looks complete. `remove` is the one way a conversation leaves the archive: it is
renamed into `.trash/` at once, then deleted, so a crash never leaves half of one behind.

Lists read the index beside the files (`.index.sqlite3`, see archive_index.py): `save` and
`remove` update its row in the same step, and `start` brings it up to date with the files in
the background (new, rewritten and removed conversation.json files, from any process or host).
While it cannot answer, lists are read from the files, as before it existed. The same methods serve the archive
on object storage (conversations/bucket_archive.py), whose conversations are assembled here first.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sqlite3
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Callable, FrozenSet, Iterator, List, Optional, Tuple, TypeVar, Union

import redis

from conversations.archive_index import NOT_BUILT, ArchiveIndex, IndexUnusable, IndexView, ScanView, fields, sort_key
from quorum.keyed_workers import KeyedWorkers

log = logging.getLogger("quorum.archive")
T = TypeVar("T")
INDEX_NAME = ".index.sqlite3"  # a dot name: the conversation glob and room names never match it
SYNC_RETRY_S = 60.0  # after a failed sync (disk full, read-only), so requests do not each start another

# SignalWire sids are UUIDs; anything else in an id position is refused before touching disk.
CONVERSATION_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z-]{7,63}$")
MEDIA_NAME = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_.-]{0,127}\.(wav|mp3)$")
MEDIA_TYPES = {"wav": "audio/wav", "mp3": "audio/mpeg"}  # of each suffix MEDIA_NAME allows
_UNSAFE = re.compile(r"[^0-9A-Za-z+_.-]")
DAY_FORMAT = "%Y-%m-%d"
TRASH = ".trash"  # conversations being removed: out of the archive already, deleted next


class ArchiveUnavailable(Exception):
    """The archive's store cannot be reached now (object storage down, its index not built); try again later."""


def valid_id(conversation_id: str) -> bool:
    """Whether `conversation_id` has the shape of a sid (no separators, no dots, bounded length)."""
    return bool(CONVERSATION_ID.match(conversation_id))


def room_dir_name(room: str) -> str:
    """A room name made safe as one directory name."""
    name = _UNSAFE.sub("_", room).lstrip(".") or "_"
    return name[:100]


def fsync_dir(directory: Path) -> None:
    """Make the directory's entries (a rename, a new subdirectory) survive a power cut."""
    handle = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def make_dirs_durably(directory: Path) -> None:
    """mkdir -p, fsyncing the parent of each directory it creates so the new entries are on disk too."""
    missing = []
    while not directory.is_dir():
        missing.append(directory)
        directory = directory.parent
    for created in reversed(missing):
        created.mkdir(exist_ok=True)
        fsync_dir(created.parent)


class Archive:
    """Reads and writes conversations under one root directory, and keeps its index."""

    def __init__(self, root: Path, index=None):
        self.root = Path(root)
        self.index = index if index is not None else ArchiveIndex(self.root / INDEX_NAME)
        self._syncs = KeyedWorkers(lambda _: self._sync_logged(), 1, "quorum-index")
        self._failed_at: Optional[float] = None  # monotonic time of the last failed sync

    def directory_for(self, room: str, started_at: float, conversation_id: str) -> Path:
        """Where a conversation lives."""
        if not valid_id(conversation_id):
            raise ValueError(f"not a conversation id: {conversation_id!r}")
        day = datetime.fromtimestamp(started_at, timezone.utc).strftime(DAY_FORMAT)
        return self.root / room_dir_name(room) / day / conversation_id

    def write_file(self, directory: Path, name: str, data: bytes) -> Path:
        """Write `name` atomically from bytes in memory."""
        return self.write_stream(directory, name, lambda out: out.write(data))

    def write_stream(self, directory: Path, name: str, fill: Callable[[BinaryIO], object]) -> Path:
        """Write `name` atomically as `fill` writes it: temp file, fsync, rename, fsync the directory.

        If `fill` raises, the temp file is removed and nothing appears under `name`.
        """
        make_dirs_durably(directory)
        handle, temp = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
        try:
            with os.fdopen(handle, "wb") as out:
                fill(out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, directory / name)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        fsync_dir(directory)
        return directory / name

    def save(self, directory: Path, conversation: dict) -> Path:
        """Write `conversation.json` (last, after the media) to mark the directory complete, then index it."""
        relative = self._relative(directory)
        text = json.dumps(conversation, indent=2, sort_keys=True)
        path = self.write_file(directory, "conversation.json", text.encode())
        self._indexed(lambda: self.index.put(relative, text, path.stat().st_mtime_ns))
        return path

    def read(self, directory: Path) -> Optional[dict]:
        """The conversation archived in `directory`, or None (not there, or not complete yet)."""
        return _read(directory / "conversation.json")

    def remove(self, directory: Path) -> bool:
        """Remove one conversation for good: out of the archive in one rename, then deleted, each step
        fsynced, with its index row; emptied day and room directories go too. False if it was not there."""
        directory = self._conversation_dir(directory)
        relative = self._relative(directory)
        found = self._discard(directory)
        self._indexed(lambda: self.index.delete(relative))  # also a row left by a removal cut short
        return found

    def kept(self, directory: Path) -> Optional[FrozenSet[str]]:
        """The names of the files archived for good in a conversation directory; None while it is not archived."""
        if self.read(directory) is None:
            return None
        return frozenset(entry.name for entry in directory.iterdir() if entry.is_file())

    def assembling(self, directory: Path) -> bool:
        """Whether a conversation not archived (yet) is being put together here (its media downloaded)."""
        return directory.is_dir()

    def finish(self, directory: Path) -> Optional[dict]:
        """The record of a conversation assembled here whose archiving was cut short, archived now; None if there
        is none (saving a local conversation is one rename: never cut short)."""
        return None

    def media_url(self, conversation_id: str, name: str) -> Optional[str]:
        """A URL a browser fetches one media file from directly (object storage); None: serve `media_path`."""
        return None

    def media_origin(self) -> Optional[str]:
        """The origin `media_url`s are on, for the pages' Content-Security-Policy; None: our own."""
        return None

    def staged(self) -> int:
        """Conversations put together here whose archiving is not done (object storage: their upload)."""
        return 0

    def sweep(self) -> None:
        """The archive's own share of each sweep (object storage: uploads cut short, other hosts' conversations)."""

    def _discard(self, directory: Path) -> bool:
        """Delete a conversation directory here: renamed into the trash, then deleted; False if it was not there."""
        trash = self.root / TRASH
        make_dirs_durably(trash)
        target = trash / f"{directory.name}.{uuid.uuid4().hex}"
        try:
            os.rename(directory, target)
        except FileNotFoundError:
            return False
        fsync_dir(directory.parent)
        fsync_dir(trash)
        shutil.rmtree(target, ignore_errors=True)  # what a failure leaves, empty_trash finishes
        fsync_dir(trash)
        self._prune(directory.parent)
        return True

    def empty_trash(self) -> None:
        """Finish removals a crash or an error cut short."""
        trash = self.root / TRASH
        if trash.is_dir():
            for entry in trash.iterdir():
                shutil.rmtree(entry, ignore_errors=True)
            fsync_dir(trash)

    def started_before(self, cutoff: float) -> Iterator[Path]:
        """Conversation directories of the days that began before `cutoff` (epoch seconds), by name only."""
        if not self.root.is_dir():
            return
        for room in self.root.iterdir():
            if room.name.startswith(".") or not room.is_dir() or room.is_symlink():
                continue
            for day in room.iterdir():
                began = _day_start(day.name)
                if began is not None and began < cutoff and day.is_dir():
                    yield from (d for d in day.iterdir() if valid_id(d.name) and d.is_dir())

    def _conversation_dir(self, directory: Path) -> Path:
        """`directory` if it is ROOM/DAY/ID inside the root with no symlink on the way, else ValueError."""
        relative = Path(os.path.abspath(directory)).relative_to(os.path.abspath(self.root))  # ValueError outside
        parts = relative.parts
        if len(parts) != 3 or parts[0].startswith(".") or _day_start(parts[1]) is None or not valid_id(parts[2]):
            raise ValueError(f"not a conversation directory of the archive: {directory}")
        real = self.root.resolve() / relative
        if real.resolve() != real:
            raise ValueError(f"a symlink leads out of the archive: {directory}")
        return self.root / relative

    def _prune(self, day: Path) -> None:
        """Remove the day directory, then its room's, if the removal left them empty."""
        for directory in (day, day.parent):
            try:
                directory.rmdir()
            except OSError:
                return  # not empty (or being written to): it stays
            fsync_dir(directory.parent)

    def find(self, conversation_id: str) -> Optional[dict]:
        """The archived conversation with this id, or None."""
        directory = self._directory_of(conversation_id)
        return None if directory is None else _read(directory / "conversation.json")

    def media_path(self, conversation_id: str, name: str) -> Optional[Path]:
        """The path of one archived media file, only if it is inside the archive and exists."""
        directory = self._directory_of(conversation_id) if MEDIA_NAME.match(name) else None
        path = None if directory is None else directory / name
        return path if path is not None and path.is_file() else None

    def view(self, work: Callable[[Union[IndexView, ScanView]], T]) -> T:
        """`work(view)` over the index; over the files while the index cannot answer (a sync is started)."""
        try:
            return self.index.read(work)
        except IndexUnusable as problem:
            if self._kick():
                # Before the first sync of a new archive this is expected: not worth an operator's attention.
                level = logging.INFO if problem.args == (NOT_BUILT,) else logging.WARNING
                log.log(level, "archive index unusable (%s): lists are read from the files until it is synced", problem)
            return work(ScanView(self.all()))

    def all(self) -> List[dict]:
        """Every archived conversation, newest first, read from the files themselves."""
        found = [c for c in (_read(p) for p in self._files()) if c is not None and fields(c) is not None]
        return sorted(found, key=sort_key, reverse=True)

    def prepare(self) -> None:
        """Make the root and prove it writable (a file written, synced and removed); OSError if it is not."""
        make_dirs_durably(self.root)
        probe = self.root / f".write-check-{os.getpid()}"
        with open(probe, "wb") as handle:
            handle.write(b"ok")
            os.fsync(handle.fileno())
        probe.unlink()

    def writable(self) -> bool:
        """Whether the root is still a directory Quorum may write (for /healthz: no disk I/O)."""
        return self.root.is_dir() and os.access(self.root, os.W_OK | os.X_OK)

    def start(self) -> None:
        """Bring the index up to date with the files, in the background."""
        self._syncs.submit("index")

    def wait_synced(self, timeout: float) -> bool:
        """Until no sync is under way (tests, benchmarks); False on timeout."""
        return self._syncs.wait_idle(timeout)

    def stop(self) -> None:
        """Let a sync under way finish; start no more."""
        self._syncs.shutdown()

    def sync(self) -> Tuple[int, int]:
        """Bring the index up to date with the files now: (rows written, rows dropped)."""
        return self.index.sync(self._stats, self._text)

    def _sync_logged(self) -> None:
        """Sync, saying what changed; a failure is logged and retried when next needed, after SYNC_RETRY_S."""
        began = time.monotonic()
        try:
            written, dropped = self.sync()
        except (OSError, sqlite3.Error, redis.RedisError) as error:
            self._failed_at = time.monotonic()
            log.warning("archive index not synced with the files: %s", error)
            return
        self._failed_at = None
        if written or dropped:
            log.info(
                "archive index synced: %d rows written, %d dropped in %.2f s",
                written,
                dropped,
                time.monotonic() - began,
            )

    def _kick(self) -> bool:
        """Start a sync unless one is under way or the last one failed lately; whether one was started."""
        if self._syncs.depth() or (self._failed_at is not None and time.monotonic() - self._failed_at < SYNC_RETRY_S):
            return False
        self._syncs.submit("index")
        return True

    def _indexed(self, write: Callable[[], None]) -> None:
        """One index write; if it fails the file is still the truth, so a sync catches the index up."""
        try:
            write()
        except (OSError, sqlite3.Error, redis.RedisError) as error:
            log.warning("archive index not updated (%s): syncing it with the files", error)
            self._kick()

    def _relative(self, directory: Path) -> str:
        """`ROOM/DAY/ID` of a conversation directory of this archive; ValueError for any other path."""
        parts = Path(directory).relative_to(self.root).parts
        if len(parts) != 3 or ".." in parts:
            raise ValueError(f"not a conversation directory of {self.root}: {directory}")
        return "/".join(parts)

    def _directory_of(self, conversation_id: str) -> Optional[Path]:
        """Where a complete conversation lives: the index's directory if its file is there, else a search's."""
        if not valid_id(conversation_id):
            return None
        indexed = self.index.directory_of(conversation_id)
        if indexed is not None and (self.root / indexed / "conversation.json").is_file():
            return self.root / indexed
        return next((path.parent for path in self.root.glob(f"*/*/{conversation_id}/conversation.json")), None)

    def _files(self) -> Iterator[Path]:
        """Every conversation.json under the root."""
        if self.root.is_dir():
            yield from self.root.glob("*/*/*/conversation.json")

    def _stats(self) -> Iterator[Tuple[str, int]]:
        """(`ROOM/DAY/ID`, mtime_ns) of every conversation.json, as `_files` finds them but with one stat each."""
        for room in _subdirectories(self.root):
            for day in _subdirectories(room.path):
                for conversation in _subdirectories(day.path):
                    try:
                        mtime_ns = os.stat(os.path.join(conversation.path, "conversation.json")).st_mtime_ns
                    except OSError:
                        continue
                    yield f"{room.name}/{day.name}/{conversation.name}", mtime_ns

    def _text(self, relative: str) -> Optional[str]:
        """The text of one conversation.json, or None if it cannot be read."""
        try:
            return (self.root / relative / "conversation.json").read_text()
        except (OSError, ValueError):
            return None


def _subdirectories(path) -> List[os.DirEntry]:
    """The directories in `path` whose names a glob `*` matches (no dot names); none if it is missing."""
    try:
        with os.scandir(path) as entries:
            return [e for e in entries if not e.name.startswith(".") and e.is_dir()]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _day_start(name: str) -> Optional[float]:
    """Midnight UTC of a YYYY-MM-DD directory name, as epoch seconds; None for any other name."""
    try:
        return datetime.strptime(name, DAY_FORMAT).replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


def _read(path: Path) -> Optional[dict]:
    """A conversation file's JSON, or None if it cannot be read."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
