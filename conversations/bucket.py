"""The archive's object store client: checked, resumable uploads to an S3-compatible bucket, and reads, lists, deletes.

Every write carries Content-MD5, so the store refuses a body damaged on the way, and an `sha256` metadata
entry, which a HEAD after the write compares with ours: a write is done only once the store shows it.
A multipart upload keeps its UploadId in a sidecar file beside the local file, so an upload killed half-way
resumes with the parts the store already holds. Every failure of the store, the network or the credentials
surfaces as `BucketError`, whose message names the bucket and key and never a URL's query or a credential.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import mimetypes
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple
from urllib.parse import quote, urlsplit

import boto3
import boto3.exceptions
import botocore.exceptions
from botocore.config import Config

PART_SIZE = 8 * 1024 * 1024
MIN_PART_SIZE = 5 * 1024 * 1024  # S3's least size for every part but the last
MAX_PARTS = 10_000  # S3's most parts in one upload
DELETE_BATCH = 1000  # S3's most keys in one DeleteObjects
HASH_CHUNK = 1024 * 1024
MISSING = {"404", "NoSuchKey", "NotFound"}
# S3's bucket naming rules: 3-63 of lower-case letters, digits, dots and hyphens, a letter or digit at each end.
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
IP_ADDRESS = re.compile(r"\d+\.\d+\.\d+\.\d+")

_STORE_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, boto3.exceptions.Boto3Error)


class BucketError(Exception):
    """The store could not be reached or refused (network, timeout, 5xx, throttling, credentials, a failed check).
    Its message names the bucket and key, never a presigned URL or a credential."""


@dataclass(frozen=True)
class Stored:
    """What a write left in the store: the object's size and the hex SHA-256 of its bytes."""

    size: int
    sha256: str


@dataclass(frozen=True)
class Listed:
    """One object of a listing: its key below the prefix, ETag (unquoted), size and last change (epoch seconds)."""

    relative: str
    etag: str
    size: int
    modified: float


def error_code(error: Exception) -> str:
    """The store's error code of a ClientError (`NoSuchKey`, `404`, `SlowDown`...), else the exception's class."""
    if isinstance(error, botocore.exceptions.ClientError):
        return str(error.response.get("Error", {}).get("Code") or "unknown")
    return type(error).__name__


