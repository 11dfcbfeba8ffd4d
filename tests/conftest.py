"""Shared fixtures: a configured app whose SignalWire REST API is faked at the HTTP level."""

import base64
import hashlib
import hmac
import io
import re
import tempfile
import wave
from email.utils import formatdate
import shutil
import socket
import subprocess
import time
import uuid
from urllib.parse import parse_qs, urlencode, urlsplit

import numpy as np
import pytest
import redis
import responses

from app import create_app, shutdown
from config import Config

PROJECT = "6f2bb3a8-0d1c-4a59-9b6f-3c1e0f6a7b21"
SIGNING_KEY = "PSK_test_signing_key"
PUBLIC_URL = "https://quorum.example.com"
API_BASE = f"https://example.signalwire.com/2010-04-01/Accounts/{PROJECT}"
RECORDING_UPDATE = re.compile(rf"{re.escape(API_BASE)}/Conferences/[^/]+/Recordings/[^/]+\.json")
MEDIA_BASE = "https://example.signalwire.com/recordings/"
# Archives of apps made by make_config; removed when the session ends.
RECORDINGS_ROOT = tempfile.mkdtemp(prefix="quorum-test-recordings-")


@pytest.fixture(scope="session", autouse=True)
def _remove_test_archives():
    """Delete every archive the session's apps wrote."""
    yield
    shutil.rmtree(RECORDINGS_ROOT, ignore_errors=True)


def wav_bytes(seconds: float = 2.0, rate: int = 8000, seed: int = 0) -> bytes:
    """A mono 16-bit WAV of a warbling tone in light noise, as a recording download."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    signal = 0.3 * np.sin(2 * np.pi * (220 + 30 * np.sin(2 * np.pi * 3 * t)) * t) * (np.sin(2 * np.pi * 2 * t) > 0)
    samples = np.clip(signal + 0.01 * rng.standard_normal(t.size), -1, 1)
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes((samples * 32767).astype("<i2").tobytes())
    return out.getvalue()


def sid(label: str) -> str:
    """A fake SignalWire sid (a UUID) named by a short label; labels sort as their sids do."""
    digits = label.encode().hex().ljust(32, "0")
    if len(digits) > 32:
        raise ValueError(f"sid label too long: {label!r}")
    return str(uuid.UUID(digits))


def conference_form(event: str, conference: str, room: str, call: str | None = None, at: float | None = None) -> dict:
    """A conference status callback as SignalWire sends it, Timestamp included (default: now)."""
    form = {"AccountSid": PROJECT, "ConferenceSid": conference, "FriendlyName": room, "StatusCallbackEvent": event,
            "Timestamp": formatdate(time.time() if at is None else at, usegmt=True)}
    if call:
        form["CallSid"] = call
    return form


def make_config(**overrides) -> Config:
    """A valid Config for tests, with fields overridden."""
    values = dict(
        signalwire_project_id=PROJECT, signalwire_api_token="PTtoken", signalwire_space_url="example.signalwire.com",
        signalwire_signing_key=SIGNING_KEY, public_url=PUBLIC_URL, end_grace_s=60.0,
        recordings_dir=tempfile.mkdtemp(dir=RECORDINGS_ROOT),
    )
    values.update(overrides)
    return Config(**values)


def sign(url: str, form: dict, key: str = SIGNING_KEY) -> str:
    """SignalWire's signature, computed here from its definition rather than with the SDK."""
    payload = url + "".join(k + v for k, v in sorted(form.items()))
    return base64.b64encode(hmac.new(key.encode(), payload.encode(), hashlib.sha1).digest()).decode()


@pytest.fixture
def signalwire():
    """SignalWire's REST API at the HTTP level: the SDK really builds and sends its requests."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as fake:
        fake.add(responses.POST, RECORDING_UPDATE, json={"sid": "r", "status": "paused"})
        fake.add(responses.GET, re.compile(re.escape(MEDIA_BASE) + r"[^/]+\.wav"), body=wav_bytes(),
                 content_type="audio/x-wav")
        fake.add(responses.GET, re.compile(re.escape(MEDIA_BASE) + r"[^/]+\.mp3"), status=404)
        yield fake


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A real redis-server on a loopback port for the whole session, stopped at the end."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run `make test` (it installs it) or apt-get install redis-server")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    server = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", str(workdir)], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                server.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
    yield url
    server.terminate()
    server.wait(10)


@pytest.fixture(params=["memory", "redis"])
def config(request):
    """The default test configuration, once with each store."""
    if request.param == "memory":
        return make_config()
    return make_config(redis_url=request.getfixturevalue("redis_url"), redis_namespace=f"t{uuid.uuid4().hex[:8]}")


@pytest.fixture
def app(config, signalwire):
    """The app, its background threads stopped afterwards."""
    application = create_app(config)
    yield application
    shutdown(application)


@pytest.fixture
def client(app):
    """Flask's test client."""
    return app.test_client()


@pytest.fixture
def post_signed(client):
    """POST a form to a /voice path, signed for its public URL."""

    def post(path, form, query=None, public_url=PUBLIC_URL, header="X-SignalWire-Signature", **kwargs):
        query_string = urlencode(query) if query else ""
        url = public_url + path + (f"?{query_string}" if query_string else "")
        target = path + (f"?{query_string}" if query_string else "")
        return client.post(target, data=form, headers={header: sign(url, form)}, **kwargs)

    return post


def recording_updates(fake):
    """The (path, form) of each recording update the SDK sent."""
    return [(urlsplit(call.request.url).path, {k: v[0] for k, v in parse_qs(call.request.body).items()})
            for call in fake.calls if RECORDING_UPDATE.fullmatch(call.request.url)]
