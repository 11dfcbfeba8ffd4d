"""`Emulator`: the REST API, the call simulator and the callback sender of one project,
served in-process on a loopback port (port 0 picks a free one).
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from typing import List, Optional

import numpy as np
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from emulator import audio, control
from emulator.callbacks import Attempt, Dispatcher
from emulator.calls import Simulator
from emulator.faults import Behaviour, FaultInjector, Faults
from emulator.model import Call, Conference, PhoneNumber, Recording
from emulator.rest_api import RestLog, create_rest_app


class QuietHandler(WSGIRequestHandler):
    """No access log lines (errors are still logged)."""

    def log_request(self, code="-", size="-") -> None:
        """Skip the per-request line."""


def throwaway_credentials() -> dict:
    """A project id, API token and signing key that are valid only for this emulator."""
    return {
        "project": str(uuid.uuid4()),
        "token": "PT" + secrets.token_hex(24),
        "signing_key": "PSK_" + secrets.token_hex(16),
    }


class Emulator:
    """SignalWire's side of the conversation for one project."""

    def __init__(
        self,
        *,
        project: Optional[str] = None,
        token: Optional[str] = None,
        signing_key: Optional[str] = None,
        faults: Faults = Faults(),
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        callback_timeouts: tuple = (2.0, 5.0),
        callback_retry_after_s: float = 0.25,
        behaviour: Behaviour = Behaviour(),
    ):
        made = throwaway_credentials()
        self.project = project or made["project"]
        self.token = token or made["token"]
        self.signing_key = signing_key or made["signing_key"]
        self.injector = FaultInjector(faults)
        self.dispatcher = Dispatcher(
            self.signing_key, self.injector, *callback_timeouts, retry_after_s=callback_retry_after_s
        )
        self.sim = Simulator(self.project, self.signing_key, self.dispatcher, lambda: self.url, seed, behaviour)
        self.rest_log = RestLog()
        self.app = create_rest_app(self.sim, self.project, self.token, self.injector, self.rest_log)
        self.app.register_blueprint(control.blueprint(self))  # `python -m emulator call`
        self._host, self._port = host, port
        self._server: Optional[BaseWSGIServer] = None
        self._thread: Optional[threading.Thread] = None

    # Lifecycle

    def start(self) -> "Emulator":
        """Serve on a thread; `url` is valid from now on."""
        self._server = make_server(self._host, self._port, self.app, threaded=True, request_handler=QuietHandler)
        # A short poll interval makes stop() quick (tests start and stop many emulators).
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="emulator-http", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (callbacks still queued are abandoned)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None
            self.dispatcher.close()

    def __enter__(self) -> "Emulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL, e.g. http://127.0.0.1:PORT (use as SIGNALWIRE_API_URL)."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def set_faults(self, faults: Faults) -> None:
        """Break (or heal) SignalWire from now on, e.g. to end an outage mid-test."""
        self.injector.faults = faults

    # Driving calls

    def add_number(self, phone_number: str, voice_url: str, status_callback: str = "") -> PhoneNumber:
        """Provision a number whose calls fetch LaML from `voice_url` (and report their end to `status_callback`)."""
        return self.sim.add_number(phone_number, voice_url, status_callback=status_callback)

    def dial(self, to: str, from_: str, label: str = "", talk=()) -> Call:
        """Place an inbound call to `to` and follow the LaML it gets; `talk`: scripted turns (Simulator.dial)."""
        return self.sim.dial(to, from_, label, talk)

    def hangup(self, call_sid: str) -> None:
        """Hang up a call."""
        self.sim.hangup(call_sid)

    def hold(self, call_sid: str, on: bool = True) -> None:
        """Put a participant on hold (or, with on=False, take them off it), as the REST update would."""
        self.sim.hold(call_sid, on)

    def settle(self, timeout: float = 10.0) -> bool:
        """Wait until every callback is delivered (or given up) and no REST request is in flight."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if (
                self.dispatcher.wait_idle(max(0.0, deadline - time.time()))
                and self.rest_log.wait_idle(max(0.0, deadline - time.time()))
                and self.dispatcher.pending() == 0
            ):
                return True
        return False

    # Looking at what happened

    def conferences(self, room: Optional[str] = None) -> List[Conference]:
        """Every conference (of `room`), oldest first."""
        with self.sim.lock:
            return [c for c in self.sim.conferences.values() if room is None or c.name == room]

    def recording(self, recording_sid: str) -> Recording:
        """One recording."""
        return self.sim.recordings[recording_sid]

    def audio(self, recording_sid: str) -> np.ndarray:
        """A finished recording's samples, shaped (frames, channels)."""
        return self.sim.media(recording_sid)

    def wav(self, recording_sid: str) -> bytes:
        """A finished recording as WAV bytes (what RecordingUrl + .wav serves)."""
        return audio.wav_bytes(self.audio(recording_sid))

    def callback_attempts(self) -> List[Attempt]:
        """Every webhook attempt so far (a copy)."""
        return self.dispatcher.log()
