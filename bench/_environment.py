"""One execution environment of a mode at a memory size: started under the emulator, warmed up
until the function and (with the layer) the collector serve, measured, always stopped.

Also what its processes say about themselves: peak RSS per role, the companion's ready line.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._deploy import HANDLER, Mode, Workspace
from bench._errors import BenchError
from bench._procs import Backend, Emulator, peak_rss_bytes, pss_bytes, wait_for

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
COLLECTOR_UP = re.compile(r"collector ready in \d+|collector ready \d+")
ROLES = ("companion", "collector", "runtime")


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

    def peak_rss_mb(self) -> dict[str, float | None]:
        """Peak RSS (VmHWM) of each process of ours in the environment so far, in MiB."""
        found: dict[str, float | None] = dict.fromkeys(ROLES)
        for proc in self.emulator.descendants():
            with contextlib.suppress(Exception):
                role = role_of(proc.cmdline())
                peak = peak_rss_bytes(proc.pid)
                if role is not None and peak is not None:
                    found[role] = round(max(found[role] or 0, peak / 2**20), 1)
        return found

    def pss_mb(self) -> dict[str, float | None]:
        """Proportional set size of each process of ours now, in MiB: shared pages (the same
        libraries mapped by the companion and the collector) counted once between them."""
        found: dict[str, float | None] = dict.fromkeys(ROLES)
        for proc in self.emulator.descendants():
            with contextlib.suppress(Exception):
                role = role_of(proc.cmdline())
                pss = pss_bytes(proc.pid)
                if role is not None and pss is not None:
                    found[role] = round((found[role] or 0) + pss / 2**20, 1)
        return found

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
) -> Iterator[Environment]:
    """A fresh environment of `mode` at `memory_mb`, initialised on its first invocation (or
    at once with `init_now`); Init has Lambda's 10 s unless `init_timeout` says otherwise.
    `opt` replaces the mode's layer directory."""
    shutil.rmtree(workdir, ignore_errors=True)
    env = {**ws.function_env(mode, workdir, backend.http), **(extra_env or {})}
    emulator = Emulator(
        workdir, opt=opt or ws.opt_for(mode), task=ws.task, handler=HANDLER, memory=memory_mb,
        env=env, runtime_python=ws.runtime.python, process_env=ws.process_env(os.environ),
        timeout=FUNCTION_TIMEOUT_S, init_timeout=init_timeout, init_now=init_now,
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
