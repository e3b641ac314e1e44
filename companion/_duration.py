"""Durations as the collector's config writes them (Go's time.ParseDuration: "1m30s", "250ms").

The companion's settings (AFTERFLUSH_DRAIN_TIMEOUT and the like) take the same syntax.
"""

from __future__ import annotations

import datetime
import re
from decimal import Decimal, InvalidOperation

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_NANOS = {
    "ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000,
    "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000,
}


def parse_duration(text: str) -> datetime.timedelta:
    """"1m30s", "250ms", "1.5s", "-2h", "0" -> timedelta (to the microsecond); raises
    ValueError for anything else, including a number without a unit."""
    body = text[1:] if text[:1] in ("+", "-") else text
    if body == "0":
        return datetime.timedelta(0)
    if not body:
        raise ValueError(f'invalid duration "{text}"')
    nanos = Decimal(0)
    pos = 0
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        if match is None:
            raise ValueError(f'invalid duration "{text}"')
        try:
            nanos += Decimal(match.group(1)) * _UNIT_NANOS[match.group(2)]
        except InvalidOperation as exc:
            raise ValueError(f'invalid duration "{text}"') from exc
        pos = match.end()
    micros = int((nanos / 1000).to_integral_value())
    try:
        delta = datetime.timedelta(microseconds=micros)
    except OverflowError as exc:
        raise ValueError(f'duration "{text}" is too large') from exc
    return -delta if text.startswith("-") else delta
