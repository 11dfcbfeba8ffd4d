"""The Redis store against a real redis-server: atomic across connections, bounded, lockable."""

import dataclasses
import json
import threading
import time
import uuid

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from quorum import policy
from app import create_app, services, shutdown
from config import ConfigError, RoomRule
from quorum.controller import Decision, RecordingEvent
from support import conference_form, make_config, sid
from recording_state import (
    PAUSED,
    PROCESSING,
    RECORDING,
    STALE_AFTER_S,
    TIMELINE_LIMIT,
    Caller,
    MemoryStore,
    RecordingInfo,
    TalkEvents,
    Transition,
)
from test_recording_core import A, B, CONF, REC, ROOM, T0, Core
from quorum.redis_store import CACHE_BYTES, RedisStore

RULE = RoomRule()
C, D = sid("C"), sid("D")


@pytest.fixture
def store(redis_url):
    """A store in a namespace of its own."""
    return RedisStore.from_url(redis_url, f"t{uuid.uuid4().hex[:8]}", ended_ttl_s=30)


class CountingStore:
    """A RedisStore (`.store`, another process's in effect) whose connections count the requests they
    send: each is one round trip."""

    def __init__(self, redis_url: str, namespace: str):
        sent = self._sent = []

        class Counting(redis.Connection):
            def send_packed_command(self, command, check_health=True):
                sent.append(command)
                super().send_packed_command(command, check_health)

        pool = redis.ConnectionPool.from_url(redis_url, connection_class=Counting)
        self.store = RedisStore(redis.Redis(connection_pool=pool), namespace, 30)
        self.store.mutate("warm-up", lambda conf: None)  # connect and load the script: not counted below

    def trips(self, call) -> int:
        """How many round trips `call()` made."""
        before = len(self._sent)
        call()
        return len(self._sent) - before


def join(call, at):
    """A mutation: `call` joins room R (creating it if needed)."""

    def apply(conf):
        conf = conf or policy.conference_started(policy.new_conference("R", "conf-1", 0.0, RULE))
        return policy.participant_event(conf, call, True, at)

    return apply


def test_round_trip(redis_url, store):
    conf = store.mutate("R", join("A", 1.0))
    assert RedisStore.from_url(redis_url, store._ns, 30).get("R") == conf  # decoded, not this process's copy
    assert store.get("R") == conf
    assert store.rooms() == ["R"]


def rich_conference():
    """A conference with every field away from its default (`version` is the store's)."""
    conf = policy.recording_status(join("A", 1.0)(None), "rec-1", "in-progress", 2.0, None, None, None)
    conf = policy.command_result(conf, "rec-1", "failed", 3.0, "paused")
    conf = policy.connection_event(conf, "A", True, 4.0, Caller("+1555", "+1666", record=True))
    conf = policy.conference_ended(conf, 7.0)
    return dataclasses.replace(
        conf,
        recording_info={"rec-1": RecordingInfo("A", "https://x/r.wav", 3.5)},
        unrecordable=("B",),
        wanted=RECORDING,
        read_version=3,
        recheck=True,
        status=PROCESSING,
        started_at=0.5,
        opened_at=0.25,
        talk={"A": TalkEvents((1.0, 5.0), (3.0,))},
    )


def test_stored_json_is_what_asdict_gave_and_older_data_still_loads(redis_url, store):
    conf = store.mutate("R", lambda _: rich_conference())
    raw = store._redis.get(f"{store._ns}:conf:R")
    assert raw == json.dumps(dataclasses.asdict(conf), separators=(",", ":")).encode()
    store._redis.set(f"{store._ns}:conf:old", raw)  # as an earlier release wrote it
    assert RedisStore.from_url(redis_url, store._ns, 30).get("old") == conf


