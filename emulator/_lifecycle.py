"""The execution environment's state machine: init, invoke, freeze, reset and shutdown.
The Runtime, Extensions and Telemetry API routes call into Environment; so does the invoke door."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from emulator import _config as c
from emulator import _protocol as p
from emulator._cgroups import Sandbox
from emulator._processes import LaunchError, ManagedProcess, TaskSpawner, describe_exit, launch
from emulator._report import Console, Reporter
from emulator._telemetry import SubscriptionError, Telemetry, parse_subscription, timestamp

QUIESCE_S: Final = 0.25
KILL_WAIT_S: Final = 2.0
QUEUE_WAIT_MARGIN_S: Final = 30.0
VALID_ERROR_TYPE: Final = re.compile(r"^(Runtime|Function)\.[A-Z][A-Za-z]+$")
OK_BODY: Final = b'{"status":"OK"}'


def monotonic() -> float:
    return time.monotonic()


def epoch_ms() -> int:
    return int(time.time() * 1000)


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


@dataclass(frozen=True)
class Failure:
    """What ended an init or an invocation badly, in Lambda's terms."""

    error_type: str
    message: str
    body: bytes | None = None  # the runtime's own error document, returned as is

    def document(self) -> bytes:
        if self.body is not None:
            return self.body
        return json.dumps({"errorType": self.error_type, "errorMessage": self.message}).encode()


class ApiError(Exception):
    """An API request refused with Lambda's status, error type and message."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


@dataclass
class ApiReply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(status: int, doc: Any, headers: Mapping[str, str] | None = None) -> ApiReply:
    out = {"Content-Type": p.JSON_CONTENT_TYPE}
    out.update(headers or {})
    return ApiReply(status, json.dumps(doc).encode(), out)


@dataclass
class DoorReply:
    """What the invoke door answers the caller."""

    status: int
    body: bytes
    headers: dict[str, str]


class _Closed(Exception):
    """The participant's instance is gone; its pending next gets a container error."""


class Changes:
    """Wakes waiters whenever the environment's state changes; they re-check a predicate."""

    def __init__(self) -> None:
        self._future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def notify(self) -> None:
        if not self._future.done():
            self._future.set_result(None)
        self._future = asyncio.get_running_loop().create_future()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Returns once predicate() holds; callers bound it with asyncio.timeout."""
        while not predicate():
            await asyncio.shield(self._future)


class Participant:
    """The runtime or an extension: it is 'parked' while its next call waits for an event."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.parked: asyncio.Future[Any] | None = None
        self.parked_at: float | None = None
        self.queued: deque[Any] = deque()
        self.closed = False
        self.ready = False  # called next at least once

    @property
    def is_parked(self) -> bool:
        return self.parked is not None and not self.parked.done()

    async def next(self, changes: Changes) -> Any:
        if self.closed:
            raise _Closed
        if self.queued:
            return self.queued.popleft()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.parked = future
        self.parked_at = monotonic()
        changes.notify()
        try:
            return await future
        finally:
            if self.parked is future:
                self.parked = None

    def deliver(self, event: Any) -> None:
        if self.is_parked:
            assert self.parked is not None
            self.parked.set_result(event)
            self.parked = None
        else:
            self.queued.append(event)

    def close(self) -> None:
        self.closed = True
        if self.is_parked:
            assert self.parked is not None
            self.parked.set_exception(_Closed())
        self.parked = None


class Extension(Participant):
    def __init__(self, name: str, events: frozenset[str], external: bool) -> None:
        super().__init__(name)
        self.id = str(uuid.uuid4())
        self.events = events
        self.external = external
        self.errored = False


@dataclass(eq=False)
class Outcome:
    """How the runtime finished an invocation."""

    kind: str  # response | error | failure
    body: bytes
    content_type: str
    at: float
    error_type: str | None = None
    response_started: float | None = None
    failure: Failure | None = None

    @property
    def status(self) -> str:
        return {"response": "success", "error": "error"}.get(self.kind, "failure")


@dataclass(eq=False)
class Invocation:
    request_id: str
    payload: bytes
    trace_id: str
    client_context: str | None
    cognito_identity: str | None
    arrived: float
    response: asyncio.Future[DoorReply]
    outcome: asyncio.Future[Outcome]
    started: float = 0.0
    deadline_ms: int = 0
    responded_at: float | None = None

    def respond(self, reply: DoorReply) -> None:
        if not self.response.done():
            self.responded_at = monotonic()
            self.response.set_result(reply)


def error_reply(request_id: str, failure: Failure) -> DoorReply:
    return DoorReply(
        200,
        failure.document(),
        {
            "Content-Type": p.JSON_CONTENT_TYPE,
            p.H_AMZ_FUNCTION_ERROR: p.FUNCTION_ERROR_UNHANDLED,
            p.H_AMZ_REQUEST_ID: request_id,
            p.H_AMZ_EXECUTED_VERSION: c.FUNCTION_VERSION,
        },
    )


