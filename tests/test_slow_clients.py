"""Slow clients against the documented production setup: gunicorn behind nginx with deploy/nginx.conf.

gunicorn (gthread, 8 threads) gives each request a thread from its first byte until the app has read
the body: eight clients that promise a body and never send it hold every thread, and SignalWire's
callbacks time out. nginx reads each request whole first (https://gunicorn.org/deploy). Here the
bundled emulator places real calls through Debian's nginx running the shipped file while hundreds of
slow clients hold connections, and the same slow clients, straight at gunicorn, show why.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest
import requests

from app import MAX_BODY_BYTES
from e2e_support import wait_until
from emulator.server import Emulator
from support import free_port, sign

ROOT = Path(__file__).resolve().parents[1]
NGINX_CONF = ROOT / "deploy" / "nginx.conf"
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
THREADS = 8  # gunicorn.conf.py's default GUNICORN_THREADS
ROOM = "+15550001010"
# SignalWire's callbacks come whole within its 2 s / 5 s timeouts; through nginx each is answered
# well within this while the slow clients hold (without nginx: not at all).
ANSWER_S = 0.1
# The head of a POST that promises a body.
SLOW_HEAD = (
    b"POST /voice/conference-status HTTP/1.1\r\nHost: quorum\r\n"
    b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n"
)


def nginx_binary() -> str:
    """Debian's nginx (in /usr/sbin, outside a non-root PATH), or a failure naming the install script."""
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if binary is None:
        pytest.fail(
            "nginx is not installed: run `make test` or scripts/install-system-packages.sh "
            "(it installs Debian's nginx), or apt-get install nginx"
        )
    return binary


def render_nginx_conf(text: str, prefix: Path, port: int, upstream_port: int) -> str:
    """The shipped config with only its site lines (listen, upstream, pid, logs) moved to `prefix` and
    test ports, and temporary files kept in `prefix`: every other directive is tested as shipped."""
    temp = "".join(
        f"\n    {kind}_temp_path {prefix / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    site = {
        "pid /run/nginx.pid;": f"pid {prefix / 'nginx.pid'};",
        "error_log /var/log/nginx/error.log warn;": f"error_log {prefix / 'error.log'} warn;",
        "access_log /var/log/nginx/access.log quorum;": f"access_log {prefix / 'access.log'} quorum;",
        "listen 80 default_server;": f"listen 127.0.0.1:{port} default_server;",
        "server 127.0.0.1:5000;": f"server 127.0.0.1:{upstream_port};",
        "http {": "http {" + temp,
    }
    lines, replaced = [], {line: 0 for line in site}
    for line in text.splitlines():
        key = line.strip()
        if key in site:
            replaced[key] += 1
            line = line[: len(line) - len(line.lstrip())] + site[key]
        lines.append(line)
    assert all(count == 1 for count in replaced.values()), f"deploy/nginx.conf's site lines changed: {replaced}"
    return "\n".join(lines) + "\n"


class Process:
    """A server subprocess with its output in a file; stopped (terminate, then kill) by `stop`."""

    def __init__(self, command: List[str], log_path: Path, **popen):
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, **popen)

    def wait_healthy(self, url: str, seconds: float = 60) -> None:
        """Until `url` answers 200, or fail with the log's tail."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self.process.poll() is None:
            with contextlib.suppress(requests.RequestException):
                if requests.get(url, timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"{url} did not answer: {self.log_path.read_text(errors='replace')[-3000:]}")

    def stop(self) -> None:
        """Terminate and reap (kill after 20 s)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@dataclass
class Stack:
    """The emulator as SignalWire, gunicorn as documented, nginx in front with the shipped config."""

    emulator: Emulator
    nginx_url: str  # PUBLIC_URL: what SignalWire calls
    nginx_port: int
    gunicorn_port: int


