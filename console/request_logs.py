"""Request log lines under `python app.py` (werkzeug) and gunicorn: level, colour, redaction.

The dashboard's sign-in link carries `?token=`: no request log may keep it, whichever server writes it. A search
for a caller (`?caller=`) is masked like every caller number in the log, unless LOG_CALLER_NUMBERS=full.
"""

from __future__ import annotations

import logging
import re
import sys

from quorum.caller_numbers import FULL, masked

WERKZEUG = "werkzeug"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class RedactTokens(logging.Filter):
    """Blank `token=` query values in log lines (the `?token=` of a request line, or a bare query string)."""

    PATTERN = re.compile(r"(token=)[^&\s\"]+")

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message in place; never drop it."""
        message = record.getMessage()
        if "token=" in message:
            record.msg, record.args = self.PATTERN.sub(r"\1REDACTED", message), ()
        return True


class MaskCallerNumbers(logging.Filter):
    """Mask `caller=` query values in log lines (the history's and the API's search by caller)."""

    PATTERN = re.compile(r"(caller=)([^&\s\"]+)")

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message in place; never drop it."""
        message = record.getMessage()
        if "caller=" in message:
            record.msg, record.args = self.PATTERN.sub(lambda m: m.group(1) + masked(m.group(2)), message), ()
        return True


def redact(logger: logging.Logger, caller_numbers: str = "masked") -> None:
    """Give a request logger its filters (once each): tokens never show, callers as LOG_CALLER_NUMBERS says."""
    for kind in (RedactTokens, MaskCallerNumbers):
        for old in [f for f in logger.filters if isinstance(f, kind)]:
            logger.removeFilter(old)
        if kind is RedactTokens or caller_numbers != FULL:
            logger.addFilter(kind())


class StripColour(logging.Filter):
    """Drop ANSI colour codes: werkzeug colours request lines even when they go to a file."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message in place; never drop it."""
        message = record.getMessage()
        if "\x1b[" in message:
            record.msg, record.args = _ANSI.sub("", message), ()
        return True


def configure_werkzeug(level: str, caller_numbers: str = "masked") -> None:
    """LOG_LEVEL governs werkzeug's request lines (it sets itself to INFO otherwise); tokens never show, callers
    as LOG_CALLER_NUMBERS says; colour only on a terminal. Safe to call more than once."""
    logger = logging.getLogger(WERKZEUG)
    logger.setLevel(level)
    redact(logger, caller_numbers)
    if not sys.stderr.isatty() and not any(isinstance(f, StripColour) for f in logger.filters):
        logger.addFilter(StripColour())
