"""Several Quorum processes sharing one Redis behind a random balancer; SIGKILL and restarts.

Everything is real: `python app.py` processes, redis-server, the emulator sending signed
callbacks (with its fault knobs on) and answering REST commands.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter

import pytest

from cluster_support import Balancer, QuorumProcess
from emulator.faults import Faults
from emulator.scenarios import Player, expected_writes, hang_up_everyone, presence, random_session
from emulator.server import Emulator
from quorum.redis_store import RedisStore

ROOMS = [f"+1555020{i:04d}" for i in range(6)]


@pytest.fixture
def cluster(tmp_path, redis_url):
    """start(n, faults, redis=True, **settings) -> (emulator, balancer, [processes]); all stopped afterwards."""
    made = {"processes": [], "emulator": None, "balancer": None}

    def start(count: int, faults: Faults = Faults(), redis: bool = True, **settings: str):
        emulator = made["emulator"] = Emulator(faults=faults, seed=7).start()
        balancer = made["balancer"] = Balancer(seed=3).__enter__()
        namespace = f"t{uuid.uuid4().hex[:8]}"
        env = {
            "SIGNALWIRE_PROJECT_ID": emulator.project,
            "SIGNALWIRE_API_TOKEN": emulator.token,
            "SIGNALWIRE_SPACE_URL": "emulator.invalid",
            "SIGNALWIRE_SIGNING_KEY": emulator.signing_key,
            "SIGNALWIRE_API_URL": emulator.url,
            "PUBLIC_URL": balancer.url,
            "USE_NGROK": "false",
            "END_GRACE_S": "1",
            "RECONCILE_INTERVAL_S": "0",
            "SIGNALWIRE_TIMEOUT_S": "2",
            "LOG_LEVEL": "INFO",
            "RECORDINGS_DIR": str(tmp_path / "recordings"),
        }
        if redis:
            env.update(REDIS_URL=redis_url, REDIS_NAMESPACE=namespace)
        env.update(settings)
        made["env"], made["namespace"] = env, namespace
        for room in ROOMS:
            emulator.add_number(room, f"{balancer.url}/voice/inbound")
        for i in range(count):
            add_process(i)
        return emulator, balancer, made["processes"]

    def add_process(i: int) -> QuorumProcess:
        process = QuorumProcess(made["env"], tmp_path, f"quorum-{i}-{time.monotonic_ns()}")
        made["processes"].append(process)
        made["balancer"].backends.append(process.url)
        return process

    start.add_process = add_process
    start.made = made
    yield start
    for process in made["processes"]:
        process.stop()
    if made["balancer"]:
        made["balancer"].__exit__()
    if made["emulator"]:
        made["emulator"].stop()


def settle(emulator, processes, timeout: float = 30) -> None:
    """Until the emulator has nothing in flight and every live process has an empty command queue, twice."""
    deadline = time.monotonic() + timeout
    quiet = 0
    while quiet < 3:
        assert time.monotonic() < deadline, "did not settle"
        live = [p for p in processes if p._process.poll() is None]
        idle = emulator.settle(1) and all(p.healthz()["queue_depth"] == 0 for p in live)
        quiet = quiet + 1 if idle else 0
        time.sleep(0.2)


def policy_violations(emulator, minimum: int = 2) -> list:
    """Live conferences whose recording is not in the state the quorum rule asks for."""
    problems = []
    for conf in emulator.conferences():
        if conf.status != "in-progress" or not conf.recording_sids:
            continue
        status = emulator.recording(conf.recording_sids[0]).status
        wanted = "in-progress" if len(conf.present) >= minimum else "paused"
        if status != wanted:
            problems.append(f"{conf.name}: {len(conf.present)} present, recording {status}")
    return problems


def play_sessions(emulator, seed: int, steps: int) -> dict:
    """Random joins/leaves in every room at once; returns the players by room."""
    players = {}
    threads = []
    for i, room in enumerate(ROOMS):
        player = players[room] = Player(emulator)
        session = random_session(random.Random(seed + i), room, steps, people=4, prefix=f"r{i}")
        threads.append(threading.Thread(target=player.play, args=(session,)))
        player.session = session
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return players


def hang_up_all(players) -> None:
    """Everyone still on a call hangs up."""
    for player in players.values():
        player.play(hang_up_everyone(player.session))


def store_presence(redis_url: str, namespace: str) -> dict:
    """Room -> the set of CallSids Quorum's shared state has on the line."""
    store = RedisStore.from_url(redis_url, namespace, 1)
    return {room: set(store.get(room).present()) for room in store.rooms() if store.get(room) is not None}


