"""Test helpers: settings, fake sids and forms, SignalWire's signature, and the signed-callback driver."""

import base64
import hashlib
import hmac
import io
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
import wave
from email.utils import formatdate
from typing import Optional, Tuple
from urllib.parse import parse_qs, urlencode, urlsplit

import numpy as np
import redis

from app import services
from config import Config

PROJECT = "6f2bb3a8-0d1c-4a59-9b6f-3c1e0f6a7b21"
SIGNING_KEY = "PSK_test_signing_key"
PUBLIC_URL = "https://quorum.example.com"
API_BASE = f"https://example.signalwire.com/2010-04-01/Accounts/{PROJECT}"
RECORDING_UPDATE = re.compile(rf"{re.escape(API_BASE)}/Conferences/[^/]+/Recordings/[^/]+\.json")
RECORDING_DELETE = re.compile(rf"{re.escape(API_BASE)}/Recordings/([^/]+)\.json")
MEDIA_BASE = "https://example.signalwire.com/recordings/"
# Where SignalWire serves a recording's media (Retrieve a Recording): the archive's reconcile forms these URLs.
LAML_RECORDINGS = f"https://example.signalwire.com/api/laml/2010-04-01/Accounts/{PROJECT}/Recordings/"
LAML_MEDIA = re.compile(re.escape(LAML_RECORDINGS) + r"([^/.]+)\.wav")
# What the archive's reconcile asks before a conference is archived: its recordings (paged), each caller's own
# (List all Recordings, CallSid), and one recording's resource.
CONFERENCE_RECORDINGS_LIST = re.compile(
    rf"{re.escape(API_BASE)}/Conferences/([^/]+)/Recordings\.json\?(?:.*&)?PageSize="
)
CALL_RECORDINGS_LIST = re.compile(rf"{re.escape(API_BASE)}/Recordings\.json\?")
RECORDING_RESOURCE = re.compile(rf"{re.escape(API_BASE)}/Recordings/([^/.]+)\.json")
# Archives of apps made by make_config; conftest removes it when the session ends.
RECORDINGS_ROOT = tempfile.mkdtemp(prefix="quorum-test-recordings-")


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


def checks_the_archive(call, ended_at: dict) -> bool:
    """Whether an emulator RestCall is the archive's check of an ended conference at SignalWire (a list of its
    recordings or a caller's, a recording's resource); `ended_at`: conference sid -> when it ended there."""
    parts = call.path.split("/")
    if call.method != "GET" or not parts[-1].startswith("Recordings") and parts[-2] != "Recordings":
        return False
    if parts[-3] != "Conferences":
        return True
    return ended_at.get(parts[-2]) is not None and call.at >= ended_at[parts[-2]]


def recordings_page(items: list) -> dict:
    """A Recordings list page as the API answers it, with no next page."""
    return {"recordings": items, "page": 0, "page_size": 100, "next_page_uri": None, "uri": "/recordings"}


def recording_resource(recording_sid: str, status: str = "completed", duration=2, conference=None, call=None) -> dict:
    """A Recording resource with every field the SDK reads (its RecordingInstance reads them all)."""
    return {
        "account_sid": PROJECT,
        "api_version": "2010-04-01",
        "sid": recording_sid,
        "call_sid": call,
        "conference_sid": conference,
        "status": status,
        "duration": duration,
        "source": "Conference",
        "channels": 1,
        "date_created": None,
        "date_updated": None,
        "start_time": None,
        "price": None,
        "price_unit": "USD",
        "error_code": None,
        "uri": f"/Recordings/{recording_sid}.json",
    }


def sid(label: str) -> str:
    """A fake SignalWire sid (a UUID) named by a short label; labels sort as their sids do."""
    digits = label.encode().hex().ljust(32, "0")
    if len(digits) > 32:
        raise ValueError(f"sid label too long: {label!r}")
    return str(uuid.UUID(digits))


def conference_form(event: str, conference: str, room: str, call: str | None = None, at: float | None = None) -> dict:
    """A conference status callback as SignalWire sends it, Timestamp included (default: now)."""
    form = {
        "AccountSid": PROJECT,
        "ConferenceSid": conference,
        "FriendlyName": room,
        "StatusCallbackEvent": event,
        "Timestamp": formatdate(time.time() if at is None else at, usegmt=True),
    }
    if call:
        form["CallSid"] = call
    return form


def make_config(**overrides) -> Config:
    """A valid Config for tests, with fields overridden."""
    values = dict(
        signalwire_project_id=PROJECT,
        signalwire_api_token="PTtoken",
        signalwire_space_url="example.signalwire.com",
        signalwire_signing_key=SIGNING_KEY,
        public_url=PUBLIC_URL,
        end_grace_s=60.0,
        recordings_dir=tempfile.mkdtemp(dir=RECORDINGS_ROOT),
    )
    values.update(overrides)
    return Config(**values)


def sign(url: str, form: dict, key: str = SIGNING_KEY) -> str:
    """SignalWire's signature, computed here from its definition rather than with the SDK."""
    payload = url + "".join(k + v for k, v in sorted(form.items()))
    return base64.b64encode(hmac.new(key.encode(), payload.encode(), hashlib.sha1).digest()).decode()


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def json_keys(value) -> set:
    """Every key anywhere in a JSON value."""
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in json_keys(v)}
    return {k for v in value for k in json_keys(v)} if isinstance(value, list) else set()


def start_redis_server(
    directory, *flags: str, port: Optional[int] = None, password: Optional[str] = None
) -> Tuple[subprocess.Popen, str]:
    """A redis-server on `port` (default: a free loopback one) with no snapshots or AOF (unless `flags` ask),
    working in `directory`, and its URL once it answers a ping; RuntimeError if it does not start within 10 s."""
    port = port or free_port()
    command = [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1"]
    auth = ["--requirepass", password] if password else []
    server = subprocess.Popen(
        [*command, "--save", "", "--appendonly", "no", *auth, "--dir", str(directory), *flags],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis(host="127.0.0.1", port=port, password=password).ping()
            return server, f"redis://127.0.0.1:{port}/0"
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                server.kill()
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.05)


def recording_updates(fake):
    """The (path, form) of each recording update the SDK sent."""
    return [
        (urlsplit(call.request.url).path, {k: v[0] for k, v in parse_qs(call.request.body).items()})
        for call in fake.calls
        if RECORDING_UPDATE.fullmatch(call.request.url)
    ]


class SignedCallbacks:
    """Posts forms to one app as SignalWire does, signed for the public URL, and waits on what they cause."""

    def __init__(self, app, client=None):
        self.app = app
        self.client = client if client is not None else app.test_client()

    def post(self, path, form, query=None, public_url=PUBLIC_URL, header="X-SignalWire-Signature", **kwargs):
        """POST `form` to `path` (`query`: a dict or an encoded string), signed for `public_url`."""
        query_string = urlencode(query) if isinstance(query, dict) else (query or "")
        target = path + (f"?{query_string}" if query_string else "")
        return self.client.post(target, data=form, headers={header: sign(public_url + target, form)}, **kwargs)

    def settle(self, timeout: float = 10) -> None:
        """Wait until every command, read and retry the callbacks caused is done."""
        assert services(self.app).commands.wait_idle(timeout)

    def state(self, room: str):
        """The room's stored conference."""
        return services(self.app).store.get(room)
