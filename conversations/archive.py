"""The durable conversation archive: `RECORDINGS_DIR/ROOM/YYYY-MM-DD/ID/`.

Each conversation directory holds `conversation.json`, `mix.wav` (and `mix.mp3` when
SignalWire served one) and one WAV per channel. Every file is written to a temporary name
and renamed into place, and `conversation.json` is written last, so a crash never leaves a
directory that looks complete. `remove` is the one way a conversation leaves the archive: it is
renamed into `.trash/` at once, then deleted, so a crash never leaves half of one behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, List, Optional

# SignalWire sids are UUIDs; anything else in an id position is refused before touching disk.
CONVERSATION_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z-]{7,63}$")
MEDIA_NAME = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_.-]{0,127}\.(wav|mp3)$")
_UNSAFE = re.compile(r"[^0-9A-Za-z+_.-]")
DAY_FORMAT = "%Y-%m-%d"
TRASH = ".trash"  # conversations being removed: out of the archive already, deleted next


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
    """Reads and writes conversations under one root directory."""

    def __init__(self, root: Path):
        self.root = Path(root)

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
        """Write `conversation.json` (last, after the media) to mark the directory complete."""
        body = json.dumps(conversation, indent=2, sort_keys=True).encode()
        return self.write_file(directory, "conversation.json", body)

    def read(self, directory: Path) -> Optional[dict]:
        """The conversation archived in `directory`, or None (not there, or not complete yet)."""
        return _read(directory / "conversation.json")

    def remove(self, directory: Path) -> bool:
        """Remove one conversation for good: out of the archive in one rename, then deleted, each step
        fsynced; emptied day and room directories go too. False if it was not there (removed already)."""
        directory = self._conversation_dir(directory)
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
        if not valid_id(conversation_id):
            return None
        for path in self.root.glob(f"*/*/{conversation_id}/conversation.json"):
            return _read(path)
        return None

    def media_path(self, conversation_id: str, name: str) -> Optional[Path]:
        """The path of one archived media file, only if it is inside the archive and exists."""
        if not valid_id(conversation_id) or not MEDIA_NAME.match(name):
            return None
        for directory in self.root.glob(f"*/*/{conversation_id}"):
            path = directory / name
            return path if path.is_file() else None
        return None

    def all(self) -> List[dict]:
        """Every archived conversation, newest first."""
        found = [c for c in (_read(p) for p in self._files()) if c is not None]
        return sorted(found, key=lambda c: c.get("started_at") or "", reverse=True)

    def _files(self) -> Iterator[Path]:
        """Every conversation.json under the root."""
        if self.root.is_dir():
            yield from self.root.glob("*/*/*/conversation.json")


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
