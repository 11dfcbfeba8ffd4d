"""The archive on object storage, end to end: a real Quorum against the SignalWire emulator and a real S3 server
(moto's standalone server): checked uploads, a manifest last, two hosts on one bucket, a kill during an upload,
SignalWire's copies deleted only after the checked upload, media through presigned URLs, encryption, retention."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
import requests

from app import services
from conversations import sealing
from conversations.archive import Archive, ArchiveUnavailable
from conversations.bucket import Bucket
from conversations.bucket_archive import MANIFEST, BucketArchive
from conversations.archive_index import ArchiveIndex
from conversations.retention import Retention
from conversations.signalwire_copies import SignalWireCopies
from quorum.gateway import Outcome
from recording_state import MemoryStore
from e2e_support import quorum_stack, wait_until
from support import json_keys
from emulator.scenarios import DEMO_NUMBER, Player
from s3_server import start_s3_server
from test_retention_end_to_end import SESSION, deletes, recordings

PREFIX = "calls/"
DAY_S = 86400


@pytest.fixture
def s3(s3_server, bucket_name, monkeypatch):
    """The S3 server's settings in the environment (as boto3 reads them), and a fresh bucket's client."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    return boto3.client("s3"), bucket_name


class Restartable:
    """A moto server of the test's own, stopped and started again on the same port (moto keeps nothing)."""

    def __init__(self):
        self.server = start_s3_server()

    def stop(self) -> None:
        """The store goes down."""
        self.server.stop()

    def start(self) -> None:
        """The store answers again, at the same address."""
        self.server = start_s3_server(port=int(self.server.endpoint.rsplit(":", 1)[1]))


@pytest.fixture
def own_s3(monkeypatch):
    """A restartable S3 server in the environment, and a bucket on it."""
    server = Restartable()
    for name, value in server.server.env.items():
        monkeypatch.setenv(name, value)
    yield server, server.server.create_bucket()
    server.stop()


def objects(s3) -> dict:
    """Every object under the prefix: relative key -> bytes."""
    client, name = s3
    listed = client.list_objects_v2(Bucket=name, Prefix=PREFIX).get("Contents", [])
    return {o["Key"][len(PREFIX) :]: client.get_object(Bucket=name, Key=o["Key"])["Body"].read() for o in listed}


def keys(s3) -> list:
    """The keys under the prefix (a listing only: safe while something deletes them)."""
    client, name = s3
    return [o["Key"] for o in client.list_objects_v2(Bucket=name, Prefix=PREFIX).get("Contents", [])]


def manifests(s3) -> dict:
    """Conversation directory -> its manifest."""
    return {k.rsplit("/", 1)[0]: json.loads(v) for k, v in objects(s3).items() if k.endswith("/" + MANIFEST)}


def staged(stack) -> list:
    """Conversation directories still staged in RECORDINGS_DIR."""
    return sorted(Path(stack.config.recordings_dir).glob("*/*/*/"))


def play_and_archive(stack, timeout: float = 20) -> None:
    """One session, played to its end and archived."""
    Player(stack.emulator).play(SESSION)
    assert stack.settle()
    assert stack.wait_for_empty_store(timeout)


def media_of(stack, sid: str) -> bytes:
    """What SignalWire (the emulator) serves of a recording's WAV."""
    return requests.get(stack.emulator.sim.recording_url(sid) + ".wav", timeout=5).content


def archive_url(s3) -> str:
    """ARCHIVE_URL of the test's bucket."""
    return f"s3://{s3[1]}/{PREFIX}"


def test_a_conversation_is_uploaded_checked_with_its_manifest_last_and_its_media_served_presigned(s3):
    with quorum_stack(
        api_token="t" * 32, participant_recording="inbound", env={"ARCHIVE_URL": archive_url(s3)}
    ) as stack:
        play_and_archive(stack)
        ((directory, manifest),) = manifests(s3).items()
        stored = objects(s3)
        for name, facts in manifest["objects"].items():
            assert len(stored[f"{directory}/{name}"]) == facts["size"]
        everything = recordings(stack)
        record = manifest["record"]
        assert stored[f"{directory}/{record['audio']['wav_file']}"] == media_of(stack, record_mix(record, everything))
        assert staged(stack) == []  # the staged copy went once the manifest was written
        token = {"Authorization": f"Bearer {stack.config.api_token}"}
        listed = requests.get(f"{stack.config.public_url}/api/conversations", headers=token, timeout=5).json()
        assert [c["id"] for c in listed["conversations"]] == [record["id"]]
        page = f"{stack.config.public_url}/conversations/{record['id']}/media/{record['audio']['wav_file']}"
        answer = requests.get(page, headers=token, timeout=5, allow_redirects=False)
        assert answer.status_code == 302 and "Signature" in answer.headers["Location"]
        assert requests.get(answer.headers["Location"], timeout=5).content == stored[f"{directory}/mix.wav"]
        metrics = requests.get(f"{stack.config.public_url}/metrics", headers=token, timeout=5).text
        assert "quorum_archive_staged 0.0" in metrics
        assert stack.log.errors() == []


