"""The conversation archive on object storage (ARCHIVE_URL=s3://bucket/prefix), shared by every host.

A conversation is put together in RECORDINGS_DIR as on disk (downloads, analysis, the SignalWire checks), then
shipped: each file uploaded and checked (conversations/bucket.py: Content-MD5, size and SHA-256), sealed first
with ARCHIVE_PUBLIC_KEY (conversations/sealing.py), and its `manifest.json` last. The manifest names every object
with its size and digest and carries the record (or, sealed, its plaintext summary), so a reader never sees half
a conversation: without a manifest there is none. Only then does the staged copy go, and only then may
SignalWire's copies be deleted (`kept`). An upload cut short (a kill, the store down) stays staged; processing
finishes it on its next try, and the sweep finishes any left behind. Removal deletes the media, then the
manifest: cut short, the conversation is still listed, and the next removal finishes it.

Lists read an index of the manifests: Redis (conversations/redis_index.py) when REDIS_URL is set, which every
host shares, else a SQLite file in RECORDINGS_DIR that `sync` rebuilds from the bucket's manifests (every
SYNC_EVERY_S, so a host sees what the others archived).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Dict, FrozenSet, Iterator, List, Optional, Sequence, Tuple

from conversations import sealing
from conversations.archive import MEDIA_NAME, MEDIA_TYPES, Archive, ArchiveUnavailable, _day_start, valid_id
from conversations.archive_index import IndexUnusable, Query, ScanView
from conversations.bucket import Bucket, BucketError, Stored
from quorum.keyed_workers import KeyedWorkers

log = logging.getLogger("quorum.archive")

BUCKET_INDEX_NAME = ".bucket-index.sqlite3"  # the index of the bucket's manifests, without Redis
MANIFEST = "manifest.json"
RECORD = "conversation.json"
FORMAT = 1
SYNC_EVERY_S = 60.0  # how soon a host with its own index lists what other hosts archived
LEFT_BEHIND_S = 600.0  # a staged conversation this old is no processing's any more: the sweep ships it
SHIPS_PER_ROUND = 20  # left-behind conversations one sweep ships at most
LOADS_AT_ONCE = 16  # manifests fetched in parallel while an index is built


def version(manifest: bytes) -> int:
    """A manifest's version in the index: its MD5, which is the ETag a listing shows of a single PUT."""
    return int(hashlib.md5(manifest).hexdigest()[:15], 16)


def etag_version(etag: str) -> int:
    """The index version of a listed manifest (any other ETag form only costs one more read of it)."""
    try:
        return int(etag[:15], 16)
    except ValueError:
        return -1


