"""Production start-up under gunicorn, with this repository's gunicorn.conf.py."""

import os
import subprocess
import sys
import time
from pathlib import Path

import requests

from support import PROJECT, free_port

ROOT = Path(__file__).resolve().parents[1]
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))


def gunicorn_env(**extra):
    """A clean environment with valid settings (no .env is read from the repo in CI)."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "WEB_CONCURRENCY")}
    env.update(
        SIGNALWIRE_PROJECT_ID=PROJECT,
        SIGNALWIRE_API_TOKEN="t",
        SIGNALWIRE_SPACE_URL="x.signalwire.com",
        SIGNALWIRE_SIGNING_KEY="k",
        PUBLIC_URL="https://quorum.example.com",
        **extra,
    )
    return env


def test_several_workers_without_redis_refuse_to_start():
    result = subprocess.run(
        [GUNICORN, "app:create_app()"],
        cwd=ROOT,
        env=gunicorn_env(WEB_CONCURRENCY="2"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "2 gunicorn workers need REDIS_URL" in result.stderr + result.stdout


def test_several_workers_with_redis_serve(redis_url):
    port = free_port()
    server = subprocess.Popen(
        [GUNICORN, "app:create_app()"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=gunicorn_env(WEB_CONCURRENCY="2", REDIS_URL=redis_url, PORT=str(port)),
    )
    try:
        body = _wait_for_health(f"http://127.0.0.1:{port}/healthz")
    finally:
        server.terminate()
        server.wait(20)
    assert body["store"] == "ok"


def _wait_for_health(url, seconds=60):
    """Poll until the server answers /healthz."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return requests.get(url, timeout=5).json()
        except (requests.ConnectionError, requests.Timeout):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_an_empty_prometheus_multiproc_dir_is_off_for_prometheus_client_too(tmp_path):
    """.env files carry `PROMETHEUS_MULTIPROC_DIR=`: prometheus-client must not take it for a directory."""
    port = free_port()
    before = set(ROOT.glob("*.db"))
    server = subprocess.Popen(
        [GUNICORN, "app:create_app()"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=gunicorn_env(PORT=str(port), PROMETHEUS_MULTIPROC_DIR="", RECORDINGS_DIR=str(tmp_path)),
    )
    try:
        assert _wait_for_health(f"http://127.0.0.1:{port}/healthz")["status"] == "ok"
    finally:
        server.terminate()
        server.wait(20)
    assert set(ROOT.glob("*.db")) - before == set()
