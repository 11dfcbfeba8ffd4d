"""Starts the emulator and a real Quorum server on loopback ports for end-to-end tests."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, List, Optional

from flask import Flask, request
from markupsafe import escape
from werkzeug.serving import make_server

from app import create_app, services, shutdown
from config import Config
from emulator.faults import Behaviour, Faults
from emulator.scenarios import DEMO_NUMBER
from emulator.server import Emulator, QuietHandler
from support import checks_the_archive


class LogCapture(logging.Handler):
    """Keeps WARNING and worse records from every logger."""

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the record."""
        self.records.append(record)

    def errors(self) -> List[str]:
        """ERROR records and any record carrying an exception, as text."""
        return [f"{r.name}: {r.getMessage()}" for r in self.records if r.levelno >= logging.ERROR or r.exc_info]

    def warnings(self) -> int:
        """How many WARNING records were kept."""
        return sum(r.levelno == logging.WARNING for r in self.records)


@dataclass(frozen=True)
class Received:
    """One request the sink got: the exact URL called, headers and form."""

    path: str
    url: str
    headers: dict
    form: dict
    at: float


class Sink:
    """A stand-in for Quorum: answers the voice webhook with `<Conference>` LaML, records every request.

    `attrs(form)` gives the `<Conference>` attributes for a call ("{base}" becomes the sink's
    URL); `answers[path]` lists the statuses to answer in turn before falling back to 204;
    `laml[path]` is a LaML document to answer there (200), e.g. for an AnnounceUrl.
    """

    ROOM = DEMO_NUMBER

    def __init__(self, attrs=None):
        self.attrs = attrs or (lambda form: self.default_attrs())
        self.answers: dict = {}
        self.laml: dict = {}
        self.received: List[Received] = []
        self._lock = threading.Lock()
        app = Flask("sink")
        app.add_url_rule("/<path:path>", "any", self._handle, methods=["GET", "POST"])
        self._server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
        self.base = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="sink-http", daemon=True)

    @staticmethod
    def default_attrs() -> dict:
        """Quorum-like attributes: recorded from the start, every callback asked for."""
        return {
            "record": "record-from-start",
            "statusCallback": "{base}/status",
            "statusCallbackEvent": "start end join leave",
            "recordingStatusCallback": "{base}/recording?room=%2B15550100&x=1",
            "recordingStatusCallbackEvent": "in-progress completed absent",
        }

    def __enter__(self) -> "Sink":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def at(self, path: str) -> List[Received]:
        """Requests received at `path` (e.g. "/status"), in arrival order."""
        with self._lock:
            return [r for r in self.received if r.path == path]

    def _handle(self, path: str):
        """Record the request; answer LaML on /voice, else the next scripted status."""
        url = self.base + request.path + ("?" + request.query_string.decode() if request.query_string else "")
        with self._lock:
            self.received.append(
                Received(request.path, url, dict(request.headers), request.form.to_dict(), time.time())
            )
            statuses = self.answers.get(request.path)
            status = statuses.pop(0) if statuses else 204
        if path.startswith("voice"):
            attrs = {k: escape(v.replace("{base}", self.base)) for k, v in self.attrs(request.form).items()}
            body = " ".join(f'{k}="{v}"' for k, v in attrs.items())
            return f"<Response><Dial><Conference {body}>{self.ROOM}</Conference></Dial></Response>", 200
        if request.path in self.laml:
            return self.laml[request.path], 200
        return "", status


class _LateApp:
    """A WSGI app set after the server is bound, so the config can carry the server's own port."""

    app = None

    def __call__(self, environ, start_response):
        if self.app is None:  # between a restart's stop and start: what a proxy with no backend answers
            start_response("503 Service Unavailable", [("Content-Length", "0")])
            return [b""]
        return self.app(environ, start_response)


