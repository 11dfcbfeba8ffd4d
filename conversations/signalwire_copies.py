"""SignalWire's copies of archived recordings: deleted once the archive holds checked ones, retried until done.

SignalWire serves recording media without authentication, so with DELETE_FROM_SIGNALWIRE each recording
whose WAV was archived, fsynced and checked (`check_copy`; on object storage, also uploaded and checked there:
`Archive.kept`) is deleted at SignalWire. What is left to
delete is kept on disk, one small file per conversation in `RECORDINGS_DIR/.signalwire-copies/`, written
before the conversation.json it belongs to, so a restart loses nothing and a sweep reads only those files.
The sweeper retries each deletion (backing off) until SignalWire answers 204, or 404: already gone.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import wave
from pathlib import Path
from typing import Callable, Dict, Optional, Set, Tuple

from conversations.archive import Archive, ArchiveUnavailable, fsync_dir, valid_id
from conversations.sealing import SEALED
from quorum.gateway import Outcome
from quorum.keyed_workers import KeyedWorkers
from recording_state import StateStore, alone

log = logging.getLogger("quorum.signalwire-copies")

PENDING_DIR = ".signalwire-copies"
DURATION_TOLERANCE_S = 1.0  # RecordingDuration is whole seconds
PER_ROUND = 100  # conversations a sweep starts deletions for, at most
LOCK_TTL_S = 300  # longer than the DELETEs of one conversation; frees it if the process dies
RETRY_FIRST_S, RETRY_MAX_S = 1.0, 600.0
FRAMES_PER_READ = 64 * 1024


def check_copy(path: Path, reported_s: Optional[float]) -> Optional[str]:
    """Why an archived WAV cannot stand in for SignalWire's copy, or None when it can: a valid header,
    every frame the header promises on disk, and as long as SignalWire reported (within 1 s)."""
    if reported_s is None:
        return "SignalWire reported no duration to check it against"
    try:
        with wave.open(str(path)) as reader:
            promised, rate = reader.getnframes(), reader.getframerate()
            present = _frames_on_disk(reader)
    except (OSError, EOFError, wave.Error) as error:
        return f"not a readable WAV ({type(error).__name__})"
    if rate <= 0:
        return "no sample rate in the WAV header"
    if present < promised:
        return f"truncated: {present} of {promised} frames on disk"
    if abs(present / rate - reported_s) > DURATION_TOLERANCE_S:
        return f"{present / rate:.1f} s long where SignalWire reported {reported_s:g} s"
    return None


def _frames_on_disk(reader: wave.Wave_read) -> int:
    """Frames actually readable, block by block (a truncated file has fewer than its header says)."""
    width = max(1, reader.getsampwidth() * reader.getnchannels())
    frames = 0
    while True:
        block = reader.readframes(FRAMES_PER_READ)
        if not block:
            return frames
        frames += len(block) // width


def with_deleted(record: dict, wav_files: Set[str]) -> dict:
    """The record with `deleted_from_signalwire` set on the audio entries of these files (a new dict); sealed
    and plaintext names match alike (a summary names the sealed file, the pending deletion the plaintext)."""
    plain = {name.removesuffix(SEALED) for name in wav_files}

    def mark(audio: dict) -> dict:
        name = (audio.get("wav_file") or "").removesuffix(SEALED)
        return {**audio, "deleted_from_signalwire": True} if name in plain else audio

    channels = [{**channel, "audio": mark(channel.get("audio") or {})} for channel in record.get("channels", [])]
    return {**record, "audio": mark(record.get("audio") or {}), "channels": channels}


class SignalWireCopies:
    """Deletes SignalWire's copies conversation by conversation: one at a time per conversation, across
    processes too (the store's lock), on a small pool so a slow API never holds up the sweeper."""

    def __init__(
        self,
        archive: Archive,
        store: StateStore,
        delete: Callable[[str], Outcome],
        enabled: bool,
        clock: Callable[[], float] = time.time,
        workers: int = 2,
    ):
        self.enabled = enabled
        self._archive = archive
        self._store = store
        self._delete = delete  # recording sid -> Outcome (the gateway's DELETE /Recordings/{R})
        self._clock = clock
        self._directory = archive.root / PENDING_DIR
        self._retry: Dict[str, Tuple[int, float]] = {}  # conversation id -> (failed rounds, not before)
        self._retry_lock = threading.Lock()
        self._workers = KeyedWorkers(self._settle_alone, workers, "quorum-copies")

    def hold(self, directory: Path, copies: Dict[str, str]) -> None:
        """Remember, durably and before its conversation.json, what to delete (recording sid -> WAV name)."""
        if self.enabled and copies:
            relative = directory.relative_to(self._archive.root).as_posix()
            body = json.dumps({"conversation": relative, "recordings": copies}, sort_keys=True).encode()
            self._archive.write_file(self._directory, f"{directory.name}.json", body)

    def pending(self, conversation_id: str) -> bool:
        """Whether SignalWire's copies of this conversation are still to be deleted."""
        return self._path(conversation_id).is_file()

    def submit(self, conversation_id: str) -> None:
        """Delete this conversation's pending copies soon (nothing if none are pending)."""
        if self.enabled:
            self._workers.submit(conversation_id)

    def clear_to_remove(self, conversation_id: str) -> bool:
        """Whether our copy of a conversation may go now: nothing of it is left at SignalWire to delete.
        If something is, its deletion is started (ours must not outlive the means to delete theirs)."""
        if not self.pending(conversation_id):
            return True
        if self.enabled:
            self.submit(conversation_id)
            return False
        self._forget(conversation_id)  # left by a run with the deletion on: with it off, nothing will use it
        return True

    def sweep(self) -> int:
        """Start the deletions that are due, PER_ROUND at most, from the pending files' names alone."""
        if not self.enabled or not self._directory.is_dir():
            return 0
        now = self._clock()
        names = (
            name[: -len(".json")]
            for name in sorted(os.listdir(self._directory))
            if name.endswith(".json") and not name.startswith(".")
        )
        due = [cid for cid in names if valid_id(cid) and self._due(cid, now)][:PER_ROUND]
        for conversation_id in due:
            self._workers.submit(conversation_id)
        return len(due)

    def wait_idle(self, timeout: float) -> bool:
        """Until no deletion is under way (tests, shutdown)."""
        return self._workers.wait_idle(timeout)

    def shutdown(self) -> None:
        """Finish what is under way."""
        self._workers.shutdown()

    def _settle_alone(self, conversation_id: str) -> None:
        """Delete under the conversation's lock, so two processes never work on one conversation."""
        try:
            alone(self._store, f"delete:{conversation_id}", LOCK_TTL_S, lambda: self._settle(conversation_id))
        except ArchiveUnavailable as error:  # whether ours is kept cannot be known now: theirs stays, for now
            wait_s = self._back_off(conversation_id)
            log.info("conversation=%s action=retry-deletion in_s=%g why=%s", conversation_id, wait_s, error)

    def _settle(self, conversation_id: str) -> None:
        """Delete each pending copy at SignalWire; record what went, keep the rest pending."""
        held = self._read(conversation_id)
        if held is None:
            return
        directory = self._archive.root / held["conversation"]
        kept = self._archive.kept(directory)
        if kept is None:
            if not self._archive.assembling(directory):
                log.warning("conversation=%s action=keep-signalwire-copies reason=our copy is gone", conversation_id)
                self._forget(conversation_id)
            else:
                self._back_off(conversation_id)  # not archived yet: processing writes conversation.json after this
            return
        deleted, left = set(), {}
        for sid, wav in held["recordings"].items():
            if wav not in kept:
                log.warning(
                    "conversation=%s recording=%s: our copy %s is gone; SignalWire's copy is kept",
                    conversation_id,
                    sid,
                    wav,
                )
            elif self._delete(sid) in (Outcome.OK, Outcome.GONE):
                log.info("conversation=%s recording=%s action=deleted-at-signalwire", conversation_id, sid)
                deleted.add(wav)
            else:
                left[sid] = wav
        current = self._archive.read(directory)  # read again: rewritten only here, under the lock, atomically
        if deleted and current is not None:  # (None: removed meanwhile by hand; never write it back)
            self._archive.save(directory, with_deleted(current, deleted))
        self._keep(conversation_id, held, left)

    def _keep(self, conversation_id: str, held: dict, left: Dict[str, str]) -> None:
        """Leave only `left` pending, backing off before the next try; forget the conversation when done."""
        if not left:
            self._forget(conversation_id)
            return
        if left != held["recordings"]:
            body = json.dumps({**held, "recordings": left}, sort_keys=True).encode()
            self._archive.write_file(self._directory, f"{conversation_id}.json", body)
        wait_s = self._back_off(conversation_id)
        log.info("conversation=%s action=retry-deletion in_s=%g left=%d", conversation_id, wait_s, len(left))

    def _back_off(self, conversation_id: str) -> float:
        """Put off this process's next try, twice as long as the last time (RETRY_FIRST_S to RETRY_MAX_S)."""
        with self._retry_lock:
            failures = self._retry.get(conversation_id, (0, 0.0))[0] + 1
            wait_s = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (failures - 1))
            self._retry[conversation_id] = (failures, self._clock() + wait_s)
        return wait_s

    def _due(self, conversation_id: str, now: float) -> bool:
        """Whether a conversation's next try has come (this process's own backoff)."""
        with self._retry_lock:
            return self._retry.get(conversation_id, (0, 0.0))[1] <= now

    def _forget(self, conversation_id: str) -> None:
        """Nothing of this conversation is pending any more."""
        with self._retry_lock:
            self._retry.pop(conversation_id, None)
        path = self._path(conversation_id)
        if path.is_file():
            path.unlink(missing_ok=True)
            fsync_dir(self._directory)

    def _path(self, conversation_id: str) -> Path:
        """The conversation's pending file."""
        return self._directory / f"{conversation_id}.json"

    def _read(self, conversation_id: str) -> Optional[dict]:
        """The pending file, or None; an unreadable one is dropped (SignalWire's copies then stay)."""
        try:
            held = json.loads(self._path(conversation_id).read_text())
            parts = Path(held["conversation"]).parts
            if len(parts) != 3 or parts[2] != conversation_id or ".." in parts:
                raise ValueError("not a conversation directory")
            if not isinstance(held["recordings"], dict):
                raise ValueError("no recordings")
            return held
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            log.warning(
                "conversation=%s: unreadable pending-deletion file dropped; SignalWire's copies are kept",
                conversation_id,
            )
            self._forget(conversation_id)
            return None
