"""The collector's one error tree; library exceptions are converted at the boundary.

AfterflushError
 ├── ConfigError            the configuration is invalid (carries every problem at once)
 ├── BackpressureError      a buffer is full; the sender should retry after retry_after seconds
 ├── ExportError            an export attempt failed (retryable, retry_after)
 │    └── PermanentExportError   the backend refused the data for good
 └── ControlError           the control endpoint could not be reached or answered badly
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class AfterflushError(Exception):
    """Base of every error afterflush raises on purpose."""


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in a configuration: where it is and what is wrong."""

    path: str  # key path joined with "::", e.g. "processors::flushcontrol::max_buffer_size_mib"
    message: str
    file: str = ""
    line: int = 0  # 1-based; 0 when unknown

    def __str__(self) -> str:
        where = f" ({self.file}:{self.line})" if self.file and self.line else ""
        path = self.path or "<root>"
        return f"{path}{where}: {self.message}"


class ConfigError(AfterflushError):
    """The configuration is invalid; `problems` lists every problem found."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class BackpressureError(AfterflushError):
    """A buffer has no room; the sender should retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ExportError(AfterflushError):
    """An export failed; `retryable` tells whether trying again may succeed."""

    def __init__(self, message: str, *, retryable: bool = True, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class PermanentExportError(ExportError):
    """The backend refused the data; sending it again cannot succeed."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class ControlError(AfterflushError):
    """The control endpoint could not be reached, or its answer was not understood."""