def test_a_conference_stored_before_talk_time_loads_without_speaker_events(redis_url, store):
    conf = store.mutate("R", lambda _: rich_conference())
    stored = json.loads(store._redis.get(f"{store._ns}:conf:R"))
    del stored["talk"]  # as a release before TALK_TIME wrote it
    store._redis.set(f"{store._ns}:conf:old", json.dumps(stored))
    assert RedisStore.from_url(redis_url, store._ns, 30).get("old") == dataclasses.replace(conf, talk={})


def test_one_round_trip_per_change_in_the_common_case(redis_url, store):
    counting = CountingStore(redis_url, store._ns)
    assert counting.trips(lambda: counting.store.mutate("R", join("A", 1.0))) == 1  # a new room
    assert counting.trips(lambda: counting.store.mutate("R", join("B", 2.0))) == 1
    assert counting.trips(lambda: counting.store.mutate("R", join("B", 2.0))) == 1  # a duplicate: checked only
    assert counting.trips(lambda: counting.store.get("R")) == 1
    assert counting.trips(lambda: counting.store.mutate("R", lambda conf: None)) == 1
    assert counting.trips(lambda: counting.store.mutate("R", join("C", 3.0))) == 1  # the deletion was remembered
    assert store.get("R").present() == ["C"]


def test_a_stale_copy_costs_one_more_round_trip_and_loses_nothing(redis_url, store):
    """Two processes take turns on one room: each write makes the other's copy stale."""
    first, second = CountingStore(redis_url, store._ns), CountingStore(redis_url, store._ns)
    assert first.trips(lambda: first.store.mutate("R", join("A", 1.0))) == 1
    assert second.trips(lambda: second.store.mutate("R", join("B", 2.0))) == 2  # guessed "no key"
    assert first.trips(lambda: first.store.mutate("R", join("C", 3.0))) == 2  # its copy lacks B
    assert first.trips(lambda: first.store.mutate("R", join("C", 3.0))) == 1
    assert second.trips(lambda: second.store.mutate("R", join("C", 3.0))) == 2  # stale, then a duplicate
    store.mutate("R", lambda conf: None)
    assert first.trips(lambda: first.store.mutate("R", join("D", 4.0))) == 2  # deleted by another process
    assert store.get("R").present() == ["D"] and store.get("R").version == 1


def test_a_stale_copy_of_a_room_deleted_and_made_again_is_never_written_back(redis_url, store):
    """The room counts versions from 1 again: the same version, another conference (what FLUSHDB leaves)."""
    other = RedisStore.from_url(redis_url, store._ns, 30)
    assert store.mutate("R", join("A", 1.0)).version == 1
    store._redis.delete(f"{store._ns}:conf:R")  # expired, flushed, or deleted by another process
    assert other.mutate("R", join("B", 2.0)).version == 1
    assert store.mutate("R", join("C", 3.0)).present() == ["B", "C"]


def test_the_cache_is_bounded_in_bytes_and_forgets_the_least_recent_room(redis_url, store):
    counting = CountingStore(redis_url, store._ns)
    timeline = tuple(Transition(float(n), "wanted", RECORDING) for n in range(TIMELINE_LIMIT))

    def full(conf):
        """A's join with the longest timeline kept: the largest a room gets."""
        return dataclasses.replace(join("A", 1.0)(conf), timeline=timeline)

    counting.store.mutate("R0", full)
    rooms = CACHE_BYTES // store._redis.strlen(f"{store._ns}:conf:R0") + 1
    for n in range(1, rooms):
        counting.store.mutate(f"R{n}", full)
    assert counting.trips(lambda: counting.store.mutate(f"R{rooms - 1}", join("B", 2.0))) == 1
    assert counting.trips(lambda: counting.store.mutate("R0", join("B", 2.0))) == 2  # forgotten: guessed "no key"


def test_get_never_serves_a_stale_copy(redis_url, store):
    other = RedisStore.from_url(redis_url, store._ns, 30)
    store.mutate("R", join("A", 1.0))
    other.mutate("R", join("B", 2.0))
    assert store.get("R").present() == ["A", "B"]
    other.mutate("R", lambda conf: None)
    assert store.get("R") is None


