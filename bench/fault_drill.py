"""Fault drill: every row of the issue's fault table (bench/fault_table.py) against each kind of deployment.

    memory          one gunicorn worker, the memory store with its state file (STATE_FILE's default)
    memory-no-file  the same with STATE_FILE=off
    redis           two gunicorn masters of one worker each on one Redis, behind a balancer without affinity

Each is real processes behind a balancer (tests/cluster_support.py), against the bundled emulator. A restart
SIGKILLs each worker in turn (its master starts another; no clean shutdown of any kind); the Redis rows
make Quorum's own redis-server unreachable (killed, then started again on its port and data) and, for row 6,
flush it. Rows 3 and 4 need Redis; row 6 loses the state by a restart on the memory store, by a flush on Redis.
Row 2 plays a 404 and a 422 mid-call, then the last two callers hanging up together (SignalWire's own 422 to the
pause, found by this drill).
RECONCILE_INTERVAL_S is 60, so no row is rescued by a fast poll, except row 4, where everything about the
call's end is lost and only the reconciler (each second, as in the issue) can learn of it: it runs against a
deployment of its own. END_GRACE_S is 3 (fault_table.END_GRACE_S) everywhere.

Per row and deployment: seconds a lone caller was recorded and seconds a quorum sat paused (beyond 1 s after
each change of the rule), recordings lost (SignalWire held them, finished with media, and the archive has no
audio for them), conferences whose rule changed across a restart. Targets: at most 10 s per callback
SignalWire gave up on, 0 otherwise; nothing lost; no rule changed. Prints a table per deployment and one
markdown table for the README; `--json` writes everything (default bench/results/fault_drill.json).

    python bench/fault_drill.py [--quick] [--modes memory,memory-no-file,redis] [--rows 1,2,...] [--json FILE]
                                [--keep-logs]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

import fault_table  # noqa: E402
from cluster_support import Balancer, GunicornWorker  # noqa: E402
from emulator.server import Emulator  # noqa: E402
from fault_table import (  # noqa: E402
    END_GRACE_S,
    LIVE_TOKEN,
    QUICK,
    ROOMS,
    RedisServer,
    ScenarioError,
    Timing,
    room_rules,
)
from support import free_port  # noqa: E402

RESULTS = ROOT / "bench" / "results"
MODES = ("memory", "memory-no-file", "redis")
FAULTS = {
    1: "SignalWire gives up on one `participant-leave`",
    2: "one 404 or 422 answer to a pause (and SignalWire's own 422 when the last two hang up together)",
    3: "Redis unreachable for 3 s while a pause is in flight",
    4: "Redis unreachable for 8 s while a call ends (callbacks answered 503, SignalWire gives up)",
    5: "restart, then the last callers hang up before the first read lands",
    6: "restart (memory) or Redis flush, with a host required",
    7: "restart, then a caller from before it is put on hold",
    8: "restart after editing ROOM_RULES_FILE",
    9: "a slow announcement request (RECORDING_ANNOUNCEMENT)",
}
REDIS_ONLY = (3, 4)
FAST_RECONCILER = (4,)  # rows played against a deployment whose reconciler runs each second


class Deployment:
    """Emulator, balancer and gunicorn masters (one worker each), as bench/fault_table.py's Target."""

    def __init__(self, mode: str, workdir: Path, reconcile_s: float):
        workdir.mkdir(parents=True)
        self.mode = mode
        self.archive_root = workdir / "recordings"
        self.rules_path = workdir / "rules.toml"
        self.rules_path.write_text(room_rules())
        self.emulator = Emulator().start()
        self.balancer = Balancer().__enter__()
        self.redis: Optional[RedisServer] = RedisServer(workdir, free_port()) if mode == "redis" else None
        env = {
            "SIGNALWIRE_PROJECT_ID": self.emulator.project,
            "SIGNALWIRE_API_TOKEN": self.emulator.token,
            "SIGNALWIRE_SPACE_URL": "emulator.invalid",
            "SIGNALWIRE_SIGNING_KEY": self.emulator.signing_key,
            "SIGNALWIRE_API_URL": self.emulator.url,
            "PUBLIC_URL": self.balancer.url,
            "USE_NGROK": "false",
            "REDIS_URL": self.redis.url if self.redis else "",
            "RECONCILE_INTERVAL_S": str(reconcile_s),
            "END_GRACE_S": str(END_GRACE_S),
            "WEB_CONCURRENCY": "1",
            "LOG_LEVEL": "INFO",
            "API_TOKEN": LIVE_TOKEN,
            "RECORDINGS_DIR": str(self.archive_root),
            "ROOM_RULES_FILE": str(self.rules_path),
            "HOST_NUMBERS": "",
            "RECORDING_ANNOUNCEMENT": "",
            "MIN_PARTICIPANTS": "2",
            "EVENT_CALLBACK_URL": "",
            **({"STATE_FILE": "off"} if mode == "memory-no-file" else {}),
        }
        self.workers: List[GunicornWorker] = []
        try:
            for i in range(2 if self.redis else 1):
                self.workers.append(GunicornWorker(env, workdir, f"worker-{i}"))
        except BaseException:
            self.close()
            raise
        self.balancer.backends.extend(worker.url for worker in self.workers)
        for room in ROOMS.values():
            self.emulator.add_number(
                room, f"{self.balancer.url}/voice/inbound", f"{self.balancer.url}/voice/call-status"
            )

    def settle(self, timeout: float = 15.0) -> bool:
        """Until callbacks are delivered and every worker has had nothing queued three times running."""
        deadline = time.monotonic() + timeout
        quiet = 0
        while time.monotonic() < deadline and quiet < 3:
            if not self.emulator.settle(max(0.0, deadline - time.monotonic())):
                return False
            quiet = quiet + 1 if all(self._depth(worker) == 0 for worker in self.workers) else 0
            time.sleep(0.05)
        return quiet >= 3

    @staticmethod
    def _depth(worker: GunicornWorker) -> int:
        """A worker's queue depth; a worker that does not answer counts as busy."""
        try:
            return worker.healthz()["queue_depth"]
        except (requests.RequestException, ValueError, KeyError):
            return 1

    def restart(self) -> None:
        """SIGKILL each worker in turn; its master starts another (the balancer skips it meanwhile)."""
        for worker in self.workers:
            self.balancer.backends.remove(worker.url)
            killed = worker.kill_worker()
            worker.wait_replaced(killed)
            self.balancer.backends.append(worker.url)

    def live(self) -> list:
        """The live cards Quorum shows."""
        answer = requests.get(
            self.balancer.url + "/live.json", headers={"Authorization": f"Bearer {LIVE_TOKEN}"}, timeout=5
        )
        answer.raise_for_status()
        return answer.json()["conferences"]

    def close(self) -> None:
        """Stop everything this deployment started."""
        for worker in self.workers:
            worker.stop()
        self.balancer.__exit__()
        self.emulator.stop()
        if self.redis is not None:
            self.redis.stop()


