"""`python -m emulator.demo`: a scripted conference against Quorum, no account needed.

Starts the emulator in this process and Quorum (`python app.py`) as a subprocess with
throwaway credentials, plays the demo scenario, prints what happens as it happens, then
the recording's timeline and the REST calls Quorum made. Exits 0 when the recording
ran exactly while a quorum was on the line; the subprocess is stopped on every exit path.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import List, Optional

import requests

from emulator.calls import Event
from emulator.scenarios import DEMO, DEMO_NUMBER, Player, logged_quorum, recorded_spans, scaled, span_problems
from emulator.server import Emulator

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE_S = 0.25
SID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
STARTUP_TIMEOUT_S = 20.0
ANNOUNCEMENT = "This call is recorded."


class EventPrinter:
    """Prints emulator events as they happen, with seconds since the first one."""

    def __init__(self, out=sys.stdout):
        self._out = out
        self._t0: Optional[float] = None
        self._recording = "not started"

    def __call__(self, event: Event) -> None:
        """Print one event."""
        self._t0 = self._t0 if self._t0 is not None else event.at
        text = self._describe(event)
        if text:
            print(f"  {event.at - self._t0:6.2f}s  {text}", file=self._out, flush=True)

    def _describe(self, event: Event) -> str:
        """One line for an event; empty for events not worth a line."""
        kind = event.kind
        if kind in ("joined", "left"):
            return f"{event.label:<6} {kind:<6} ({event.present} on the line)   recording: {self._recording}"
        if kind in ("held", "unheld"):
            verb = "on hold " if kind == "held" else "off hold"
            return f"{event.label:<6} {verb} (hold music; on hold does not count)   recording: {self._recording}"
        if kind in ("announced", "announce-failed"):
            return (
                f"SignalWire played Quorum's announcement to everyone: {event.detail!r}"
                if kind == "announced"
                else f"announcement FAILED: {event.detail}"
            )
        if kind == "recording-started":
            self._recording = "RUNNING"
            return "recording started by SignalWire (record-from-start: 2 on the line)"
        if kind in ("recording-paused", "recording-resumed"):
            self._recording = "PAUSED" if kind == "recording-paused" else "RUNNING"
            verb = "paused" if kind == "recording-paused" else "resumed"
            return f"Quorum {verb} the recording through the REST API          recording: {self._recording}"
        if kind == "recording-completed":
            self._recording = "completed"
            return "recording completed"
        if kind == "conference-end":
            return f"conference {event.room} ended"
        if kind == "call-failed":
            return f"call {event.label} FAILED: {event.detail}"
        return ""


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def quorum_env(emulator: Emulator, port: int, minimum: int, behavior: str, archive: str, api_token: str) -> dict:
    """Every setting Quorum reads, so a developer's own `.env` cannot leak into the demo."""
    return {
        **os.environ,
        "SIGNALWIRE_PROJECT_ID": emulator.project,
        "SIGNALWIRE_API_TOKEN": emulator.token,
        "SIGNALWIRE_SPACE_URL": "emulator.invalid",
        "SIGNALWIRE_SIGNING_KEY": emulator.signing_key,
        "SIGNALWIRE_API_URL": emulator.url,
        "SIGNALWIRE_PHONE_NUMBER": "",
        "PUBLIC_URL": f"http://127.0.0.1:{port}",
        "PORT": str(port),
        "USE_NGROK": "false",
        "NGROK_AUTHTOKEN": "",
        "LOG_LEVEL": "INFO",
        "MIN_PARTICIPANTS": str(minimum),
        "PAUSE_BEHAVIOR": behavior,
        "CONFERENCE_ROOM": "per-number",
        "HOLD_COUNTS_AS_PRESENT": "false",
        "HOST_NUMBERS": "",
        "RECORDING_ANNOUNCEMENT": ANNOUNCEMENT,
        "ROOM_RULES_FILE": "",
        "TRIM": "do-not-trim",
        "VALIDATE_SIGNATURES": "true",
        "SIGNALWIRE_TIMEOUT_S": "5",
        "END_GRACE_S": "1",
        "RECORDINGS_DIR": archive,
        "PARTICIPANT_RECORDING": "off",
        "REDIS_URL": "",
        "EVENT_CALLBACK_URL": "",
        "API_TOKEN": api_token,
        "RECONCILE_INTERVAL_S": "60",
        "PYTHONUNBUFFERED": "1",
    }


def wait_until_up(url: str, process: subprocess.Popen, timeout: float) -> bool:
    """Poll Quorum's /healthz until it answers, the process dies or time runs out."""
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        try:
            if requests.get(url + "/healthz", timeout=1).status_code == 200:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.1)
    return False