def new_trace_id() -> str:
    now = int(time.time())
    return f"Root=1-{now:08x}-{uuid.uuid4().hex[:24]};Parent={uuid.uuid4().hex[:16]};Sampled=0"


class Instance:
    """One life of the environment, from init to reset or shutdown."""

    def __init__(self, oom_baseline: int) -> None:
        self.changes = Changes()
        self.runtime = Participant("runtime")
        self.runtime_process: ManagedProcess | None = None
        self.extensions: dict[str, Extension] = {}
        self.launched: dict[str, ManagedProcess] = {}
        self.registration_open = True
        self.phase = "init"  # init | idle | invoke | shutdown
        self.failure: Failure | None = None
        self.invocation: Invocation | None = None
        self.init_started = monotonic()
        self.init_duration_ms = 0.0
        self.oom_baseline = oom_baseline
        self.peak_rss = 0
        self.torn_down = False

    def fail(self, failure: Failure) -> None:
        if self.failure is None:
            self.failure = failure
        inv = self.invocation
        if inv is not None and not inv.outcome.done():
            inv.outcome.set_result(
                Outcome("failure", failure.document(), p.JSON_CONTENT_TYPE, monotonic(),
                        error_type=failure.error_type, failure=failure)
            )
        self.changes.notify()

    def all_parked(self) -> bool:
        return self.runtime.is_parked and all(e.is_parked for e in self.extensions.values())

    def pending_names(self) -> list[str]:
        names = [] if self.runtime.is_parked else ["runtime"]
        names += [e.name for e in self.extensions.values() if not e.is_parked]
        return names

    def extension_for(self, process: ManagedProcess) -> Extension | None:
        for ext in self.extensions.values():
            if ext.external and ext.name == process.name:
                return ext
        return None