def record_mix(record: dict, everything: dict) -> str:
    """The sid of the conference's own recording among SignalWire's."""
    return next(sid for sid, r in everything.items() if r.call_sid is None)


LISTER = """
import json, os
from app import create_app, services, shutdown
from config import Config
from conversations.archive_index import Query

app = create_app(Config.from_env(dict(os.environ)))
try:
    archive = services(app).archive
    assert archive.wait_synced(60)
    print(json.dumps([c["id"] for c in archive.view(lambda view: view.page(Query(), 0, 100))]))
finally:
    shutdown(app)
"""


def listed_by_another_process(stack, recordings_dir: Path) -> list:
    """The ids another Quorum process (its own RECORDINGS_DIR, the same ARCHIVE_URL) lists."""
    env = {**os.environ, **_env(stack), "RECORDINGS_DIR": str(recordings_dir)}
    done = subprocess.run(
        [sys.executable, "-c", LISTER],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[1],
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_two_processes_on_one_bucket_list_one_archive_each_with_its_own_index(s3, tmp_path):
    with quorum_stack(env={"ARCHIVE_URL": archive_url(s3)}) as stack:
        play_and_archive(stack)
        play_and_archive(stack)
        archived = sorted(m["record"]["id"] for m in manifests(s3).values())
        assert len(archived) == 2
        assert sorted(listed_by_another_process(stack, tmp_path / "other-host")) == archived


def test_two_processes_with_redis_share_the_index(s3, redis_url, tmp_path):
    with quorum_stack(redis_url=redis_url, env={"ARCHIVE_URL": archive_url(s3)}) as stack:
        play_and_archive(stack)
        archived = [m["record"]["id"] for m in manifests(s3).values()]
        assert listed_by_another_process(stack, tmp_path / "other-host") == archived
        # And what the other process's index holds is this one's: Redis, not a copy.
        assert services(stack.app).archive.view(lambda view: view.page(_everything(), 0, 10))[0]["id"] == archived[0]


def _env(stack) -> dict:
    """The stack's settings as environment variables."""
    from e2e_support import as_env

    return as_env(stack.config)


def _everything():
    """A query matching every conversation."""
    from conversations.archive_index import Query

    return Query()


CHILD = """
import json, sys, time
from pathlib import Path
from conversations.archive_index import ArchiveIndex
from conversations.bucket import Bucket, s3_client
from conversations.bucket_archive import BucketArchive

client = s3_client()
# The test's stand-in for a slow network: every part after the first waits, so the kill lands mid-upload.
client.meta.events.register(
    "provide-client-params.s3.UploadPart", lambda params, **kw: time.sleep(60) if params["PartNumber"] > 1 else None
)
root, name, directory = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
archive = BucketArchive(root, Bucket(name, "calls/", client, part_size=5 * 1024 * 1024), ArchiveIndex(root / "i"))
archive.save(directory, json.loads(sys.argv[4]))
"""


def staged_conversation(root: Path, size: int) -> tuple:
    """A conversation put together in `root` (a mix of `size` bytes): its directory and record."""
    directory = root / "room" / "2026-12-01" / "CF0123456789abcdef0123456789abcdef"
    directory.mkdir(parents=True)
    media = os.urandom(size)
    (directory / "mix.wav").write_bytes(media)
    record = {"id": directory.name, "room": "room", "status": "ready", "started_at": "2026-12-01T10:00:00.000+00:00"}
    return directory, record, media


def test_a_kill_during_an_upload_leaves_no_half_conversation_and_the_next_sweep_finishes_it(s3, tmp_path):
    client, name = s3
    directory, record, media = staged_conversation(tmp_path / "host-a", 12 * 1024 * 1024)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path / "host-a"), name, str(directory), json.dumps(record)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), *sys.path])},
    )

    def parts_uploaded() -> int:
        uploads = client.list_multipart_uploads(Bucket=name).get("Uploads", [])
        return sum(
            len(client.list_parts(Bucket=name, Key=u["Key"], UploadId=u["UploadId"]).get("Parts", [])) for u in uploads
        )

    try:
        assert wait_until(lambda: parts_uploaded() >= 1, 30)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    assert manifests(s3) == {}  # no reader sees the conversation: it has no manifest
    other = BucketArchive(tmp_path / "host-b", Bucket(name, PREFIX), ArchiveIndex(tmp_path / "host-b.sqlite3"))
    other.prepare()
    other.sync()
    assert other.view(lambda view: view.count(_everything())) == 0
    sent = []
    watched = boto3.client("s3")
    watched.meta.events.register("provide-client-params.s3.UploadPart", lambda params, **kw: sent.append(1))
    resumed = Bucket(name, PREFIX, watched, part_size=5 * 1024 * 1024)
    archive = BucketArchive(tmp_path / "host-a", resumed, ArchiveIndex(tmp_path / "host-a.sqlite3"))
    assert archive.staged() == 1  # what /metrics shows as quorum_archive_staged
    archive.sweep()
    assert archive.wait_swept(30)
    assert manifests(s3) == {}  # staged only moments ago: processing may still be at it
    old = time.time() - 3600
    os.utime(directory / "conversation.json", (old, old))
    archive.sweep()  # left behind: the sweep ships it (and starts a sync of its own index)
    assert archive.wait_swept(30)
    ((relative, manifest),) = manifests(s3).items()
    assert objects(s3)[f"{relative}/mix.wav"] == media
    assert manifest["objects"]["mix.wav"]["size"] == 12 * 1024 * 1024
    assert len(sent) == 2  # of 3 parts: the one uploaded before the kill was kept
    assert not directory.exists() and archive.staged() == 0
    other.sync()
    assert [c["id"] for c in other.view(lambda view: view.page(_everything(), 0, 10))] == [record["id"]]


