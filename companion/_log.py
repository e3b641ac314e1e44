"""The companion's log lines: one line per event worth knowing, on stderr.

Plain text prefixed with "[afterflush] ", or one JSON object per line when Lambda's log format
is JSON.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TextIO

DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40
_NAMES = {DEBUG: "DEBUG", INFO: "INFO", WARNING: "WARNING", ERROR: "ERROR"}
PREFIX = "[afterflush] "


class Logger:
    """Writes whole lines and flushes each, so that Lambda never sees a partial line."""

    def __init__(
        self,
        stream: TextIO,
        *,
        level: int = INFO,
        json_format: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._stream = stream
        self.level = level
        self._json = json_format
        self._clock = clock

    def enabled(self, level: int) -> bool:
        return level >= self.level

    def debug(self, message: str, **fields: object) -> None:
        self.log(DEBUG, message, **fields)

    def info(self, message: str, **fields: object) -> None:
        self.log(INFO, message, **fields)

    def warning(self, message: str, **fields: object) -> None:
        self.log(WARNING, message, **fields)

    def error(self, message: str, **fields: object) -> None:
        self.log(ERROR, message, **fields)

    def log(self, level: int, message: str, **fields: object) -> None:
        """`fields` add machine-readable detail to JSON lines; text lines carry the message."""
        if level < self.level:
            return
        # A message must stay one line whatever a child process or server put into it.
        message = " | ".join(part for part in message.splitlines() if part.strip()) or message
        if self._json:
            record: dict[str, object] = {
                "timestamp": datetime.fromtimestamp(self._clock(), UTC).isoformat(
                    timespec="milliseconds"
                ).replace("+00:00", "Z"),
                "level": _NAMES.get(level, str(level)),
                "logger": "afterflush",
                "message": message,
            }
            record.update(fields)
            line = json.dumps(record, default=str)
        else:
            line = f"{PREFIX}{_NAMES.get(level, str(level))} {message}"
        try:
            self._stream.write(line + "\n")
            self._stream.flush()
        except (OSError, ValueError):
            # A closed or broken stderr must not take the extension down with it.
            pass
