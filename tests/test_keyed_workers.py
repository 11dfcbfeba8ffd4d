"""One key never runs twice at once; submits during a run cause exactly one more run."""

import threading

from quorum.keyed_workers import KeyedWorkers


def test_submits_during_a_run_collapse_into_one_more_run():
    started, release = threading.Event(), threading.Event()
    runs, running, overlap = [], set(), []

    def work(key):
        if key in running:
            overlap.append(key)
        running.add(key)
        runs.append(key)
        if len(runs) == 1:
            started.set()
            release.wait(5)
        running.discard(key)

    workers = KeyedWorkers(work, 4, "test")
    workers.submit("room")
    assert started.wait(5)
    for _ in range(10):
        workers.submit("room")  # while the first run is still going
    assert workers.depth() == 1
    release.set()
    assert workers.wait_idle(5)
    workers.shutdown()
    assert runs == ["room", "room"] and overlap == []


def test_a_crash_is_logged_and_frees_the_key(caplog):
    workers = KeyedWorkers(lambda key: 1 / 0, 1, "test")
    workers.submit("room")
    assert workers.wait_idle(5) and workers.depth() == 0
    workers.shutdown()
    assert "test: work on room crashed" in caplog.text


def test_a_submit_after_shutdown_is_dropped_not_raised():
    """A read that lands while the app shuts down still kicks its room: nothing is left to run it."""
    ran = []
    workers = KeyedWorkers(ran.append, 1, "t")
    workers.shutdown()
    workers.submit("room")
    assert ran == [] and workers.depth() == 0