def test_signalwires_copies_are_deleted_only_after_the_checked_upload(own_s3, monkeypatch):
    server, name = own_s3
    client = boto3.client("s3")
    checked_at_delete = []

    with quorum_stack(delete_from_signalwire=True, env={"ARCHIVE_URL": f"s3://{name}/{PREFIX}"}) as stack:

        def look_at_the_bucket(event):
            if event.kind == "recording-deleted":  # the emulator has just applied a DELETE
                listed = client.list_objects_v2(Bucket=name, Prefix=PREFIX).get("Contents", [])
                checked_at_delete.append(any(o["Key"].endswith("/" + MANIFEST) for o in listed))

        stack.emulator.sim.listeners.append(look_at_the_bucket)
        server.stop()  # the store is down when the conference ends
        Player(stack.emulator).play(SESSION)
        assert stack.settle()
        time.sleep(3)  # tries of the archiving, each put off (it cannot even ask whether it is archived already)
        assert deletes(stack) == [] and stack.store.rooms()
        assert not any(r.deleted for r in recordings(stack).values())
        server.start()
        client.create_bucket(Bucket=name)  # moto keeps nothing across a restart
        assert stack.wait_for_empty_store(30)
        everything = recordings(stack)
        assert wait_until(lambda: all(r.deleted for r in everything.values()), 15)
        assert checked_at_delete == [True] * len(everything)
        assert staged(stack) == []
        (manifest,) = manifests((client, name)).values()
        assert wait_until(lambda: all_deleted_marked(client, name), 10)


def all_deleted_marked(client, name: str) -> bool:
    """Whether the one manifest's record says each of its recordings is deleted at SignalWire."""
    (manifest,) = manifests((client, name)).values()
    return manifest["record"]["audio"]["deleted_from_signalwire"] is True


