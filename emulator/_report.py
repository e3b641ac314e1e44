"""What the emulator tells people and tools: its own lines on stderr, the processes' output on
stdout, and one JSON record per init and per invocation (--report), with a summary line each."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import IO, Any


class Console:
    """The emulator's own lines ('emulator: ...') and the environment's output, unchanged."""

    def __init__(self, err: IO[str], out: IO[str]) -> None:
        self._err = err
        self._out = out

    def info(self, message: str) -> None:
        self._err.write(f"emulator: {message}\n")
        self._err.flush()

    def echo(self, line: str) -> None:
        self._out.write(line + "\n")
        self._out.flush()


def _fmt(value: Any, unit: str = " ms") -> str:
    return "-" if value is None else f"{value}{unit}"


class Reporter:
    """Appends records as JSON lines to the report file and prints a summary of each."""

    def __init__(self, path: Path | None, console: Console) -> None:
        self._console = console
        self._file: IO[str] | None = path.open("a", encoding="utf-8") if path else None

    def write(self, record: dict[str, Any]) -> None:
        record = {"time": round(time.time(), 3), **record}
        if self._file is not None:
            self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
            self._file.flush()
        if record.get("kind") == "init":
            error = f" errorType={record['errorType']}" if record.get("errorType") else ""
            self._console.info(
                f"INIT status={record['status']} duration={record['initDurationMs']} ms{error}"
            )
            return
        error = f" errorType={record['errorType']}" if record.get("errorType") else ""
        init = f" init={record['initDurationMs']} ms" if record.get("initDurationMs") else ""
        rss = record.get("maxRssBytes")
        self._console.info(
            f"REPORT requestId={record['requestId']} status={record['status']}{error}"
            f" caller={_fmt(record['callerLatencyMs'])}"
            f" runtime={_fmt(record['runtimeDurationMs'])}"
            f" postRuntime={_fmt(record['postRuntimeDurationMs'])}"
            f" duration={_fmt(record['durationMs'])}"
            f" billed={_fmt(record['billedDurationMs'])}{init}"
            f" maxRss={_fmt(None if rss is None else round(rss / 1048576, 1), ' MB')}"
        )

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
