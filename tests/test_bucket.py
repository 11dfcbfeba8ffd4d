"""The object store client against a real S3 endpoint (moto's server over HTTP): writes, checks, resumes, errors."""

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from support import free_port

from conversations.bucket import MIN_PART_SIZE, Bucket, BucketError, Stored, parse_s3_url, s3_client, sidecar_of

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """The process environment pointing boto3 at the session's moto server."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return s3_server.env


@pytest.fixture
def client(s3_env):
    """The product's client, built from the environment as in production."""
    return s3_client()


@pytest.fixture
def bucket(client, bucket_name):
    """A Bucket with a prefix in a fresh bucket, multipart from 5 MiB."""
    return Bucket(bucket_name, "archive/", client=client, part_size=MIN_PART_SIZE)


def calls(client, *operations):
    """A list that collects the name of each of these operations the client is about to send."""
    seen = []
    for operation in operations:
        client.meta.events.register(f"before-call.s3.{operation}", lambda model, **_: seen.append(model.name))
    return seen


def big_file(path: Path, size: int) -> Path:
    """A file of `size` pseudo-random bytes (no two parts alike)."""
    block = hashlib.sha256(b"seed").digest() * 32768  # 1 MiB
    with path.open("wb") as file:
        for n in range(size // len(block)):
            file.write(bytes([n % 256]) + block[1:])
        file.write(block[: size % len(block)])
    return path


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_small_round_trip(bucket, tmp_path):
    stored = bucket.put_bytes("room/2024-01-01/c1/conversation.json", b'{"a": 1}')
    assert stored == Stored(8, hashlib.sha256(b'{"a": 1}').hexdigest())
    assert bucket.check("room/2024-01-01/c1/conversation.json", stored)
    assert bucket.get_bytes("room/2024-01-01/c1/conversation.json") == b'{"a": 1}'
    assert bucket.download("room/2024-01-01/c1/conversation.json", tmp_path / "c.json")
    assert (tmp_path / "c.json").read_bytes() == b'{"a": 1}'
    head = bucket.client.head_object(Bucket=bucket.name, Key="archive/room/2024-01-01/c1/conversation.json")
    assert head["Metadata"] == {"sha256": stored.sha256} and head["ContentType"] == "application/json"


def test_multipart_round_trip(bucket, client, tmp_path):
    path = big_file(tmp_path / "call.wav", 2 * MIN_PART_SIZE + 12345)
    sent = calls(client, "PutObject", "UploadPart")
    stored = bucket.upload("c1/call.wav", path)
    assert stored == Stored(path.stat().st_size, sha256_of(path))
    assert sent == ["UploadPart"] * 3
    assert client.head_object(Bucket=bucket.name, Key="archive/c1/call.wav")["ContentType"] == "audio/x-wav"
    assert not sidecar_of(path).exists()
    assert bucket.download("c1/call.wav", tmp_path / "back.wav")
    assert sha256_of(tmp_path / "back.wav") == stored.sha256


def test_a_small_file_goes_in_one_put(bucket, client, tmp_path):
    path = tmp_path / "call.mp3"
    path.write_bytes(b"ID3" * 1000)
    sent = calls(client, "PutObject", "UploadPart", "CreateMultipartUpload")
    assert bucket.upload("c1/call.mp3", path) == Stored(3000, sha256_of(path))
    assert sent == ["PutObject"]
    assert client.head_object(Bucket=bucket.name, Key="archive/c1/call.mp3")["ContentType"] == "audio/mpeg"


def test_an_identical_object_is_not_sent_again(bucket, client, tmp_path):
    small, large = tmp_path / "small.json", big_file(tmp_path / "large.wav", MIN_PART_SIZE + 1)
    small.write_bytes(b"{}")
    bucket.upload("small.json", small)
    bucket.upload("large.wav", large)
    sent = calls(client, "PutObject", "UploadPart", "CreateMultipartUpload")
    assert bucket.upload("small.json", small).sha256 == sha256_of(small)
    assert bucket.upload("large.wav", large).sha256 == sha256_of(large)
    assert sent == []


CHILD = """
import sys, time
from pathlib import Path
from conversations.bucket import Bucket, MIN_PART_SIZE, s3_client
client = s3_client()
sent = []
def slow_after_the_first(**_):
    # Each part after the first waits: the parent kills this process while parts are still to go.
    if sent:
        time.sleep(0.5)
    sent.append(1)
client.meta.events.register("before-call.s3.UploadPart", slow_after_the_first)
Bucket(sys.argv[1], "archive/", client=client, part_size=MIN_PART_SIZE).upload("c1/call.wav", Path(sys.argv[2]))
"""


def test_an_upload_killed_half_way_resumes_with_the_parts_already_there(bucket, client, s3_env, tmp_path):
    path = big_file(tmp_path / "call.wav", 4 * MIN_PART_SIZE)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, bucket.name, str(path)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    try:
        wait_for_a_listed_part(client, bucket.name, sidecar_of(path), child)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(10)
    upload_id = json.loads(sidecar_of(path).read_text())["upload_id"]
    held = client.list_parts(Bucket=bucket.name, Key="archive/c1/call.wav", UploadId=upload_id).get("Parts", [])
    assert 1 <= len(held) < 4
    sent = calls(client, "UploadPart", "CreateMultipartUpload", "PutObject")
    stored = bucket.upload("c1/call.wav", path)
    assert sent == ["UploadPart"] * (4 - len(held))
    assert stored.sha256 == sha256_of(path) and bucket.check("c1/call.wav", stored)
    assert not sidecar_of(path).exists()


def wait_for_a_listed_part(client, bucket_name, sidecar, child, timeout_s=30.0):
    """Poll until the child's sidecar exists and the store lists at least one part of its upload."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and child.poll() is None:
        if sidecar.exists():
            upload_id = json.loads(sidecar.read_text())["upload_id"]
            parts = client.list_parts(Bucket=bucket_name, Key="archive/c1/call.wav", UploadId=upload_id)
            if parts.get("Parts"):
                return
        time.sleep(0.02)
    pytest.fail(f"the child listed no part (exit code {child.poll()})")


def test_a_sidecar_whose_upload_is_gone_starts_afresh(bucket, client, tmp_path):
    path = big_file(tmp_path / "call.wav", MIN_PART_SIZE + 10)
    sidecar = {"key": "archive/c1/call.wav", "sha256": sha256_of(path), "part_size": MIN_PART_SIZE}
    sidecar_of(path).write_text(json.dumps({"upload_id": "no-such-upload", **sidecar}))
    sent = calls(client, "ListParts", "CreateMultipartUpload", "UploadPart")
    assert bucket.upload("c1/call.wav", path).sha256 == sha256_of(path)
    assert sent == ["ListParts", "CreateMultipartUpload", "UploadPart", "UploadPart"]
    assert not sidecar_of(path).exists()


def test_a_sidecar_of_a_changed_file_is_not_resumed(bucket, client, tmp_path):
    path = big_file(tmp_path / "call.wav", MIN_PART_SIZE + 10)
    sidecar = {"key": "archive/c1/call.wav", "sha256": "0" * 64, "part_size": MIN_PART_SIZE}
    sidecar_of(path).write_text(json.dumps({"upload_id": "an-upload-of-other-bytes", **sidecar}))
    sent = calls(client, "ListParts", "CreateMultipartUpload")
    assert bucket.check("c1/call.wav", bucket.upload("c1/call.wav", path))
    assert sent == ["CreateMultipartUpload"]


def test_check_is_false_once_another_object_replaced_it(bucket):
    stored = bucket.put_bytes("c1/conversation.json", b"first")
    bucket.put_bytes("c1/conversation.json", b"other")
    assert not bucket.check("c1/conversation.json", stored)
    assert not bucket.check("c1/missing.json", stored)


def test_missing_objects_read_as_none_and_false(bucket, tmp_path):
    assert bucket.get_bytes("nothing/here.json") is None
    assert bucket.download("nothing/here.json", tmp_path / "x") is False
    assert not (tmp_path / "x").exists()


def test_listing_and_deleting_over_a_thousand_objects(bucket, client):
    with ThreadPoolExecutor(8) as pool:  # boto3 clients are thread-safe; one PUT at a time takes seconds
        list(
            pool.map(
                lambda n: client.put_object(Bucket=bucket.name, Key=f"archive/room/d{n:04}/c.json", Body=b"x"),
                range(1005),
            )
        )
    client.put_object(Bucket=bucket.name, Key="outside/c.json", Body=b"x")
    assert bucket.list_dirs("room") == [f"d{n:04}" for n in range(1005)]
    assert bucket.list_dirs("") == ["room"]
    listed = list(bucket.list_objects("room/"))
    assert sorted(item.relative for item in listed) == [f"room/d{n:04}/c.json" for n in range(1005)]
    assert {(item.etag, item.size) for item in listed} == {(hashlib.md5(b"x").hexdigest(), 1)}
    assert all(abs(item.modified - time.time()) < 600 for item in listed)
    bucket.delete([item.relative for item in listed] + ["room/never/was.json"])
    assert list(bucket.list_objects("")) == []
    assert client.head_object(Bucket=bucket.name, Key="outside/c.json")["ContentLength"] == 1


def test_a_presigned_url_serves_the_bytes_with_the_type(bucket):
    bucket.put_bytes("c1/call.mp3", b"ID3 audio", content_type="application/octet-stream")
    url = bucket.presigned_url("c1/call.mp3", 60, "audio/mpeg", "call 1.mp3")
    answer = requests.get(url, timeout=10)
    assert answer.status_code == 200 and answer.content == b"ID3 audio"
    assert answer.headers["Content-Type"] == "audio/mpeg"
    assert answer.headers["Content-Disposition"].startswith('inline; filename="call 1.mp3"')


def test_writes_send_content_md5_and_no_crc32_checksum(bucket, client, tmp_path):
    # moto_server does not verify Content-MD5 (a wrong one is accepted), so only what is sent can be tested.
    headers = []
    for operation in ("PutObject", "UploadPart"):
        client.meta.events.register(f"before-send.s3.{operation}", lambda request, **_: headers.append(request.headers))
    bucket.put_bytes("c1/conversation.json", b"{}")
    bucket.upload("c1/call.wav", big_file(tmp_path / "call.wav", MIN_PART_SIZE + 1))
    assert len(headers) == 3
    for sent in headers:
        names = {name.lower() for name in sent}
        assert "content-md5" in names
        assert not any(name.startswith("x-amz-checksum") or name == "x-amz-sdk-checksum-algorithm" for name in names)
        assert "aws-chunked" not in str(sent.get("Content-Encoding", ""))
    assert headers[0]["Content-MD5"].decode() == "mZFLkyvTelC5g8XnyQrpOw=="  # base64 MD5 of b"{}"


def test_probe_passes_on_a_writable_bucket_and_leaves_nothing(bucket):
    bucket.probe()
    assert list(bucket.list_objects("")) == []


def test_probe_names_the_bucket_and_the_code_when_it_is_missing(client):
    with pytest.raises(BucketError, match=r"no-such-bucket-here.*NoSuchBucket"):
        Bucket("no-such-bucket-here", client=client).probe()


SECRET_KEY_ID = "AKIAQUORUMTESTSECRET"


def unreachable_client(monkeypatch, endpoint):
    """The product's client pointed at `endpoint`, with small timeouts and a recognisable access key."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", SECRET_KEY_ID)
    return s3_client(connect_timeout_s=0.5, read_timeout_s=0.5)


def test_nothing_listening_is_a_bucket_error(s3_env, monkeypatch, tmp_path):
    client = unreachable_client(monkeypatch, f"http://127.0.0.1:{free_port()}")
    with pytest.raises(BucketError, match=r"s3://quorum-test/archive/c1/x.json.*EndpointConnectionError") as raised:
        Bucket("quorum-test", "archive", client=client).put_bytes("c1/x.json", b"{}")
    assert SECRET_KEY_ID not in str(raised.value)


def test_a_store_that_never_answers_is_a_bucket_error_after_the_read_timeout(s3_env, monkeypatch):
    with silent_server() as port:
        client = unreachable_client(monkeypatch, f"http://127.0.0.1:{port}")
        bucket = Bucket("quorum-test", client=client)
        with pytest.raises(BucketError, match="ReadTimeoutError") as raised:
            bucket.get_bytes("c1/x.json")
        assert "quorum-test/c1/x.json" in str(raised.value) and SECRET_KEY_ID not in str(raised.value)
        with pytest.raises(BucketError, match="HEAD s3://quorum-test/c1/x.json failed: ReadTimeoutError"):
            bucket.check("c1/x.json", Stored(1, ""))


class silent_server:
    """A TCP server on loopback that accepts connections and never answers."""

    def __enter__(self) -> int:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.held = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()
        return self.sock.getsockname()[1]

    def _accept(self):
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return

    def __exit__(self, *_):
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.mark.parametrize(
    "url, expected",
    [
        ("s3://quorum-archive", ("quorum-archive", "")),
        ("s3://quorum-archive/", ("quorum-archive", "")),
        ("s3://quorum-archive/some/prefix", ("quorum-archive", "some/prefix/")),
        ("s3://quorum-archive/some/prefix/", ("quorum-archive", "some/prefix/")),
        ("s3://my.bucket-1/p", ("my.bucket-1", "p/")),
    ],
)
def test_parse_s3_url(url, expected):
    assert parse_s3_url(url) == expected


@pytest.mark.parametrize(
    "url, problem",
    [
        ("s3://", "names no bucket"),
        ("s3:///prefix", "names no bucket"),
        ("https://bucket/prefix", "not an s3:// URL"),
        ("bucket/prefix", "not an s3:// URL"),
        ("s3://Upper-Case", "not a valid bucket name"),
        ("s3://ab", "not a valid bucket name"),
        ("s3://" + "a" * 64, "not a valid bucket name"),
        ("s3://under_score", "not a valid bucket name"),
        ("s3://-leading", "not a valid bucket name"),
        ("s3://two..dots", "not a valid bucket name"),
        ("s3://192.168.1.1", "not a valid bucket name"),
        ("s3://bucket/a/../b", "not a relative key"),
        ("s3://bucket/..", "not a relative key"),
        ("s3://bucket/a//b", "not a relative key"),
        ("s3://bucket/a/./b", "not a relative key"),
        ("s3://bucket/a\\b", "not a relative key"),
        ("s3://user@bucket/p", "only a bucket and a prefix"),
        ("s3://bucket:9000/p", "only a bucket and a prefix"),
        ("s3://bucket/p?x=1", "only a bucket and a prefix"),
    ],
)
def test_parse_s3_url_refuses(url, problem):
    with pytest.raises(ValueError, match=problem):
        parse_s3_url(url)


def test_keys_join_the_prefix_and_refuse_escapes(client):
    bucket = Bucket("quorum-test", "some/prefix", client=client)
    assert bucket.prefix == "some/prefix/" and bucket.key("room/c.json") == "some/prefix/room/c.json"
    assert Bucket("quorum-test", client=client).key("c.json") == "c.json"
    for bad in ("../x", "/x", "a//b", "a/./b"):
        with pytest.raises(ValueError):
            bucket.key(bad)
    with pytest.raises(ValueError, match="least part size"):
        Bucket("quorum-test", client=client, part_size=MIN_PART_SIZE - 1)
