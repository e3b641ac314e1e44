"""What the companion says about drains: nothing per healthy invocation at info, one line when
something goes wrong, and repeats of the same problem folded into counts.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from companion._log import Logger

# A problem that keeps happening is repeated at most this often (seconds), with a count.
REPEAT_INTERVAL = 60.0
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
SIGNALS = (("traces", "spans"), ("metrics", "points"), ("logs", "log records"))


def _dropped(counts: Any) -> int:
    return sum(int(v) for v in counts.dropped.values())


def describe_reply(reply: Any) -> str:
    """One line of a DrainReply's counts, e.g. "exported 20 spans, 0 points, 3 log records"."""

    def per_signal(value: Callable[[Any], int]) -> str:
        return ", ".join(f"{value(getattr(reply, attr))} {noun}" for attr, noun in SIGNALS)

    parts = [f"exported {per_signal(lambda c: int(c.exported))}"]
    buffered = sum(int(getattr(reply, attr).buffered) for attr, _ in SIGNALS)
    if buffered:
        size = sum(int(getattr(reply, attr).buffered_bytes) for attr, _ in SIGNALS)
        parts.append(f"still buffered {per_signal(lambda c: int(c.buffered))} ({size} bytes)")
    spilled = sum(int(getattr(reply, attr).spilled) for attr, _ in SIGNALS)
    if spilled:
        parts.append(f"spilled to stdout {per_signal(lambda c: int(c.spilled))}")
    reasons: dict[str, int] = {}
    for attr, _ in SIGNALS:
        for reason, count in getattr(reply, attr).dropped.items():
            reasons[reason] = reasons.get(reason, 0) + int(count)
    if reasons:
        parts.append(
            f"dropped {per_signal(_dropped)} ("
            + ", ".join(f"{r}: {n}" for r, n in sorted(reasons.items()))
            + ")"
        )
    rejected = _rejected(reply)
    if rejected:
        parts.append(
            "receivers refused "
            + ", ".join(f"{n} requests ({r})" for r, n in sorted(rejected.items()))
            + " since the last drain"
        )
    return "; ".join(parts)


def _rejected(reply: Any) -> dict[str, int]:
    # A collector built before the field existed answers without it.
    field = getattr(reply, "rejected_requests", None)
    return {str(r): int(n) for r, n in field.items()} if field else {}


def _shape(error: str) -> str:
    """An error without its numbers: "no answer within 1.73s" and "... 1.74s" are one problem."""
    return _NUMBER.sub("#", error)


@dataclass
class Totals:
    """Counts over the companion's life, for the shutdown line."""

    drains: int = 0
    failed: int = 0
    exported: dict[str, int] = field(default_factory=lambda: {a: 0 for a, _ in SIGNALS})
    dropped: int = 0
    spilled: int = 0

    def add(self, reply: Any) -> None:
        self.drains += 1
        for attr, _ in SIGNALS:
            counts = getattr(reply, attr)
            self.exported[attr] += int(counts.exported)
            self.dropped += _dropped(counts)
            self.spilled += int(counts.spilled)


class DrainReporter:
    """Turns drain outcomes into log lines; see the module docstring for the policy."""

    def __init__(
        self, log: Logger, *, clock: Callable[[], float] = time.monotonic,
        repeat_interval: float = REPEAT_INTERVAL,
    ) -> None:
        self._log = log
        self._clock = clock
        self._repeat_interval = repeat_interval
        self._key: str | None = None
        self._last_line = 0.0
        self._folded = 0
        self._troubled = 0
        self.totals = Totals()

    def drained(self, reason: str, reply: Any) -> None:
        self.totals.add(reply)
        took = f"{int(reply.duration_us) / 1000:.0f} ms"
        # A collector built before the field existed answers without it.
        handover = getattr(reply, "handover", "")
        if handover:
            waited = int(reply.handover_wait_us) / 1000
            took += f" after a {waited:.0f} ms wait for the hand-over ({handover})"
        dropped = sum(_dropped(getattr(reply, attr)) for attr, _ in SIGNALS)
        refused = bool(_rejected(reply))
        if reply.complete and not dropped and not reply.last_error and not refused:
            self._recovered()
            self._log.debug(f"drain ({reason}) in {took}: {describe_reply(reply)}")
            return
        state = "complete" if reply.complete else "incomplete"
        error = f"; last error: {reply.last_error}" if reply.last_error else ""
        line = f"drain ({reason}) {state} after {took}: {describe_reply(reply)}{error}"
        # Keyed on the kind of problem, not the error text: a stuck backend fails each signal's
        # export in turn, and each would otherwise look like news.
        key = f"{state}|{dropped > 0}|{refused}"
        self._problem(key, line)

    def failed(self, reason: str, error: str) -> None:
        self.totals.failed += 1
        self._problem(f"failed|{_shape(error)}", f"drain ({reason}) failed: {error}")

    def noticed(self, reason: str, problem: str) -> None:
        """A problem around a drain that did not fail it (folded like the others)."""
        self._problem(f"noticed|{_shape(problem)}", f"drain ({reason}): {problem}", drain=False)

    def _problem(self, key: str, line: str, *, drain: bool = True) -> None:
        # Only drain problems make the next clean drain say "complete again".
        self._troubled += drain
        now = self._clock()
        if key != self._key or now - self._last_line >= self._repeat_interval:
            if self._folded:
                line += f" ({self._folded} more drains with problems since the last line)"
            self._log.warning(line)
            self._key, self._last_line, self._folded = key, now, 0
        else:
            self._folded += 1
            self._log.debug(line)

    def _recovered(self) -> None:
        if self._troubled:
            self._log.info(f"drains complete again after {self._troubled} with problems")
        self._key, self._folded, self._troubled = None, 0, 0