class Environment:
    """One Lambda execution environment: one invocation at a time, lazily initialised."""

    def __init__(
        self,
        config: c.Config,
        sandbox: Sandbox,
        telemetry: Telemetry,
        tasks: TaskSpawner,
        console: Console,
        reporter: Reporter,
    ) -> None:
        self._config = config
        self._sandbox = sandbox
        self._telemetry = telemetry
        self._tasks = tasks
        self._console = console
        self._reporter = reporter
        self._lock = asyncio.Lock()
        self._instance: Instance | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._closing = False
        self.runtime_api = ""
        self.last_activity = monotonic()

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    # ==== the invoke door ====================================================================

    def submit(self, payload: bytes, headers: Mapping[str, str], arrived: float) -> Invocation:
        loop = asyncio.get_running_loop()
        inv = Invocation(
            request_id=str(uuid.uuid4()),
            payload=payload,
            trace_id=headers.get(p.H_AMZN_TRACE_ID) or new_trace_id(),
            client_context=_client_context(headers.get(p.H_AMZ_CLIENT_CONTEXT)),
            cognito_identity=None,
            arrived=arrived,
            response=loop.create_future(),
            outcome=loop.create_future(),
        )
        if self._closing:
            inv.respond(error_reply(inv.request_id, Failure("Emulator.ShuttingDown",
                                                            "the emulator is shutting down")))
            return inv
        if self._lock.locked():
            self._console.info(
                f"invoke {inv.request_id}: waiting for the previous invocation to finish "
                "(runtime and extensions must call next)"
            )
        task = self._tasks.spawn(self._run(inv), f"invocation-{inv.request_id}")
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return inv

    def max_wait_s(self) -> float:
        """How long a caller may wait in the worst case (queue, init, timeout, reset)."""
        cfg = self._config
        return cfg.init_timeout_s + cfg.timeout_s + QUEUE_WAIT_MARGIN_S

    async def _run(self, inv: Invocation) -> None:
        try:
            async with asyncio.timeout(self.max_wait_s()):
                await self._lock.acquire()
        except TimeoutError:
            inv.respond(error_reply(inv.request_id, Failure(
                "Emulator.Busy", "the environment stayed busy with earlier invocations")))
            return
        try:
            if self._closing:
                inv.respond(error_reply(inv.request_id, Failure(
                    "Emulator.ShuttingDown", "the emulator is shutting down")))
                return
            cold = False
            inst = self._instance
            if inst is None:
                failure = await self._init()
                if failure is not None:
                    self._record_failed_init(inv, failure)
                    return
                cold = True
                inst = self._instance
                assert inst is not None
            await self._thaw()
            await self._invoke(inst, inv, cold)
        except asyncio.CancelledError:
            inv.respond(error_reply(inv.request_id, Failure(
                "Emulator.ShuttingDown", "the emulator shut down during the invocation")))
            raise
        except Exception as exc:
            # A bug here must not leave the caller waiting; the task wrapper logs it.
            inv.respond(error_reply(inv.request_id, Failure("Emulator.InternalError", repr(exc))))
            raise
        finally:
            self.last_activity = monotonic()
            self._lock.release()

    # ==== init ===============================================================================

    async def init_now(self) -> None:
        """Initialises ahead of the first invocation (--init-now), then freezes."""
        async with self._lock:
            if self._instance is None and await self._init() is None:
                await self._freeze()

    async def _init(self) -> Failure | None:
        cfg = self._config
        inst = Instance(self._sandbox.oom_kills())
        self._instance = inst
        self._telemetry.begin_init()
        self._telemetry.emit(p.T_INIT_START, {
            "initializationType": "on-demand",
            "phase": "init",
            "runtimeVersion": f"python:{c.python_version(cfg.runtime_python)}.emulator",
            "functionName": cfg.function_name,
            "functionVersion": c.FUNCTION_VERSION,
        })
        failure: Failure | None
        self._sandbox.cpu_burst(True)
        try:
            async with asyncio.timeout(cfg.init_timeout_s):
                failure = await self._init_steps(inst)
        except TimeoutError:
            pending = ", ".join(self._init_pending(inst)) or "nothing"
            failure = Failure(p.ERR_SANDBOX_TIMEDOUT,
                              f"Init timed out after {cfg.init_timeout_s:.2f} seconds "
                              f"(still waiting for: {pending})")
        inst.init_duration_ms = ms(monotonic() - inst.init_started)
        self._sandbox.cpu_burst(False)
        inst.registration_open = False
        if failure is None:
            status = "success"
        elif failure.error_type == p.ERR_SANDBOX_TIMEDOUT:
            status = "timeout"
        elif failure.body is not None:
            status = "error"
        else:
            status = "failure"
        if not inst.runtime.ready:
            self._emit_init_runtime_done(status, failure)
        report: dict[str, Any] = {
            "initializationType": "on-demand",
            "phase": "init",
            "status": status,
            "metrics": {"durationMs": inst.init_duration_ms},
        }
        if failure is not None:
            report["errorType"] = failure.error_type
        self._telemetry.emit(p.T_INIT_REPORT, report)
        self._telemetry.end_init()
        self._reporter.write({
            "kind": "init",
            "status": status,
            "errorType": failure.error_type if failure else None,
            "errorMessage": failure.message if failure else None,
            "initDurationMs": inst.init_duration_ms,
        })
        if failure is not None:
            self._console.info(f"init failed: {failure.error_type}: {failure.message}")
            await self._teardown(inst, p.REASON_FAILURE)
            return failure
        inst.phase = "idle"
        return None

    def _init_pending(self, inst: Instance) -> list[str]:
        registered = {e.name for e in inst.extensions.values() if e.external}
        pending = [f"extension {n} to register" for n in inst.launched if n not in registered]
        if inst.runtime_process is not None:
            pending += [f"{n} to call next" for n in inst.pending_names()]
        return pending

    def _emit_init_runtime_done(self, status: str, failure: Failure | None) -> None:
        record: dict[str, Any] = {"initializationType": "on-demand", "phase": "init", "status": status}
        if failure is not None:
            record["errorType"] = failure.error_type
        self._telemetry.emit(p.T_INIT_RUNTIME_DONE, record)

    async def _init_steps(self, inst: Instance) -> Failure | None:
        cfg = self._config
        function_env = c.function_environment(cfg, self.runtime_api, os.environ)
        ext_env = c.extension_environment(function_env)
        ext_dir = cfg.opt_dir / "extensions"
        files = sorted(f for f in ext_dir.iterdir() if f.is_file()) if ext_dir.is_dir() else []
        for path in files:
            visible = cfg.visible_opt / "extensions" / path.name
            try:
                inst.launched[path.name] = await self._launch(
                    inst, path.name, "extension", [str(visible)], ext_env)
            except LaunchError as exc:
                return Failure(p.ERR_EXTENSION_LAUNCH, str(exc))
        # Extension init: every launched extension registers before the runtime starts.
        await inst.changes.wait_for(lambda: inst.failure is not None or all(
            any(e.external and e.name == n for e in inst.extensions.values()) for n in inst.launched))
        if inst.failure is not None:
            return inst.failure
        runtime_env = dict(function_env)
        runtime_env["PYTHONPATH"] = c.runtime_pythonpath(cfg, function_env)
        command = c.runtime_command(cfg, function_env)
        try:
            inst.runtime_process = await self._launch(inst, "runtime", "runtime", command, runtime_env)
        except LaunchError as exc:
            return Failure(p.ERR_RUNTIME_INVALID_ENTRYPOINT, str(exc))
        # Runtime and function init: done when the runtime and every extension called next.
        await inst.changes.wait_for(lambda: inst.failure is not None or inst.all_parked())
        return inst.failure

    async def _launch(self, inst: Instance, name: str, kind: str, argv: list[str],
                      env: Mapping[str, str]) -> ManagedProcess:
        async def on_exit(proc: ManagedProcess, returncode: int) -> None:
            await self._on_exit(inst, proc, returncode)

        return await launch(
            name=name, kind=kind, argv=argv, env=env, cwd=self._config.visible_task,
            sandbox=self._sandbox, tasks=self._tasks, on_line=self._on_line, on_exit=on_exit,
        )

    def _on_line(self, proc: ManagedProcess, line: str) -> None:
        self._console.echo(line)
        self._telemetry.emit(p.T_FUNCTION if proc.kind == "runtime" else p.T_EXTENSION_LOG, line)

    async def _on_exit(self, inst: Instance, proc: ManagedProcess, returncode: int) -> None:
        if inst.phase == "shutdown" or inst.torn_down:
            return
        how = describe_exit(returncode)
        self._console.info(f"{proc.kind} {proc.name} exited ({how}) during {inst.phase}")
        oom = self._sandbox.oom_kills() > inst.oom_baseline
        prefix = f"RequestId: {inst.invocation.request_id} Error: " if inst.invocation else ""
        if oom:
            failure = Failure(p.ERR_RUNTIME_OOM, f"{prefix}Runtime exited with error: {how}")
        elif proc.kind == "runtime":
            failure = Failure(p.ERR_RUNTIME_EXIT, f"{prefix}Runtime exited with error: {how}")
        else:
            failure = Failure(p.ERR_EXTENSION_CRASH, f"{prefix}extension {proc.name} exited: {how}")
        inst.fail(failure)
        if inst.phase == "idle":
            self._tasks.spawn(self._reset_idle(inst), "reset-after-exit")

    async def _reset_idle(self, inst: Instance) -> None:
        async with asyncio.timeout(self.max_wait_s()):
            async with self._lock:
                if self._instance is inst and not inst.torn_down:
                    await self._teardown(inst, p.REASON_FAILURE)

    def _record_failed_init(self, inv: Invocation, failure: Failure) -> None:
        inv.respond(error_reply(inv.request_id, failure))
        status = "error" if failure.body is not None else (
            "timeout" if failure.error_type == p.ERR_SANDBOX_TIMEDOUT else "failure")
        self._reporter.write({
            "kind": "invoke",
            "requestId": inv.request_id,
            "status": status,
            "errorType": failure.error_type,
            "coldStart": True,
            "initDurationMs": None,
            "callerLatencyMs": ms((inv.responded_at or monotonic()) - inv.arrived),
            "runtimeDurationMs": None,
            "postRuntimeDurationMs": None,
            "durationMs": None,
            "billedDurationMs": None,
            "memorySizeMB": self._config.memory_mb,
            "maxMemoryUsedMB": None,
            "maxRssBytes": None,
        })

    # ==== invoke =============================================================================

    async def _invoke(self, inst: Instance, inv: Invocation, cold: bool) -> None:
        cfg = self._config
        loop = asyncio.get_running_loop()
        inst.phase = "invoke"
        inst.invocation = inv
        inv.started = monotonic()
        inv.deadline_ms = epoch_ms() + int(cfg.timeout_s * 1000)
        deadline = loop.time() + cfg.timeout_s
        tracing = {"type": "X-Amzn-Trace-Id", "value": inv.trace_id}
        self._telemetry.emit(p.T_START, {"requestId": inv.request_id, "version": c.FUNCTION_VERSION,
                                         "tracing": tracing})
        event = {
            "eventType": p.EVENT_INVOKE,
            "deadlineMs": inv.deadline_ms,
            "requestId": inv.request_id,
            "invokedFunctionArn": cfg.function_arn,
            "tracing": tracing,
        }
        for ext in inst.extensions.values():
            if p.EVENT_INVOKE in ext.events:
                ext.deliver(event)
        inst.runtime.deliver(inv)
        inst.changes.notify()

        outcome: Outcome | None = None
        try:
            async with asyncio.timeout_at(deadline):
                outcome = await asyncio.shield(inv.outcome)
        except TimeoutError:
            pass
        if outcome is None:
            failure = Failure(p.ERR_SANDBOX_TIMEDOUT,
                              f"RequestId: {inv.request_id} Error: Task timed out after "
                              f"{cfg.timeout_s:.2f} seconds")
            inv.respond(error_reply(inv.request_id, failure))
            self._emit_runtime_done(inv, "timeout", failure.error_type, None)
            await self._finish(inst, inv, cold, "timeout", failure.error_type, None, monotonic())
            await self._teardown(inst, p.REASON_TIMEOUT)
            return
        inv.respond(self._reply_for(inv, outcome))
        self._emit_runtime_done(inv, outcome.status, outcome.error_type, outcome)
        if outcome.kind == "failure":
            await self._finish(inst, inv, cold, "failure", outcome.error_type, outcome, monotonic())
            await self._teardown(inst, p.REASON_FAILURE)
            return

        timed_out = False
        try:
            async with asyncio.timeout_at(deadline):
                await inst.changes.wait_for(lambda: inst.failure is not None or inst.all_parked())
        except TimeoutError:
            timed_out = True
        end = monotonic()
        if timed_out:
            await self._finish(inst, inv, cold, "timeout", p.ERR_SANDBOX_TIMEDOUT, outcome, end)
            await self._teardown(inst, p.REASON_TIMEOUT)
        elif inst.failure is not None:
            await self._finish(inst, inv, cold, "failure", inst.failure.error_type, outcome, end)
            await self._teardown(inst, p.REASON_FAILURE)
        else:
            inst.phase = "idle"
            inst.invocation = None
            await self._finish(inst, inv, cold, outcome.status, outcome.error_type, outcome, end)
            await self._freeze()

    def _reply_for(self, inv: Invocation, outcome: Outcome) -> DoorReply:
        if outcome.kind == "failure" and outcome.failure is not None:
            return error_reply(inv.request_id, outcome.failure)
        headers = {
            "Content-Type": outcome.content_type or p.JSON_CONTENT_TYPE,
            p.H_AMZ_REQUEST_ID: inv.request_id,
            p.H_AMZ_EXECUTED_VERSION: c.FUNCTION_VERSION,
        }
        if outcome.kind == "error":
            headers[p.H_AMZ_FUNCTION_ERROR] = p.FUNCTION_ERROR_UNHANDLED
        return DoorReply(200, outcome.body, headers)

    def _emit_runtime_done(self, inv: Invocation, status: str, error_type: str | None,
                           outcome: Outcome | None) -> None:
        end = outcome.at if outcome is not None else monotonic()
        record: dict[str, Any] = {
            "requestId": inv.request_id,
            "status": status,
            "metrics": {"durationMs": ms(end - inv.started),
                        "producedBytes": len(outcome.body) if outcome is not None else 0},
            "tracing": {"type": "X-Amzn-Trace-Id", "value": inv.trace_id},
        }
        if error_type is not None:
            record["errorType"] = error_type
        if outcome is not None and outcome.response_started is not None:
            wall = time.time() - (monotonic() - inv.started)
            first = outcome.response_started - inv.started
            record["spans"] = [
                {"name": "responseLatency", "start": timestamp(wall), "durationMs": ms(first)},
                {"name": "responseDuration", "start": timestamp(wall + first),
                 "durationMs": ms(outcome.at - outcome.response_started)},
            ]
        self._telemetry.emit(p.T_RUNTIME_DONE, record)

    async def _finish(self, inst: Instance, inv: Invocation, cold: bool, status: str,
                      error_type: str | None, outcome: Outcome | None, end: float) -> None:
        """platform.report and the invocation record."""
        cfg = self._config
        inst.peak_rss = max(inst.peak_rss, self._sandbox.peak_rss_bytes())
        duration = ms(end - inv.started)
        billed = max(1, math.ceil(duration))
        max_used = math.ceil(inst.peak_rss / (1024 * 1024))
        metrics: dict[str, Any] = {
            "durationMs": duration,
            "billedDurationMs": billed,
            "memorySizeMB": cfg.memory_mb,
            "maxMemoryUsedMB": max_used,
        }
        if cold:
            metrics["initDurationMs"] = inst.init_duration_ms
        record: dict[str, Any] = {
            "requestId": inv.request_id,
            "status": status,
            "metrics": metrics,
            "tracing": {"type": "X-Amzn-Trace-Id", "value": inv.trace_id},
        }
        if error_type is not None and status != "success":
            record["errorType"] = error_type
        self._telemetry.emit(p.T_REPORT, record)
        runtime_end = outcome.at if outcome is not None else end
        runtime_parked = inst.runtime.parked_at if inst.runtime.is_parked else None
        post = max(0.0, end - runtime_parked) if runtime_parked and runtime_parked >= runtime_end else None
        self._reporter.write({
            "kind": "invoke",
            "requestId": inv.request_id,
            "status": status,
            "errorType": error_type if status != "success" else None,
            "coldStart": cold,
            "initDurationMs": inst.init_duration_ms if cold else None,
            "callerLatencyMs": ms((inv.responded_at or end) - inv.arrived),
            "runtimeDurationMs": ms(runtime_end - inv.started),
            "postRuntimeDurationMs": ms(post) if post is not None else None,
            "durationMs": duration,
            "billedDurationMs": billed,
            "memorySizeMB": cfg.memory_mb,
            "maxMemoryUsedMB": max_used,
            "maxRssBytes": inst.peak_rss,
        })

    # ==== freeze, reset, shutdown ============================================================

    async def _freeze(self) -> None:
        if self._sandbox.freeze_mode == "off":
            return
        self._telemetry.pause()
        await self._telemetry.quiesce(QUIESCE_S)
        await self._sandbox.freeze()

    async def _thaw(self) -> None:
        await self._sandbox.thaw()
        self._telemetry.resume()

    async def stop(self) -> None:
        """The Shutdown phase (spindown): ends any invocation, then the environment."""
        self._closing = True
        for task in list(self._running):
            task.cancel()
        for task in list(self._running):
            try:
                async with asyncio.timeout(KILL_WAIT_S):
                    await asyncio.wait({task})
            except TimeoutError:
                self._console.info("an invocation did not end in time at shutdown")
        async with asyncio.timeout(self.max_wait_s()):
            async with self._lock:
                inst = self._instance
                if inst is not None:
                    await self._teardown(inst, p.REASON_SPINDOWN)

    async def _teardown(self, inst: Instance, reason: str) -> None:
        """Shutdown or reset: runtime first, then SHUTDOWN to extensions, SIGKILL at the deadline."""
        if inst.torn_down:
            return
        inst.phase = "shutdown"
        inst.registration_open = False
        inst.invocation = None
        started = monotonic()
        shutdown_ext = [e for e in inst.extensions.values() if p.EVENT_SHUTDOWN in e.events]
        has_internal = any(not e.external for e in inst.extensions.values())
        if any(e.external for e in inst.extensions.values()):
            total_ms = p.SHUTDOWN_WITH_EXTENSIONS_MS
        elif has_internal:
            total_ms = p.RUNTIME_SHUTDOWN_INTERNAL_MS
        else:
            total_ms = p.SHUTDOWN_WITHOUT_EXTENSIONS_MS
        deadline_ms = epoch_ms() + total_ms
        deadline = started + total_ms / 1000
        self._console.info(f"shutdown: reason={reason} deadlineMs={deadline_ms}")
        await self._sandbox.thaw()
        self._telemetry.resume()

        runtime = inst.runtime_process
        if runtime is not None and runtime.running:
            if reason == p.REASON_SPINDOWN:
                runtime.terminate()
                grace = (p.RUNTIME_SHUTDOWN_INTERNAL_MS if has_internal else p.RUNTIME_SHUTDOWN_MS) / 1000
                await _wait_exited([runtime], started + grace)
            if runtime.running:
                await self._sandbox.kill_tree(runtime.pid)
                await _wait_exited([runtime], monotonic() + KILL_WAIT_S)
        inst.runtime.close()

        event = {"eventType": p.EVENT_SHUTDOWN, "shutdownReason": reason, "deadlineMs": deadline_ms}
        for ext in shutdown_ext:
            ext.deliver(event)
        inst.changes.notify()
        expected = [inst.launched[e.name] for e in shutdown_ext if e.external and e.name in inst.launched]
        async with asyncio.TaskGroup() as tg:
            flush = tg.create_task(self._telemetry.flush(deadline - monotonic()))
            await _wait_exited(expected, deadline)
            flush.cancel()
        survivors = [proc for proc in inst.launched.values() if proc.running]
        await self._sandbox.kill_all()
        for proc in survivors:
            self._console.info(f"shutdown: killed extension {proc.name} (pid {proc.pid}) at the deadline")
        await _wait_exited(list(inst.launched.values()), monotonic() + KILL_WAIT_S)
        for ext in inst.extensions.values():
            ext.close()
        self._telemetry.drop_all()
        self._telemetry.end_init()
        inst.torn_down = True
        if self._instance is inst:
            self._instance = None

    # ==== Runtime API ========================================================================

    def _current(self) -> Instance:
        inst = self._instance
        if inst is None or inst.phase == "shutdown":
            raise ApiError(500, "Runtime.Unavailable", "Container error. Non-recoverable state.")
        return inst

    async def runtime_next(self) -> ApiReply:
        inst = self._current()
        inv = inst.invocation
        if inv is not None and inst.phase == "invoke" and not inv.outcome.done():
            raise ApiError(403, p.ERR_INVALID_STATE_TRANSITION,
                           "State transition from Running to Ready failed for runtime: "
                           "the invocation has no response yet")
        if not inst.runtime.ready:
            inst.runtime.ready = True
            if inst.phase == "init":
                self._emit_init_runtime_done("success", None)
        try:
            next_inv: Invocation = await inst.runtime.next(inst.changes)
        except _Closed:
            raise ApiError(500, "Runtime.Unavailable", "Container error. Non-recoverable state.") from None
        headers = {
            "Content-Type": p.JSON_CONTENT_TYPE,
            p.H_REQUEST_ID: next_inv.request_id,
            p.H_DEADLINE_MS: str(next_inv.deadline_ms),
            p.H_FUNCTION_ARN: self._config.function_arn,
            p.H_TRACE_ID: next_inv.trace_id,
        }
        if next_inv.client_context:
            headers[p.H_CLIENT_CONTEXT] = next_inv.client_context
        if next_inv.cognito_identity:
            headers[p.H_COGNITO_IDENTITY] = next_inv.cognito_identity
        return ApiReply(200, next_inv.payload, headers)

    def _invocation(self, request_id: str) -> tuple[Instance, Invocation]:
        inst = self._current()
        inv = inst.invocation
        if inv is None or inv.request_id != request_id:
            raise ApiError(400, p.ERR_INVALID_REQUEST_ID, "Invalid request ID")
        if inv.outcome.done():
            raise ApiError(403, p.ERR_INVALID_STATE_TRANSITION,
                           "State transition from ResponseSent failed for runtime: "
                           "the invocation already has a response")
        return inst, inv

    def runtime_response(self, request_id: str, body: bytes, content_type: str,
                         started: float) -> ApiReply:
        inst, inv = self._invocation(request_id)
        if len(body) > p.MAX_PAYLOAD_BYTES:
            failure = Failure(p.ERR_FUNCTION_RESPONSE_TOO_LARGE,
                              f"Response payload size ({len(body)} bytes) exceeded maximum allowed "
                              f"payload size ({p.MAX_PAYLOAD_BYTES} bytes).")
            inv.outcome.set_result(Outcome("error", failure.document(), p.JSON_CONTENT_TYPE,
                                           monotonic(), error_type=failure.error_type,
                                           response_started=started))
            inst.changes.notify()
            raise ApiError(413, p.ERR_REQUEST_TOO_LARGE,
                           f"Exceeded maximum allowed payload size ({p.MAX_PAYLOAD_BYTES} bytes).")
        inv.outcome.set_result(Outcome("response", body, content_type, monotonic(),
                                       response_started=started))
        inst.changes.notify()
        return ApiReply(202, OK_BODY, {"Content-Type": p.JSON_CONTENT_TYPE})

    def runtime_error(self, request_id: str, error_type: str | None, body: bytes,
                      started: float) -> ApiReply:
        inst, inv = self._invocation(request_id)
        inv.outcome.set_result(Outcome("error", body, p.JSON_CONTENT_TYPE, monotonic(),
                                       error_type=_error_type(error_type, body, "Function.Unknown"),
                                       response_started=started))
        inst.changes.notify()
        return ApiReply(202, OK_BODY, {"Content-Type": p.JSON_CONTENT_TYPE})

    def runtime_init_error(self, error_type: str | None, body: bytes) -> ApiReply:
        inst = self._current()
        if inst.phase != "init" or inst.runtime.ready:
            raise ApiError(403, p.ERR_INVALID_STATE_TRANSITION,
                           "State transition from Ready to InitError failed for runtime")
        etype = _error_type(error_type, body, p.ERR_RUNTIME_UNKNOWN)
        inst.fail(Failure(etype, _error_message(body), body or None))
        return ApiReply(202, OK_BODY, {"Content-Type": p.JSON_CONTENT_TYPE})

    # ==== Extensions API =====================================================================

    def register(self, name: str | None, body: bytes, features: str | None) -> ApiReply:
        if not name:
            raise ApiError(403, p.ERR_EXT_INVALID_NAME, "Empty extension name")
        try:
            doc = json.loads(body or b"{}")
            events = doc.get("events") or []
            if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
                raise ValueError("events must be an array of strings")
        except (ValueError, AttributeError) as exc:
            raise ApiError(403, p.ERR_INVALID_REQUEST_FORMAT, str(exc)) from None
        inst = self._instance
        if inst is None or not inst.registration_open:
            raise ApiError(403, p.ERR_EXT_REGISTRATION_CLOSED, "Extension registration closed already")
        for event in events:
            if event not in p.EXTENSION_EVENTS:
                raise ApiError(403, p.ERR_EXT_INVALID_EVENT, f"{event}: ErrorInvalidEventType")
        external = name in inst.launched
        if any(e.name == name for e in inst.extensions.values()):
            raise ApiError(403, p.ERR_EXT_INVALID_STATE, "Extension with this name already registered")
        if not external and p.EVENT_SHUTDOWN in events:
            raise ApiError(403, p.ERR_EXT_INVALID_EVENT, f"{p.EVENT_SHUTDOWN}: {p.SHUTDOWN_NOT_FOR_INTERNAL}")
        if len(inst.extensions) >= p.MAX_EXTENSIONS:
            raise ApiError(403, p.ERR_EXT_TOO_MANY, f"Extension limit ({p.MAX_EXTENSIONS}) reached")
        ext = Extension(name, frozenset(events), external)
        inst.extensions[ext.id] = ext
        inst.changes.notify()
        cfg = self._config
        doc_out = {"functionName": cfg.function_name, "functionVersion": c.FUNCTION_VERSION,
                   "handler": cfg.handler}
        if features and "accountId" in [f.strip() for f in features.split(",")]:
            doc_out["accountId"] = c.ACCOUNT_ID
        return json_reply(200, doc_out, {p.H_EXTENSION_ID: ext.id})

    def _extension(self, identifier: str | None) -> tuple[Instance, Extension]:
        if not identifier:
            raise ApiError(403, p.ERR_EXT_MISSING_ID, "Missing Lambda-Extension-Identifier header")
        try:
            uuid.UUID(identifier)
        except ValueError:
            raise ApiError(403, p.ERR_EXT_INVALID_ID, "Invalid Lambda-Extension-Identifier") from None
        inst = self._instance
        ext = inst.extensions.get(identifier.lower()) if inst is not None else None
        if inst is None or ext is None:
            raise ApiError(403, p.ERR_EXT_UNKNOWN_ID, f"Unknown extension {identifier}")
        return inst, ext

    async def extension_next(self, identifier: str | None) -> ApiReply:
        inst, ext = self._extension(identifier)
        if ext.errored:
            raise ApiError(403, p.ERR_EXT_INVALID_STATE,
                           f"extension {ext.name} reported an error; no further calls succeed")
        if not ext.ready:
            ext.ready = True
            self._telemetry.emit(p.T_EXTENSION, {"name": ext.name, "state": "Ready",
                                                 "events": sorted(ext.events)})
        try:
            event = await ext.next(inst.changes)
        except _Closed:
            raise ApiError(500, "Extension.Unavailable", "Container error. Non-recoverable state.") from None
        return json_reply(200, event, {p.H_EXTENSION_ID: ext.id,
                                       p.H_EXTENSION_EVENT_ID: str(uuid.uuid4())})

    def extension_error(self, identifier: str | None, error_type: str | None, body: bytes,
                        *, during_init: bool) -> ApiReply:
        inst, ext = self._extension(identifier)
        if not error_type:
            raise ApiError(403, p.ERR_EXT_MISSING_HEADER,
                           f"Missing {p.H_EXTENSION_ERROR_TYPE} header")
        ext.errored = True
        kind = p.ERR_EXTENSION_INIT if during_init else p.ERR_EXTENSION_EXIT
        what = "failed to initialize" if during_init else "exited with an error"
        self._console.info(f"extension {ext.name} {what}: {error_type}")
        inst.fail(Failure(kind, f"extension {ext.name} {what}: {error_type}"))
        if inst.phase == "idle":
            self._tasks.spawn(self._reset_idle(inst), "reset-after-extension-error")
        return json_reply(202, {"status": "OK"}, {p.H_EXTENSION_ID: ext.id})

    # ==== Telemetry API ======================================================================

    def subscribe(self, identifier: str | None, body: bytes) -> ApiReply:
        inst, ext = self._extension(identifier)
        if not inst.registration_open:
            raise ApiError(403, p.ERR_TELEMETRY_CLOSED, "Telemetry API subscription is closed")
        try:
            subscription = parse_subscription(body)
        except SubscriptionError as exc:
            raise ApiError(400, p.ERR_VALIDATION, str(exc)) from None
        self._telemetry.subscribe(ext.id, ext.name, subscription)
        return ApiReply(200, b'"OK"', {"Content-Type": p.JSON_CONTENT_TYPE})


def _client_context(encoded: str | None) -> str | None:
    """The Invoke API's base64 client context, decoded for the Runtime API header."""
    if not encoded:
        return None
    try:
        return base64.b64decode(encoded, validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None


def _error_type(header: str | None, body: bytes, default: str) -> str:
    if header and VALID_ERROR_TYPE.match(header):
        return header
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("errorType"), str) and doc["errorType"]:
        return str(doc["errorType"])
    return header or default


def _error_message(body: bytes) -> str:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body.decode("utf-8", errors="replace")[:500]
    if isinstance(doc, dict) and isinstance(doc.get("errorMessage"), str):
        return str(doc["errorMessage"])
    return body.decode("utf-8", errors="replace")[:500]


async def _wait_exited(processes: list[ManagedProcess], until: float) -> None:
    """Waits until every process exited or the monotonic deadline passes."""
    pending = [proc.exited for proc in processes if proc.running]
    remaining = until - monotonic()
    if pending and remaining > 0:
        await asyncio.wait(pending, timeout=remaining)