@pytest.fixture
def counted(redis_url, store):
    """A CountingStore, and a recording core (scripted gateway, hand-moved clock) on its store."""
    counting = CountingStore(redis_url, store._ns)
    core = Core(store=counting.store)
    yield counting, core
    core.commands.shutdown()


def test_a_join_or_leave_of_a_known_conference_is_one_round_trip(counted):
    counting, core = counted
    core.two_recording()
    core.settle()
    for kind, at in (("participant-join", 1), ("participant-leave", 2), ("participant-leave", 2)):  # last: a duplicate
        assert counting.trips(lambda: core.event(kind, C, at=T0 + at)) == 1  # crosses no threshold: no command
    core.controller.inbound_call(D, "+15552220000", ROOM)  # this process heard D dial in
    assert counting.trips(lambda: core.event("participant-join", D, at=T0 + 3)) == 1
    assert core.store.get(ROOM).callers[D].from_ == "+15552220000"


def test_a_caller_another_process_heard_costs_one_more_round_trip_once(redis_url, counted):
    counting, core = counted
    core.two_recording()
    core.settle()
    RedisStore.from_url(redis_url, counting.store._ns, 30).remember_call(C, {"from": "+15552220000", "to": ROOM})
    assert counting.trips(lambda: core.event("participant-join", C, at=T0 + 1)) == 2  # guessed "no record"
    assert counting.trips(lambda: core.event("participant-leave", C, at=T0 + 2)) == 1
    assert core.store.get(ROOM).callers[C].from_ == "+15552220000" and core.store.get(ROOM).participants[C].known


def test_a_retired_conference_is_refused_in_the_same_round_trip(counted):
    counting, core = counted
    core.store.retire(CONF)
    assert counting.trips(lambda: core.event("participant-join", A)) == 1
    assert core.event("participant-join", A) == Decision.STALE and core.store.get(ROOM) is None
    core.store.retire(REC)
    assert core.controller.recording_event(RecordingEvent(ROOM, REC, "in-progress", T0)) == Decision.STALE
    assert core.store.get(ROOM) is None


def test_a_command_costs_three_round_trips_beside_its_callback(counted):
    """Read, take the room's lock with a second read under it, record the outcome and release the lock at once."""
    counting, core = counted
    core.two_recording()
    for kind, at in (("participant-leave", 1), ("participant-join", 2)):  # the lock's scripts loaded: not counted
        core.event(kind, B, at=T0 + at)
        core.settle()

    def crossing():
        assert core.event("participant-leave", B, at=T0 + 3) == Decision.QUEUED
        core.settle()

    assert counting.trips(crossing) == 1 + 3
    assert core.gateway.updates[-1] == (REC, PAUSED) and core.store.get(ROOM).recordings[REC] == PAUSED


def lock_holder(store, name="room:R"):
    """The token holding lock `name` now, or None."""
    token = store._redis.get(f"{store._ns}:lock:{name}")
    return token and token.decode()


def test_a_compare_and_set_releases_the_lock_only_while_its_token_holds_it(redis_url, store):
    counting, stale = CountingStore(redis_url, store._ns), CountingStore(redis_url, store._ns)
    mine = store.try_lock("room:R", 5)
    assert counting.trips(lambda: counting.store.mutate("R", join("A", 1.0), ("room:R", mine))) == 1
    theirs = store.try_lock("room:R", 5)
    assert theirs and lock_holder(store) == theirs  # mine went with the write
    assert store.mutate("R", join("B", 2.0), ("room:R", mine)).present() == ["A", "B"]  # as if mine had expired
    assert lock_holder(store) == theirs  # ... and been taken again: not mine to release
    assert stale.trips(lambda: stale.store.mutate("R", join("B", 2.0), ("room:R", theirs))) == 2  # stale, a duplicate
    assert lock_holder(store) is None and store.get("R").present() == ["A", "B"]