@contextlib.contextmanager
def deployment(mode: str, workdir: Path, reconcile_s: float) -> Iterator[Deployment]:
    """A Deployment, always closed."""
    made = Deployment(mode, workdir, reconcile_s)
    try:
        yield made
    finally:
        made.close()


def play(target: Deployment, row: int, timing: Timing) -> dict:
    """One row against one deployment: its figures, or why it could not be played."""
    started = time.monotonic()
    try:
        if row == 6 and target.redis is not None:
            figures = fault_table.host_forgotten(target, timing, target.redis.flush)
        else:
            figures = fault_table.ROWS[row](target, timing)
    except ScenarioError as error:
        return {"row": row, "error": str(error), "seconds": round(time.monotonic() - started, 1)}
    return {**figures.to_dict(), "problems": figures.problems(), "seconds": round(time.monotonic() - started, 1)}


def run_mode(mode: str, rows: List[int], timing: Timing, workdir: Path) -> Dict[int, dict]:
    """Every applicable row against deployments of one mode (row 4 against its own fast-reconciler one)."""
    results: Dict[int, dict] = {}
    playable = [row for row in rows if mode == "redis" or row not in REDIS_ONLY]
    for reconcile_s, subset in (
        (60.0, [r for r in playable if r not in FAST_RECONCILER]),
        (1.0, [r for r in playable if r in FAST_RECONCILER]),
    ):
        if not subset:
            continue
        with deployment(mode, workdir / f"{mode}-reconcile-{reconcile_s:g}", reconcile_s) as target:
            for row in subset:
                results[row] = play(target, row, timing)
                print(f"  {mode} row {row}: {cell(results[row])} ({results[row]['seconds']} s)", flush=True)
    return results