@contextlib.contextmanager
def production_stack(tmp: Path) -> Iterator[Stack]:
    """Emulator, `gunicorn --bind 127.0.0.1:PORT 'app:create_app()'` and nginx; all stopped on exit."""
    nginx = nginx_binary()
    nginx_port, gunicorn_port = free_port(), free_port()
    public_url = f"http://127.0.0.1:{nginx_port}"
    started: List[Process] = []
    emulator = Emulator().start()
    try:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("REDIS_URL", "WEB_CONCURRENCY", "GUNICORN_THREADS", "LOG_LEVEL", "PORT")
        }
        env.update(
            SIGNALWIRE_PROJECT_ID=emulator.project,
            SIGNALWIRE_API_TOKEN=emulator.token,
            SIGNALWIRE_SPACE_URL="emulator.invalid",
            SIGNALWIRE_SIGNING_KEY=emulator.signing_key,
            SIGNALWIRE_API_URL=emulator.url,
            PUBLIC_URL=public_url,
            USE_NGROK="false",
            RECONCILE_INTERVAL_S="0",
            RECORDINGS_DIR=str(tmp / "recordings"),
        )
        # As the README runs it (gunicorn.conf.py from the working directory); a control socket of its
        # own, since the default one in $HOME is shared by every gunicorn of the user.
        started.append(
            Process(
                [
                    GUNICORN,
                    "--bind",
                    f"127.0.0.1:{gunicorn_port}",
                    "--control-socket",
                    str(tmp / "gunicorn.ctl"),
                    "app:create_app()",
                ],
                tmp / "gunicorn.log",
                cwd=ROOT,
                env=env,
            )
        )
        started[-1].wait_healthy(f"http://127.0.0.1:{gunicorn_port}/healthz")
        conf = tmp / "nginx.conf"
        conf.write_text(render_nginx_conf(NGINX_CONF.read_text(), tmp, nginx_port, gunicorn_port))
        started.append(Process([nginx, "-p", str(tmp), "-c", str(conf), "-g", "daemon off;"], tmp / "nginx.out"))
        started[-1].wait_healthy(f"{public_url}/healthz", seconds=10)
        emulator.add_number(ROOM, f"{public_url}/voice/inbound")
        yield Stack(emulator, public_url, nginx_port, gunicorn_port)
    finally:
        for process in reversed(started):
            process.stop()
        emulator.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """One production stack for the module."""
    with production_stack(tmp_path_factory.mktemp("slow-clients")) as running:
        yield running


class SlowClients:
    """Connections that each promise a body (Content-Length: 1000) and trickle one byte of it a second,
    or trickle their headers a byte a second; any the server drops is opened again, as an attacker
    would. One thread trickles them all, for `lifetime_s` at most."""

    def __init__(self, port: int, bodies: int, headers: int = 0, interval_s: float = 1.0, lifetime_s: float = 120.0):
        self._port, self._interval = port, interval_s
        self._deadline = time.monotonic() + lifetime_s
        self._socks: List[Optional[socket.socket]] = [None] * (bodies + headers)
        self._kinds = ["body"] * bodies + ["headers"] * headers
        self._sent = [0] * len(self._socks)  # header bytes sent, per header trickler
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.reopened = 0
        for index in range(len(self._socks)):
            self._open(index)
        self._thread = threading.Thread(target=self._run, name="slow-clients", daemon=True)
        self._thread.start()

    def held(self) -> int:
        """How many connections are open right now."""
        with self._lock:
            return sum(sock is not None for sock in self._socks)

    def close(self) -> None:
        """Stop trickling and close every connection."""
        self._stop.set()
        self._thread.join(10)
        with self._lock:
            for index, sock in enumerate(self._socks):
                if sock is not None:
                    sock.close()
                    self._socks[index] = None

    def _open(self, index: int) -> bool:
        """Connect and send the opening: the whole head (a body promised) or its first byte."""
        try:
            sock = socket.create_connection(("127.0.0.1", self._port), timeout=5)
            sock.sendall(SLOW_HEAD if self._kinds[index] == "body" else SLOW_HEAD[:1])
        except OSError:
            return False  # tried again next round
        sock.setblocking(False)
        self._sent[index] = 1
        self._socks[index] = sock
        return True

    def _run(self) -> None:
        """Every interval, one more byte on each connection; reopen those the server closed."""
        while not self._stop.wait(self._interval) and time.monotonic() < self._deadline:
            with self._lock:
                for index, sock in enumerate(self._socks):
                    if sock is not None and self._trickle(index, sock):
                        continue
                    if sock is not None:
                        sock.close()
                        self._socks[index] = None
                    self.reopened += self._open(index)

    def _trickle(self, index: int, sock: socket.socket) -> bool:
        """Send the next byte; False when the server has answered or closed the connection."""
        try:
            sock.recv(4096)
            return False  # an answer (a 408), or b"": the server gave up on this client
        except BlockingIOError:
            pass
        except OSError:
            return False
        sent = self._sent[index]
        chunk = b"x" if self._kinds[index] == "body" else SLOW_HEAD[sent : sent + 1] or b"x"
        self._sent[index] = sent + 1
        try:
            sock.send(chunk)
        except BlockingIOError:
            pass
        except OSError:
            return False
        return True


@pytest.fixture
def slow_clients():
    """Opens SlowClients (port, bodies, headers); every one is closed afterwards."""
    opened: List[SlowClients] = []

    def open_(port: int, bodies: int, headers: int = 0) -> SlowClients:
        opened.append(SlowClients(port, bodies, headers))
        return opened[-1]

    yield open_
    for clients in opened:
        clients.close()


