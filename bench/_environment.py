"""One execution environment of a mode at a memory size: started under the emulator, warmed up
until the function and (with the layer) the collector serve, measured, always stopped.

Also what its processes say about themselves: peak RSS, RSS and PSS per role, the companion's
ready line, the collector's (the Go binary's "ready in N ms (pid P)", as the companion writes
it to the function's log), and with JSON logs when each of them happened.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._deploy import HANDLER, Mode, Workspace
from bench._errors import BenchError
from bench._procs import (
    Backend,
    Emulator,
    anon_rss_bytes,
    peak_rss_bytes,
    pss_bytes,
    rss_bytes,
    wait_for,
)

# The function's timeout: long enough for three exports of 1 s each and a slow init.
FUNCTION_TIMEOUT_S = 30.0
# Cold inits that time out before one succeeds; more is a failure.
MAX_INIT_ATTEMPTS = 4
# Longest a warm-up invocation may take, a slow Init included.
WARM_UP_INVOKE_TIMEOUT_S = 150.0
READY_LINE = re.compile(
    r"ready in (?P<ready>\d+(?:\.\d+)?) ?ms \(registered (?P<registered>\d+(?:\.\d+)?) ?ms, "
    r"collector ready (?P<collector>\d+(?:\.\d+)?) ?ms\)"
)
# The collector's own line, timed from its process start: its zap record's message, which the
# companion writes as "[afterflush collector] INFO ready in 27 ms (pid 1681)" (or, with JSON
# logs, as the "message" of a record of logger "afterflush-collector").
COLLECTOR_READY_LINE = re.compile(r"ready in (?P<ready>\d+(?:\.\d+)?) ?ms \(pid (?P<pid>\d+)\)")
# The companion's ready line (the collector started and answered its Status call), or its line
# for a collector that became ready after a restart.
COLLECTOR_UP = re.compile(r"collector ready in \d+|collector ready \d+")
COMPANION_LOGGER = "afterflush"
COLLECTOR_LOGGER = "afterflush-collector"
ROLES = ("companion", "collector", "runtime")
MIB = 2**20


def role_of(cmdline: list[str]) -> str | None:
    text = " ".join(cmdline)
    if cmdline and os.path.basename(cmdline[0]) == "afterflush-collector":
        return "collector"
    if "launch.py" in text:
        return "companion"
    if "awslambdaric" in text:
        return "runtime"
    return None


@dataclass
class Environment:
    """A started environment; `invoke` measures one invocation on it."""

    mode: Mode
    memory_mb: int
    emulator: Emulator
    init_records: list[dict[str, Any]] = field(default_factory=list)

    def invoke(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """The invocation's record; BenchError when it did not succeed."""
        result, record = self.emulator.invoke(dict(event), timeout=FUNCTION_TIMEOUT_S * 2)
        if result.status != 200 or record.get("status") != "success":
            raise BenchError(
                f"{self.mode} at {self.memory_mb} MB: invocation answered {result.status} "
                f"({record.get('status')}, {record.get('errorType')}): {result.body[:200]!r}"
            )
        return record

    def log_text(self) -> str:
        try:
            return self.emulator.process.log.read_text(errors="replace")
        except OSError:
            return ""

    def collector_up(self) -> bool:
        return self.mode is Mode.FLOOR or COLLECTOR_UP.search(self.log_text()) is not None

    def _by_role(self, read: Callable[[int], int | None],
                  combine: Callable[[float, float], float]) -> dict[str, float | None]:
        """`read` (bytes) of each process of ours in the environment, in MiB, per role; two
        processes of one role (a collector and its restart) are combined with `combine`."""
        found: dict[str, float | None] = dict.fromkeys(ROLES)
        for proc in self.emulator.descendants():
            with contextlib.suppress(Exception):
                role = role_of(proc.cmdline())
                value = read(proc.pid)
                if role is not None and value is not None:
                    before = found[role]
                    mib = value / MIB
                    found[role] = round(mib if before is None else combine(before, mib), 1)
        return found

    def peak_rss_mb(self) -> dict[str, float | None]:
        """Peak RSS (VmHWM) of each process of ours in the environment so far, in MiB."""
        return self._by_role(peak_rss_bytes, max)

    def rss_mb(self) -> dict[str, float | None]:
        """RSS (VmRSS) of each process of ours now, in MiB: at rest between invocations."""
        return self._by_role(rss_bytes, lambda a, b: a + b)

    def anon_rss_mb(self) -> dict[str, float | None]:
        """The anonymous part of each one's RSS now (RssAnon), in MiB: RSS less the pages of
        its executable and shared libraries."""
        return self._by_role(anon_rss_bytes, lambda a, b: a + b)

    def pss_mb(self) -> dict[str, float | None]:
        """Proportional set size of each process of ours now, in MiB: shared pages (the same
        libraries mapped by the companion and the collector) counted once between them."""
        return self._by_role(pss_bytes, lambda a, b: a + b)

    def wait_init(self, timeout: float = 30.0) -> dict[str, Any]:
        """The first Init's record (with init_now), waiting for it (bounded)."""
        return wait_for(lambda: next(iter(self.emulator.init_records()), None), timeout,
                        f"{self.mode} Init at {self.memory_mb} MB", self.emulator.process.proc)

    def companion_ready(self) -> dict[str, float] | None:
        """The companion's own start-up breakdown from its ready line, in ms."""
        match = READY_LINE.search(self.log_text())
        if match is None:
            return None
        return {
            "registered_ms": float(match["registered"]),
            "collector_ready_ms": float(match["collector"]),
            "first_next_ms": float(match["ready"]),
        }

    def collector_ready_ms(self) -> float | None:
        """The collector's own ready line: ms from its process start to serving (the first
        start's, when it was restarted)."""
        match = COLLECTOR_READY_LINE.search(self.log_text())
        return None if match is None else float(match["ready"])

    def init_timeline(self, sent_at: float, imported_at: float | None) -> dict[str, float | None]:
        """When each step of Init happened, in ms from `sent_at` (the wall-clock time the
        invocation that started Init was sent), from the JSON log records' timestamps (ms
        resolution; the environment ran with AWS_LAMBDA_LOG_FORMAT=JSON) and `imported_at`
        (when the function's module finished importing, its own time.time()): the companion's
        start and registration (its ready line's timestamp less the durations it gives), the
        collector's start and ready (its ready line), the runtime ready (the function module
        imported: the runtime calls next right after), the companion's first next (its ready
        line)."""
        timeline: dict[str, float | None] = dict.fromkeys(TIMELINE)

        def since(at: float | None) -> float | None:
            return None if at is None else round((at - sent_at) * 1000, 1)

        companion = collector = None
        for record in _json_records(self.log_text()):
            message = str(record.get("message", ""))
            logger = record.get("logger")
            if companion is None and logger == COMPANION_LOGGER:
                match = READY_LINE.search(message)
                if match and (at := _wall(record.get("timestamp"))) is not None:
                    companion = (at, match)
            elif collector is None and logger == COLLECTOR_LOGGER:
                found = COLLECTOR_READY_LINE.search(message)
                if found and (at := _wall(record.get("timestamp"))) is not None:
                    collector = (at, found)
        if companion is not None:
            at, match = companion
            started = at - float(match["ready"]) / 1000
            timeline["companion_started_ms"] = since(started)
            timeline["companion_registered_ms"] = since(started + float(match["registered"]) / 1000)
            timeline["first_next_ms"] = since(at)
        if collector is not None:
            at, found = collector
            timeline["collector_started_ms"] = since(at - float(found["ready"]) / 1000)
            timeline["collector_ready_ms"] = since(at)
        timeline["runtime_ready_ms"] = since(imported_at)
        return timeline