class BucketArchive(Archive):
    """Conversations staged under `root` and kept in `bucket`, listed through `index`."""

    def __init__(
        self,
        root: Path,
        bucket: Bucket,
        index,
        keys: Sequence = (),
        link_s: int = 300,
        clock=time.monotonic,
    ):
        super().__init__(root, index)
        self.bucket = bucket
        self._keys = list(keys)
        self._link_s = link_s
        self._clock = clock
        self._next_sync = 0.0
        self._origin: Optional[str] = None
        self._leftovers = KeyedWorkers(lambda _: self._ship_left_behind(), 1, "quorum-upload")

    # Writing

    def save(self, directory: Path, conversation: dict) -> Path:
        """Stage the record and ship the conversation; an archived one (it has a manifest) has only its listed
        record rewritten there (SignalWire's deletions mark it). ArchiveUnavailable: it stays staged."""
        relative = self._relative(directory)
        manifest = self._manifest(relative)
        if manifest is not None:
            self._put_manifest(relative, {**manifest, "record": self._listed(conversation)})
            self._discard(directory)  # what a kill after the manifest left staged: the manifest is the truth
            return directory / RECORD
        path = self.write_file(directory, RECORD, json.dumps(conversation, indent=2, sort_keys=True).encode())
        self._ship(directory)
        return path

    def finish(self, directory: Path) -> Optional[dict]:
        """Ship a conversation staged by a try cut short (a kill, the store down); its record, or None."""
        record = _read_json(directory / RECORD)
        if record is None:
            return None
        self._ship(directory)
        return record

    def _ship(self, directory: Path) -> None:
        """Upload every staged file (sealed first with a key), then the manifest, then drop the staged copy."""
        relative = self._relative(directory)
        with _shipping(directory) as mine:
            if not mine:
                raise ArchiveUnavailable("another process is uploading it")
            record = _read_json(directory / RECORD)
            if record is None:
                return  # shipped meanwhile by another process
            with _store_errors():
                objects = {
                    name: asdict(self.bucket.upload(f"{relative}/{name}", path))
                    for name, path in self._uploads(directory)
                }
                if self._keys:
                    sealed = sealing.seal_bytes((directory / RECORD).read_bytes(), self._keys)
                    name = RECORD + sealing.SEALED
                    objects[name] = asdict(self.bucket.put_bytes(f"{relative}/{name}", sealed, "application/age"))
            manifest = {"format": FORMAT, "encrypted": bool(self._keys), "objects": objects}
            self._put_manifest(relative, {**manifest, "record": self._listed(record)})
            self._discard(directory)
        log.info(
            "conversation=%s action=uploaded objects=%d encrypted=%s", directory.name, len(objects), bool(self._keys)
        )

    def _uploads(self, directory: Path) -> Iterator[Tuple[str, Path]]:
        """(name, file to upload) of each staged media file: sealed beside it first when there are keys (a sealed
        file is renamed into place whole, so one left by a try cut short is reused if sealed to the same keys)."""
        if self._keys:
            _forget_other_keys(directory, self._keys)
        for path in sorted(directory.iterdir()):
            if path.name.startswith(".") or path.name == RECORD or not path.is_file():
                continue
            if not self._keys:
                yield path.name, path
            elif not path.name.endswith(sealing.SEALED):
                target = path.with_name(path.name + sealing.SEALED)
                if not target.is_file():
                    sealing.seal(path, target, self._keys)
                yield target.name, target

    def _put_manifest(self, relative: str, manifest: dict) -> None:
        """Write a conversation's manifest (the step that makes it archived), then its index row."""
        data = json.dumps(manifest, indent=1, sort_keys=True).encode()
        with _store_errors():
            self.bucket.put_bytes(f"{relative}/{MANIFEST}", data)
        text = json.dumps(manifest["record"], sort_keys=True)
        self._indexed(lambda: self.index.put(relative, text, version(data)))

    def _listed(self, record: dict) -> dict:
        """What the manifest shows of a record: all of it, or with keys only its plaintext summary."""
        return sealing.summary(record) if self._keys else record

    # Reading

    def read(self, directory: Path) -> Optional[dict]:
        """The record of an archived conversation (its manifest's), or None; ArchiveUnavailable if unreachable."""
        manifest = self._manifest(self._relative(directory))
        return None if manifest is None else manifest["record"]

    def kept(self, directory: Path) -> Optional[FrozenSet[str]]:
        """The media names the manifest lists whose objects are there now with their size and digest (sealed ones
        by their plaintext name), or None: not archived. What fails the check keeps SignalWire's copy."""
        relative = self._relative(directory)
        manifest = self._manifest(relative)
        if manifest is None:
            return None
        kept = set()
        with _store_errors():
            for name, facts in manifest.get("objects", {}).items():
                stored = _stored(facts)
                if stored is not None and self.bucket.check(f"{relative}/{name}", stored):
                    kept.add(name.removesuffix(sealing.SEALED))
        return frozenset(kept)

    def find(self, conversation_id: str) -> Optional[dict]:
        """The archived conversation with this id, found by the index, or None; ArchiveUnavailable while the index
        cannot say (not built yet, Redis down): "not archived" would be a guess."""
        relative = self._located(conversation_id)
        return None if relative is None else self.read(self.root / relative)

    def _located(self, conversation_id: str) -> Optional[str]:
        """`ROOM/DAY/ID` of an archived conversation by the index; None if it has none, ArchiveUnavailable if the
        index cannot answer."""
        relative = self.index.directory_of(conversation_id) if valid_id(conversation_id) else None
        if relative is None and valid_id(conversation_id):
            self.view(lambda view: None)  # raises while the index cannot answer
        return relative

    def media_path(self, conversation_id: str, name: str) -> Optional[Path]:
        """Media are served from the bucket, never from here (see media_url)."""
        return None

    def media_url(self, conversation_id: str, name: str) -> Optional[str]:
        """A presigned URL of one plaintext media file, valid ARCHIVE_LINK_S; None if there is no such file."""
        relative = self._located(conversation_id)
        manifest = self._manifest(relative) if relative is not None and MEDIA_NAME.match(name) else None
        if manifest is None or name not in manifest.get("objects", {}):
            return None
        with _store_errors():
            return self.bucket.presigned_url(
                f"{relative}/{name}", self._link_s, MEDIA_TYPES[name.rsplit(".", 1)[-1]], name
            )

    def download(self, conversation_id: str, into: Path) -> bool:
        """Copy every object of one archived conversation into a directory (`quorum decrypt ID`); False if the
        bucket has no such conversation."""
        if not valid_id(conversation_id):
            return False
        relative = self.index.directory_of(conversation_id)
        if relative is None:  # a workstation has no index: one listing of the bucket
            with _store_errors():
                relative = next((d for d, _ in self._manifests() if d.endswith(f"/{conversation_id}")), None)
        manifest = self._manifest(relative) if relative is not None else None
        if manifest is None:
            return False
        with _store_errors():
            for name in manifest.get("objects", {}):
                self.bucket.download(f"{relative}/{name}", into / name)
        (into / RECORD).write_text(json.dumps(manifest.get("record"), indent=2, sort_keys=True))  # the summary
        return True

    def media_origin(self) -> Optional[str]:
        """The origin presigned URLs point at (presigning is local: no request is made)."""
        if self._origin is None:
            try:
                url = self.bucket.presigned_url("origin", 60, "text/plain", "origin")
            except BucketError as error:  # no credentials now (an expired role): pages go out without it
                log.warning("archive media origin unknown for now: %s", error)
                return None
            scheme, rest = url.split("://", 1)
            self._origin = f"{scheme}://{rest.split('/', 1)[0]}"
        return self._origin

    def view(self, work):
        """`work(view)` over the index; ArchiveUnavailable while it cannot answer (its build is started)."""
        try:
            return self.index.read(work)
        except IndexUnusable as problem:
            self._kick()
            raise ArchiveUnavailable(f"the archive's index cannot answer yet ({problem})") from None

    def all(self) -> List[dict]:
        """Every archived conversation, newest first, read from the manifests themselves (slow: tests, tools)."""
        return ScanView(r for r in self._records().values() if r is not None).page(Query(), 0, 10**9)

    def started_before(self, cutoff: float) -> Iterator[Path]:
        """Conversations of the days that began before `cutoff`, staged here or in the bucket, by name only."""
        seen = set()
        for directory in super().started_before(cutoff):
            seen.add(directory)
            yield directory
        with _store_errors():
            for room in self.bucket.list_dirs(""):
                for day in self.bucket.list_dirs(f"{room}/"):
                    began = _day_start(day)
                    if began is None or began >= cutoff:
                        continue
                    for conversation_id in self.bucket.list_dirs(f"{room}/{day}/"):
                        directory = self.root / room / day / conversation_id
                        if valid_id(conversation_id) and directory not in seen:
                            yield directory

    def remove(self, directory: Path) -> bool:
        """Remove one conversation for good: the staged copy, the media, then the manifest and its row."""
        directory = self._conversation_dir(directory)
        relative = self._relative(directory)
        staged = self._discard(directory)
        with _store_errors():
            names = [listed.relative for listed in self.bucket.list_objects(f"{relative}/")]
            self.bucket.delete([n for n in names if not n.endswith(f"/{MANIFEST}")])
            self.bucket.delete([n for n in names if n.endswith(f"/{MANIFEST}")])
        self._indexed(lambda: self.index.delete(relative))
        return staged or bool(names)

    def _manifest(self, relative: str) -> Optional[dict]:
        """A conversation's manifest, or None if it has none (not archived); ArchiveUnavailable if unreachable."""
        with _store_errors():
            data = self.bucket.get_bytes(f"{relative}/{MANIFEST}")
        return self._parsed(relative, data)

    def _parsed(self, relative: str, data: Optional[bytes]) -> Optional[dict]:
        """A manifest's JSON with its record an object, or None (none there, or unreadable: logged)."""
        try:
            manifest = json.loads(data) if data is not None else None
        except ValueError:
            manifest = False
        if manifest is None or (isinstance(manifest, dict) and isinstance(manifest.get("record"), dict)):
            return manifest
        log.warning("conversation=%s: unreadable manifest, treated as not archived", relative.rsplit("/", 1)[-1])
        return None

    # Upkeep

    def prepare(self) -> None:
        """Make the staging directory and prove it and the bucket writable; OSError or BucketError if not."""
        super().prepare()
        self.bucket.probe()

    def sweep(self) -> None:
        """Ship conversations left staged by a process that died, on a thread of their own (the sweeper never
        waits for the bucket); rebuild the index when due."""
        self._leftovers.submit("left-behind")
        if self._clock() >= self._next_sync:
            self._next_sync = self._clock() + SYNC_EVERY_S
            self._kick()

    def staged(self) -> int:
        """Conversations staged here, their upload not done (a scan of RECORDINGS_DIR: a few, when all is well)."""
        return sum(1 for d in super().started_before(float("inf")) if (d / RECORD).is_file())

    def wait_swept(self, timeout: float) -> bool:
        """Until the uploads a sweep started and any sync are done (tests); False on timeout."""
        return self._leftovers.wait_idle(timeout) and self.wait_synced(timeout)

    def stop(self) -> None:
        """Let an upload or a sync under way finish; start no more."""
        self._leftovers.shutdown()
        super().stop()

    def _ship_left_behind(self) -> None:
        """Ship up to SHIPS_PER_ROUND staged conversations no try has touched for LEFT_BEHIND_S (a file archive
        moved onto the bucket comes this way too); stop at the first failure: the store is likely down."""
        cutoff, shipped = time.time() - LEFT_BEHIND_S, 0
        for directory in list(super().started_before(float("inf"))):
            if shipped >= SHIPS_PER_ROUND:
                return
            try:
                if (directory / RECORD).stat().st_mtime >= cutoff:
                    continue
                if self._manifest(self._relative(directory)) is not None:
                    self._discard(directory)  # shipped, then killed before the staged copy went
                else:
                    self._ship(directory)
                shipped += 1
            except FileNotFoundError:
                continue  # not complete, or shipped meanwhile
            except (OSError, ArchiveUnavailable) as error:
                log.info("conversation=%s: upload left behind not finished (%s)", directory.name, error)
                return

    def sync(self) -> Tuple[int, int]:
        """Bring the index up to date with the bucket's manifests: (rows written, rows dropped). The manifests it
        lacks are fetched in parallel first; the listing is taken again under the index's lock, so a conversation
        archived meanwhile is not dropped."""
        with _store_errors():
            known = self.index.versions()
            texts = self._texts([d for d, v in self._manifests() if known.get(d) != v])
            listed: Dict[str, int] = {}

            def files() -> List[Tuple[str, int]]:
                listed.update(self._manifests())
                return list(listed.items())

            def load(directory: str) -> Optional[str]:
                """The text fetched first if it is of the version listed now, else fetched again."""
                fetched = texts.get(directory)
                if fetched is None or fetched[0] != listed.get(directory):
                    fetched = self._texts([directory])[directory]
                return fetched[1]

            return self.index.sync(files, load)

    def _sync_logged(self) -> None:
        """Sync, saying what changed; a store failure is logged and retried when next due."""
        try:
            super()._sync_logged()
        except (ArchiveUnavailable, BucketError) as error:
            self._failed_at = time.monotonic()
            log.warning("archive index not synced with the bucket: %s", error)

    def _manifests(self) -> List[Tuple[str, int]]:
        """(`ROOM/DAY/ID`, version) of every manifest in the bucket."""
        suffix = f"/{MANIFEST}"
        return [
            (listed.relative[: -len(suffix)], etag_version(listed.etag))
            for listed in self.bucket.list_objects("")
            if listed.relative.endswith(suffix) and listed.relative.count("/") == 3
        ]

    def _texts(self, directories: List[str]) -> Dict[str, Tuple[int, Optional[str]]]:
        """(version, the listed record's text) of each of these conversations' manifests, fetched at once; the
        text is None where there is no readable manifest."""

        def text(directory: str) -> Tuple[int, Optional[str]]:
            with _store_errors():
                data = self.bucket.get_bytes(f"{directory}/{MANIFEST}")
            manifest = self._parsed(directory, data)
            return version(data or b""), None if manifest is None else json.dumps(manifest["record"], sort_keys=True)

        with ThreadPoolExecutor(LOADS_AT_ONCE, thread_name_prefix="quorum-manifests") as pool:
            return dict(zip(directories, pool.map(text, directories)))

    def _records(self) -> Dict[str, Optional[dict]]:
        """Every manifest's record, by directory."""
        with _store_errors():
            texts = self._texts([d for d, _ in self._manifests()])
        return {d: (json.loads(t) if t else None) for d, (_, t) in texts.items()}


