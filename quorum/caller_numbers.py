"""Caller numbers as log lines show them: masked to their last four digits unless LOG_CALLER_NUMBERS=full."""

from __future__ import annotations

SHOWN = 4  # the last digits a masked number keeps: enough to tell callers apart, too few to call them back
FULL = "full"


def masked(number: str) -> str:
    """`+15551230000` -> `+1******0000`: the `+` and the country code's first digit, then the last SHOWN."""
    head = number[:2] if number.startswith("+") else ""
    rest = number[len(head) :]
    return head + "*" * max(0, len(rest) - SHOWN) + rest[-SHOWN:]


def for_log(number: str, setting: str) -> str:
    """The number as LOG_CALLER_NUMBERS says a log line may show it (`masked`, the default, or `full`)."""
    return number if setting == FULL else masked(number)