# The steps of Init, in the order they usually happen.
TIMELINE = ("companion_started_ms", "companion_registered_ms", "collector_started_ms",
            "collector_ready_ms", "runtime_ready_ms", "first_next_ms")


def _json_records(text: str) -> Iterator[dict[str, Any]]:
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            yield record


def _wall(stamp: object) -> float | None:
    """An ISO 8601 timestamp ("2026-12-04T19:50:48.674Z") or epoch seconds, as epoch seconds."""
    if isinstance(stamp, int | float):
        return float(stamp)
    if not isinstance(stamp, str):
        return None
    try:
        return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@contextlib.contextmanager
def environment(
    ws: Workspace,
    backend: Backend,
    mode: Mode,
    memory_mb: int,
    workdir: Path,
    *,
    extra_env: Mapping[str, str] | None = None,
    init_timeout: float | None = None,
    opt: Path | None = None,
    init_now: bool = False,
    init_burst: bool = True,
) -> Iterator[Environment]:
    """A fresh environment of `mode` at `memory_mb`, initialised on its first invocation (or
    at once with `init_now`); Init has Lambda's 10 s unless `init_timeout` says otherwise, and
    Lambda's burst CPU unless `init_burst` is False (the size's share throughout). `opt`
    replaces the mode's layer directory."""
    shutil.rmtree(workdir, ignore_errors=True)
    env = {**ws.function_env(mode, workdir, backend.http), **(extra_env or {})}
    emulator = Emulator(
        workdir, opt=opt or ws.opt_for(mode), task=ws.task, handler=HANDLER, memory=memory_mb,
        env=env, runtime_python=ws.runtime.python, process_env=ws.process_env(os.environ),
        timeout=FUNCTION_TIMEOUT_S, init_timeout=init_timeout, init_now=init_now,
        init_burst=init_burst,
    )
    with emulator:
        yield Environment(mode, memory_mb, emulator)


def warm_up(env: Environment, invocations: int, event: Mapping[str, Any]) -> None:
    """Invokes until an init succeeded and the collector serves (the first invocations of a
    slow start pass through while it comes up), then `invocations` more. The init records
    (failed ones too) are kept on `env`."""
    attempts = 0
    deadline = time.monotonic() + MAX_INIT_ATTEMPTS * WARM_UP_INVOKE_TIMEOUT_S
    while True:
        attempts += 1
        result, record = env.emulator.invoke(dict(event), timeout=WARM_UP_INVOKE_TIMEOUT_S)
        ok = result.status == 200 and record.get("status") == "success"
        if ok and env.collector_up():
            break
        if attempts >= MAX_INIT_ATTEMPTS + invocations or time.monotonic() > deadline:
            raise BenchError(
                f"{env.mode} at {env.memory_mb} MB did not come up after {attempts} "
                f"invocations (last: {record.get('status')} {record.get('errorType') or ''})"
                f"\n{env.emulator.process.tail()}"
            )
    for _ in range(invocations):
        env.invoke(event)
    env.init_records = env.emulator.init_records()