def timed_get(url: str) -> float:
    """Seconds until `url` answered 200 (read timeout: 5 s, SignalWire's)."""
    start = time.perf_counter()
    assert requests.get(url, timeout=(2, 5)).status_code == 200
    return time.perf_counter() - start


def lone_caller_conference(stack: Stack, label: str = "") -> Dict[str, float]:
    """A host and a guest call in, the guest hangs up (the host, alone, must not be recorded), then the
    host: how many seconds each of SignalWire's requests (and a /healthz) took to be answered."""
    emulator = stack.emulator
    before = len(emulator.callback_attempts())
    answers = {"healthz": timed_get(f"{stack.nginx_url}/healthz")}
    calls = []
    for who in ("host", "guest"):
        dialed = time.perf_counter()
        calls.append(emulator.dial(ROOM, f"+1555000000{len(calls) + 1}", f"{who}{label}"))
        answers[f"voice {who}"] = time.perf_counter() - dialed
    assert [call.status for call in calls] == ["in-progress"] * 2
    conf = emulator.conferences(ROOM)[-1]
    assert wait_until(lambda: conf.recording_sids, 5)
    recording = emulator.recording(conf.recording_sids[0])
    time.sleep(1.05 - time.time() % 1)  # the leave's one-second Timestamp after the join's
    emulator.hangup(calls[1].sid)
    # The host is alone: Quorum heard the leave and paused the recording.
    assert wait_until(lambda: recording.status == "paused", 5), recording.status
    answers["healthz, host alone"] = timed_get(f"{stack.nginx_url}/healthz")
    emulator.hangup(calls[0].sid)
    assert emulator.settle(15)
    attempts = emulator.callback_attempts()[before:]
    assert [a for a in attempts if not a.ok] == []
    callbacks = [a for a in attempts if a.callback.event != "voice"]
    events = {a.callback.event for a in callbacks}
    assert {"participant-join", "participant-leave", "conference-start", "conference-end"} <= events, events
    answers.update((f"{a.callback.event} #{i}", a.elapsed_s) for i, a in enumerate(callbacks))
    return answers


def test_signalwire_is_answered_through_nginx_while_300_slow_clients_hold(stack, slow_clients):
    """320 slow clients at nginx; a lone-caller conference's every request is answered at once."""
    slow = slow_clients(stack.nginx_port, bodies=300, headers=20)
    answers = lone_caller_conference(stack)
    assert {name: round(s, 3) for name, s in answers.items() if s >= ANSWER_S} == {}
    # Still held: nginx keeps them meanwhile (it drops only header tricklers, after its
    # client_header_timeout, and they come back).
    assert slow.held() == 320


def test_straight_to_gunicorn_eight_slow_clients_time_out_signalwire(stack, slow_clients):
    """Why nginx, and gunicorn on loopback only: THREADS clients that reach gunicorn and never finish a
    body hold every thread. The probes give up after 1 s (SignalWire waits 5 s; the threads are held
    as long as the clients please)."""
    direct = f"http://127.0.0.1:{stack.gunicorn_port}"
    slow = slow_clients(stack.gunicorn_port, bodies=THREADS)
    form = {
        "AccountSid": stack.emulator.project,
        "ConferenceSid": "5d0a6f7e-1b2c-4d3e-8f90-a1b2c3d4e5f6",
        "FriendlyName": ROOM,
        "StatusCallbackEvent": "participant-join",
        "CallSid": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
        "Timestamp": formatdate(usegmt=True),
    }
    path = "/voice/conference-status"
    signature = sign(stack.nginx_url + path, form, stack.emulator.signing_key)
    with pytest.raises(requests.ReadTimeout):
        requests.post(direct + path, data=form, headers={"X-SignalWire-Signature": signature}, timeout=(2, 1))
    with pytest.raises(requests.ReadTimeout):
        requests.get(f"{direct}/healthz", timeout=(2, 1))
    slow.close()  # the threads are freed only when the clients go
    assert wait_until(lambda: _answers(f"{direct}/healthz"), 10)


def _answers(url: str) -> bool:
    """Whether `url` answers 200 within a second."""
    with contextlib.suppress(requests.RequestException):
        return requests.get(url, timeout=1).status_code == 200
    return False


def test_nginx_caps_bodies_at_quorums_limit(stack):
    """Quorum's own 64 KiB cap, applied by nginx before it buffers: one byte more is nginx's 413."""
    url = f"{stack.nginx_url}/voice/conference-status"
    form_type = {"Content-Type": "application/x-www-form-urlencoded"}
    at_cap = requests.post(url, data=b"x" * MAX_BODY_BYTES, headers=form_type, timeout=5)
    assert at_cap.status_code == 403  # reached Quorum: unsigned
    over = requests.post(url, data=b"x" * (MAX_BODY_BYTES + 1), headers=form_type, timeout=5)
    assert over.status_code == 413 and "nginx" in over.text