def stop(process: subprocess.Popen) -> None:
    """Terminate the subprocess, killing it if it lingers."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def report(emulator: Emulator, minimum: int) -> List[str]:
    """Print the timeline, the REST calls and the callbacks; return what went wrong (empty: all good)."""
    problems: List[str] = []
    expected, crossings = logged_quorum(emulator.sim.events, DEMO_NUMBER, minimum)
    for conf in emulator.conferences(DEMO_NUMBER):
        for sid in conf.recording_sids:
            problems += _print_recording(emulator, conf, sid, expected, minimum)
    writes = [w for w in emulator.rest_log.writes() if "Status" in w.form]
    if len(writes) != crossings:
        problems.append(f"{len(writes)} pause/resume writes, expected {crossings}")
    starts = sum(e.kind in ("recording-started", "recording-resumed") for e in emulator.sim.events)
    played = sum(e.kind == "announced" for e in emulator.sim.events)
    if played != starts:
        problems.append(f"the announcement played {played} times for {starts} starts and resumes")
    counts = emulator.rest_log.counts()
    # No conference when Quorum refused every call: the REST calls, if any, are timed from the first.
    t0 = min(
        (c.created_at for c in emulator.conferences()),
        default=min((c.at for c in emulator.rest_log.calls), default=0.0),
    )
    # Reads are the scheduled look for lost callbacks (a conference at the threshold, every REPAIR_INTERVAL_S):
    # not needed by the scenario, not a problem.
    print(f"\nREST calls Quorum made: {counts['POST']} writes, {counts['GET']} reads")
    for call in emulator.rest_log.calls:
        form = " ".join(f"{k}={v}" for k, v in call.form.items())
        print(f"  {call.at - t0:6.2f}s  {call.method} {_short(call.path)} {form} -> {call.status}")
    attempts = emulator.callback_attempts()
    bad = [a for a in attempts if not a.ok]
    print(f"\nWebhooks sent to Quorum: {len(attempts)}, answered 2xx: {len(attempts) - len(bad)}")
    problems += [f"{a.callback.event} answered {a.status or a.error}" for a in bad]
    return problems


def _print_recording(emulator: Emulator, conf, sid: str, expected, minimum: int) -> List[str]:
    """Print one recording's spans and compare them with the policy."""
    rec = emulator.recording(sid)
    t0 = conf.created_at
    print(f"\nTimeline of recording {sid} (room {conf.name}, seconds since the host dialled in):")
    for span in rec.timeline.spans:
        note = f"  (PauseBehavior={span.behavior})" if span.behavior else ""
        print(f"  {span.start - t0:6.2f} - {span.end - t0:6.2f}  {span.state:<9} {span.seconds:5.2f} s{note}")
    frames = emulator.audio(sid).shape[0]
    print(
        f"  recorded {rec.timeline.seconds('recording'):.2f} s, paused {rec.timeline.seconds('paused'):.2f} s; "
        f"media {frames / 8000:.2f} s at {emulator.sim.recording_url(sid)}.wav"
    )
    wanted = ", ".join(f"{a - t0:.2f}-{b - t0:.2f}" for a, b in expected) or "never"
    problems = span_problems(recorded_spans(rec), expected, TOLERANCE_S)
    verdict = "matches" if not problems else "DOES NOT MATCH"
    print(f"  at least {minimum} on the line, not on hold: {wanted} -> {verdict} within {TOLERANCE_S} s per edge")
    return problems


def archived(root: Path, timeout: float = 10.0) -> List[str]:
    """Wait for Quorum to archive the conversation (after END_GRACE_S) and print what it kept."""
    deadline = time.time() + timeout
    while not list(root.glob("*/*/*/conversation.json")) and time.time() < deadline:
        time.sleep(0.1)
    found = list(root.glob("*/*/*/conversation.json"))
    if not found:
        return ["Quorum did not archive the conversation"]
    record = json.loads(found[0].read_text())
    mix = record.get("audio") or {}
    print(
        f"\nQuorum archived conversation {_short(record['id'])}: status {record['status']}, "
        f"{len(record['channels'])} calls, mix.wav {(mix.get('duration_ms') or 0) / 1000:.2f} s "
        f"downloaded from the emulator, SNR {_figure(mix.get('snr'), 'dB')}, RT60 {_figure(mix.get('rt60'), 's')}"
    )
    print("  channels (one per connection; a caller who rejoins gets a second one), seconds from Quorum's first event:")
    for channel in record["channels"]:
        holds = "".join(f", on hold {h['start_ms'] / 1000:.2f}-{h['end_ms'] / 1000:.2f} s" for h in channel["holds"])
        print(
            f"    channel {channel['connection_id']}: on the call {channel['start_ms'] / 1000:.2f}-"
            f"{channel['end_ms'] / 1000:.2f} s{holds}"
        )
    marks = ", ".join(f"{a['at_ms'] / 1000:.2f} s ({a['outcome']})" for a in record["announcements"])
    print(f"  announcements: {marks or 'none'}")
    print("  recording timeline as Quorum confirmed it:")
    for span in record["recording_timeline"]:
        print(f"    {span['state']:<9} {span['start_ms'] / 1000:6.2f}-{span['end_ms'] / 1000:6.2f} s")
    return []


