"""CPU of the memory store's state file, in process: the webhook benchmark's callbacks through the controller.

No HTTP, no REST: `RecordingController` applies each conference's callbacks (start, host and guest join,
the recording's in-progress, then leave/join churn), from `--threads` threads at once as the webhook
threads would, to a memory store written through to a state file (`--state-file on`, the default) or
not (`off`). The store is closed at the end, so the writer's last commits are counted. Printed: CPU
(user + system, every thread) per callback, for one setting; run it both ways, or under a tool that
times whole processes, and divide.

    python bench/state_file_bench.py [--state-file on|off] [--conferences 400] [--churn 6] [--threads 16]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from config import RoomRule  # noqa: E402
from quorum.controller import ConferenceEvent, RecordingController, RecordingEvent  # noqa: E402
from quorum.state_file import FileBackedStore, StateFile  # noqa: E402
from recording_state import MemoryStore  # noqa: E402


class Elsewhere:
    """The command queue and the conversation processor: their work is not what is measured."""

    def kick(self, room: str, crossed_at=None) -> None:
        """Commands are not sent."""

    def read(self, room: str, urgent: bool = False) -> None:
        """Reads are not sent."""

    def submit(self, room: str) -> None:
        """Conferences never end here."""


def bench_sid(label: str) -> str:
    """A UUID sid named by `label`."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, label))


def conference(controller: RecordingController, n: int, churn: int) -> int:
    """Conference `n`'s callbacks, as bench/webhook_bench.py sends them; returns how many."""
    room, conf, at = f"+1555{n:07d}", bench_sid(f"conf-{n}"), 1_800_000_000
    host, guest = bench_sid(f"{n}-host"), (lambda cycle: bench_sid(f"{n}-guest-{cycle}"))
    controller.inbound_call(host, "+15550000001", room)
    controller.conference_event(ConferenceEvent("conference-start", room, conf, None, at))
    controller.conference_event(ConferenceEvent("participant-join", room, conf, host, at + 1))
    controller.conference_event(ConferenceEvent("participant-join", room, conf, guest(0), at + 2))
    controller.recording_event(RecordingEvent(room, bench_sid(f"rec-{n}"), "in-progress", at + 3))
    for cycle in range(churn):
        at += 2
        controller.conference_event(ConferenceEvent("participant-leave", room, conf, guest(cycle), at + 2))
        controller.conference_event(ConferenceEvent("participant-join", room, conf, guest(cycle + 1), at + 3))
    return 4 + 2 * churn


def main() -> int:
    """Replay the callbacks and print the CPU per callback."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state-file", choices=("on", "off"), default="on")
    parser.add_argument("--conferences", type=int, default=400)
    parser.add_argument("--churn", type=int, default=6, help="leave/join cycles per conference")
    parser.add_argument("--threads", type=int, default=16, help="callbacks applied at once (webhook threads)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="quorum-state-bench-") as directory:
        on = args.state_file == "on"
        store = FileBackedStore(StateFile(os.path.join(directory, "state.sqlite3"))) if on else MemoryStore()
        controller = RecordingController(store, Elsewhere(), Elsewhere(), lambda room: RoomRule(), end_grace_s=300.0)
        started = time.process_time()
        with ThreadPoolExecutor(args.threads) as pool:
            callbacks = sum(pool.map(lambda n: conference(controller, n, args.churn), range(args.conferences)))
        if on:
            store.close()
        cpu = time.process_time() - started
    print(
        f"state file {args.state_file}: {callbacks} callbacks, {args.threads} threads, "
        f"CPU {1e6 * cpu / callbacks:.1f} us per callback"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
