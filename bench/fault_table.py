"""The issue's fault table as scenarios: each row's fault played against a running Quorum, measured from
the emulator's ground truth. Shared by tests/test_fault_table.py (CI-sized, one stack per row) and
bench/fault_drill.py (every row against each kind of deployment).

A scenario gets a `Target` (duck-typed):

    emulator        the Emulator Quorum talks to (its `injector` arms the row's fault)
    redis           Quorum's own RedisServer (to make unreachable or flush), or None for the memory store
    archive_root    Quorum's RECORDINGS_DIR
    rules_path      Quorum's ROOM_RULES_FILE (written from room_rules() before Quorum starts)
    settle(timeout) until callbacks are delivered and Quorum has nothing queued
    restart()       Quorum stops and starts again (same URL, RECORDINGS_DIR and emulator; Redis kept)
    live()          GET /live.json's conferences (API_TOKEN is LIVE_TOKEN)

and returns the row's `Figures`: seconds a lone caller was recorded and seconds a quorum sat paused (both
beyond GRACE_S after each change of the rule, bench/churn_measure.py), recordings lost (SignalWire held them
finished, with media, and the archive has no audio for them) and rooms whose rule changed across a restart.
Every row has a room of its own (ROOMS), so the bench plays them one after another against one deployment.
"""

from __future__ import annotations

import glob
import json
import signal
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from churn_bench import measure_room  # noqa: E402
from churn_measure import seconds_of  # noqa: E402
from emulator.model import PAUSED, RECORDING  # noqa: E402
from emulator.scenarios import caller_number  # noqa: E402

GRACE_S = 1.0  # Quorum's reaction time allowed after each change of the rule (a pause is tens of ms)
LOST_EVENT_TARGET_S = 10.0  # the target per lost callback: lone-recorded or paused-at-quorum seconds
LIVE_TOKEN = "fault-table-token"
ANNOUNCEMENT = "This call is recorded."
ROOMS = {row: f"+1555019{row:04d}" for row in range(1, 10)}
HOST = caller_number("host")
MINIMUM_BEFORE, MINIMUM_AFTER = 2, 3  # row 8: the rules file's min_participants before and after the edit
ANNOUNCE_LATE_S = 4.0  # row 9: how late SignalWire answers the announcement request (Quorum waits up to 5 s)
END_GRACE_S = 3.0  # Quorum's END_GRACE_S: longer than any callback a row delays (a recording's end comes late)
HANGUP_GAP_S = 0.5  # between the hang-ups that end a call: callers hanging up together are row 2's own case


def room_rules(edited: bool = False) -> str:
    """ROOM_RULES_FILE: row 6's room has a host, row 8's a minimum (edited before its restart), row 9's an
    announcement; every other room follows the global settings."""
    return (
        f'["{ROOMS[6]}"]\nhost_numbers = ["{HOST}"]\n\n'
        f'["{ROOMS[8]}"]\nmin_participants = {MINIMUM_AFTER if edited else MINIMUM_BEFORE}\n\n'
        f'["{ROOMS[9]}"]\nrecording_announcement = "{ANNOUNCEMENT}"\n'
    )


@dataclass(frozen=True)
class Timing:
    """How long each wrong state is left to show: long enough that today's failures exceed the targets."""

    lost_alone_s: float = 12.5  # row 1: the lone caller's time after the lost leave (> 10 s target + grace)
    wrong_s: float = 4.0  # other rows: time on the line after the fault, before everyone hangs up
    pause_outage_s: float = 3.0  # row 3: Redis unreachable while a pause is in flight
    end_outage_s: float = 8.0  # row 4: Redis unreachable while the call ends
    archive_wait_s: float = 25.0  # how long the archive may take to hold an ended conference


QUICK = Timing(wrong_s=2.5, archive_wait_s=15.0)


@dataclass
class Figures:
    """What one row's fault cost, measured from the emulator and the archive."""

    row: int
    lone_s: float = 0.0  # a caller alone (or without a quorum) recorded, beyond the grace
    paused_s: float = 0.0  # a quorum on the line and the recording paused, beyond the grace
    lost: int = 0  # recordings SignalWire held at the end that the archive has no audio for
    wrong_rules: int = 0  # conferences whose rule changed across a restart
    lost_events: int = 0  # callbacks the fault made SignalWire give up on (the 10 s target is per lost event)
    notes: List[str] = field(default_factory=list)

    def problems(self) -> List[str]:
        """How the figures miss the issue's targets (empty: met)."""
        allowed = LOST_EVENT_TARGET_S * self.lost_events
        out = [
            f"row {self.row}: {what} {seconds:.1f} s > {allowed:.0f} s"
            for what, seconds in (("lone caller recorded", self.lone_s), ("quorum paused", self.paused_s))
            if seconds > allowed
        ]
        out += [f"row {self.row}: {self.lost} recording(s) lost"] if self.lost else []
        out += [f"row {self.row}: {self.wrong_rules} conference(s) under a changed rule"] if self.wrong_rules else []
        return out + [f"row {self.row}: {'; '.join(self.notes)}"] if out and self.notes else out

    def to_dict(self) -> dict:
        """A JSON-ready copy, seconds rounded."""
        data = asdict(self)
        return {**data, "lone_s": round(self.lone_s, 2), "paused_s": round(self.paused_s, 2)}


