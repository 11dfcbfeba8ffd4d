"""Several real Quorum processes behind a random load balancer, for scale-out and restart tests."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List

import requests
from flask import Flask, Response, request
from werkzeug.serving import make_server

from support import free_port
from emulator.server import QuietHandler

ROOT = Path(__file__).resolve().parents[1]
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class Balancer:
    """Forwards each request to a backend picked at random, as a load balancer without affinity does."""

    def __init__(self, seed: int = 0):
        self.backends: List[str] = []
        self.sent = {}  # backend -> requests forwarded
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
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        try:
            answer = self._session.request(request.method, f"{backend}/{path}", params=request.query_string,
                                           data=request.get_data(), headers=headers, timeout=10)
        except requests.RequestException:
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
        with open(self.log_path, "w") as log:
            self._process = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=log_dir, env=full_env,
                                             stdout=log, stderr=subprocess.STDOUT)
        self._wait_healthy()

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
