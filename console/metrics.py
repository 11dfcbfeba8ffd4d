"""Prometheus metrics: webhooks, REST commands, queue depth, conferences and recordings.

Counters and the latency histogram live in the process that counted them. Under gunicorn
with several workers, set PROMETHEUS_MULTIPROC_DIR to an empty directory writable by every
worker and `/metrics` adds them up (prometheus-client's multiprocess mode). Conference and
recording gauges are read from the store at scrape time, so they are global either way.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, Iterable, Optional, Tuple

# prometheus-client picks multiprocess mode when the variable merely exists, and an empty one (`.env` files
# carry `PROMETHEUS_MULTIPROC_DIR=`) then writes its files to the working directory: empty means off, for both.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip():
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest  # noqa: E402
from prometheus_client.core import GaugeMetricFamily  # noqa: E402
from prometheus_client.multiprocess import MultiProcessCollector  # noqa: E402

from recording_state import GONE, PAUSED, RECORDING, StateStore  # noqa: E402

REST_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.5, 3.0, 6.0, 12.0)
# Fine below 20 ms, where the target is (p99 <= 15 ms from a crossing callback's arrival to its command).
CROSSING_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """The app's instruments, registered in a registry of its own (one per app)."""

    def __init__(self, store: StateStore):
        self._multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry()
        self.webhooks = Counter(
            "quorum_webhooks", "Webhooks received, by route and outcome.", ["route", "outcome"], registry=self.registry
        )
        self.rest_commands = Counter(
            "quorum_rest_commands",
            "SignalWire REST calls, by kind and result.",
            ["kind", "result"],
            registry=self.registry,
        )
        self.rest_seconds = Histogram(
            "quorum_rest_command_seconds",
            "SignalWire REST call latency.",
            ["kind"],
            buckets=REST_BUCKETS,
            registry=self.registry,
        )
        self.crossing_seconds = Histogram(
            "quorum_crossing_to_command_seconds",
            "From the arrival of a callback that crosses the threshold to its pause or resume leaving for SignalWire.",
            buckets=CROSSING_BUCKETS,
            registry=self.registry,
        )
        self._webhook_children: Dict[Tuple[str, str], Counter] = {}
        self._state = _StateCollector(store)
        self.registry.register(self._state)

    def watch_queue(self, depth: Callable[[], int]) -> None:
        """Report `depth()` as the command queue's depth (the queue is built after the gateway that reports here)."""
        self._state.queue_depth = depth

    def watch_archive(self, staged: Callable[[], int]) -> None:
        """Report `staged()` as the conversations waiting on this host for their upload to the archive."""
        self._state.staged = staged

    def observe_rest(self, kind: str, result: str, seconds: float) -> None:
        """Count and time one REST call (the gateway's observer)."""
        self.rest_commands.labels(kind, result).inc()
        self.rest_seconds.labels(kind).observe(seconds)

    def count_webhook(self, route: str, status: int, outcome: Optional[str] = None) -> None:
        """Count one answered webhook by its HTTP status (and what it did, for callbacks)."""
        key = (route, _outcome(status, outcome))
        child = self._webhook_children.get(key)
        if child is None:  # labels() costs more than the increment: keep the children
            child = self._webhook_children[key] = self.webhooks.labels(*key)
        child.inc()

    def exposition(self) -> tuple:
        """(body, content type) of the text exposition format."""
        if not self._multiprocess:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        merged = CollectorRegistry()
        MultiProcessCollector(merged)
        merged.register(self._state)
        return generate_latest(merged), CONTENT_TYPE_LATEST


def _outcome(status: int, outcome: Optional[str]) -> str:
    """A small label set: ok, ignored, forbidden, bad_request, error."""
    if status == 403:
        return "forbidden"
    if 200 <= status < 300:
        return "ignored" if outcome == "ignored" else "ok"
    if 400 <= status < 500:
        return "bad_request"
    return "error"


class _StateCollector:
    """Gauges computed from the store and the command queue when scraped."""

    def __init__(self, store: StateStore):
        self._store = store
        self.queue_depth: Callable[[], int] = lambda: 0
        self.staged: Callable[[], int] = lambda: 0

    def collect(self) -> Iterable:
        """Yield the gauges."""
        conferences = [conf for _, conf in self._store.conferences()]
        yield GaugeMetricFamily(
            "quorum_command_queue_depth",
            "Rooms waiting for or under a REST command (this process).",
            value=self.queue_depth(),
        )
        yield GaugeMetricFamily(
            "quorum_archive_staged",
            "Conversations put together on this host whose upload to the archive's bucket is not done (a local "
            "archive: 0).",
            value=self.staged(),
        )
        yield GaugeMetricFamily(
            "quorum_active_conferences", "Conferences not yet ended.", value=sum(not c.ended for c in conferences)
        )
        recordings = GaugeMetricFamily(
            "quorum_recordings", "Recordings of live conferences by confirmed state.", labels=["state"]
        )
        states = [state for c in conferences if not c.ended for state in c.recordings.values() if state != GONE]
        for state in (RECORDING, PAUSED):
            recordings.add_metric([state], states.count(state))
        recordings.add_metric(["other"], sum(s not in (RECORDING, PAUSED) for s in states))
        yield recordings