def test_an_encrypted_archive_holds_no_plaintext_and_the_private_key_opens_it(s3, tmp_path):
    from pyrage import x25519

    identity = x25519.Identity.generate()
    (tmp_path / "key.txt").write_text(f"# test key\n{identity}\n")
    env = {"ARCHIVE_URL": archive_url(s3), "ARCHIVE_PUBLIC_KEY": str(identity.to_public())}
    with quorum_stack(api_token="t" * 32, participant_recording="inbound", env=env) as stack:
        play_and_archive(stack)
        everything = recordings(stack)
        plaintexts = {sid: media_of(stack, sid) for sid in everything}
        stored = objects(s3)
        ((directory, manifest),) = manifests(s3).items()
        assert manifest["encrypted"] is True
        assert all(k.endswith(sealing.SEALED) or k.endswith("/" + MANIFEST) for k in stored)
        assert not any(p[:1000] in blob for p in plaintexts.values() for blob in stored.values())
        # No caller's number (the room is the number they dialled, ours).
        assert set(re.findall(r"\+\d{6,}", json.dumps(manifest))) <= {DEMO_NUMBER}
        assert not {"from", "to"} & json_keys(manifest)
        page = requests.get(
            f"{stack.config.public_url}/conversations/{manifest['record']['id']}",
            headers={"Authorization": f"Bearer {stack.config.api_token}"},
            timeout=5,
        ).text
        assert "encrypted at rest" in page and "<audio" not in page  # the summary's page: nothing to play
        out = tmp_path / "opened"
        code = subprocess.run(
            [
                sys.executable,
                "-c",
                "from app import cli; cli()",
                "decrypt",
                "--identity",
                str(tmp_path / "key.txt"),
                manifest["record"]["id"],
                "--out",
                str(out),
            ],
            env={**os.environ, **_env(stack), "RECORDINGS_DIR": str(tmp_path / "workstation")},  # no index there
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert code.returncode == 0, code.stderr
        out = out / manifest["record"]["id"]  # fetched into DIR/ID, decrypted there
        record = json.loads((out / "conversation.json").read_text())
        assert all(c["from"] and c["talk"]["seconds"] for c in record["channels"])  # the full record, analysed first
        assert (out / "mix.wav").read_bytes() == plaintexts[record_mix(record, everything)]
        assert {(out / c["audio"]["wav_file"]).read_bytes() for c in record["channels"]} <= set(plaintexts.values())


def test_retention_removes_an_expired_conversation_from_the_bucket_and_the_index(s3):
    now = [time.time()]
    with quorum_stack(
        archive_clock=lambda: now[0], env={"ARCHIVE_URL": archive_url(s3), "ARCHIVE_RETENTION_DAYS": "1"}
    ) as stack:
        play_and_archive(stack)
        assert len(manifests(s3)) == 1
        now[0] += 2 * DAY_S
        assert wait_until(lambda: keys(s3) == [], 15)
        archive = services(stack.app).archive
        assert archive.view(lambda view: view.count(_everything())) == 0


def test_lists_refuse_rather_than_show_a_partial_archive_while_the_index_is_unbuilt(s3, tmp_path):
    archive = BucketArchive(tmp_path, Bucket(s3[1], PREFIX), ArchiveIndex(tmp_path / "never-built.sqlite3"))
    with pytest.raises(ArchiveUnavailable):
        archive.view(lambda view: view.count(_everything()))
    with pytest.raises(ArchiveUnavailable):  # nor "no such conversation" (a 404) when it cannot know
        archive.find("CF0123456789abcdef0123456789abcdef")
    archive.stop()


def test_upkeep_with_the_store_down_keeps_everything_and_says_so_without_a_traceback(own_s3, tmp_path, caplog):
    server, name = own_s3
    archive = BucketArchive(tmp_path, Bucket(name, PREFIX), ArchiveIndex(tmp_path / "index.sqlite3"))
    store = MemoryStore()
    deleted = []
    copies = SignalWireCopies(archive, store, lambda sid: deleted.append(sid) or Outcome.OK, enabled=True)
    directory = archive.directory_for("room", time.time(), "CF0123456789abcdef0123456789abcdef")
    copies.hold(directory, {"RE0123456789abcdef0123456789abcdef": "mix.wav"})
    server.stop()
    assert Retention(archive, store, copies, days=1).sweep() == 0
    archive.sweep()
    assert archive.wait_swept(30)
    copies.submit(directory.name)
    assert copies.wait_idle(30)
    assert deleted == [] and copies.pending(directory.name)  # SignalWire's copy stays while ours is unknown
    assert not [r for r in caplog.records if r.exc_info]
    assert any("cannot be reached" in r.getMessage() for r in caplog.records)
    copies.shutdown()
    archive.stop()


def test_a_file_archive_moved_onto_a_bucket_is_shipped_by_the_sweep_and_removed_here(s3, tmp_path):
    local = Archive(tmp_path)
    directory, record, media = staged_conversation(tmp_path, 1000)
    local.save(directory, record)  # archived on disk, as before ARCHIVE_URL named a bucket
    old = time.time() - 3600
    os.utime(directory / "conversation.json", (old, old))
    archive = BucketArchive(tmp_path, Bucket(s3[1], PREFIX), ArchiveIndex(tmp_path / ".bucket-index.sqlite3"))
    archive.sweep()
    assert archive.wait_swept(30)
    ((relative, manifest),) = manifests(s3).items()
    assert manifest["record"] == record and objects(s3)[f"{relative}/mix.wav"] == media
    assert not directory.exists()
    assert [c["id"] for c in archive.view(lambda view: view.page(_everything(), 0, 10))] == [record["id"]]
    assert archive.all() == [record]  # read from the manifests themselves, as the index has it
    archive.stop()
