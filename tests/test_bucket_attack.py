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


def test_a_sealed_record_survives_signalwires_deletion_after_a_kill_between_the_manifest_and_the_cleanup(s3, tmp_path):
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
    assert archive.wait_swept(30)
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


def test_a_conversation_staged_before_a_key_change_is_sealed_to_the_new_key(s3, tmp_path):
    """Claim (docs): media and the record are sealed to ARCHIVE_PUBLIC_KEY. A try cut short (the store down)
    leaves `channel-01.wav.age` sealed beside the staged channel; the operator replaces the key (the old private key was
    lost or leaked) and restarts. `_uploads` reuses any sealed file it finds, so the conversation ships with its
    media sealed to the old key and its record to the new one: the new private key cannot open the audio."""
    old, new = x25519.Identity.generate(), x25519.Identity.generate()
    directory = stage(tmp_path)
    # What a try cut short after sealing (the store refused the upload) leaves: the channel sealed to the old key.
    sealing.seal(directory / "channel-01.wav", directory / "channel-01.wav.age", [old.to_public()])
    (directory / "conversation.json").write_text(json.dumps(full_record(directory)))
    archive = archive_on(s3, tmp_path, [new.to_public()])
    archive.finish(directory)  # processing's next try, after the restart with the new key
    client, name = s3
    sealed = client.get_object(Bucket=name, Key=f"{PREFIX}room/2026-12-01/{CID}/channel-01.wav.age")["Body"].read()
    assert pyrage.decrypt(sealed, [new]).startswith(b"RIFF-plaintext-channel-audio")


def test_check_config_names_archive_url_in_one_line_when_the_bucket_does_not_exist(s3_server, tmp_path):
    """Checked and sound: `quorum check-config` with a bucket that does not exist exits 2 with one line naming
    ARCHIVE_URL and the store's NoSuchBucket, no traceback, no credential."""
    import subprocess
    import sys

    from e2e_support import as_env
    from support import make_config

    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        **as_env(make_config(recordings_dir=str(tmp_path / "rec"))),
        **s3_server.env,
        "ARCHIVE_URL": "s3://quorum-no-such-bucket-here/calls",
    }
    result = subprocess.run(
        [sys.executable, "-c", "import app; app.cli(['check-config'])"],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, lines
    assert "ARCHIVE_URL" in lines[0] and "NoSuchBucket" in lines[0] and "test" not in lines[0].split("s3://")[0]


def test_shipping_an_encrypted_conversation_leaves_no_plaintext_on_the_hosts_disk(s3, tmp_path):
    """Checked and sound: once an encrypted conversation is shipped, nothing under RECORDINGS_DIR (staging,
    sidecars, temp files, the trash, the index) holds its audio or the caller's number."""
    archive = archive_on(s3, tmp_path, [x25519.Identity.generate().to_public()])
    directory = stage(tmp_path)
    archive.save(directory, full_record(directory))
    archive.sync()
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file()]
    for path in leftovers:
        data = path.read_bytes()
        assert b"plaintext" not in data and CALLER.encode() not in data, path
    assert not directory.exists()


@pytest.mark.parametrize(
    "name",
    ["manifest.json", "conversation.json.age", "mix.wav.age", "../mix.wav", "..%2Fmix.wav", ".mix.wav", "other.wav"],
)
def test_a_media_name_outside_the_manifests_plaintext_media_gets_no_presigned_url(s3, tmp_path, name):
    """Checked and sound: the media route presigns only a plaintext media name the manifest lists; the manifest,
    a sealed file, path tricks and names it does not list get none (the route then answers 404)."""
    archive = archive_on(s3, tmp_path, [x25519.Identity.generate().to_public()] if "age" in name else ())
    directory = stage(tmp_path)
    archive.save(directory, full_record(directory))
    if "age" not in name:
        assert archive.media_url(CID, "mix.wav") is not None  # the one it lists does get one
    assert archive.media_url(CID, name) is None and archive.media_path(CID, name) is None


