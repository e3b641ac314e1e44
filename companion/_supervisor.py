"""Starts the collector as a child process, waits until it is ready, and restarts it when it
exits; the companion asks it for `control` only while it is ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import os
import re
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

from companion._collector_log import format_line
from companion._control import socket_path
from companion._log import Logger
from companion._spawn import spawn_collector
from companion.errors import ControlError

# The collector binary exits with this status when its config is invalid: starting it again
# cannot help.
EXIT_CONFIG_INVALID = 2
# How long a collector that missed the ready timeout may still become ready before it is
# taken for hung and restarted.
LATE_READY_WINDOW = 60.0
# A collector that stayed up this long resets the restart backoff.
STABLE_AFTER = 30.0
READY_POLL = 0.01
LATE_READY_POLL = 0.25
STATUS_CALL_TIMEOUT = 0.5
STDERR_TAIL_LINES = 50
# How long the last output of an exited collector may take to arrive through the pipe.
STDERR_DRAIN_TIMEOUT = 1.0
# Start-up output is held back so that config errors are logged once, in the companion's own
# line; past this many lines it is passed on anyway.
MAX_HELD_LINES = 200


class Control(Protocol):
    """The part of companion._control.ControlClient the companion uses."""

    async def status(self, *, timeout: float) -> Any: ...

    async def drain(
        self, *, timeout: float, request_id: str = "", reason: str = "manual",
        spill_remaining: bool = False,
    ) -> Any: ...

    async def aclose(self) -> None: ...


class StartOutcome(enum.Enum):
    READY = "ready"
    CONFIG_INVALID = "config invalid"
    NOT_READY = "not ready"
    EXITED = "exited"
    STOPPED = "stopped"


@dataclass(frozen=True)
class StartReport:
    """How the first start went: `detail` is the reason when it did not become ready."""

    outcome: StartOutcome
    detail: str = ""
    elapsed: float = 0.0  # seconds from spawn to the outcome


class Backoff:
    """Restart delays: `initial` doubling up to `maximum`."""

    def __init__(self, initial: float = 0.2, maximum: float = 10.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.failures = 0

    def next_delay(self) -> float:
        delay = min(self.maximum, self.initial * 2.0**self.failures)
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"status {code}"


def message_of(line: str) -> str:
    """The text of one collector output line, whether plain or a JSON log record."""
    stripped = line.strip()
    if stripped.startswith("{"):
        with contextlib.suppress(ValueError):
            record = json.loads(stripped)
            if isinstance(record, dict) and isinstance(record.get("message"), str):
                return str(record["message"])
    return stripped


_LOG_PREFIX = re.compile(r"^\[[^\]]*\]\s+(?:DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+")


def summarize_output(lines: Sequence[str]) -> str:
    """The collector's start-up output as one line: prefixes dropped, a heading that ends in
    ":" joined to what follows, other lines separated by "; "."""
    parts: list[str] = []
    for raw in lines:
        text = _LOG_PREFIX.sub("", message_of(raw))
        if not text:
            continue
        if parts and parts[-1].endswith(":"):
            parts[-1] += " " + text
        else:
            parts.append(text)
    return "; ".join(parts)


class Child:
    """A collector process started with subprocess.Popen, watched from the event loop: its
    exit through a pidfd (a waiting thread where there is none), its stderr as a stream."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.stderr: asyncio.StreamReader | None = None
        self._exited: asyncio.Future[int] | None = None
        self._transport: asyncio.BaseTransport | None = None
        self._waiter: asyncio.Task[None] | None = None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    async def attach(self) -> None:
        """Starts watching; call once, from the loop."""
        loop = asyncio.get_running_loop()
        self._exited = loop.create_future()
        if self.popen.stderr is not None:
            reader = asyncio.StreamReader(limit=64 * 1024)
            self._transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), self.popen.stderr
            )
            self.stderr = reader
        try:
            fd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            self._waiter = asyncio.create_task(self._wait_in_thread())
            return
        loop.add_reader(fd, self._on_pidfd, loop, fd)

    def _on_pidfd(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        loop.remove_reader(fd)
        os.close(fd)
        self._set_exit(self.popen.wait())

    async def _wait_in_thread(self) -> None:
        self._set_exit(await asyncio.to_thread(self.popen.wait))

    def _set_exit(self, code: int) -> None:
        if self._exited is not None and not self._exited.done():
            self._exited.set_result(code)

    async def wait(self) -> int:
        """The exit status, once the process has exited (any number of waiters)."""
        assert self._exited is not None, "attach() first"
        return await asyncio.shield(self._exited)

    def terminate(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.popen.terminate()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.popen.kill()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class CollectorSupervisor:
    """Owns the collector process: start, readiness, restarts with backoff, and stop."""

    def __init__(
        self,
        *,
        command: Sequence[str],
        env: Mapping[str, str],
        endpoint: str,
        log: Logger,
        ready_timeout: float,
        control_factory: Callable[[str], Control],
        backoff: Backoff | None = None,
        output: BinaryIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        first: subprocess.Popen[bytes] | None = None,
        first_spawned_at: float | None = None,
        json_logs: bool = False,
    ) -> None:
        """`first` is a collector main() already started (at `first_spawned_at`, on `clock`);
        the collector's log records are written in the companion's format (JSON lines with
        `json_logs`)."""
        self._command = list(command)
        self._env = dict(env)
        self._endpoint = endpoint
        self._socket = socket_path(endpoint)
        self._log = log
        self._ready_timeout = ready_timeout
        self._control_factory = control_factory
        self._backoff = backoff or Backoff()
        self._output = output
        self._json_logs = json_logs
        self._clock = clock
        self._proc: Child | None = None
        self._prestarted = first
        self._prestarted_at = first_spawned_at
        self._control: Control | None = None
        self._stopping = asyncio.Event()
        self._first_done = asyncio.Event()
        self._first: StartReport | None = None
        self._tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._held: list[bytes] | None = None
        self._stderr_closed = asyncio.Event()
        self.disabled_reason = ""
        self.restarts = 0
        self.pid = 0

    @property
    def control(self) -> Control | None:
        """The collector's control client while it is ready, else None."""
        return self._control

    @property
    def ready(self) -> bool:
        return self._control is not None

    async def wait_first_start(self, timeout: float) -> StartReport:
        """The first start's outcome; NOT_READY if it is not known within `timeout`."""
        try:
            async with asyncio.timeout(timeout):
                await self._first_done.wait()
        except TimeoutError:
            return StartReport(StartOutcome.NOT_READY, "no outcome in time", timeout)
        assert self._first is not None
        return self._first

    def _first_outcome(self, report: StartReport) -> bool:
        """Records the first start's outcome; False when it was recorded already."""
        if self._first_done.is_set():
            return False
        self._first = report
        self._first_done.set()
        return True

    async def run(self) -> None:
        """Keeps a collector running until stop(); returns, never raises, when it cannot."""
        try:
            while not self._stopping.is_set():
                restart = await self._run_once()
                if not restart or self._stopping.is_set():
                    break
                delay = self._backoff.next_delay()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._stopping.wait()
        finally:
            self._first_outcome(StartReport(StartOutcome.STOPPED, "stopped"))

    def _spawn(self) -> tuple[subprocess.Popen[bytes], float]:
        if self._prestarted is not None:
            popen, self._prestarted = self._prestarted, None
            return popen, self._prestarted_at if self._prestarted_at is not None else self._clock()
        return spawn_collector(self._command, self._env, self._socket), self._clock()

    async def _run_once(self) -> bool:
        """Runs one collector process to its end; returns whether to start another."""
        self._tail.clear()
        self._held = []
        self._stderr_closed = asyncio.Event()
        try:
            popen, started = self._spawn()
        except OSError as exc:
            reason = f"cannot start the collector ({' '.join(self._command)}): {exc}"
            if self._first_outcome(StartReport(StartOutcome.EXITED, reason, 0.0)):
                self._log.error(f"{reason}; INVOKEs pass through, retrying")
            else:
                self._log.error(reason)
            return True
        proc = Child(popen)
        try:
            await proc.attach()
        except OSError as exc:
            # Without a way to watch it, the process would be unsupervised: end it.
            proc.kill()
            popen.wait()
            self._log.error(f"cannot watch the collector process: {exc}")
            return True
        self._proc = proc
        self.pid = proc.pid
        if self._stopping.is_set():
            await self._terminate(proc, 1.0)
            proc.close()
            return False
        control = self._control_factory(self._endpoint)
        try:
            async with asyncio.TaskGroup() as tasks:
                pump = tasks.create_task(self._pump_stderr(proc))
                restart = await self._supervise(proc, control, started)
                # A grandchild holding the pipe open must not keep this task alive.
                _, pending = await asyncio.wait({pump}, timeout=1.0)
                for task in pending:
                    task.cancel()
            return restart
        finally:
            self._control = None
            self._release_held()
            proc.close()
            with contextlib.suppress(Exception):
                await control.aclose()

    async def _supervise(self, proc: Child, control: Control, started: float) -> bool:
        outcome = await self._await_ready(proc, control, self._ready_timeout, READY_POLL)
        if outcome is StartOutcome.NOT_READY:
            waited = self._ready_timeout
            self._release_held()
            reason = f"collector not ready after {waited * 1000:.0f} ms"
            if self._first_outcome(StartReport(StartOutcome.NOT_READY, reason, waited)):
                self._log.warning(f"{reason}; INVOKEs pass through until it is")
            else:
                self._log.warning(reason)
            outcome = await self._await_ready(proc, control, LATE_READY_WINDOW, LATE_READY_POLL)
            if outcome is StartOutcome.NOT_READY:
                self._log.error(
                    f"collector still not ready after {(waited + LATE_READY_WINDOW):.0f} s; "
                    "restarting it"
                )
                await self._terminate(proc, 1.0)
                return True
        if outcome is StartOutcome.STOPPED:
            await self._terminate(proc, 1.0)
            return False
        elapsed = self._clock() - started
        if outcome is StartOutcome.EXITED:
            await self._stderr_read()
            return self._exited_before_ready(proc.returncode or 0, elapsed)
        # Ready.
        self._release_held()
        self._control = control
        if not self._first_outcome(StartReport(StartOutcome.READY, "", elapsed)):
            self._log.info(
                f"collector ready in {elapsed * 1000:.0f} ms (pid {proc.pid}, "
                f"restart {self.restarts})"
            )
        ready_at = self._clock()
        code = await proc.wait()
        self._control = None
        if self._stopping.is_set():
            return False
        await self._stderr_read()
        if self._clock() - ready_at >= STABLE_AFTER:
            self._backoff.reset()
        self.restarts += 1
        self._log.warning(
            f"collector exited ({describe_exit(code)}){self._last_words() if code > 0 else ''}; "
            "restarting it "
            f"(restart {self.restarts}); INVOKEs pass through meanwhile"
        )
        return True

    def _exited_before_ready(self, code: int, elapsed: float) -> bool:
        if code == EXIT_CONFIG_INVALID:
            lines = [raw.decode("utf-8", "replace") for raw in (self._held or [])]
            self._held = None  # logged below, in one line, instead of passed on
            errors = summarize_output(lines) or "no details printed"
            self.disabled_reason = f"collector config rejected: {errors}"
            if not self._first_outcome(StartReport(StartOutcome.CONFIG_INVALID, errors, elapsed)):
                self._log.error(f"{self.disabled_reason}; telemetry is off, INVOKEs pass through")
            return False
        self._release_held()
        reason = (
            f"collector exited ({describe_exit(code)}) before it was ready{self._last_words()}"
        )
        self.restarts += 1
        if self._first_outcome(StartReport(StartOutcome.EXITED, reason, elapsed)):
            self._log.error(f"{reason}; INVOKEs pass through, restarting it")
        else:
            self._log.error(f"{reason}; restarting it (restart {self.restarts})")
        return True

    async def _await_ready(
        self, proc: Child, control: Control, timeout: float, poll: float
    ) -> StartOutcome:
        deadline = self._clock() + timeout
        while True:
            if self._stopping.is_set():
                return StartOutcome.STOPPED
            if proc.returncode is not None:
                return StartOutcome.EXITED
            remaining = deadline - self._clock()
            if remaining <= 0:
                return StartOutcome.NOT_READY
            # Calling before the socket exists would put the gRPC channel into its reconnect
            # backoff (about a second); a stat costs microseconds.
            if os.path.exists(self._socket):  # noqa: ASYNC240
                try:
                    reply = await control.status(timeout=min(remaining, STATUS_CALL_TIMEOUT))
                    if reply.ready and reply.pid in (0, proc.pid):
                        return StartOutcome.READY
                except ControlError:
                    pass
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(poll, max(deadline - self._clock(), 0.0))):
                    await self._stopping.wait()

    async def _stderr_read(self) -> None:
        """Waits (bounded) until the exited collector's last output has been read, so that the
        line about its end can quote it."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STDERR_DRAIN_TIMEOUT):
                await self._stderr_closed.wait()

    async def _pump_stderr(self, proc: Child) -> None:
        try:
            await self._pump(proc.stderr)
        finally:
            self._stderr_closed.set()

    async def _pump(self, stream: asyncio.StreamReader | None) -> None:
        if stream is None:
            return
        while True:
            try:
                line = await stream.readline()
            except ValueError:
                # readline drops a line longer than the stream's limit; go on after it.
                continue
            if not line:
                return
            line = format_line(line, json_format=self._json_logs)
            if not line:
                continue
            self._tail.append(line.decode("utf-8", "replace").rstrip())
            if self._held is not None:
                self._held.append(line)
                if len(self._held) > MAX_HELD_LINES:
                    self._release_held()
            else:
                self._write(line)

    def _release_held(self) -> None:
        held, self._held = self._held, None
        for line in held or []:
            self._write(line)

    def _write(self, data: bytes) -> None:
        if self._output is None:
            return
        try:
            self._output.write(data)
            self._output.flush()
        except (OSError, ValueError):
            pass

    def _last_words(self) -> str:
        for line in reversed(self._tail):
            if line.strip():
                return f" (last output: {message_of(line)[:300]})"
        return ""

    async def stop(self, timeout: float) -> int | None:
        """Stops the collector: SIGTERM, SIGKILL when it has not exited within `timeout`
        seconds. Returns its exit status (None if none was running). Idempotent."""
        self._stopping.set()
        self._control = None
        proc = self._proc
        if proc is None:
            return None
        if proc.returncode is None:
            await self._terminate(proc, timeout)
        return proc.returncode

    async def _terminate(self, proc: Child, timeout: float) -> None:
        proc.terminate()
        try:
            async with asyncio.timeout(max(timeout, 0.0)):
                await proc.wait()
            return
        except TimeoutError:
            pass
        self._log.warning(
            f"collector did not exit within {timeout * 1000:.0f} ms of SIGTERM; killing it"
        )
        proc.kill()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await proc.wait()
