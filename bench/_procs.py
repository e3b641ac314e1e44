"""The processes a benchmark run starts (the backend, emulators, collectors), each started on
free loopback ports, waited for with a bounded poll, and always stopped; and their figures.

Output goes to log files in the run directory, so that nothing blocks on a full pipe.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bench._errors import BenchError

REPO = Path(__file__).resolve().parents[1]
POLL_SECONDS = 0.005
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 20.0

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T | None], timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None
) -> T:
    """Polls `predicate` until it returns something other than None or False; BenchError
    after `timeout` seconds or when `proc` exits first."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value is not None and value is not False:
            return value
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"{what}: the process exited with {proc.returncode} first")
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not within {timeout:g} s")
        time.sleep(POLL_SECONDS)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


class Process:
    """A child process in its own process group, output to `log`, always ended by `stop()`."""

    def __init__(self, name: str, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self.env = dict(os.environ if env is None else env)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, cwd=REPO, env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> int | None:
        """SIGTERM, a bounded wait, then SIGKILL for the whole group; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(STOP_TIMEOUT_SECONDS)
        return self.proc.returncode

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def http_json(method: str, url: str, body: Any = None, timeout: float = 10.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        text = response.read()
    return json.loads(text) if text else None


class Backend:
    """`python -m backend` on free loopback ports; latency changed and counts read over its
    HTTP control API."""

    def __init__(self, workdir: Path) -> None:
        ready = workdir / "backend-ready.json"
        ready.unlink(missing_ok=True)
        self._ready_file = ready
        self.process = Process(
            "backend",
            [sys.executable, "-m", "backend", "--ready-file", str(ready)],
            workdir / "backend.log",
        )
        self.endpoints: dict[str, str] = {}

    def __enter__(self) -> Backend:
        self.process.start()
        try:
            ready = wait_for(lambda: _read_json(self._ready_file), START_TIMEOUT_SECONDS,
                             "the backend's ready file", self.process.proc)
        except BaseException:
            self.process.stop()
            raise
        self.endpoints = {"grpc": str(ready["grpc"]), "http": str(ready["http"])}
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.stop()

    @property
    def http(self) -> str:
        return self.endpoints["http"].rstrip("/")

    @property
    def grpc(self) -> str:
        return self.endpoints["grpc"]

    def set_latency(self, latency_ms: float) -> None:
        http_json("POST", f"{self.http}/_control", {"latency_ms": latency_ms})

    def reset(self) -> None:
        http_json("POST", f"{self.http}/_reset", {})

    def items(self) -> dict[str, int]:
        """Items accepted so far, per signal."""
        stats = http_json("GET", f"{self.http}/_stats")
        return {name: int(s.get("items", 0)) for name, s in stats.items()}


@dataclass(frozen=True)
class Invocation:
    status: int
    body: bytes
    client_ms: float

    def json(self) -> Any:
        return json.loads(self.body)


class ReportReader:
    """Reads the emulator's --report file as it grows (one JSON object per line)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0
        self._partial = b""
        self.records: list[dict[str, Any]] = []

    def poll(self) -> list[dict[str, Any]]:
        try:
            with self._path.open("rb") as source:
                source.seek(self._offset)
                chunk = source.read()
        except FileNotFoundError:
            return self.records
        self._offset += len(chunk)
        data = self._partial + chunk
        *lines, self._partial = data.split(b"\n")
        for line in lines:
            if line.strip():
                self.records.append(json.loads(line))
        return self.records


class Emulator:
    """`python -m emulator` for one execution environment; invoked one event at a time, each
    on an idle environment (the previous invocation ended, everyone called next)."""

    def __init__(
        self,
        workdir: Path,
        *,
        opt: Path,
        task: Path,
        handler: str,
        memory: int,
        env: Mapping[str, str],
        runtime_python: Path,
        process_env: Mapping[str, str],
        timeout: float = 30.0,
        init_timeout: float | None = None,
        init_now: bool = False,
        init_burst: bool = True,
        name: str = "emulator",
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self._ready_file = workdir / f"{name}-ready.json"
        self._ready_file.unlink(missing_ok=True)
        report = workdir / f"{name}-report.jsonl"
        report.unlink(missing_ok=True)
        argv = [
            sys.executable, "-m", "emulator", "--opt", str(opt), "--task", str(task),
            "--handler", handler, "--memory", str(memory), "--timeout", f"{timeout:g}",
            "--listen", "127.0.0.1:0", "--runtime-api", "127.0.0.1:0",
            "--ready-file", str(self._ready_file), "--report", str(report),
            "--runtime-python", str(runtime_python),
        ]
        for key, value in env.items():
            argv += ["--env", f"{key}={value}"]
        if init_timeout is not None:
            argv += ["--init-timeout", f"{init_timeout:g}"]
        if init_now:
            argv.append("--init-now")
        if not init_burst:
            argv.append("--no-init-burst")
        self.process = Process(name, argv, workdir / f"{name}.log", process_env)
        self.reports = ReportReader(report)
        self.ready: dict[str, Any] = {}
        self.invoked = 0

    def __enter__(self) -> Emulator:
        self.process.start()
        try:
            self.ready = wait_for(lambda: _read_json(self._ready_file), START_TIMEOUT_SECONDS,
                                  "the emulator's ready file", self.process.proc)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> int | None:
        """SIGTERM runs the Shutdown phase (the companion's last drain) before the exit."""
        code = self.process.stop()
        self._end_environment()
        return code

    def _end_environment(self) -> None:
        # After a hard kill the environment's processes may still sit frozen in its cgroups.
        from emulator import end_environment

        end_environment(self.ready.get("cgroups", {}).values())

    @property
    def url(self) -> str:
        return f"{self.ready['invoke']}/2015-03-31/functions/function/invocations"

    def invoke(self, event: Any, timeout: float = 60.0) -> tuple[Invocation, dict[str, Any]]:
        """Invokes once the environment is idle; the response and the invocation's record
        (written when the runtime and every extension have called next)."""
        if self.invoked:
            self.wait_records(self.invoked, timeout)
        request = urllib.request.Request(self.url, data=json.dumps(event).encode(), method="POST")
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                body, status = response.read(), response.status
        except urllib.error.HTTPError as exc:
            body, status = exc.read(), exc.code
        except OSError as exc:
            raise BenchError(f"invocation failed: {exc}\n{self.process.tail()}") from exc
        client_ms = (time.perf_counter() - started) * 1000
        self.invoked += 1
        record = self.wait_records(self.invoked, timeout)[self.invoked - 1]
        return Invocation(status, body, client_ms), record

    def wait_records(self, count: int, timeout: float = 60.0) -> list[dict[str, Any]]:
        """The first `count` invocation records, waiting (bounded) for them."""

        def enough() -> list[dict[str, Any]] | None:
            invokes = [r for r in self.reports.poll() if r.get("kind") == "invoke"]
            return invokes if len(invokes) >= count else None

        return wait_for(enough, timeout, f"invocation record {count}", self.process.proc)

    def init_records(self) -> list[dict[str, Any]]:
        return [r for r in self.reports.poll() if r.get("kind") == "init"]

    def descendants(self) -> Iterator[Any]:
        """The environment's processes (psutil.Process): everything the emulator started."""
        import psutil

        with contextlib.suppress(psutil.NoSuchProcess):
            yield from psutil.Process(self.process.pid).children(recursive=True)


def _status_bytes(pid: int, key: str) -> int | None:
    """A "key: N kB" line of /proc/PID/status in bytes, None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def peak_rss_bytes(pid: int) -> int | None:
    """The process's peak resident set size so far (VmHWM), None once it is gone."""
    return _status_bytes(pid, "VmHWM")


def rss_bytes(pid: int) -> int | None:
    """The process's resident set size now (VmRSS), None once it is gone."""
    return _status_bytes(pid, "VmRSS")


def anon_rss_bytes(pid: int) -> int | None:
    """The anonymous part of its resident set now (RssAnon: heap, stacks; not the pages of
    its executable and libraries), None once it is gone."""
    return _status_bytes(pid, "RssAnon")


def pss_bytes(pid: int) -> int | None:
    """The process's proportional set size now (smaps_rollup), None once it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
