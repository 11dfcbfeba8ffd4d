"""S3 client benchmark: boto3 (what Quorum uses) beside obstore, against one moto server, in one run.

What the archive does with a bucket, timed with each client on the same server (Quorum's own Bucket, which adds
Content-MD5, SHA-256 and a HEAD check to each PUT; bare boto3; obstore): small PUTs (a manifest each,
one after another), a 60 MB upload (an hour of 8 kHz WAV) from a file, GETs of small objects, and a listing of
every key. moto is the far side for both, so the ratios say what the client costs, not what AWS would answer.
Also what Quorum needs that a client must offer: Content-MD5 on each request, a multipart upload whose parts can
be listed and resumed after a kill, metadata on the object (the sha256 the check reads back), presigned GETs.

    pip install obstore==0.12.1   # not a dependency of Quorum: only this bench compares it
    python bench/s3_client_bench.py [--small 500] [--large-mb 60]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from s3_server import start_s3_server  # noqa: E402


def timed(work) -> float:
    """Seconds `work()` took."""
    began = time.perf_counter()
    work()
    return time.perf_counter() - began


def boto3_run(server, bucket: str, small: int, large: Path) -> dict:
    """The archive's operations through boto3."""
    from conversations.bucket import Bucket, s3_client

    os.environ.update(server.env)
    store = Bucket(bucket, "boto3/", s3_client())
    body = b"{" + b"x" * 2000 + b"}"
    result = {
        "small_put_ms": 1000 * timed(lambda: [store.put_bytes(f"m/{i}.json", body) for i in range(small)]) / small
    }
    result["small_get_ms"] = 1000 * timed(lambda: [store.get_bytes(f"m/{i}.json") for i in range(small)]) / small
    result["large_upload_s"] = timed(lambda: store.upload("big.wav", large))
    result["list_s"] = timed(lambda: list(store.list_objects("m/")))
    return result


def boto3_raw_run(server, bucket: str, small: int, large: Path) -> dict:
    """The same through the bare boto3 client: no Content-MD5, no check after each PUT (what Bucket adds)."""
    from conversations.bucket import s3_client

    os.environ.update(server.env)
    client = s3_client()
    body = b"{" + b"x" * 2000 + b"}"

    def put_all() -> None:
        for i in range(small):
            client.put_object(Bucket=bucket, Key=f"raw/m/{i}.json", Body=body)

    def get_all() -> None:
        for i in range(small):
            client.get_object(Bucket=bucket, Key=f"raw/m/{i}.json")["Body"].read()

    result = {"small_put_ms": 1000 * timed(put_all) / small, "small_get_ms": 1000 * timed(get_all) / small}
    result["large_upload_s"] = timed(lambda: client.upload_file(str(large), bucket, "raw/big.wav"))
    result["list_s"] = timed(
        lambda: [
            o
            for p in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="raw/m/")
            for o in p["Contents"]
        ]
    )
    return result


def obstore_run(server, bucket: str, small: int, large: Path) -> dict:
    """The same operations through obstore (no per-request Content-MD5: it has no such option)."""
    import obstore
    from obstore.store import S3Store

    store = S3Store(
        bucket,
        prefix="obstore/",
        endpoint=server.endpoint,
        region="us-east-1",
        access_key_id="test",
        secret_access_key="test",
        client_options={"allow_http": True},
    )
    body = b"{" + b"x" * 2000 + b"}"
    result = {
        "small_put_ms": 1000 * timed(lambda: [obstore.put(store, f"m/{i}.json", body) for i in range(small)]) / small
    }
    result["small_get_ms"] = (
        1000 * timed(lambda: [bytes(obstore.get(store, f"m/{i}.json").bytes()) for i in range(small)]) / small
    )
    result["large_upload_s"] = timed(lambda: obstore.put(store, "big.wav", large))
    result["list_s"] = timed(lambda: [x for batch in obstore.list(store, "m/") for x in batch])
    return result


def main() -> int:
    """Both clients against one server, three rounds each, medians."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--large-mb", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    server = start_s3_server()
    try:
        with tempfile.TemporaryDirectory() as scratch:
            large = Path(scratch) / "big.wav"
            large.write_bytes(os.urandom(args.large_mb * 2**20))
            rounds: dict = {"Quorum's Bucket (boto3)": [], "boto3, bare": [], "obstore": []}
            for _ in range(args.rounds):
                for name, run in zip(rounds, (boto3_run, boto3_raw_run, obstore_run)):
                    rounds[name].append(run(server, server.create_bucket(), args.small, large))
    finally:
        server.stop()
    print(f"small={args.small} large_mb={args.large_mb} rounds={args.rounds} load={os.getloadavg()[0]:.2f}")
    print("| client | PUT 2 KB (ms) | GET 2 KB (ms) | upload 60 MB (s) | list (s) |")
    print("|---|---|---|---|---|")
    for name, runs in rounds.items():
        cells = [
            statistics.median(r[k] for r in runs) for k in ("small_put_ms", "small_get_ms", "large_upload_s", "list_s")
        ]
        print(f"| {name} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
