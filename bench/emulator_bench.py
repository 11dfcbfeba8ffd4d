"""Quorum under gunicorn against the bundled SignalWire emulator: real calls, real callbacks.

Many concurrent conferences with random joins, leaves and rejoins are played by the emulator,
which signs and sends every callback as SignalWire would and answers Quorum's REST commands
after ~80 ms. Printed: callbacks delivered per second, p50/p99 callback latency as the
emulator measured it, REST reads and writes per callback, and live recordings whose state
breaks the quorum rule once everything settles (must be 0).

    python bench/emulator_bench.py [--conferences 60] [--steps 12] [--latency-ms 80]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from emulator.faults import Faults  # noqa: E402
from emulator.scenarios import Player, random_session  # noqa: E402
from emulator.server import Emulator  # noqa: E402
from webhook_bench import Server  # noqa: E402


def violations(emulator) -> list:
    """Live conferences whose recording state differs from the quorum rule."""
    wrong = []
    for conf in emulator.conferences():
        if conf.status == "in-progress" and conf.recording_sids:
            wanted = "in-progress" if len(conf.present) >= 2 else "paused"
            wrong += [sid for sid in conf.recording_sids if emulator.recording(sid).status != wanted]
    return wrong


def main() -> int:
    """Play the conferences, settle, print the figures; exit 1 on any violation."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conferences", type=int, default=60)
    parser.add_argument("--steps", type=int, default=12, help="joins/leaves per conference")
    parser.add_argument("--latency-ms", type=float, default=80)
    args = parser.parse_args()
    emulator = Emulator(faults=Faults(rest_latency_s=args.latency_ms / 1000), seed=1).start()
    env = {
        "SIGNALWIRE_PROJECT_ID": emulator.project,
        "SIGNALWIRE_API_TOKEN": emulator.token,
        "SIGNALWIRE_SPACE_URL": "emulator.invalid",
        "SIGNALWIRE_SIGNING_KEY": emulator.signing_key,
        "SIGNALWIRE_API_URL": emulator.url,
        "RECONCILE_INTERVAL_S": "0",
    }
    server = Server("app:create_app()", 1, env, ROOT)  # PUBLIC_URL: the server itself
    rooms = [f"+1555030{i:04d}" for i in range(args.conferences)]
    for room in rooms:
        emulator.add_number(room, f"{server.url}/voice/inbound")
    try:
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=len(rooms)) as pool:
            sessions = [
                random_session(random.Random(i), room, args.steps, wait_s=(0.02, 0.2)) for i, room in enumerate(rooms)
            ]
            list(pool.map(lambda s: Player(emulator).play(s), sessions))
        emulator.settle(60)
        server.settle()
        seconds = time.perf_counter() - started
    finally:
        server.stop()
        emulator.stop()
    answered = [a for a in emulator.callback_attempts() if a.elapsed_s is not None]
    latencies = sorted(a.elapsed_s for a in answered)
    counts = emulator.rest_log.counts()
    wrong = violations(emulator)
    print(f"{args.conferences} conferences × {args.steps} joins/leaves, REST latency {args.latency_ms:.0f} ms")
    print(
        f"callbacks: {len(answered)} in {seconds:.1f} s = {len(answered) / seconds:.0f}/s (the emulator's pace); "
        f"p50 {1000 * statistics.median(latencies):.1f} ms, "
        f"p99 {1000 * latencies[int(len(latencies) * 0.99)]:.1f} ms"
    )
    print(
        f"REST reads/callback {counts['GET'] / len(answered):.3f}, "
        f"writes/callback {counts['POST'] / len(answered):.3f}; "
        f"answers not 2xx: {sum(not a.ok for a in answered)}; recordings breaking the rule: {len(wrong)}"
    )
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
