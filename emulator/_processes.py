"""Starting the environment's processes (extensions, runtime) in the sandbox and watching them:
their own process group, exit notification, and their merged output read line by line."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

from emulator._cgroups import Sandbox

LINE_LIMIT: Final = 1024 * 1024

LineSink = Callable[["ManagedProcess", str], None]
ExitSink = Callable[["ManagedProcess", int], Awaitable[None]]


class TaskSpawner(Protocol):
    """Where background work lives (the emulator's task group)."""

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]: ...


class LaunchError(Exception):
    """The process could not be started (not executable, not found, bad format)."""


@dataclass(eq=False)
class ManagedProcess:
    """One process of the environment: the runtime or an external extension."""

    name: str
    kind: str  # "runtime" | "extension"
    process: asyncio.subprocess.Process
    exited: asyncio.Future[int] = field(repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return not self.exited.done()

    def signal_group(self, sig: int) -> None:
        """Signals the process group (the process and children that stayed in it)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def terminate(self) -> None:
        self.signal_group(signal.SIGTERM)


def describe_exit(returncode: int) -> str:
    """Lambda's wording: 'exit status 1' or 'signal: killed'."""
    if returncode < 0:
        try:
            name = signal.strsignal(-returncode) or f"signal {-returncode}"
        except ValueError:
            name = f"signal {-returncode}"
        return f"signal: {name.lower()}"
    return f"exit status {returncode}"


async def launch(
    *,
    name: str,
    kind: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: Path,
    sandbox: Sandbox,
    tasks: TaskSpawner,
    on_line: LineSink,
    on_exit: ExitSink,
) -> ManagedProcess:
    """Starts argv inside the sandbox; raises LaunchError when the kernel refuses it."""
    try:
        with sandbox.spawn_hook() as join:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=dict(env),
                cwd=str(cwd),
                start_new_session=True,
                preexec_fn=join,
                limit=LINE_LIMIT,
            )
    except PermissionError as exc:
        raise LaunchError(f"fork/exec {argv[0]}: permission denied") from exc
    except FileNotFoundError as exc:
        raise LaunchError(f"fork/exec {argv[0]}: no such file or directory") from exc
    except OSError as exc:
        raise LaunchError(f"fork/exec {argv[0]}: {exc.strerror or exc}") from exc
    sandbox.track(proc.pid)
    loop = asyncio.get_running_loop()
    managed = ManagedProcess(name=name, kind=kind, process=proc, exited=loop.create_future())
    tasks.spawn(_read_lines(managed, on_line), f"{kind}-{name}-output")
    tasks.spawn(_watch(managed, sandbox, on_exit), f"{kind}-{name}-exit")
    return managed


async def _read_lines(managed: ManagedProcess, on_line: LineSink) -> None:
    stream = managed.process.stdout
    if stream is None:
        return
    while True:
        try:
            raw = await stream.readline()
        except ValueError:
            # A line longer than the limit: hand it over in pieces rather than fail.
            raw = await stream.read(LINE_LIMIT)
        if not raw:
            return
        on_line(managed, raw.decode("utf-8", errors="replace").rstrip("\r\n"))


async def _watch(managed: ManagedProcess, sandbox: Sandbox, on_exit: ExitSink) -> None:
    returncode = await managed.process.wait()
    sandbox.untrack(managed.pid)
    if not managed.exited.done():
        managed.exited.set_result(returncode)
    await on_exit(managed, returncode)