def describe(error: Exception) -> str:
    """The store's code and HTTP status, or the transport failure's class: never the request's URL or headers."""
    if isinstance(error, botocore.exceptions.ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return f"{error_code(error)} (HTTP {status})" if status else error_code(error)
    return type(error).__name__


@contextlib.contextmanager
def _store(action: str, bucket: str, key: str = "") -> Iterator[None]:
    """Turn any boto3/botocore exception raised inside into a BucketError naming the action, bucket and key."""
    try:
        yield
    except _STORE_ERRORS as error:
        raise BucketError(f"{action} s3://{bucket}/{key} failed: {describe(error)}") from error


def s3_client(connect_timeout_s: float = 5.0, read_timeout_s: float = 30.0):
    """A boto3 S3 client from the usual AWS settings (endpoint, region, credentials, profile), with our timeouts."""
    config = Config(
        connect_timeout=connect_timeout_s,
        read_timeout=read_timeout_s,
        retries={"mode": "standard", "max_attempts": 3},
        # boto3 >= 1.36 sends CRC32 checksums (streamed as aws-chunked trailers) by default; several S3-compatible
        # stores refuse them. Content-MD5, which every store checks, is sent by us instead.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        # Presigned URLs would otherwise be SigV2 in us-east-1; R2 and newer regions accept only SigV4.
        signature_version="s3v4",
        # No addressing_style: botocore's "auto" already addresses by path whenever an endpoint URL is set (MinIO,
        # moto, R2, B2 all serve path style) and virtual-host style on AWS itself, and leaving it unset keeps a
        # profile's `s3.addressing_style = virtual` in force for the stores that require it (e.g. CoreWeave).
    )
    with _store("creating the S3 client for", "*"):
        return boto3.session.Session().client("s3", config=config)


def parse_s3_url(url: str) -> Tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix/"); `s3://bucket` -> ("bucket", "")."""
    parts = urlsplit(url)
    if parts.scheme != "s3":
        raise ValueError(f"{url!r} is not an s3:// URL")
    if not parts.netloc:
        raise ValueError(f"{url!r} names no bucket: write s3://BUCKET or s3://BUCKET/PREFIX")
    if parts.query or parts.fragment or "@" in parts.netloc or ":" in parts.netloc:
        raise ValueError(f"{url!r}: an s3:// URL holds only a bucket and a prefix (no user, port, query or #)")
    check_bucket_name(parts.netloc)
    prefix = parts.path.strip("/")
    if prefix:
        check_relative(prefix)
    return parts.netloc, prefix + "/" if prefix else ""


def check_bucket_name(name: str) -> None:
    """ValueError unless `name` follows S3's bucket naming rules."""
    if not BUCKET_NAME.fullmatch(name) or ".." in name or IP_ADDRESS.fullmatch(name):
        raise ValueError(f"{name!r} is not a valid bucket name: 3-63 of a-z 0-9 . -, no '..', not an IP address")


def check_relative(path: str) -> None:
    """ValueError for a key part that would escape or blur the prefix: a leading '/', '..', '.', '//', '\\'."""
    segments = path.rstrip("/").split("/")
    if path.startswith("/") or "\\" in path or any(s in ("", ".", "..") for s in segments):
        raise ValueError(f"{path!r} is not a relative key: no leading '/', empty, '.' or '..' segments, no '\\'")


def content_md5(data: bytes) -> str:
    """The Content-MD5 header's value for `data`: base64 of the raw digest."""
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def file_sha256(path: Path) -> Stored:
    """The size and hex SHA-256 of a local file, read in chunks."""
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as file:
        while chunk := file.read(HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return Stored(size, digest.hexdigest())


def part_size_for(size: int, part_size: int) -> int:
    """The part size to use for a file: ours, raised in whole MiB when the file would need over 10,000 parts."""
    least = -(-size // MAX_PARTS)
    return max(part_size, -(-least // (1024 * 1024)) * 1024 * 1024)


def sidecar_of(path: Path) -> Path:
    """Where a multipart upload of `path` keeps its UploadId: `.NAME.upload` beside it."""
    return path.with_name(f".{path.name}.upload")


def read_sidecar(sidecar: Path) -> Optional[Dict[str, Any]]:
    """The sidecar's JSON, or None when there is none or it is unreadable (a fresh upload then starts)."""
    try:
        found = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def disposition(filename: str) -> str:
    """`inline` with the filename as RFC 6266 gives it: a plain ASCII fallback and the UTF-8 original."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename)
    return f"inline; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


class Bucket:
    """One bucket and a key prefix in it: every relative key is joined to the prefix."""

    def __init__(self, bucket: str, prefix: str = "", client=None, *, part_size: int = PART_SIZE):
        check_bucket_name(bucket)
        if prefix:
            check_relative(prefix)
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size {part_size} is below S3's least part size of {MIN_PART_SIZE} bytes")
        self.name = bucket
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.client = client if client is not None else s3_client()
        self.part_size = part_size

    def key(self, relative: str) -> str:
        """The full key of a relative one: the prefix joined to it."""
        if relative:
            check_relative(relative)
        return self.prefix + relative

    def _directory(self, relative_prefix: str) -> str:
        """The full key prefix of a relative directory: joined, and ending with '/' unless it is the root."""
        key = self.key(relative_prefix)
        return key if not relative_prefix or key.endswith("/") else key + "/"

    def _call(self, action: str, key: str, operation: str, absent=MISSING, **params) -> Any:
        """The client's `operation` on this bucket; None when the store answers an `absent` code; else BucketError."""
        with _store(action, self.name, key):
            try:
                return getattr(self.client, operation)(Bucket=self.name, **params)
            except botocore.exceptions.ClientError as error:
                if error_code(error) in absent:
                    return None
                raise

    def _head(self, key: str) -> Optional[Stored]:
        """The object's size and sha256 metadata from a HEAD, or None when it does not exist."""
        head = self._call("HEAD", key, "head_object", Key=key)
        return head and Stored(int(head["ContentLength"]), head.get("Metadata", {}).get("sha256", ""))

    def _verify(self, key: str, stored: Stored) -> Stored:
        """BucketError unless the store now shows the object with our size and sha256."""
        found = self._head(key)
        if found != stored:
            raise BucketError(f"check of s3://{self.name}/{key} failed: the store shows {found}, we wrote {stored}")
        return stored

    def put_bytes(self, relative: str, data: bytes, content_type: str = "application/json") -> Stored:
        """Write `data` in one PUT with Content-MD5 and sha256 metadata, then check it with a HEAD."""
        key, stored = self.key(relative), Stored(len(data), hashlib.sha256(data).hexdigest())
        self._put(key, data, stored, content_type)
        return self._verify(key, stored)

    def _put(self, key: str, data: bytes, stored: Stored, content_type: str) -> None:
        """One checked PUT."""
        params = {"Key": key, "Body": data, "ContentMD5": content_md5(data), "ContentType": content_type}
        self._call("PUT", key, "put_object", (), Metadata={"sha256": stored.sha256}, **params)

    def upload(self, relative: str, path: Path) -> Stored:
        """Upload a local file, checked and resumable; nothing is sent when the store already holds it."""
        key, stored, sidecar = self.key(relative), file_sha256(path), sidecar_of(path)
        if self._head(key) == stored:
            sidecar.unlink(missing_ok=True)  # a run killed after completing, before removing it
            return stored
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if stored.size <= self.part_size:
            self._put(key, path.read_bytes(), stored, content_type)
        else:
            self._multipart(key, path, stored, content_type, sidecar)
            sidecar.unlink(missing_ok=True)
        return self._verify(key, stored)

    def _multipart(self, key: str, path: Path, stored: Stored, content_type: str, sidecar: Path) -> None:
        """Upload `path` in parts, reusing the sidecar's UploadId and the parts the store holds that match ours."""
        part_size = part_size_for(stored.size, self.part_size)
        wanted = {"key": key, "sha256": stored.sha256, "part_size": part_size}
        found = read_sidecar(sidecar) or {}  # one for another file, key or part size is not resumed
        upload_id = str(found.get("upload_id") or "") if all(found.get(k) == v for k, v in wanted.items()) else ""
        held = self._held_parts(key, upload_id) if upload_id else None
        if held is None:
            upload_id, held = self._create_upload(key, stored, content_type, sidecar, wanted), {}
        parts = []
        with path.open("rb") as file:
            for number in range(1, -(-stored.size // part_size) + 1):
                chunk = file.read(part_size)
                md5 = hashlib.md5(chunk)
                etag, size = held.get(number, ("", -1))
                if etag.strip('"').lower() != md5.hexdigest() or size != len(chunk):
                    etag = self._upload_part(key, upload_id, number, chunk, base64.b64encode(md5.digest()).decode())
                parts.append({"PartNumber": number, "ETag": etag})
        with _store("completing the multipart upload of", self.name, key):
            self.client.complete_multipart_upload(
                Bucket=self.name, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )

    def _create_upload(self, key: str, stored: Stored, content_type: str, sidecar: Path, wanted: dict) -> str:
        """Start a multipart upload and record its UploadId in the sidecar before any part is sent."""
        params = {"Key": key, "ContentType": content_type, "Metadata": {"sha256": stored.sha256}}
        started = self._call("starting an upload of", key, "create_multipart_upload", (), **params)
        temp = sidecar.with_name(sidecar.name + ".tmp")  # written whole or not at all: a temp file, then a rename
        temp.write_text(json.dumps({"upload_id": started["UploadId"], **wanted}))
        os.replace(temp, sidecar)
        return started["UploadId"]

    def _held_parts(self, key: str, upload_id: str) -> Optional[Dict[int, Tuple[str, int]]]:
        """The parts the store holds for an upload: number -> (ETag, size); None when the upload is gone."""
        held = {}
        with _store("listing the parts of", self.name, key):
            try:
                pages = self.client.get_paginator("list_parts").paginate(Bucket=self.name, Key=key, UploadId=upload_id)
                for page in pages:
                    for part in page.get("Parts", []):
                        held[part["PartNumber"]] = (part["ETag"], int(part["Size"]))
            except botocore.exceptions.ClientError as error:
                if error_code(error) in ("NoSuchUpload", "404"):
                    return None
                raise
        return held

    def _upload_part(self, key: str, upload_id: str, number: int, chunk: bytes, md5_b64: str) -> str:
        """One checked UploadPart; its ETag (the MD5 on most stores, not under SSE-KMS: hence kept, not derived)."""
        params = {"Key": key, "UploadId": upload_id, "PartNumber": number, "Body": chunk, "ContentMD5": md5_b64}
        return self._call(f"uploading part {number} of", key, "upload_part", (), **params)["ETag"]

    def check(self, relative: str, stored: Stored) -> bool:
        """Whether the object exists with that size and sha256 metadata."""
        return self._head(self.key(relative)) == stored

    def get_bytes(self, relative: str) -> Optional[bytes]:
        """The object's bytes, or None when it does not exist."""
        key = self.key(relative)
        answer = self._call("GET", key, "get_object", Key=key)
        with _store("GET", self.name, key):
            return answer and answer["Body"].read()

    def download(self, relative: str, path: Path) -> bool:
        """Stream the object to `path` (a temp file, then a rename), checked against its sha256; False on 404."""
        key, temp = self.key(relative), path.with_name(f".{path.name}.part")
        answer = self._call("download of", key, "get_object", Key=key)
        if answer is None:
            return False
        digest = hashlib.sha256()
        try:
            with _store("download of", self.name, key), temp.open("wb") as file:
                for chunk in answer["Body"].iter_chunks(HASH_CHUNK):
                    digest.update(chunk)
                    file.write(chunk)
            if answer.get("Metadata", {}).get("sha256", digest.hexdigest()) != digest.hexdigest():
                raise BucketError(f"download of s3://{self.name}/{key} failed: its bytes do not match its sha256")
            os.replace(temp, path)
        finally:
            temp.unlink(missing_ok=True)  # gone already after the rename
        return True

    def list_dirs(self, relative_prefix: str) -> List[str]:
        """The names one level below a relative directory ("" for the prefix itself), sorted."""
        base = self._directory(relative_prefix)
        names = []
        with _store("listing", self.name, base):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=base, Delimiter="/")
            for page in pages:
                names += [entry["Prefix"][len(base) :].rstrip("/") for entry in page.get("CommonPrefixes", [])]
        return sorted(names)

    def list_objects(self, relative_prefix: str) -> Iterator[Listed]:
        """Every object under a relative directory ("" for the whole prefix), at any depth, page by page."""
        base = self._directory(relative_prefix)
        with _store("listing", self.name, base):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=base):
                for entry in page.get("Contents", []):
                    yield Listed(
                        relative=entry["Key"][len(self.prefix) :],
                        etag=entry["ETag"].strip('"'),
                        size=int(entry["Size"]),
                        modified=entry["LastModified"].timestamp(),
                    )

    def delete(self, relatives: Sequence[str]) -> None:
        """Delete these objects, 1000 to a request; keys that do not exist are fine."""
        keys = [self.key(relative) for relative in relatives]
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start : start + DELETE_BATCH]
            with _store("delete of", self.name, batch[0] + (f" and {len(batch) - 1} more" if len(batch) > 1 else "")):
                answer = self.client.delete_objects(
                    Bucket=self.name, Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True}
                )
            refused = [error for error in answer.get("Errors", []) if error.get("Code") not in MISSING]
            if refused:
                key, code = refused[0].get("Key"), refused[0].get("Code")
                raise BucketError(f"delete of s3://{self.name}/{key} failed: {code} ({len(refused)} keys refused)")

    def presigned_url(self, relative: str, expires_s: int, content_type: str, filename: str) -> str:
        """A GET URL for the object, valid `expires_s` seconds, served with this type as `inline; filename`."""
        key = self.key(relative)
        with _store("presigning a GET of", self.name, key):
            return self.client.generate_presigned_url(
                "get_object",
                Params={
                    "Bucket": self.name,
                    "Key": key,
                    "ResponseContentType": content_type,
                    "ResponseContentDisposition": disposition(filename),
                },
                ExpiresIn=expires_s,
            )

    def probe(self) -> None:
        """Prove the bucket is writable: write, check and delete a small object under the prefix."""
        relative = f".write-check-{os.getpid()}"
        try:
            if not self.check(relative, self.put_bytes(relative, b"{}")):
                raise BucketError(f"s3://{self.name}/{self.key(relative)} was written but does not check")
            self.delete([relative])
        except BucketError as error:
            raise BucketError(f"bucket {self.name} is not writable: {error}") from error
