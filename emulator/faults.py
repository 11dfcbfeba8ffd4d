"""Fault injection knobs: each one is off by default and switchable on its own.

Decisions come from seeded per-stream random generators (one stream per conference,
or per REST path outside any conference), so a scenario that produces its events in
the same order draws the same faults on every run, whatever the other threads do.

Targeted faults, set at runtime on the `FaultInjector`, break exactly one thing a test names:
`drop_next` (SignalWire gives up on the next callback of an event, e.g. one call's
`participant-leave`), `delay_next` (it comes late, the conference's later callbacks behind it),
`fail_next` (the next matching REST request answers an error, e.g. 404 or 422, without applying)
and `slow_next` (it applies at once but answers late).

`Behaviour` is not a fault: it picks SignalWire's behaviour where the documentation is silent.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional


CALLBACK_FAULTS = ("drop_next", "delay_next")  # targeted faults of callbacks; the others are of REST requests


@dataclass(frozen=True)
class Faults:
    """What to break, and how often (probabilities are per callback or per REST request)."""

    seed: int = 0
    callback_duplicate: float = 0.0  # deliver a second copy of the callback
    callback_reorder: float = 0.0  # hold the callback back so later ones overtake it
    callback_reorder_hold_s: float = 0.4
    callback_delay_s: float = 0.0  # extra latency, uniform in [0, this]; order is kept
    callback_drop: float = 0.0  # never deliver the callback at all
    callback_drop_events: frozenset = frozenset()  # never deliver these events (e.g. {"conference-start"})
    rest_latency_s: float = 0.0  # added to every REST API answer
    rest_jitter_s: float = 0.0  # extra latency, uniform in [0, this]
    rest_error: float = 0.0  # answer 500/503 without applying the request
    rest_error_methods: frozenset = frozenset()  # rest_error only for these methods (e.g. {"DELETE"}); empty: all
    rest_timeout: float = 0.0  # hang for rest_hang_s, then answer 504 without applying
    rest_hang_s: float = 6.0  # longer than a client's read timeout
    rest_timeout_applies: bool = False  # timed-out requests do take effect: only the answer is late
    announce_error: bool = False  # answer 500 to every Update Conference that carries an AnnounceUrl
    media_error: float = 0.0  # answer a recording media download (.wav, .mp3) with 500/503


@dataclass(frozen=True)
class Behaviour:
    """SignalWire behaviour the documentation leaves open: each choice switchable so tests cover both."""

    # <Conference> noun, statusCallbackEvent table: "end: ... when the last participant ... leaves";
    # silent on whether a conference that never started (a lone caller) sends conference-end.
    # True: the lone caller was "the last participant", so the documented end applies.
    unstarted_conference_end: bool = True
    # <Conference> recordingStatusCallbackEvent table documents only in-progress, completed, failed;
    # silent on a conference recording that ends with no media. "completed" (duration 0), or "failed".
    empty_conference_recording: str = "completed"
    # OpenAPI list_all_participants: "List all active Participants", yet ParticipantStatus has
    # `completed`; silent on whether departed participants stay listed. False: only active ones.
    departed_participants_listed: bool = False
    # SignalWire's update-recording example answers "status": "queued" with end_time and duration
    # filled; silent on when. True: every update answers like the example (the documented shape).
    update_answers_queued: bool = True
    # OpenAPI RecordingStatus lists both in-progress and resumed; silent on which a recording resumed
    # with Status=in-progress reads. "in-progress": the status that was asked for.
    resumed_status: str = "in-progress"
    # RecordingStatus lists both stopped and completed; silent on which a recording stopped over REST
    # reads once over. "completed": what its recording callback reports.
    stopped_status: str = "completed"
    # A failed conference recording: the <Conference> noun's recordingStatusCallbackEvent table says
    # "failed: The recording is not accessible because of a failure"; the OpenAPI RecordingStatusCallbackPayload
    # has no `failed`, only "absent: Recording was too short or no audio was detected". "failed" or "absent".
    failed_recording_status: str = "failed"
    # Timestamp of the inbound call status callback (IncomingPhoneNumber StatusCallback): the cXML voice
    # overview's "Status callbacks" says "of when the event occurred", the OpenAPI InboundCallStatusCallbackPayload
    # "The timestamp of the call creation date/time". "event" (the call's end) or "created".
    call_status_timestamp: str = "event"
    # <Dial> action parameters: "DialCallSid: The unique identifier of the new call leg"; silent on a
    # <Conference>, where no new leg is dialed. False: not sent (there is no new leg); True: the caller's CallSid.
    conference_dial_call_sid: bool = False
    # statusCallbackEvent `speaker`: "When a participant has begun or stopped speaking"; silent on a participant
    # who leaves while talking. True: a participant-speech-stop comes first, then participant-leave; False: none.
    speech_stop_on_leave: bool = True

    def __post_init__(self) -> None:
        """Refuse a value that is neither documented possibility."""
        for name, allowed in (
            ("empty_conference_recording", ("completed", "failed")),
            ("resumed_status", ("in-progress", "resumed")),
            ("stopped_status", ("completed", "stopped")),
            ("failed_recording_status", ("failed", "absent")),
            ("call_status_timestamp", ("event", "created")),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}")


@dataclass(frozen=True)
class CallbackPlan:
    """What the injector decided for one callback."""

    drop: bool
    delay_s: float
    hold_s: float  # > 0 when the callback is to be overtaken
    duplicate: bool


@dataclass(frozen=True)
class RestPlan:
    """What the injector decided for one REST request."""

    latency_s: float
    error: int  # 0, or the status to answer instead of applying (500, 503; a targeted fault's 404, 422, ...)
    hang_s: float  # > 0 when the request is to time out
    late_s: float = 0.0  # > 0: applied at once, answered this much later (a targeted slow answer)


@dataclass
class _Targeted:
    """One targeted fault still to fire `left` times: a callback event (and call) or a REST method and path."""

    kind: str  # drop_next | delay_next | fail_next | slow_next
    left: int
    event: str = ""
    call_sid: Optional[str] = None
    method: str = ""
    path_contains: str = ""
    field: Optional[str] = None  # the REST request's form must carry this field (e.g. AnnounceUrl)
    status: int = 0
    late_s: float = 0.0  # slow_next: how late the answer is; delay_next: how late the callback is

    def matches_callback(self, event: str, call_sid: str) -> bool:
        """Whether a callback is one this fault is waiting for."""
        return self.kind in CALLBACK_FAULTS and self.event == event and self.call_sid in (None, call_sid)

    def matches_rest(self, method: str, path: str, fields: Iterable[str]) -> bool:
        """Whether a REST request is one this fault is waiting for."""
        return (
            self.kind not in CALLBACK_FAULTS
            and self.method == method.upper()
            and self.path_contains in path
            and (self.field is None or self.field in fields)
        )


class FaultInjector:
    """Draws seeded decisions for callbacks and REST requests and counts what it injected."""

    def __init__(self, faults: Faults):
        self.faults = faults
        self._streams: Dict[str, random.Random] = {}
        self._lock = threading.Lock()
        self._targeted: List[_Targeted] = []
        self.injected: Counter = Counter()

    def drop_next(self, event: str, call_sid: Optional[str] = None, count: int = 1) -> None:
        """Never deliver the next `count` callbacks of `event` (e.g. "participant-leave", "recording:completed"),
        only those about `call_sid` when given: SignalWire gave up on them."""
        self._target(_Targeted("drop_next", count, event=event, call_sid=call_sid))

    def delay_next(self, event: str, seconds: float, call_sid: Optional[str] = None, count: int = 1) -> None:
        """Deliver the next `count` callbacks of `event` (about `call_sid`, when given) `seconds` late; the
        conference's callbacks after them wait behind them, as `callback_delay_s` keeps a lane's order."""
        self._target(_Targeted("delay_next", count, event=event, call_sid=call_sid, late_s=seconds))

    def fail_next(
        self, method: str, path_contains: str, status: int, count: int = 1, field: Optional[str] = None
    ) -> None:
        """Answer the next `count` REST requests of `method` whose path contains `path_contains` (and whose form
        carries `field`, when given) with `status` and SignalWire's error body, without applying them."""
        self._target(
            _Targeted(
                "fail_next", count, method=method.upper(), path_contains=path_contains, field=field, status=status
            )
        )

    def slow_next(
        self, method: str, path_contains: str, seconds: float, count: int = 1, field: Optional[str] = None
    ) -> None:
        """Apply the next `count` REST requests matching as in `fail_next` at once, and answer `seconds` later."""
        self._target(
            _Targeted(
                "slow_next", count, method=method.upper(), path_contains=path_contains, field=field, late_s=seconds
            )
        )

    def pending(self) -> int:
        """Targeted faults that have not fired yet."""
        with self._lock:
            return sum(t.left for t in self._targeted)

    def _target(self, fault: _Targeted) -> None:
        """Arm one targeted fault."""
        if fault.left < 1:
            raise ValueError("count must be at least 1")
        with self._lock:
            self._targeted.append(fault)

    def _take(self, match) -> Optional[_Targeted]:
        """The oldest armed fault `match` accepts, spent once and counted (lock held); None if none."""
        for fault in self._targeted:
            if match(fault):
                fault.left -= 1
                if not fault.left:
                    self._targeted.remove(fault)
                self.injected[fault.kind] += 1
                return fault
        return None

    def _stream(self, key: str) -> random.Random:
        """The generator for one stream, created on first use from the seed and the key."""
        stream = self._streams.get(key)
        if stream is None:
            stream = self._streams[key] = random.Random(f"{self.faults.seed}/{key}")
        return stream

    def plan_callback(self, key: str, event: str = "", call_sid: str = "") -> CallbackPlan:
        """Decide the fate of the next callback (of kind `event`, about `call_sid`) of stream `key`."""
        f = self.faults
        with self._lock:
            rng = self._stream(key)
            # Draw every number every time so one knob does not shift another's decisions.
            drop, hold, dup, delay = rng.random(), rng.random(), rng.random(), rng.random()
            targeted = self._take(lambda t: t.matches_callback(event, call_sid))
            dropped = targeted is not None and targeted.kind == "drop_next"
            late_s = targeted.late_s if targeted is not None and targeted.kind == "delay_next" else 0.0
            plan = CallbackPlan(
                drop=dropped or drop < f.callback_drop or event in f.callback_drop_events,
                delay_s=late_s or delay * f.callback_delay_s,
                hold_s=f.callback_reorder_hold_s if hold < f.callback_reorder else 0.0,
                duplicate=dup < f.callback_duplicate,
            )
            self._count(
                callback_drop=plan.drop and not dropped,
                callback_reorder=plan.hold_s > 0 and not plan.drop,
                callback_duplicate=plan.duplicate and not plan.drop,
                callback_delay=plan.delay_s > 0 and not plan.drop and not late_s,
            )
            return plan

    def plan_rest(self, key: str, method: str = "GET", path: str = "", fields: Iterable[str] = ()) -> RestPlan:
        """Decide the fate of the next REST request (of HTTP `method` to `path`, its form carrying `fields`)
        of stream `key`: a targeted fault it matches, else the seeded draws."""
        f = self.faults
        with self._lock:
            rng = self._stream("rest/" + key)
            error, hang, jitter, which = rng.random(), rng.random(), rng.random(), rng.random()
            fields = frozenset(fields)
            targeted = self._take(lambda t: t.matches_rest(method, path, fields))
            if targeted is not None:
                return RestPlan(latency_s=0.0, error=targeted.status, hang_s=0.0, late_s=targeted.late_s)
            timeout = hang < f.rest_timeout
            for_this_method = not f.rest_error_methods or method in f.rest_error_methods
            failed = error < f.rest_error and not timeout and for_this_method
            plan = RestPlan(
                latency_s=f.rest_latency_s + jitter * f.rest_jitter_s,
                error=(503 if which < 0.5 else 500) if failed else 0,
                hang_s=f.rest_hang_s if timeout else 0.0,
            )
            self._count(rest_error=failed, rest_timeout=timeout, rest_latency=plan.latency_s > 0)
            return plan

    def plan_media(self, key: str) -> int:
        """The status to answer the next media download of stream `key` with instead of the media (0: serve it)."""
        with self._lock:
            rng = self._stream("media/" + key)
            error, which = rng.random(), rng.random()
            failed = error < self.faults.media_error
            self._count(media_error=failed)
            return (503 if which < 0.5 else 500) if failed else 0

    def _count(self, **happened: bool) -> None:
        """Add one to each fault kind that happened."""
        for kind, yes in happened.items():
            if yes:
                self.injected[kind] += 1
