"""The housekeeping thread: the controller's periodic work (re-drive, sweep, reconcile, repair), each at its period."""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Callable

from quorum import redis_outage
from quorum.controller import RecordingController

log = logging.getLogger("quorum.controller")

REDRIVE_S = 5.0  # between re-drives: the longest retry backoff (the sweep's min(30, END_GRACE_S / 2) is 30 s)


class Housekeeper(threading.Thread):
    """Sweeps every `sweep_s`, reconciles every `reconcile_s`, repairs every `repair_s` (0: never) and re-drives
    every `redrive_s`."""

    def __init__(
        self,
        controller: RecordingController,
        sweep_s: float,
        reconcile_s: float,
        on_sweep: Callable[[], None] = lambda: None,
        repair_s: float = 0.0,
        redrive_s: float = REDRIVE_S,
        on_redrive: Callable[[], object] = lambda: None,
    ):
        super().__init__(name="quorum-housekeeper", daemon=True)
        self._controller = controller
        self._on_sweep = on_sweep  # run after each sweep: the archive's upkeep, wired in app.py
        self._on_redrive = on_redrive  # run after each re-drive: secure pauses past their deadline, wired in app.py
        self._sweep_s = sweep_s
        self._reconcile_s = reconcile_s
        self._repair_s = repair_s
        self._redrive_s = redrive_s
        self._stopped = threading.Event()

    def run(self) -> None:
        """Re-drive, sweep, reconcile and repair until stopped, each at its own period."""
        jobs = [
            (self._redrive_s, self._redrive),
            (self._sweep_s, self._sweep),
            (self._reconcile_s, self._controller.reconcile),
            (self._repair_s, self._controller.repair),
        ]
        due = [time.monotonic() + period if period else math.inf for period, _ in jobs]
        while not self._stopped.wait(max(0.0, min(due) - time.monotonic())):
            for i, (period, job) in enumerate(jobs):
                if time.monotonic() < due[i]:
                    continue
                due[i] = time.monotonic() + period
                try:
                    job()
                except Exception as error:  # a store outage must not end housekeeping for good
                    if not redis_outage.reported(error):
                        log.exception("housekeeping round failed; trying again")

    def _redrive(self) -> None:
        """One re-drive, then what is due on it (secure pauses past their deadline)."""
        self._controller.redrive()
        self._on_redrive()

    def _sweep(self) -> None:
        """One sweep, then the archive's upkeep."""
        self._controller.sweep()
        self._on_sweep()

    def stop(self) -> None:
        """Ask the thread to end after its current round."""
        self._stopped.set()
