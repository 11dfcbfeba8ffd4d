"""Several real Quorum processes behind a random load balancer, for scale-out, restart and fault-drill tests."""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional, Tuple
from urllib.parse import urlsplit, urlunsplit

import redis
import requests
from flask import Flask, Response, request
from werkzeug.serving import make_server

from emulator.faults import Faults
from emulator.server import Emulator, QuietHandler
from quorum.redis_store import RedisStore
from support import free_port

ROOT = Path(__file__).resolve().parents[1]
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}
DRILL_DB = 5  # the drill's Redis database: its FLUSHDB must not wipe other tests' keys


class Balancer:
    """Forwards each request to a backend picked at random, as a load balancer without affinity does."""

    def __init__(self, seed: int = 0):
        self.backends: List[str] = []
        self.sent = {}  # backend -> requests forwarded
        self.failures: List[Tuple[float, str, str]] = []  # (when, backend, error) of each 502
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._session = requests.Session()
        app = Flask("balancer")
        app.add_url_rule("/<path:path>", "forward", self._forward, methods=["GET", "POST"])
        self._server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> "Balancer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _forward(self, path: str):
        """Send the request on unchanged (headers, query, body) and relay the answer."""
        with self._lock:
            if not self.backends:
                return Response("no backend", status=503)
            backend = self._rng.choice(self.backends)
            self.sent[backend] = self.sent.get(backend, 0) + 1
        # A connection per request, as nginx does by default: a kept-alive one can be closed by gunicorn's
        # keepalive timer just as a request is written to it, a 502 that says nothing about the backend.
        headers = {**{k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}, "Connection": "close"}
        try:
            answer = self._session.request(
                request.method,
                f"{backend}/{path}",
                params=request.query_string,
                data=request.get_data(),
                headers=headers,
                timeout=10,
            )
        except requests.RequestException as error:
            with self._lock:
                self.failures.append((time.time(), backend, type(error).__name__))
            return Response("backend unreachable", status=502)
        kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_HEADERS}
        return Response(answer.content, status=answer.status_code, headers=kept)