def test_a_rest_send_that_raises_still_releases_the_lock(counted):
    counting, core = counted
    core.two_recording()
    core.settle()

    def crash(*args, **kwargs):
        raise RuntimeError("the gateway broke")

    core.gateway.set_recording = crash
    core.event("participant-leave", B, at=T0 + 1)
    core.settle()
    assert lock_holder(counting.store, f"room:{ROOM}") is None and core.store.get(ROOM).recordings[REC] == RECORDING


def test_a_lock_taken_again_while_the_command_was_in_flight_is_left_to_its_holder(counted):
    counting, core = counted
    core.two_recording()
    core.settle()
    send = core.gateway.set_recording

    def slow(*args, **kwargs):  # outlives the lock, which another process then takes
        counting.store._redis.set(f"{counting.store._ns}:lock:room:{ROOM}", "theirs")
        return send(*args, **kwargs)

    core.gateway.set_recording = slow
    core.event("participant-leave", B, at=T0 + 1)
    core.settle()
    assert lock_holder(counting.store, f"room:{ROOM}") == "theirs" and core.store.get(ROOM).recordings[REC] == PAUSED


def test_a_command_settled_by_another_process_before_the_lock_releases_it_unused(redis_url, counted):
    counting, core = counted
    core.two_recording()
    core.settle()
    other, take = RedisStore.from_url(redis_url, counting.store._ns, 30), counting.store.try_lock_and_get

    def paused_meanwhile(name, ttl_s, room):
        other.mutate(room, lambda conf: policy.command_result(conf, REC, PAUSED, T0 + 1, PAUSED))
        return take(name, ttl_s, room)

    counting.store.try_lock_and_get = paused_meanwhile
    core.event("participant-leave", B, at=T0 + 1)
    core.settle()
    assert lock_holder(counting.store, f"room:{ROOM}") is None and core.gateway.updates == []


def test_a_thousand_live_conferences_list_in_two_round_trips(redis_url, store):
    counting = CountingStore(redis_url, store._ns)
    for n in range(1000):
        store.mutate(f"R{n:04}", join("A", 1.0))
    listed = []
    assert counting.trips(lambda: listed.extend(counting.store.conferences())) == 2  # SMEMBERS; MGETs of 500
    assert [(key, conf.present()) for key, conf in listed] == [(f"R{n:04}", ["A"]) for n in range(1000)]


def change(kind, call, at):
    """One step's mutation of room R: a join, a leave, a deletion, or nothing ("same")."""
    if kind == "join":
        return join(call, at)
    if kind == "leave":
        return lambda conf: conf and policy.participant_event(conf, call, False, at)
    return {"delete": lambda conf: None, "same": lambda conf: conf}[kind]


