"""python -m emulator: run a Python function and its layer in a local Lambda execution environment.
Builds the object graph (sandbox, telemetry, environment, servers) and runs until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, NoReturn

from emulator import _protocol as p
from emulator._api import Server, bind, invoke_door, lambda_api
from emulator._cgroups import Sandbox, SandboxOptions
from emulator._config import Config
from emulator._isolate import IsolationError, isolate
from emulator._lifecycle import Environment, monotonic
from emulator._report import Console, Reporter
from emulator._telemetry import Telemetry


class UsageError(ValueError):
    """A bad command line; the message names the option."""


def _address(option: str, text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"{option} must be HOST:PORT (port 0 picks a free one), got {text!r}")
    return host, int(port)


def _directory(option: str, text: str) -> Path:
    path = Path(text).resolve()
    if not path.is_dir():
        raise UsageError(f"{option} {text}: not a directory")
    return path


class _Parser(argparse.ArgumentParser):
    """Reports a bad command line as one line (UsageError) instead of usage text."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see --help)")


def _parser() -> argparse.ArgumentParser:
    ap = _Parser(
        prog="python -m emulator",
        description="A local Lambda execution environment: Runtime, Extensions and Telemetry APIs, "
        "freeze, timeouts, shutdown, and Lambda's CPU and memory sizing.",
    )
    ap.add_argument("--opt", required=True, help="the layer directory (/opt in Lambda)")
    ap.add_argument("--task", required=True, help="the function's code (/var/task in Lambda)")
    ap.add_argument("--handler", required=True, help="module.function")
    ap.add_argument("--timeout", type=float, default=3.0, help="function timeout in seconds (3)")
    ap.add_argument("--memory", type=int, default=1769,
                    help="memory size in MB (1769, one vCPU); sizes CPU share and memory limit")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="a function environment variable (repeatable)")
    ap.add_argument("--listen", default="127.0.0.1:9000", help="invoke door address")
    ap.add_argument("--runtime-api", default="127.0.0.1:9001", help="AWS_LAMBDA_RUNTIME_API address")
    ap.add_argument("--runtime-python", default=sys.executable,
                    help="interpreter that runs awslambdaric (this one)")
    ap.add_argument("--no-freeze", action="store_true", help="do not freeze between events")
    ap.add_argument("--freezer", choices=("auto", "cgroup", "signal"), default="auto",
                    help="how to freeze: cgroup freezer, SIGSTOP/SIGCONT, or the best available")
    ap.add_argument("--no-limits", action="store_true", help="no CPU quota and memory limit")
    ap.add_argument("--no-init-burst", action="store_true",
                    help="Init gets the memory size's CPU share instead of Lambda's burst CPU")
    ap.add_argument("--isolate", action="store_true",
                    help="private /opt, /var/task and /etc/hosts (root only)")
    ap.add_argument("--report", help="append one JSON line per init and invocation to this file")
    ap.add_argument("--ready-file", help="write {invoke, runtime_api, pid} here once ready")
    ap.add_argument("--init-now", action="store_true", help="initialise before the first invoke")
    ap.add_argument("--idle", type=float, help="shut down after this many idle seconds")
    ap.add_argument("--init-timeout", type=float, default=p.INIT_TIMEOUT_S,
                    help="init phase limit in seconds (10, as Lambda)")
    ap.add_argument("--function-name", default="function")
    ap.add_argument("--region", default="us-east-1")
    return ap


def parse_config(argv: Sequence[str]) -> Config:
    """The Config for a command line; raises UsageError with one clear line."""
    args = _parser().parse_args(argv)
    env: dict[str, str] = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--env must be KEY=VALUE, got {item!r}")
        env[key] = value
    low, high = p.MEMORY_MB_RANGE
    if not low <= args.memory <= high:
        raise UsageError(f"--memory must be between {low} and {high} MB, got {args.memory}")
    if not 0 < args.timeout <= p.TIMEOUT_S_RANGE[1]:
        raise UsageError(f"--timeout must be more than 0 and at most 900 seconds, got {args.timeout}")
    if args.init_timeout <= 0:
        raise UsageError("--init-timeout must be more than 0 seconds")
    if args.idle is not None and args.idle <= 0:
        raise UsageError("--idle must be more than 0 seconds")
    if "." not in args.handler:
        raise UsageError(f"--handler must be module.function, got {args.handler!r}")
    return Config(
        opt_dir=_directory("--opt", args.opt),
        task_dir=_directory("--task", args.task),
        handler=args.handler,
        timeout_s=args.timeout,
        memory_mb=args.memory,
        env=env,
        listen=_address("--listen", args.listen),
        runtime_api=_address("--runtime-api", args.runtime_api),
        freeze=not args.no_freeze,
        freezer=args.freezer,
        limits=not args.no_limits,
        init_burst=not args.no_init_burst,
        isolate=args.isolate,
        report_path=Path(args.report).resolve() if args.report else None,
        ready_file=Path(args.ready_file).resolve() if args.ready_file else None,
        runtime_python=args.runtime_python,
        init_now=args.init_now,
        idle_s=args.idle,
        init_timeout_s=args.init_timeout,
        function_name=args.function_name,
        region=args.region,
    )


