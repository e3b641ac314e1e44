"""The collector's log records (the Collector's zap JSON lines) as lines of the function's log,
in the companion's format: "[afterflush collector] LEVEL message (detail)" or JSON."""

from __future__ import annotations

import json
from typing import Any

PREFIX = "[afterflush collector] "
_LEVELS = {"debug": "DEBUG", "info": "INFO", "warn": "WARNING", "error": "ERROR",
           "dpanic": "CRITICAL", "panic": "CRITICAL", "fatal": "CRITICAL"}
# Fields every record carries that say nothing a reader of one line needs.
_NOISE = frozenset({"level", "ts", "caller", "msg", "resource", "otelcol.component.kind",
                    "otelcol.signal", "otelcol.pipeline.id", "otelcol.component.id", "grpc_log"})
# The collector's own component: its messages are the companion's vocabulary, unprefixed.
_OWN = "flushcontrol"
# The Collector's service narrating its start and stop ("Starting extensions...", "Everything
# is ready."): a dozen lines per cold start that say less than the one "ready in" line.
_LIFECYCLE_CALLERS = ("service@", "otelcol@", "extensions/", "graph/", "builders/",
                      "otelconftelemetry/")


def format_line(raw: bytes, *, json_format: bool) -> bytes:
    """One output line of the collector, rewritten when it is a log record; anything else
    (a config problem printed before logging starts, a panic) passes as it is. gRPC's own
    chatter and the Collector's start and stop narration below WARNING are dropped (b"")."""
    record = _record(raw)
    if record is None:
        return raw
    level = _LEVELS.get(str(record.get("level")), "INFO")
    if level in ("DEBUG", "INFO") and (
        record.get("grpc_log") or str(record.get("caller", "")).startswith(_LIFECYCLE_CALLERS)
    ):
        return b""
    message = " | ".join(p for p in str(record.get("msg", "")).splitlines() if p.strip())
    component = record.get("otelcol.component.id")
    if isinstance(component, str) and component and component.split("/")[0] != _OWN:
        message = f"{component}: {message}"
    detail = {k: v for k, v in record.items() if k not in _NOISE}
    if json_format:
        out: dict[str, Any] = {"timestamp": record.get("ts"), "level": level,
                               "logger": "afterflush-collector", "message": message, **detail}
        return (json.dumps(out, default=str) + "\n").encode()
    if detail:
        message += " (" + ", ".join(f"{k}: {_text(v)}" for k, v in detail.items()) + ")"
    return f"{PREFIX}{level} {message}\n".encode()


def _record(raw: bytes) -> dict[str, Any] | None:
    text = raw.strip()
    if not text.startswith(b"{"):
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    if isinstance(record, dict) and "msg" in record and "level" in record:
        return record
    return None


def _text(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return " | ".join(p for p in text.splitlines() if p.strip())