def cell(result: Optional[dict]) -> str:
    """One table cell: what the row cost, `ok` when it met every target, `n/a` when not played."""
    if result is None:
        return "n/a"
    if "error" in result:
        return f"not measured: {result['error']}"
    parts = [
        f"lone {result['lone_s']:.1f} s" if result["lone_s"] else "",
        f"paused {result['paused_s']:.1f} s" if result["paused_s"] else "",
        f"{result['lost']} lost" if result["lost"] else "",
        "rule changed" if result["wrong_rules"] else "",
    ]
    text = ", ".join(part for part in parts if part) or "0"
    return text + ("" if result["problems"] else " ✓")


def print_report(results: Dict[str, Dict[int, dict]], rows: List[int]) -> None:
    """Per deployment, each row's four figures; then the README's markdown table."""
    for mode, by_row in results.items():
        print(f"\n{mode}: row | lone recorded s | quorum paused s | recordings lost | wrong rules | seconds")
        for row in rows:
            result = by_row.get(row)
            if result is None or "error" in result:
                print(f"  {row} | {cell(result)}")
                continue
            print(
                f"  {row} | {result['lone_s']} | {result['paused_s']} | {result['lost']} | {result['wrong_rules']}"
                f" | {result['seconds']}" + (f"   {'; '.join(result['problems'])}" if result["problems"] else "")
            )
    modes = list(results)
    print("\n| # | fault | " + " | ".join(modes) + " |")
    print("|---|---|" + "---|" * len(modes))
    for row in rows:
        print(f"| {row} | {FAULTS[row]} | " + " | ".join(cell(results[mode].get(row)) for mode in modes) + " |")
    print(
        "\nCells: seconds a lone caller was recorded / a quorum sat paused beyond 1 s after each change, recordings"
        " lost, a rule changed across a restart; ✓: within the targets (10 s per lost callback, else 0)."
    )


def main() -> int:
    """Play the rows against each mode's deployments and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma list of {', '.join(MODES)}")
    parser.add_argument("--rows", default=",".join(map(str, FAULTS)), help="comma list of the table's rows (1-9)")
    parser.add_argument("--quick", action="store_true", help="shorter waits after each fault (CI-sized)")
    parser.add_argument("--json", default=str(RESULTS / "fault_drill.json"), help="where to write the figures")
    parser.add_argument("--keep-logs", action="store_true", help="keep the workers' logs and archives (printed)")
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    rows = sorted(int(r) for r in args.rows.split(",") if r)
    unknown = [m for m in modes if m not in MODES] + [str(r) for r in rows if r not in FAULTS]
    if unknown:
        parser.error(f"unknown mode or row: {', '.join(unknown)}")
    timing = QUICK if args.quick else Timing()
    workdir = Path(tempfile.mkdtemp(prefix="fault-drill-"))
    started = time.monotonic()
    try:
        results = {}
        for mode in modes:
            print(f"{mode}:", flush=True)
            results[mode] = run_mode(mode, rows, timing, workdir)
    finally:
        if args.keep_logs:
            print(f"logs and archives: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print_report(results, rows)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(
        json.dumps(
            {"timing": vars(timing), "seconds": round(time.monotonic() - started), "results": results},
            indent=2,
            ensure_ascii=False,
        )
    )
    print(f"\n{round(time.monotonic() - started)} s; figures in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