def _stored(facts) -> Optional[Stored]:
    """What a manifest says of one object, or None if it says it in no usable form."""
    try:
        return Stored(int(facts["size"]), str(facts["sha256"]))
    except (KeyError, TypeError, ValueError):
        return None


def _forget_other_keys(directory: Path, keys: Sequence) -> None:
    """Drop sealed files a try cut short sealed to other keys than these (ARCHIVE_PUBLIC_KEY changed since)."""
    marker, wanted = directory / ".sealed-to", "\n".join(sorted(str(k) for k in keys))
    if marker.is_file() and marker.read_text() == wanted:
        return
    for sealed in directory.glob(f"*{sealing.SEALED}"):
        sealed.unlink()
    marker.write_text(wanted)


@contextmanager
def _store_errors():
    """The bucket's failures as ArchiveUnavailable, which callers put off and retry."""
    try:
        yield
    except BucketError as error:
        raise ArchiveUnavailable(str(error)) from error


@contextmanager
def _shipping(directory: Path):
    """Whether this process holds the staged conversation's upload lock (gunicorn's workers share the staging)."""
    try:
        handle = os.open(directory / ".upload.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except FileNotFoundError:
        yield True  # nothing staged (shipped meanwhile): the caller finds no record
        return
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(handle)


def _read_json(path: Path) -> Optional[dict]:
    """A JSON object from a file, or None if it cannot be read."""
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None
