"""At most one log line per interval for a repeating problem, saying how many were held back meanwhile."""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional


class Throttle:
    """`due()` is the number of occurrences held back since the last line when a line is due now, else None."""

    def __init__(self, every_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self._every_s = every_s
        self._clock = clock
        self._last: Optional[float] = None
        self._held = 0
        self._lock = threading.Lock()

    def due(self) -> Optional[int]:
        """Count one occurrence; how many were held back before it if it gets a line, else None."""
        with self._lock:
            now = self._clock()
            if self._last is not None and now - self._last < self._every_s:
                self._held += 1
                return None
            held, self._held, self._last = self._held, 0, now
            return held


def since(held: int) -> str:
    """The tail of a throttled line: ' (N more since the last line)', or nothing."""
    return f" ({held} more since the last line)" if held else ""