def test_two_processes_on_one_redis_under_faults_keep_the_policy(cluster, redis_url):
    faults = Faults(
        seed=11, callback_duplicate=0.25, callback_delay_s=0.05, rest_latency_s=0.02, rest_jitter_s=0.04, rest_error=0.1
    )
    emulator, balancer, processes = cluster(2, faults)
    players = play_sessions(emulator, seed=1, steps=14)
    settle(emulator, processes)
    assert policy_violations(emulator) == []
    truth = {c.name: set(c.present) for c in emulator.conferences() if c.status == "in-progress"}
    assert store_presence(redis_url, cluster.made["namespace"]) == truth  # no join or leave lost
    assert min(balancer.sent.values()) > 20  # both processes really served callbacks
    print(
        f"balancer: {sorted(balancer.sent.values())} requests; live rooms: {len(truth)}; "
        f"callers on the line: {sum(map(len, truth.values()))}; REST: {emulator.rest_log.counts()}; "
        f"faults injected: {dict(emulator.injector.injected)}"
    )
    writes = Counter(
        (c.path.split("/Conferences/")[1].split("/")[0], c.status)
        for c in emulator.rest_log.calls
        if c.method == "POST"
    )
    failed = Counter(conf for (conf, status), n in writes.items() for _ in range(n) if status >= 500)
    for conf in emulator.conferences():
        ok = writes[(conf.sid, 200)]
        # One write per crossing; retries of failed writes may repeat one (they cannot know it failed).
        assert ok <= expected_writes(presence(conf, emulator.sim.calls), 2) + failed[conf.sid], conf.name
    hang_up_all(players)
    settle(emulator, processes)
    _wait_empty(redis_url, cluster.made["namespace"])
    assert not any("Traceback" in p.log() for p in processes)


def _wait_empty(redis_url: str, namespace: str, seconds: float = 30) -> None:
    """Until every ended conference has been processed and its state dropped from Redis."""
    store = RedisStore.from_url(redis_url, namespace, 1)
    deadline = time.monotonic() + seconds
    while store.rooms() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert store.rooms() == []


def test_sigkill_mid_conference_and_a_fresh_process_carries_on(cluster, redis_url):
    emulator, balancer, processes = cluster(2)
    player = Player(emulator)
    player.play([("call", "host", ROOMS[0]), ("wait", 0.3), ("call", "guest", ROOMS[0]), ("wait", 0.5)])
    settle(emulator, processes)
    victim = processes[0]
    balancer.backends.remove(victim.url)
    victim.kill()
    cluster.add_process(9)
    player.play([("hangup", "guest"), ("wait", 0.5)])
    settle(emulator, processes)
    (conf,) = emulator.conferences(ROOMS[0])
    assert emulator.recording(conf.recording_sids[0]).status == "paused"
    player.play([("call", "guest", ROOMS[0]), ("wait", 0.5)])
    settle(emulator, processes)
    assert emulator.recording(conf.recording_sids[0]).status == "in-progress"
    player.play([("hangup", "guest"), ("hangup", "host")])
    settle(emulator, processes)
    _wait_empty(redis_url, cluster.made["namespace"])


def test_memory_store_restart_recovers_through_the_rest_api(cluster):
    emulator, balancer, processes = cluster(1, redis=False, STATE_FILE="off")
    player = Player(emulator)
    player.play([("call", "host", ROOMS[1]), ("wait", 0.3), ("call", "guest", ROOMS[1]), ("wait", 0.5)])
    settle(emulator, processes)
    assert [c for c in emulator.rest_log.calls if c.method == "GET"] == []
    processes[0].kill()
    balancer.backends.clear()
    cluster.add_process(1)  # a restart: empty memory
    player.play([("hangup", "guest"), ("wait", 0.5)])
    settle(emulator, processes)
    (conf,) = emulator.conferences(ROOMS[1])
    assert emulator.recording(conf.recording_sids[0]).status == "paused"
    reads = [c.path.rsplit("/", 1)[-1] for c in emulator.rest_log.calls if c.method == "GET"]
    assert reads == ["Participants.json", "Recordings.json"]


def test_memory_store_killed_restarts_from_its_state_file(cluster):
    emulator, balancer, processes = cluster(1, redis=False)
    player = Player(emulator)
    player.play([("call", "host", ROOMS[1]), ("wait", 0.3), ("call", "guest", ROOMS[1]), ("wait", 0.5)])
    settle(emulator, processes)
    processes[0].kill()  # SIGKILL: no stop, no checkpoint; the state file's WAL holds what was committed
    balancer.backends.clear()
    cluster.add_process(1)
    player.play([("hangup", "guest"), ("wait", 0.5)])
    settle(emulator, processes)
    (conf,) = emulator.conferences(ROOMS[1])
    assert emulator.recording(conf.recording_sids[0]).status == "paused"
    assert [c for c in emulator.rest_log.calls if c.method == "GET"] == []  # it knew the conference and its calls
