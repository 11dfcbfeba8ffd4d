"""Request log lines under `python app.py` (werkzeug) and gunicorn: level, colour, redaction.

The dashboard's sign-in link carries `?token=`: no request log may keep it, whichever server writes it.
"""

from __future__ import annotations

import logging
import re
import sys

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


class StripColour(logging.Filter):
    """Drop ANSI colour codes: werkzeug colours request lines even when they go to a file."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message in place; never drop it."""
        message = record.getMessage()
        if "\x1b[" in message:
            record.msg, record.args = _ANSI.sub("", message), ()
        return True


def configure_werkzeug(level: str) -> None:
    """LOG_LEVEL governs werkzeug's request lines (it sets itself to INFO otherwise); tokens never show;
    colour only on a terminal. Safe to call more than once."""
    logger = logging.getLogger(WERKZEUG)
    logger.setLevel(level)
    wanted = [RedactTokens] + ([] if sys.stderr.isatty() else [StripColour])
    for kind in wanted:
        if not any(isinstance(f, kind) for f in logger.filters):
            logger.addFilter(kind())
