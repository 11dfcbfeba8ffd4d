"""Speaker events: each participant's speech starts and stops, sent at the moments its voice starts and stops.

<Conference> noun, statusCallbackEvent table: "speaker: When a participant has begun or stopped speaking";
StatusCallbackEvent values `participant-speech-start` and `participant-speech-stop` (developer.signalwire.com
/compatibility-api/cxml/voice/conference-noun). The turns come from the caller's `audio.Voice.speech`, the
same on/off pattern its audio has, so talk time from the events and from a recording can be held together.
The docs say nothing of how long a pause ends a turn: a voice's turn is a run of its talking phrases (word
gaps inside it), or its scripted spans.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from typing import Callable, Dict, Iterator, List, Tuple

START, STOP = "speech-start", "speech-stop"


class Speakers:
    """Sends every followed call's speech events on time, from one thread that runs while any call is followed.

    `lock` is the simulator's (the condition waits on it), so a call that leaves is never reported speaking after;
    `emit(call_sid, START | STOP, at)` is called with it held.
    """

    def __init__(self, lock: threading.RLock, emit: Callable[[str, str, float], None]):
        self._cond = threading.Condition(lock)
        self._emit = emit
        self._due: List[Tuple[float, int, str, str, float]] = []  # (at, order, call, START|STOP, the turn's end)
        self._turns: Dict[str, Iterator[Tuple[float, float]]] = {}
        self._talking: Dict[str, bool] = {}
        self._order = itertools.count()
        self._thread = None

    def follow(self, call_sid: str, turns: Iterator[Tuple[float, float]]) -> None:
        """Report `turns` (wall-clock (start, end), in order) of a call that joined (lock held)."""
        with self._cond:
            self._turns[call_sid] = iter(turns)
            self._next_turn(call_sid)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="emulator-speakers", daemon=True)
                self._thread.start()
            self._cond.notify()

    def forget(self, call_sid: str) -> bool:
        """Stop following a call that left (lock held); whether it was talking at that moment."""
        with self._cond:
            self._turns.pop(call_sid, None)
            return self._talking.pop(call_sid, False)

    def _next_turn(self, call_sid: str) -> None:
        """Schedule the start of the call's next turn, if it has one (lock held)."""
        turn = next(self._turns[call_sid], None)
        if turn is not None:
            heapq.heappush(self._due, (turn[0], next(self._order), call_sid, START, turn[1]))

    def _run(self) -> None:
        """Send each event when it is due; end once no call is followed."""
        with self._cond:
            while self._due:
                at, _, call_sid, kind, end = self._due[0]
                if at > time.time():
                    self._cond.wait(at - time.time())
                    continue
                heapq.heappop(self._due)
                if call_sid not in self._turns:
                    continue  # it left
                self._talking[call_sid] = kind == START
                if kind == START:
                    heapq.heappush(self._due, (end, next(self._order), call_sid, STOP, end))
                else:
                    self._next_turn(call_sid)
                self._emit(call_sid, kind, at)
            self._thread = None


def wall_turns(spans: Iterator[Tuple[int, int]], origin: float, rate: int) -> Iterator[Tuple[float, float]]:
    """Voice spans in samples from `origin` as wall-clock (start, end)."""
    for start, end in spans:
        yield origin + start / rate, origin + end / rate