class ScenarioError(RuntimeError):
    """The scenario could not set up its fault (e.g. the recording never started): nothing was measured."""


class RedisServer:
    """A redis-server of Quorum's own that can be made unreachable: `down` kills it, `up` starts it again on the
    same port and data (every write reaches its AOF first), so Quorum's requests meanwhile fail at once, as when
    Redis restarts or a firewall rejects them.

    Not SIGSTOP: a stopped server still accepts connections and runs on SIGCONT what was written to them, so a
    command's record sent during the outage lands after it (row 3 loses nothing), and each request hangs for
    the client's 2 s socket timeout, so SignalWire's three attempts outlast an 8 s outage (row 4 loses nothing).
    """

    def __init__(self, workdir: Path, port: int):
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._workdir = workdir
        self._process: Optional[subprocess.Popen] = None
        self.up()

    def up(self) -> None:
        """Start (again) with the data of the last run, and wait until it answers."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self._process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self._workdir),
            ],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.RedisError:
                if time.monotonic() > deadline or self._process.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)

    def down(self) -> None:
        """SIGKILL: connections are refused until `up`."""
        self._process.send_signal(signal.SIGKILL)
        self._process.wait(10)

    def flush(self) -> None:
        """FLUSHALL, as an operator's mistake would."""
        redis.Redis(port=self.port).flushall()

    def stop(self) -> None:
        """Terminate and reap (no-op when down)."""
        if self._process.poll() is None:
            self._process.terminate()
            self._process.wait(10)


