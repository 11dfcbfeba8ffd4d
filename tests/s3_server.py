"""moto's standalone S3 server on a loopback port, for tests that talk to a real S3 endpoint over HTTP.

What moto does not check (so no test here may rely on it): a wrong Content-MD5 is accepted (checked by hand
with moto 5.2.5), and no bucket policy, ACL or SigV4 signature is enforced: any access key works.
"""

import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import boto3
import requests

from support import free_port

MOTO_SERVER = Path(sys.executable).parent / "moto_server"
ACCESS_KEY = "test"


@dataclass
class S3Server:
    """A running moto_server: its endpoint, the environment a client needs to reach it, and its process."""

    endpoint: str
    process: subprocess.Popen

    @property
    def env(self) -> dict:
        """The AWS settings boto3 reads from the environment, pointing at this server, isolated from ~/.aws."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": "/nonexistent/aws-config",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self):
        """A plain boto3 client for this server, for setting buckets up (tests use the product's own)."""
        env = self.env
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=env["AWS_DEFAULT_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )

    def create_bucket(self) -> str:
        """A fresh, empty bucket: its name (lower case, 3-63 characters)."""
        name = f"quorum-test-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        """Stop the server and wait for it."""
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def start_s3_server(timeout_s: float = 30.0, port: Optional[int] = None) -> S3Server:
    """Start moto_server on a loopback port (default: a free one) and wait until it answers."""
    port = port or free_port()
    process = subprocess.Popen(
        [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    server = S3Server(f"http://127.0.0.1:{port}", process)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            requests.get(server.endpoint, timeout=1)
            return server
        except requests.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"moto_server did not start on port {port}") from None
            time.sleep(0.1)