def test_quorum_decrypt_of_an_id_writes_nothing_outside_its_directory_for_a_hostile_manifest(s3, tmp_path):
    """Checked and sound: `quorum decrypt ID` downloads the objects a manifest names; a manifest (written by
    anyone who can write the bucket) naming `../../escape.age` is refused by the key check, not written above
    DIR/ID."""
    archive = archive_on(s3, tmp_path / "host")
    directory = stage(tmp_path / "host")
    archive.save(directory, full_record(directory))
    client, name = s3
    manifest = manifest_of(s3, directory)
    manifest["objects"] = {"../../escape.age": {"size": 1, "sha256": "0"}}
    client.put_object(Bucket=name, Key=f"{PREFIX}room/2026-12-01/{CID}/{MANIFEST}", Body=json.dumps(manifest))
    into = tmp_path / "out" / CID
    into.mkdir(parents=True)
    with pytest.raises(ValueError):
        archive.download(CID, into)
    assert not any(p.name.startswith("escape") for p in tmp_path.rglob("*"))


def test_deployments_sharing_a_bucket_under_other_prefixes_or_none_see_and_expire_only_their_own(s3, tmp_path):
    """Checked and sound: `s3://bucket/calls` (no trailing slash), `s3://bucket/calls2` and `s3://bucket` (no
    prefix) on one bucket each list only their own conversations, and a retention pass of the one without a
    prefix removes nothing of the others'."""
    from conversations.bucket import parse_s3_url

    archives = {}
    for url in ("s3://%s/calls" % s3[1], "s3://%s/calls2" % s3[1], "s3://%s" % s3[1]):
        name, prefix = parse_s3_url(url)
        root = tmp_path / (prefix.strip("/") or "none")
        archive = BucketArchive(root, Bucket(name, prefix), ArchiveIndex(root / "index.sqlite3"))
        archive.prepare()
        directory = root / "room" / "2020-01-01" / ("CF" + (prefix.strip("/") or "none").ljust(32, "0"))
        directory.mkdir(parents=True)
        (directory / "mix.wav").write_bytes(b"audio")
        old = {"id": directory.name, "room": "room", "status": "ready", "started_at": "2020-01-01T10:00:00+00:00"}
        archive.save(directory, {**old, "ended_at": "2020-01-01T10:05:00+00:00"})
        archives[url] = (archive, directory.name)
    for archive, conversation_id in archives.values():
        archive.sync()
        assert [c["id"] for c in archive.view(lambda view: view.page(Query(), 0, 10))] == [conversation_id]
    unprefixed, _ = archives["s3://%s" % s3[1]]
    store = MemoryStore()
    copies = SignalWireCopies(unprefixed, store, lambda sid: Outcome.OK, enabled=False)
    assert Retention(unprefixed, store, copies, days=1).expire(time.time()) == 1
    for url, (archive, conversation_id) in archives.items():
        if archive is not unprefixed:
            assert archive.find(conversation_id) is not None, url


def test_two_workers_finishing_one_staged_conversation_ship_it_once(s3, tmp_path):
    """Checked and sound: gunicorn's two workers share RECORDINGS_DIR; when both try to finish one staged
    conversation, the upload lock lets one ship it while the other is put off (ArchiveUnavailable) or finds it
    shipped, and the bucket ends with one whole conversation and nothing staged."""
    import threading

    from conversations.archive import ArchiveUnavailable

    slow = s3_client()
    slow.meta.events.register("provide-client-params.s3.PutObject", lambda params, **_: time.sleep(0.3))
    workers = [archive_on(s3, tmp_path, client=slow), archive_on(s3, tmp_path)]
    directory = stage(tmp_path)
    workers[0].write_file(directory, "conversation.json", json.dumps(full_record(directory)).encode())
    outcomes = []

    def finish(worker):
        try:
            outcomes.append("shipped" if worker.finish(directory) is not None else "gone")
        except ArchiveUnavailable:
            outcomes.append("put off")

    threads = [threading.Thread(target=finish, args=(w,)) for w in workers]
    threads[0].start()
    time.sleep(0.1)
    threads[1].start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) in (["put off", "shipped"], ["gone", "shipped"], ["shipped", "shipped"])
    assert set(manifest_of(s3, directory)["objects"]) == {"channel-01.wav", "mix.wav"}
    assert not directory.exists()