# Looking at the emulator


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll until `condition` holds; ScenarioError naming `what` if it does not within `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise ScenarioError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.02)


def live_recording(target, room: str):
    """The recording of the room's live conference, or None."""
    for conf in target.emulator.conferences(room):
        if conf.status != "completed" and conf.recording_sids:
            return target.emulator.recording(conf.recording_sids[0])
    return None


def recording_is(target, room: str, state: str) -> bool:
    """Whether the room's live recording is in `state` (RECORDING or PAUSED) on the emulator."""
    rec = live_recording(target, room)
    return rec is not None and rec.timeline.state == state


def conference_sid(target, room: str) -> str:
    """The sid of the room's live conference."""
    return next(c.sid for c in target.emulator.conferences(room) if c.status != "completed")


def two_on_the_line(target, room: str, first: str = "a", second: str = "b") -> tuple:
    """`first` dials, then `second`: SignalWire starts the conference and its recording; Quorum confirms it."""
    one = target.emulator.dial(room, caller_number(first), first)
    two = target.emulator.dial(room, caller_number(second), second)
    wait_for(lambda: recording_is(target, room, RECORDING), 10, f"{room}: the recording's start")
    target.settle(15)
    return one, two


def hang_up(target, *calls) -> None:
    """Hang up each call, HANGUP_GAP_S apart (so each leave's pause lands before the conference ends), then let
    the callbacks and commands land."""
    for n, call in enumerate(calls):
        time.sleep(HANGUP_GAP_S if n else 0.0)
        target.emulator.hangup(call.sid)
    target.settle(20)


def measure(target, figures: Figures, room: str, timing: Timing, hosts: frozenset = frozenset()) -> Figures:
    """Fill in the lone-recorded and paused-at-quorum seconds of the room's calls so far (all hung up), then
    the recordings lost (see `count_lost`)."""
    calls = [c for c in list(target.emulator.sim.calls.values()) if c.to == room]
    wrong = measure_room(target.emulator, room, calls, time.time(), GRACE_S, set(hosts))["wrong"]
    figures.lone_s = seconds_of(wrong, "below")
    figures.paused_s = seconds_of(wrong, "paused")
    return count_lost(target, figures, room, timing.archive_wait_s)


def archived(archive_root: Path, conference: str) -> Optional[dict]:
    """The conversation record archived for a conference, or None (not yet, or never)."""
    paths = glob.glob(str(Path(archive_root) / "*" / "*" / conference / "conversation.json"))
    return json.loads(Path(paths[0]).read_text()) if paths else None


def count_lost(target, figures: Figures, room: str, wait_s: float) -> Figures:
    """Count the room's recordings SignalWire holds, finished with media, that the archive has no audio for
    (waiting up to `wait_s` for each ended conference to be archived)."""
    deadline = time.monotonic() + wait_s
    for conf in target.emulator.conferences(room):
        held = [sid for sid in conf.recording_sids if _held(target.emulator.recording(sid))]
        if not held:
            continue
        while archived(target.archive_root, conf.sid) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        record = archived(target.archive_root, conf.sid)
        audio = (record or {}).get("audio") or {}
        if record is None:
            figures.notes.append(f"conference not archived after {wait_s:.0f} s (still live at Quorum)")
            figures.lost += len(held)
        elif not audio.get("wav_file"):
            figures.notes.append(f"archived {record['status']} with no audio")
            figures.lost += len(held)
    return figures


def _held(rec) -> bool:
    """Whether SignalWire holds this recording finished, with media (not failed, not deleted)."""
    return rec.finished and not rec.failed and not rec.deleted and rec.duration() > 0


def rule_words(target, room: str) -> Optional[str]:
    """The rule the room's live card shows (None when Quorum holds no live conference in it)."""
    return next((c["rule"] for c in target.live() if c["room"] == room), None)


# The rows


def lost_leave(target, timing: Timing) -> Figures:
    """Row 1: SignalWire gives up on one participant-leave; the caller left alone stays on the line."""
    room, figures = ROOMS[1], Figures(1, lost_events=1)
    a, b = two_on_the_line(target, room)
    fired = _counting(target, "drop_next")
    target.emulator.injector.drop_next("participant-leave", call_sid=b.sid)
    target.emulator.hangup(b.sid)
    time.sleep(timing.lost_alone_s)
    hang_up(target, a)
    fired()
    return measure(target, figures, room, timing)


def refused_pause(target, timing: Timing, statuses: tuple = (404, 422), at_the_end: bool = True) -> Figures:
    """Row 2: the pause due when a caller leaves is answered 404 (or 422) once, the recording still running: one
    conference per status. `at_the_end`: one more, where the last two callers hang up together and SignalWire's
    own 422 answers the pause (the conference ended meanwhile), its recording's `completed` a second later."""
    room, figures = ROOMS[2], Figures(2)
    for status in statuses:
        a, b = two_on_the_line(target, room)
        fired = _counting(target, "fail_next")
        target.emulator.injector.fail_next("POST", f"/Recordings/{live_recording(target, room).sid}", status)
        target.emulator.hangup(b.sid)
        time.sleep(timing.wrong_s)
        hang_up(target, a)
        fired()
    if at_the_end:
        a, b = two_on_the_line(target, room)
        time.sleep(1.0)  # some audio
        target.emulator.injector.delay_next("recording:completed", 1.0)
        target.emulator.hangup(a.sid)
        target.emulator.hangup(b.sid)
        target.settle(20)
    return measure(target, figures, room, timing)


def redis_lost_during_pause(target, timing: Timing) -> Figures:
    """Row 3: Redis becomes unreachable while a pause is in flight (applied at SignalWire, its answer still to
    come) and stays so `pause_outage_s`; then the caller rejoins."""
    room, figures = ROOMS[3], Figures(3)
    a, b = two_on_the_line(target, room)
    fired = _counting(target, "slow_next")
    target.emulator.injector.slow_next("POST", f"/Recordings/{live_recording(target, room).sid}", 1.0)
    target.emulator.hangup(b.sid)
    wait_for(lambda: recording_is(target, room, PAUSED), 10, f"{room}: the pause")
    target.redis.down()
    time.sleep(timing.pause_outage_s)
    target.redis.up()
    time.sleep(1.0)
    back = target.emulator.dial(room, caller_number("b"), "b")
    time.sleep(timing.wrong_s)
    hang_up(target, a, back)
    fired()
    return measure(target, figures, room, timing)


def redis_lost_at_the_end(target, timing: Timing) -> Figures:
    """Row 4: Redis is unreachable for `end_outage_s` while everyone hangs up: Quorum answers the callbacks 503
    and SignalWire gives up on them (the leaves, conference-end, the recording's completed)."""
    room, figures = ROOMS[4], Figures(4)
    a, b = two_on_the_line(target, room)
    time.sleep(1.0)  # some audio
    target.redis.down()
    started = time.monotonic()
    target.emulator.hangup(a.sid)
    time.sleep(HANGUP_GAP_S)
    target.emulator.hangup(b.sid)
    time.sleep(max(0.0, timing.end_outage_s - (time.monotonic() - started)))
    target.redis.up()
    lanes = {conf.sid for conf in target.emulator.conferences(room)}
    figures.lost_events = sum(
        1
        for attempt in target.emulator.callback_attempts()
        if attempt.callback.lane in lanes and attempt.number == 3 and not attempt.ok
    )
    return measure(target, figures, room, timing)


def restart_before_the_end(target, timing: Timing) -> Figures:
    """Row 5: Quorum restarts mid-call, then the last callers hang up before its first REST read lands."""
    room, figures = ROOMS[5], Figures(5)
    a, b = two_on_the_line(target, room)
    time.sleep(1.0)  # some audio
    target.restart()
    # A conference Quorum does not know is read before deciding: that read lands after every end callback.
    target.emulator.injector.slow_next("GET", f"/Conferences/{conference_sid(target, room)}/Participants", 2.0)
    hang_up(target, a, b)
    return measure(target, figures, room, timing)


def host_forgotten(target, timing: Timing, lose_state: Optional[Callable[[], None]] = None) -> Figures:
    """Row 6: the room needs a host (its rules table's host_numbers, as HOST_NUMBERS would); Quorum loses its
    state (a restart, or `lose_state`, e.g. a Redis flush), then the guest leaves and rejoins: host and guest are
    a quorum again."""
    room, figures = ROOMS[6], Figures(6)
    host, guest = two_on_the_line(target, room, "host", "guest")
    (lose_state or target.restart)()
    target.emulator.hangup(guest.sid)
    target.settle(15)
    back = target.emulator.dial(room, caller_number("guest"), "guest")
    time.sleep(timing.wrong_s)
    hang_up(target, host, back)
    return measure(target, figures, room, timing, frozenset({HOST}))


def hold_after_restart(target, timing: Timing) -> Figures:
    """Row 7: Quorum restarts, then a caller from before the restart is put on hold (and later taken off it)."""
    room, figures = ROOMS[7], Figures(7)
    a, b = two_on_the_line(target, room)
    target.restart()
    target.emulator.hold(b.sid, True)
    time.sleep(timing.wrong_s)
    target.emulator.hold(b.sid, False)
    time.sleep(1.0)
    hang_up(target, a, b)
    return measure(target, figures, room, timing)


def rules_edited_before_restart(target, timing: Timing) -> Figures:
    """Row 8: the room's min_participants is edited from 2 to 3 and Quorum restarts mid-call; the call must keep
    the rule it began under (2), as the README promises: a caller leaves and rejoins."""
    room, figures = ROOMS[8], Figures(8)
    a, b = two_on_the_line(target, room)
    before = rule_words(target, room)
    Path(target.rules_path).write_text(room_rules(edited=True))
    target.restart()
    target.emulator.hangup(b.sid)
    target.settle(15)
    back = target.emulator.dial(room, caller_number("b"), "b")
    time.sleep(timing.wrong_s)
    after = rule_words(target, room)
    if after != before:
        figures.wrong_rules = 1
        figures.notes.append(f"rule {before!r} became {after!r}")
    hang_up(target, a, back)
    return measure(target, figures, room, timing)


def slow_announcement(target, timing: Timing) -> Figures:
    """Row 9: the announcement Quorum asks for when the recording starts answers ANNOUNCE_LATE_S late; a caller
    leaves while it is in flight."""
    room, figures = ROOMS[9], Figures(9)
    a = target.emulator.dial(room, caller_number("a"), "a")
    fired = _counting(target, "slow_next")
    target.emulator.injector.slow_next(
        "POST", f"/Conferences/{conference_sid(target, room)}", ANNOUNCE_LATE_S, field="AnnounceUrl"
    )
    b = target.emulator.dial(room, caller_number("b"), "b")
    wait_for(
        lambda: any(e.kind == "announced" and e.room == room for e in list(target.emulator.sim.events)),
        10,
        f"{room}: the announcement",
    )
    target.emulator.hangup(b.sid)
    time.sleep(ANNOUNCE_LATE_S + timing.wrong_s / 2)  # the pause lands well before the last hang-up, even today
    hang_up(target, a)
    fired()
    return measure(target, figures, room, timing)


def _counting(target, kind: str) -> Callable[[], None]:
    """A check, for after the fault, that one more `kind` fault was injected: without it the figures measure
    nothing (ScenarioError)."""
    before = target.emulator.injector.injected[kind]

    def check() -> None:
        if target.emulator.injector.injected[kind] <= before:
            raise ScenarioError(f"the {kind} fault never fired")

    return check


ROWS: Dict[int, Callable] = {
    1: lost_leave,
    2: refused_pause,
    3: redis_lost_during_pause,
    4: redis_lost_at_the_end,
    5: restart_before_the_end,
    6: host_forgotten,
    7: hold_after_restart,
    8: rules_edited_before_restart,
    9: slow_announcement,
}
