"""An outside review of the archive on object storage: each test states one claim of the feature and checks it
against moto's real S3 server. Tests marked as defects fail on the code they were written against."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import boto3
import pyrage
import pytest
from pyrage import x25519

from conversations import sealing
from conversations.archive_index import ArchiveIndex, Query
from conversations.bucket import Bucket, s3_client
from conversations.bucket_archive import MANIFEST, BucketArchive
from conversations.retention import Retention
from conversations.signalwire_copies import SignalWireCopies
from quorum.gateway import Outcome
from recording_state import MemoryStore

PREFIX = "calls/"
CID = "CF0123456789abcdef0123456789abcdef"
MIX_SID = "RE0123456789abcdef0123456789abcdef"
CALLER = "+15551234567"


@pytest.fixture
def s3(s3_server, bucket_name, monkeypatch):
    """The S3 server's settings in the environment (as boto3 reads them), and a fresh bucket's client and name."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    return boto3.client("s3"), bucket_name


def full_record(directory: Path) -> dict:
    """A finished conversation's full record: a caller's number and talk figures that the summary drops."""
    return {
        "id": directory.name,
        "room": "room",
        "status": "ready",
        "started_at": "2026-12-01T10:00:00.000+00:00",
        "ended_at": "2026-12-01T10:05:00.000+00:00",
        "audio": {"wav_file": "mix.wav", "duration_ms": 1000, "snr": 20.0},
        "channels": [
            {
                "connection_id": CALLER,
                "from": CALLER,
                "to": "+15550000000",
                "host": False,
                "start_ms": 0,
                "end_ms": 1000,
                "talk": {"seconds": 12.5},
                "audio": {"wav_file": "channel-01.wav", "duration_ms": 1000},
            }
        ],
    }


def stage(root: Path, plaintext: bytes = b"RIFF-plaintext-mix-audio" * 64) -> Path:
    """A conversation put together in `root` as processing leaves it before `save`: its media downloaded."""
    directory = root / "room" / "2026-12-01" / CID
    directory.mkdir(parents=True)
    (directory / "mix.wav").write_bytes(plaintext)
    (directory / "channel-01.wav").write_bytes(b"RIFF-plaintext-channel-audio" * 64)
    return directory


def manifest_of(s3, directory: Path) -> dict:
    """The conversation's manifest as the bucket holds it."""
    client, name = s3
    key = f"{PREFIX}room/2026-12-01/{directory.name}/{MANIFEST}"
    return json.loads(client.get_object(Bucket=name, Key=key)["Body"].read())


def archive_on(s3, root: Path, keys=(), client=None) -> BucketArchive:
    """A BucketArchive staging under `root` with its own SQLite index, prepared."""
    archive = BucketArchive(root, Bucket(s3[1], PREFIX, client), ArchiveIndex(root / "index.sqlite3"), keys)
    archive.prepare()
    return archive


def settle(archive: BucketArchive, directory: Path, deleted: list) -> SignalWireCopies:
    """SignalWire's copy of the mix held for deletion, then the deletion run to its end (SignalWire answers 204)."""
    copies = SignalWireCopies(archive, MemoryStore(), lambda sid: deleted.append(sid) or Outcome.OK, enabled=True)
    copies.hold(directory, {MIX_SID: "mix.wav"})
    copies.submit(directory.name)
    assert copies.wait_idle(30)
    copies.shutdown()
    return copies


# Defects


def test_an_encrypted_conversation_is_marked_deleted_from_signalwire_once_its_copy_is_deleted(s3, tmp_path):
    """Claim (sealing.summary's docstring): the plaintext summary keeps each audio entry's
    `deleted_from_signalwire` flag, so lists and the page say SignalWire's copy is gone. SignalWireCopies marks
    the record through `with_deleted`, which matches entries by `wav_file`; the summary names `mix.wav.age`
    while the pending file names `mix.wav`, so on an encrypted archive the mark never lands."""
    keys = [x25519.Identity.generate().to_public()]
    archive = archive_on(s3, tmp_path, keys)
    directory = stage(tmp_path)
    archive.save(directory, full_record(directory))
    deleted: list = []
    settle(archive, directory, deleted)
    assert deleted == [MIX_SID]  # SignalWire's copy is gone...
    assert manifest_of(s3, directory)["record"]["audio"]["deleted_from_signalwire"] is True  # ...and says so


def test_a_sealed_record_survives_signalwires_deletion_after_a_kill_between_the_manifest_and_the_cleanup(
    s3, tmp_path
):
    """Claim: the encrypted record (`conversation.json.age`) is the full record, analysis and callers included.
    A host killed after writing the manifest but before dropping the staged copy leaves both (the state is built
    here by restoring a copy of the staging directory after the ship). SignalWire's deletion then reads the
    record from the manifest (the plaintext summary), marks it, and `save` finds the conversation still staged:
    it writes the summary over the staged full record and ships it, so the sealed record becomes the summary and
    the callers, talk figures and analysis are lost for good."""
    identity = x25519.Identity.generate()
    archive = archive_on(s3, tmp_path, [identity.to_public()])
    directory = stage(tmp_path)
    left = tmp_path.parent / f"{tmp_path.name}-left-behind"
    archive.write_file(directory, "conversation.json", json.dumps(full_record(directory)).encode())
    shutil.copytree(directory, left)
    archive.save(directory, full_record(directory))
    assert "from" in sealed_record(s3, identity)["channels"][0]  # the first ship sealed the full record
    shutil.copytree(left, directory)  # what a kill between the manifest's PUT and the cleanup leaves
    settle(archive, directory, [])
    archive.sweep()  # whatever is still staged gets shipped
    record = sealed_record(s3, identity)
    assert record["channels"][0].get("from") == CALLER and record["channels"][0]["talk"]["seconds"] == 12.5