class QuorumProcess:
    """`python app.py` in a subprocess with the given settings; its log goes to a file."""

    def __init__(self, env: dict, log_dir: Path, name: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"{name}.log"
        full_env = {**os.environ, **env, "PORT": str(self.port)}
        command, cwd = self._command(log_dir)
        with open(self.log_path, "w") as log:
            self._process = subprocess.Popen(command, cwd=cwd, env=full_env, stdout=log, stderr=subprocess.STDOUT)
        self._wait_healthy()

    def _command(self, log_dir: Path) -> Tuple[List[str], Path]:
        """The command line and its working directory."""
        return [sys.executable, str(ROOT / "app.py")], log_dir

    def _wait_healthy(self, seconds: float = 60) -> None:
        """Until /healthz answers 200."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"quorum exited: {self.log_path.read_text()[-3000:]}")
            try:
                if requests.get(self.url + "/healthz", timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError("quorum did not become healthy")

    def healthz(self) -> dict:
        """The process's /healthz body."""
        return requests.get(self.url + "/healthz", timeout=5).json()

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as when a host dies."""
        self._process.send_signal(signal.SIGKILL)
        self._process.wait(10)

    def stop(self) -> None:
        """Terminate and reap (no-op if already dead)."""
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)

    def log(self) -> str:
        """Everything the process wrote."""
        return self.log_path.read_text()


class GunicornWorker(QuorumProcess):
    """`gunicorn 'app:create_app()'` with one worker, as production runs it; its master respawns a killed worker."""

    def _command(self, log_dir: Path) -> Tuple[List[str], Path]:
        """gunicorn reads the repository's gunicorn.conf.py from its working directory; each master gets a
        control socket of its own (the default one, in $HOME, is shared by every gunicorn of the user)."""
        return [GUNICORN, "--control-socket", str(self.log_path.with_suffix(".ctl")), "app:create_app()"], ROOT

    def worker_pid(self) -> Optional[int]:
        """The master's current worker, if it has one."""
        master = self._process.pid
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        return int(children[0]) if children else None

    def kill_worker(self) -> int:
        """SIGKILL the worker, not the master; returns the killed pid."""
        pid = self.worker_pid()
        os.kill(pid, signal.SIGKILL)
        return pid

    def wait_replaced(self, killed: int, seconds: float = 60) -> None:
        """Until the master has started a new worker and it serves /healthz."""
        deadline = time.monotonic() + seconds
        while self.worker_pid() in (None, killed):
            if time.monotonic() > deadline:
                raise RuntimeError("gunicorn did not replace its killed worker")
            time.sleep(0.05)
        self._wait_healthy(max(1.0, deadline - time.monotonic()))


class LogFiles:
    """The WARNING and ERROR lines of the workers' logs (app and gunicorn), like e2e_support.LogCapture."""

    ERROR = re.compile(r" ERROR |\[ERROR\]|Traceback")
    WARNING = re.compile(r" WARNING |\[WARNING\]")

    def __init__(self, workers: List[QuorumProcess]):
        self._workers = workers
        self.expected: List[str] = []  # error lines the drill itself caused (its SIGKILLs)

    def lines(self) -> List[str]:
        """Every line every worker wrote."""
        return [line for worker in self._workers for line in worker.log().splitlines()]

    def errors(self) -> List[str]:
        """ERROR lines and tracebacks, but for the expected ones."""
        return [
            line
            for line in self.lines()
            if self.ERROR.search(line) and not any(expected in line for expected in self.expected)
        ]

    def warnings(self) -> int:
        """How many WARNING lines were written."""
        return sum(bool(self.WARNING.search(line)) for line in self.lines())


@dataclass
class Cluster:
    """The emulator, the balancer and gunicorn workers on one Redis database; the drill's `Stack` interface."""

    emulator: Emulator
    balancer: Balancer
    workers: List[GunicornWorker]
    store: RedisStore
    redis: redis.Redis
    log: LogFiles
    reconcile_s: float
    kills: List[dict] = field(default_factory=list)

    def settle(self, timeout: float = 30.0) -> bool:
        """Until callbacks are delivered, every worker's queue is empty, and no command went out for long enough
        that every live conference was read since (each is read every `reconcile_s` at least, on a repair
        round's tick): retry timers live inside the workers, where /healthz does not show them."""
        quiet_s = max(2.0, 3 * self.reconcile_s + 1.0)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (
                self.emulator.settle(max(0.0, deadline - time.monotonic()))
                and self._queues_empty()
                and time.time() - self._last_rest_work() >= quiet_s
            ):
                return True
            time.sleep(0.2)
        return False

    def _queues_empty(self) -> bool:
        """Whether every worker answers /healthz with nothing queued."""
        return all(worker.healthz()["queue_depth"] == 0 for worker in self.workers)

    def _last_rest_work(self) -> float:
        """When the emulator last answered a REST command (reads go on while conferences are live)."""
        calls = self.emulator.rest_log.calls
        return next((call.at for call in reversed(list(calls)) if call.method != "GET"), 0.0)

    def wait_for_empty_store(self, timeout: float) -> bool:
        """Wait until Quorum holds no room (ended conferences processed and forgotten)."""
        deadline = time.monotonic() + timeout
        while self.store.rooms() and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self.store.rooms()

    def kill_worker(self, index: int = 0) -> None:
        """SIGKILL one worker; the balancer's health check drops it until its master has started another."""
        victim = self.workers[index]
        pid = victim.kill_worker()
        self.balancer.backends.remove(victim.url)
        killed_at = time.time()  # nothing sent from now on reaches the victim
        self.log.expected.append(f"Worker (pid:{pid}) was sent SIGKILL!")
        victim.wait_replaced(pid)
        self.balancer.backends.append(victim.url)
        self.kills.append({"pid": pid, "backend": victim.url, "at": killed_at, "back_at": time.time()})

    def flush(self) -> int:
        """FLUSHDB of Quorum's database while conferences are live; returns how many keys it held."""
        keys = self.redis.dbsize()
        self.redis.flushdb()
        return keys


def is_conference_list(path: str) -> bool:
    """Whether a REST path is the list of conferences (the reconciler's one request per round)."""
    return path.endswith("/Conferences") or path.endswith("/Conferences.json")


@contextlib.contextmanager
def quorum_cluster(
    redis_url: str,
    log_dir: Path,
    faults: Faults,
    numbers: List[str],
    *,
    workers: int = 2,
    reconcile_s: float = 1.0,
    seed: int = 0,
    **settings: str,
) -> Iterator[Cluster]:
    """Emulator + balancer + `workers` gunicorn workers on a Redis database of their own (DRILL_DB, so a
    FLUSHDB wipes only theirs); `settings` are further environment variables. Everything stopped on exit."""
    url = urlunsplit(urlsplit(redis_url)._replace(path=f"/{DRILL_DB}"))
    namespace = f"drill{uuid.uuid4().hex[:8]}"
    emulator = Emulator(faults=faults, seed=seed).start()
    balancer = Balancer(seed=seed).__enter__()
    env = {
        "SIGNALWIRE_PROJECT_ID": emulator.project,
        "SIGNALWIRE_API_TOKEN": emulator.token,
        "SIGNALWIRE_SPACE_URL": "emulator.invalid",
        "SIGNALWIRE_SIGNING_KEY": emulator.signing_key,
        "SIGNALWIRE_API_URL": emulator.url,
        "PUBLIC_URL": balancer.url,
        "USE_NGROK": "false",
        "REDIS_URL": url,
        "REDIS_NAMESPACE": namespace,
        "RECONCILE_INTERVAL_S": str(reconcile_s),
        "WEB_CONCURRENCY": "1",
        "LOG_LEVEL": "INFO",
        "RECORDINGS_DIR": str(log_dir / "recordings"),
        **settings,
    }
    started: List[GunicornWorker] = []
    client = redis.Redis.from_url(url)
    try:
        with ThreadPoolExecutor(workers) as boot:  # the workers boot side by side
            for future in [boot.submit(GunicornWorker, env, log_dir, f"worker-{i}") for i in range(workers)]:
                started.append(future.result())
        balancer.backends.extend(worker.url for worker in started)
        for number in numbers:
            emulator.add_number(number, f"{balancer.url}/voice/inbound", f"{balancer.url}/voice/call-status")
        yield Cluster(
            emulator, balancer, started, RedisStore.from_url(url, namespace, 1), client, LogFiles(started), reconcile_s
        )
    finally:
        for worker in started:
            worker.stop()
        balancer.__exit__()
        emulator.stop()
        client.flushdb()