class Tasks:
    """Background work in the emulator's task group; a failing task logs instead of tearing
    the whole emulator down."""

    def __init__(self, group: asyncio.TaskGroup, console: Console) -> None:
        self._group = group
        self._console = console
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = self._group.create_task(self._guarded(coro, name), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _guarded(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        try:
            await coro
        except Exception as exc:  # one task's bug must not stop the environment
            self._console.info(f"internal error in {name}: {type(exc).__name__}: {exc}")

    def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()


def _hostport(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _write_ready(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


async def _wait_for_stop(stop: asyncio.Event, env: Environment, idle_s: float | None,
                         console: Console) -> None:
    while not stop.is_set():
        if idle_s is None:
            await stop.wait()
            return
        left = env.last_activity + idle_s - monotonic()
        if left <= 0 and not env.busy:
            console.info(f"idle for {idle_s:g} s: shutting down")
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(left, 0.05)):
                await stop.wait()


async def serve(config: Config, console: Console) -> int:
    try:
        sandbox = Sandbox(SandboxOptions(freeze=config.freeze, freezer=config.freezer,
                                         limits=config.limits, memory_mb=config.memory_mb,
                                         init_burst=config.init_burst))
    except OSError as exc:
        console.info(f"cannot set up the sandbox: {exc}")
        return 1
    reporter = Reporter(config.report_path, console)
    try:
        try:
            api_sock = bind(*config.runtime_api)
        except OSError as exc:
            console.info(f"cannot listen on --runtime-api {_hostport(config.runtime_api)}: {exc.strerror}")
            return 1
        try:
            door_sock = bind(*config.listen)
        except OSError as exc:
            api_sock.close()
            console.info(f"cannot listen on --listen {_hostport(config.listen)}: {exc.strerror}")
            return 1
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with asyncio.TaskGroup() as group:
            tasks = Tasks(group, console)
            telemetry = Telemetry(tasks, console.info)
            env = Environment(config, sandbox, telemetry, tasks, console, reporter)
            api = Server(lambda_api(env), api_sock)
            door = Server(invoke_door(env), door_sock)
            env.runtime_api = api.address
            try:
                await api.start()
                await door.start()
                if config.init_now:
                    await env.init_now()
                console.info(
                    f"listening invoke=http://{door.address} runtime-api={api.address} "
                    f"{sandbox.describe()} isolate={'on' if config.isolate else 'off'} "
                    f"timeout={config.timeout_s:g}s"
                )
                if config.ready_file is not None:
                    _write_ready(config.ready_file, {
                        "invoke": f"http://{door.address}",
                        "runtime_api": api.address,
                        "pid": os.getpid(),
                        "freeze": sandbox.freeze_mode,
                        "limits": sandbox.limits_mode,
                        "cgroups": sandbox.groups,
                    })
                await _wait_for_stop(stop, env, config.idle_s, console)
                console.info("shutting down")
                await env.stop()
            finally:
                await door.aclose()
                await api.aclose()
                await telemetry.aclose()
                await sandbox.kill_all()
                tasks.cancel_all()
        console.info("stopped")
        return 0
    finally:
        await sandbox.kill_all()
        sandbox.close()
        reporter.close()


def main(argv: Sequence[str] | None = None) -> int:
    console = Console(sys.stderr, sys.stdout)
    try:
        config = parse_config(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        console.info(str(exc))
        return 2
    scratch = Path(tempfile.mkdtemp(prefix="afterflush-emulator-"))
    try:
        if config.isolate:
            try:
                isolate(config.opt_dir, config.task_dir, scratch)
            except IsolationError as exc:
                console.info(str(exc))
                return 1
        return asyncio.run(serve(config, console))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