def sealed_record(s3, identity) -> dict:
    """The conversation's record as `conversation.json.age` holds it, decrypted."""
    client, name = s3
    sealed = client.get_object(Bucket=name, Key=f"{PREFIX}room/2026-12-01/{CID}/conversation.json.age")["Body"]
    return json.loads(pyrage.decrypt(sealed.read(), [identity]))


def test_signalwires_copy_is_kept_when_the_manifest_names_an_object_the_bucket_no_longer_holds(s3, tmp_path):
    """Claim (issue, docs): SignalWire's copy is deleted only once our copy is uploaded and checked (size and
    checksum). `kept` reads the manifest's names only: an object deleted from the bucket after the upload (a
    lifecycle rule, an operator, a removal cut short) still counts as kept, and the only other copy goes."""
    archive = archive_on(s3, tmp_path)
    directory = stage(tmp_path)
    archive.save(directory, full_record(directory))
    client, name = s3
    client.delete_object(Bucket=name, Key=f"{PREFIX}room/2026-12-01/{CID}/mix.wav")
    deleted: list = []
    settle(archive, directory, deleted)
    assert deleted == []


def test_signalwires_copy_is_kept_when_the_bucket_holds_another_object_under_the_manifests_name(s3, tmp_path):
    """Claim as above: the check is size and checksum. An object replaced after the upload (other bytes under
    the same key) still counts as kept, because `kept` never compares the store's object with the manifest."""
    archive = archive_on(s3, tmp_path)
    directory = stage(tmp_path)
    archive.save(directory, full_record(directory))
    client, name = s3
    client.put_object(Bucket=name, Key=f"{PREFIX}room/2026-12-01/{CID}/mix.wav", Body=b"not the recording")
    deleted: list = []
    settle(archive, directory, deleted)
    assert deleted == []


def test_a_hosts_sync_does_not_keep_an_older_record_under_a_newer_manifests_version(s3, tmp_path):
    """Claim (sync's docstring): the listing is taken again under the index's lock so the index matches the
    bucket. Host B's sync prefetches the manifests of its first listing; if host A rewrites one (SignalWire's
    deletion marks it) before B's second listing, B stores the new version with the old text, and as the
    version then matches, no later sync ever reads it again: B lists a stale record for good."""
    host_a = archive_on(s3, tmp_path / "a")
    directory = stage(tmp_path / "a")
    archive_a_record = full_record(directory)
    host_a.save(directory, archive_a_record)
    listings = []
    client_b = s3_client()

    def rewrite_between_the_listings(params, **_):
        listings.append(1)
        if len(listings) == 2:  # after the prefetch, before the listing under the lock: host A rewrites
            host_a.save(host_a.root / "room" / "2026-12-01" / CID, {**archive_a_record, "status": "deleted-mark"})

    client_b.meta.events.register("provide-client-params.s3.ListObjectsV2", rewrite_between_the_listings)
    host_b = BucketArchive(
        tmp_path / "b", Bucket(s3[1], PREFIX, client_b), ArchiveIndex(tmp_path / "b" / "index.sqlite3")
    )
    host_b.prepare()
    host_b.sync()
    host_b.sync()  # a later sync, nothing rewritten meanwhile
    (row,) = host_b.view(lambda view: view.page(Query(), 0, 10))
    assert row["status"] == manifest_of(s3, directory)["record"]["status"] == "deleted-mark"


def test_retention_carries_on_past_a_manifest_whose_record_is_not_an_object(s3, tmp_path):
    """Claim (docs): a pass removes each expired conversation. One manifest that is JSON but whose `record` is
    not an object (another tool's, a bug's) makes `read` return it as is and `expired` fail on it: the pass
    raises, and every later conversation in it stays forever."""
    archive = archive_on(s3, tmp_path)
    client, name = s3
    client.put_object(
        Bucket=name, Key=f"{PREFIX}room/2020-01-01/CAaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/{MANIFEST}", Body=b'{"record": 1}'
    )
    old = {**full_record(tmp_path / CID), "started_at": "2020-01-02T10:00:00+00:00", "ended_at": None}
    directory = tmp_path / "room" / "2020-01-02" / CID
    directory.mkdir(parents=True)
    archive.save(directory, old)
    store = MemoryStore()
    copies = SignalWireCopies(archive, store, lambda sid: Outcome.OK, enabled=False)
    assert Retention(archive, store, copies, days=1).expire(time.time()) == 1