STEPS = st.lists(
    st.tuples(
        st.integers(0, 2), st.sampled_from(["join", "leave", "same", "delete", "flush"]), st.sampled_from("ABCD")
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(steps=STEPS)
def test_interleaved_writers_with_stale_copies_match_one_store_applying_every_change(redis_url, steps):
    """Three processes change one room in any order (their copies go stale, the key vanishes as FLUSHDB or
    expiry would make it): every result, and what Redis holds, is what one in-memory store gives."""
    namespace = f"t{uuid.uuid4().hex[:8]}"
    writers = [RedisStore.from_url(redis_url, namespace, 30) for _ in range(3)]
    reader, model = RedisStore.from_url(redis_url, namespace, 30), MemoryStore()
    for at, (writer, kind, call) in enumerate(steps, start=1):
        if kind == "flush":
            reader._redis.delete(f"{namespace}:conf:R")
            model.mutate("R", lambda conf: None)
            continue
        fn = change(kind, call, float(at))
        assert writers[writer].mutate("R", fn) == model.mutate("R", fn)
        assert reader.get("R") == model.get("R")


def test_two_processes_of_four_threads_each_lose_no_change(redis_url, store):
    """Threads share their process's copies; each join is one change, so the version counts them all."""
    stores = [RedisStore.from_url(redis_url, store._ns, 30) for _ in range(2)]
    start = threading.Barrier(8)

    def work(i):
        start.wait()
        for n in range(25):
            stores[i % 2].mutate("R", join(f"call-{i}-{n}", 1.0 + n))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    conf = store.get("R")
    assert (len(conf.present()), conf.version) == (200, 200)


def test_concurrent_mutations_from_separate_connections_lose_nothing(redis_url, store):
    """Eight 'workers', each with its own connection, add 25 callers each to one room at once."""
    namespace = store._ns
    workers = [RedisStore.from_url(redis_url, namespace, 30) for _ in range(8)]
    start = threading.Barrier(len(workers))

    def work(i, worker):
        start.wait()
        for n in range(25):
            worker.mutate("R", join(f"call-{i}-{n}", 1.0 + n))

    threads = [threading.Thread(target=work, args=(i, w)) for i, w in enumerate(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(store.get("R").present()) == 200


def test_keys_expire(store):
    store.mutate("R", join("A", 1.0))
    assert STALE_AFTER_S - 5 < store._redis.ttl(f"{store._ns}:conf:R") <= STALE_AFTER_S
    store.mutate("R", lambda conf: policy.conference_ended(conf, 2.0))
    assert 0 < store._redis.ttl(f"{store._ns}:conf:R") <= 30 + 3600  # END_GRACE_S + 1 h


def test_expired_rooms_are_pruned(store):
    store.mutate("R", join("A", 1.0))
    store._redis.delete(f"{store._ns}:conf:R")  # as if the key had expired
    assert store.rooms() == []
    assert store._redis.smembers(f"{store._ns}:rooms") == set()


def test_delete(store):
    store.mutate("R", join("A", 1.0))
    assert store.mutate("R", lambda conf: None) is None
    assert (store.get("R"), store.rooms()) == (None, [])


def test_retire(store):
    assert not store.is_retired("conf-9")
    store.retire("conf-9")
    assert store.is_retired("conf-9")


def test_lock_is_exclusive_owned_and_expires(store):
    token = store.try_lock("room:R", 0.3)
    assert token and store.try_lock("room:R", 0.3) is None
    store.unlock("room:R", "someone-else")
    assert store.try_lock("room:R", 0.3) is None
    store.unlock("room:R", token)
    second = store.try_lock("room:R", 0.2)
    assert second
    time.sleep(0.35)
    assert store.try_lock("room:R", 0.2)


def test_state_survives_an_app_restart(redis_url, signalwire):
    """A new process on the same Redis carries on where the old one stopped."""
    config = make_config(redis_url=redis_url, redis_namespace=f"t{uuid.uuid4().hex[:8]}", validate_signatures=False)
    form = conference_form("participant-join", sid("conf-1"), "R")
    first = create_app(config)
    try:
        first.test_client().post("/voice/conference-status", data={**form, "StatusCallbackEvent": "conference-start"})
        first.test_client().post("/voice/conference-status", data={**form, "CallSid": sid("A")})
    finally:
        shutdown(first)
    second = create_app(config)
    try:
        second.test_client().post("/voice/conference-status", data={**form, "CallSid": sid("B")})
        conf = services(second).store.get("R")
    finally:
        shutdown(second)
    assert conf.present() == [sid("A"), sid("B")] and conf.wanted == RECORDING


def test_redis_down_answers_503_not_500(signalwire):
    config = make_config(redis_url="redis://127.0.0.1:1/0", validate_signatures=False)
    app = create_app(config)
    try:
        form = conference_form("participant-join", sid("c"), "R", sid("A"))
        response = app.test_client().post("/voice/conference-status", data=form)
        health = app.test_client().get("/healthz")
    finally:
        shutdown(app)
    assert (response.status_code, response.get_json()) == (503, {"error": "state store unavailable"})
    assert health.status_code == 503 and health.get_json()["store"] == "unreachable"


def test_unknown_scheme_is_a_config_error():
    with pytest.raises(ConfigError, match="REDIS_URL"):
        make_config(redis_url="http://localhost:6379")