@dataclass
class Stack:
    """An emulator and a Quorum server talking to each other."""

    emulator: Emulator
    app: object
    config: Config
    log: LogCapture
    numbers: List[str] = field(default_factory=list)
    late: Optional[_LateApp] = field(default=None, repr=False)
    build: Optional[Callable[..., object]] = field(default=None, repr=False)  # (config, store) -> a started app

    @property
    def store(self):
        """Quorum's state store."""
        return services(self.app).store

    def settle(self, timeout: float = 15.0) -> bool:
        """Wait until callbacks are delivered, Quorum's commands and processing are done, nothing in flight."""
        commands, processor = services(self.app).commands, services(self.app).processor
        deadline = time.time() + timeout
        while time.time() < deadline:
            left = lambda: max(0.0, deadline - time.time())  # noqa: E731
            if (
                self.emulator.settle(left())
                and commands.wait_idle(left())
                and processor.wait_idle(left())
                and self.emulator.dispatcher.pending() == 0
                and commands.depth() == 0
            ):
                return True
        return False

    def restart(self, store=None, **changes) -> None:
        """Stop Quorum and start another on the same port, RECORDINGS_DIR and emulator, as a process restart
        does (the memory store reloads its state file, Redis is kept); `store`: the new process's state store
        (by default the settings' own); `changes` are Config fields, and the config is built again (so
        ROOM_RULES_FILE is read anew)."""
        shutdown(self.app)
        self.late.app = None
        self.config = dataclasses.replace(self.config, **changes)
        self.app = self.late.app = self.build(self.config, store)

    def wait_for_empty_store(self, timeout: float) -> bool:
        """Wait until Quorum holds no room (ended conferences processed and forgotten)."""
        deadline = time.time() + timeout
        while self.store.rooms() and time.time() < deadline:
            time.sleep(0.05)
        services(self.app).processor.wait_idle(max(0.0, deadline - time.time()))
        return not self.store.rooms()


def live_reads(stack: Stack) -> int:
    """GETs Quorum sent, but for the archive's check of each ended conference (a list of its recordings)."""
    ended = {conf.sid: conf.ended_at for conf in stack.emulator.conferences()}
    return sum(
        1 for call in stack.emulator.rest_log.calls if call.method == "GET" and not checks_the_archive(call, ended)
    )


def wait_until(condition, timeout: float) -> bool:
    """Poll `condition` until it holds or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def as_env(config: Config) -> dict:
    """The settings of `config` as the environment variables `Config.from_env` reads them from."""
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.init}
    return {
        name.upper(): ("true" if value else "false") if isinstance(value, bool) else str(value)
        for name, value in values.items()
        if value is not None
    }


@contextlib.contextmanager
def quorum_stack(
    *,
    faults: Faults = Faults(),
    min_participants: int = 2,
    pause_behavior: str = "skip",
    end_grace_s: float = 0.5,
    api_timeout_s: float = 5.0,
    numbers=(DEMO_NUMBER,),
    wrong_signing_key: bool = False,
    seed: int = 0,
    archive_clock=None,
    env: Optional[dict] = None,
    behaviour: Behaviour = Behaviour(),
    **settings,
) -> Iterator[Stack]:
    """Emulator + Quorum (in-process, real HTTP on loopback); everything stopped on exit.

    `wrong_signing_key` gives Quorum another key than the one the emulator signs with;
    `archive_clock` replaces the clock of the archive's upkeep (retention, deletion retries);
    `behaviour` picks the emulator's reading where SignalWire's docs are silent; `settings` are further Config
    fields; `env` further settings as environment variables, read by `Config.from_env` (which ignores names it
    does not know, so a test may name a setting a later version adds).
    """
    capture = LogCapture()
    logging.getLogger().addHandler(capture)
    late = _LateApp()
    server = make_server("127.0.0.1", 0, late, threaded=True, request_handler=QuietHandler)
    emulator = Emulator(faults=faults, seed=seed, behaviour=behaviour).start()
    archive = tempfile.mkdtemp(prefix="quorum-e2e-recordings-")
    config = Config(
        signalwire_project_id=emulator.project,
        signalwire_api_token=emulator.token,
        signalwire_space_url="emulator.invalid",
        signalwire_signing_key="PSK_not_the_emulators" if wrong_signing_key else emulator.signing_key,
        signalwire_api_url=emulator.url,
        public_url=f"http://127.0.0.1:{server.server_port}",
        min_participants=min_participants,
        pause_behavior=pause_behavior,
        end_grace_s=end_grace_s,
        signalwire_timeout_s=api_timeout_s,
        log_level="WARNING",
        recordings_dir=archive,
        **settings,
    )
    if env:
        config = Config.from_env({**as_env(config), **env})
    build = lambda config, store=None: create_app(config, store=store, archive_clock=archive_clock)  # noqa: E731
    late.app = build(config)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="quorum-http", daemon=True)
    thread.start()
    stack = Stack(emulator, late.app, config, capture, list(numbers), late, build)
    for number in numbers:
        # As `quorum point-number` sets it: the voice webhook and the call status callback.
        emulator.add_number(number, f"{config.public_url}/voice/inbound", f"{config.public_url}/voice/call-status")
    try:
        yield stack
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        emulator.stop()
        shutdown(stack.app)
        shutil.rmtree(archive, ignore_errors=True)
        logging.getLogger().removeHandler(capture)