def _figure(value, unit: str) -> str:
    """A quality figure, or why there is none."""
    return "not estimable" if value is None else f"{value} {unit}"


def _short(text: str) -> str:
    """Sids cut to their first 8 characters, for lines that fit a terminal."""
    return SID.sub(lambda m: m.group(0)[:8] + "…", text)


def linger(emulator: Emulator, public: str, token: str, seconds: float) -> None:
    """Keep Quorum, its dashboard and the emulator up `seconds` (math.inf: until Ctrl-C), saying how to call in."""
    how_long = "until Ctrl-C" if math.isinf(seconds) else f"for {seconds:g} s (Ctrl-C stops sooner)"
    print(
        f"\nQuorum, its dashboard and the emulator stay up {how_long}: {public}/login?token={token}\n"
        f"Place more calls meanwhile: python -m emulator call {DEMO_NUMBER} --emulator {emulator.url} "
        f"--project {emulator.project} --token {emulator.token} [--hold-after S] [--hangup-after S]",
        flush=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait(None if math.isinf(seconds) else seconds)


def seconds_or_forever(raw: str) -> float:
    """`--linger`'s value: seconds, or `forever`."""
    return math.inf if raw.strip().lower() == "forever" else float(raw)


def run(minimum: int, behavior: str, speed: float, linger_s: float = 0.0) -> int:
    """The whole demo; returns the exit status."""
    with (
        Emulator() as emulator,
        tempfile.TemporaryFile(mode="w+") as server_log,
        tempfile.TemporaryDirectory(prefix="quorum-demo-") as archive,
    ):
        port = free_port()
        public = f"http://127.0.0.1:{port}"
        token = secrets.token_urlsafe(24)  # this run's API_TOKEN: the dashboard link below is good only for it
        print(
            f"Quorum demo: SignalWire emulator at {emulator.url}, Quorum at {public} "
            f"(MIN_PARTICIPANTS={minimum}, PAUSE_BEHAVIOR={behavior}, RECORDING_ANNOUNCEMENT={ANNOUNCEMENT!r}); "
            "throwaway credentials, no ngrok."
        )
        env = quorum_env(emulator, port, minimum, behavior, archive, token)
        process = subprocess.Popen(
            [sys.executable, "app.py"], cwd=ROOT, stdout=server_log, stderr=subprocess.STDOUT, env=env
        )
        try:
            if not wait_until_up(public, process, STARTUP_TIMEOUT_S):
                server_log.seek(0)
                print("Quorum did not start:\n" + server_log.read()[-3000:], file=sys.stderr)
                return 1
            print(
                f"Dashboard (watch it live; one-time token for this run, up until the demo ends"
                f"{'' if linger_s else '; make demo DEMO_LINGER=600 keeps it up after'}): "
                f"{public}/login?token={token}"
            )
            emulator.add_number(DEMO_NUMBER, public + "/voice/inbound", public + "/voice/call-status")
            emulator.sim.listeners.append(EventPrinter())
            print(
                f"\nA host calls {DEMO_NUMBER}, a guest joins, drops and rejoins, is put on hold and taken off it,"
                " a third caller comes and goes, everyone hangs up:\n"
            )
            Player(emulator).play(scaled(DEMO, speed))
            emulator.settle(15)
            problems = report(emulator, minimum) + archived(Path(archive))
            if linger_s > 0:
                linger(emulator, public, token, linger_s)
        finally:
            stop(process)
        server_log.seek(0)
        errors = [line for line in server_log if " ERROR " in line or "Traceback" in line]
        problems += [f"Quorum logged: {line.strip()}" for line in errors]
    print(
        "\nOK: recorded exactly while a quorum was on the line."
        if not problems
        else "\nPROBLEMS:\n  " + "\n  ".join(problems)
    )
    return 0 if not problems else 1


def main(argv: Optional[List[str]] = None) -> int:
    """Parse options and run; Ctrl-C and SIGTERM still stop Quorum."""
    parser = argparse.ArgumentParser(prog="python -m emulator.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--min-participants", type=int, default=2)
    parser.add_argument("--pause-behavior", choices=("skip", "silence"), default="skip")
    parser.add_argument("--speed", type=float, default=1.0, help="multiply every wait of the scenario")
    parser.add_argument(
        "--linger",
        type=seconds_or_forever,
        default=0.0,
        metavar="SECONDS",
        help="keep Quorum, its dashboard and the emulator up this long after the scenario "
        "(or `forever`: until Ctrl-C); meanwhile `python -m emulator call` places more calls",
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind through the `finally` that stops Quorum
    try:
        return run(args.min_participants, args.pause_behavior, args.speed, args.linger)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
