"""The extension's life: register, start the collector and the Telemetry listener, then per
INVOKE drain (once the function side has handed its telemetry over, or its runtime is done)
before asking for the next event, and at SHUTDOWN drain, stop and exit.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable
from typing import Any

from companion._lambda_api import (
    ExtensionsApi,
    InvokeEvent,
    ShutdownEvent,
    Subscription,
)
from companion._log import Logger
from companion._register import EVENTS, REGISTER_TIMEOUT, Registration
from companion._report import DrainReporter, describe_reply
from companion._settings import HANDOVER_TIMEOUT_ENV, STRICT_INIT_ENV, Settings
from companion._supervisor import CollectorSupervisor, StartOutcome, describe_exit
from companion._telemetry import RuntimeDoneTracker, TelemetryListener
from companion.errors import LambdaApiError

SUBSCRIBE_TIMEOUT = 2.0
REPORT_ERROR_TIMEOUT = 1.0
# A drain with less time than this cannot finish; the data waits for the next one.
MIN_DRAIN_BUDGET = 0.01
# The gRPC deadline ends the drain; this slack only catches a collector that ignores it.
DRAIN_SLACK = 0.02
# Part of what is left at SHUTDOWN kept for stopping the collector, at most STOP_RESERVE.
STOP_RESERVE = 0.3
# Telling the collector that a runtime finished without a hand-over mark.
RELEASE_TIMEOUT = 0.5
# runtimeDone statuses after which no hand-over follows: the runtime did not post (it crashed
# or was stopped at the deadline), so the layer's hook never ran.
NO_HANDOVER_STATUSES = frozenset({"failure", "timeout"})
NEXT_RETRIES = 10
NEXT_RETRY_DELAY = 0.05
CONFIG_INVALID_ERROR = "Extension.ConfigInvalid"
UNRECOVERABLE_ERROR = "Extension.Unrecoverable"


class Mode(enum.Enum):
    # Drain once the invocation's hand-over is complete (the function side's mark, else its
    # platform.runtimeDone; only the latter with AFTERFLUSH_HANDOVER_TIMEOUT=0), before the
    # next event/next.
    RUNTIME_DONE = "after runtimeDone"
    # No Telemetry API events: drain at the start of each INVOKE and at SHUTDOWN.
    NEXT_INVOKE = "at the start of each INVOKE and at SHUTDOWN"


class Companion:
    """One extension process's worth of state; `run()` returns the exit status."""

    def __init__(
        self,
        *,
        settings: Settings,
        name: str,
        api: ExtensionsApi,
        supervisor: CollectorSupervisor,
        listener: TelemetryListener,
        tracker: RuntimeDoneTracker,
        log: Logger,
        reporter: DrainReporter | None = None,
        wall: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
        started: float | None = None,
        registration: Registration | None = None,
        registered_at: float | None = None,
    ) -> None:
        self._settings = settings
        self._name = name
        self._api = api
        self._supervisor = supervisor
        self._listener = listener
        self._tracker = tracker
        self._log = log
        self._reporter = reporter or DrainReporter(log, clock=clock)
        self._wall = wall
        self._clock = clock
        self._started = clock() if started is None else started
        self._registration = registration
        self._registered_at = registered_at
        self.mode = Mode.NEXT_INVOKE
        self.invocations = 0
        # Whether a hand-over mark follows each invocation: the function runs under the
        # layer's wrapper, or has marked one already.
        self._expect_marks = settings.function_marks

    async def run(self) -> int:
        if self._registration is not None:
            self._api.extension_id = self._registration.extension_id
            registered = self._registered_at if self._registered_at is not None else self._clock()
        else:
            try:
                async with asyncio.timeout(REGISTER_TIMEOUT):
                    await self._api.register(self._name, EVENTS)
            except (LambdaApiError, TimeoutError) as exc:
                self._log.error(f"cannot register as extension {self._name}: {exc or 'timed out'}")
                return 1
            registered = self._clock()
        status = 1
        try:
            async with asyncio.TaskGroup() as tasks:
                # grpc is imported by the first Status call, not ahead of it on a thread:
                # under Lambda's CPU quota that only took CPU from the starting collector
                # (Init 614 ms without, 698 ms with, median of 7 under the emulator).
                tasks.create_task(self._supervisor.run())
                try:
                    status = await self._serve(registered)
                finally:
                    await self._close(1.0)
        except* Exception as group:
            # Unreachable by design (every task handles its own errors); said loudly if not.
            self._log.error(f"unexpected error, exiting: {group.exceptions[0]!r}")
        return status

    async def _serve(self, registered: float) -> int:
        self.mode = await self._subscribe()
        first = await self._supervisor.wait_first_start(self._settings.ready_timeout + 1.0)
        if first.outcome is StartOutcome.CONFIG_INVALID:
            if self._settings.strict_init:
                message = f"collector config rejected ({STRICT_INIT_ENV}=true): {first.detail}"
                self._log.error(f"{message}; failing init")
                await self._report_error(self._api.init_error, CONFIG_INVALID_ERROR, message)
                return 1
            self._log.error(
                f"collector config rejected: {first.detail}; telemetry is off, the function "
                "keeps serving"
            )
        now = self._clock()
        collector = (
            f"collector ready {_ms(first.elapsed)}"
            if first.outcome is StartOutcome.READY
            else f"without collector: {first.outcome.value}"
        )
        self._log.info(
            f"ready in {_ms(now - self._started)} (registered {_ms(registered - self._started)}, "
            f"{collector}); draining {self._when()}"
        )
        return await self._event_loop()

    def _when(self) -> str:
        if self.mode is Mode.RUNTIME_DONE and self._settings.handover_timeout != 0:
            return "after each invocation's hand-over (or its runtimeDone)"
        return self.mode.value

    async def _subscribe(self) -> Mode:
        fallback = f"draining {Mode.NEXT_INVOKE.value}"
        try:
            port = await self._listener.start(self._settings.telemetry_port)
        except OSError as exc:
            self._log.warning(f"cannot listen for Telemetry API events ({exc}); {fallback}")
            return Mode.NEXT_INVOKE
        try:
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
                result = await self._api.subscribe_telemetry(port)
        except TimeoutError:
            result = None
        if result is not None and result.outcome is Subscription.ACTIVE:
            return Mode.RUNTIME_DONE
        await self._listener.aclose()
        if result is not None and result.outcome is Subscription.NOT_SUPPORTED:
            self._log.info(f"Telemetry API not supported here ({result.detail}); {fallback}")
        else:
            detail = result.detail if result is not None else "timed out"
            self._log.warning(f"Telemetry API subscription failed ({detail}); {fallback}")
        return Mode.NEXT_INVOKE

    async def _event_loop(self) -> int:
        failures = 0
        while True:
            try:
                # The one wait without a deadline: Lambda answers when it has an event, and
                # freezes the environment meanwhile.
                event = await self._api.next_event()
            except LambdaApiError as exc:
                failures += 1
                if failures >= NEXT_RETRIES:
                    message = f"event/next failed {failures} times in a row, last: {exc}"
                    self._log.error(f"{message}; exiting")
                    await self._report_error(self._api.exit_error, UNRECOVERABLE_ERROR, message)
                    return 1
                self._log.warning(f"event/next failed: {exc}; retrying")
                await asyncio.sleep(NEXT_RETRY_DELAY * failures)
                continue
            failures = 0
            if isinstance(event, ShutdownEvent):
                await self._on_shutdown(event)
                return 0
            self.invocations += 1
            try:
                await self._on_invoke(event)
            except asyncio.CancelledError as exc:
                if _being_cancelled():
                    raise
                self._log.error(f"INVOKE {event.request_id} not handled: {exc!r}")
            except Exception as exc:
                # Whatever went wrong, Lambda gets its next call: the function must not wait,
                # and an extension that exits resets the environment.
                self._log.error(f"INVOKE {event.request_id} not handled: {exc!r}")

    async def _on_invoke(self, event: InvokeEvent) -> None:
        until = event.deadline_ms / 1000 - self._settings.deadline_margin
        if self._supervisor.control is None or not self._settings.hold:
            # Without hold the collector exported before it answered: nothing waits here.
            return
        if self.mode is Mode.NEXT_INVOKE:
            await self._drain("next-invoke", event.request_id, until)
        elif self._settings.handover_timeout == 0:
            await self._after_runtime_done(event.request_id, until)
        else:
            await self._after_handover(event.request_id, until)

    async def _after_handover(self, request_id: str, until: float) -> None:
        """Drains as soon as the invocation's hand-over is complete: the collector waits for
        the function side's mark. runtimeDone ends the wait where no mark is coming (a
        function not under the layer's wrapper, a runtime that failed or timed out), else
        AFTERFLUSH_HANDOVER_TIMEOUT after it (the SDK flushes after the response, so on a
        small function the mark comes well after runtimeDone)."""
        drain = asyncio.create_task(
            self._drain("invoke", request_id, until, await_handover=True)
        )
        done = asyncio.create_task(self._tracker.wait(request_id, until - self._wall()))
        try:
            await asyncio.wait({drain, done}, return_when=asyncio.FIRST_COMPLETED)
            if not drain.done():
                status = done.result()
                if status is None:
                    # The drain's wait ends at the same deadline: there is nothing to release.
                    self._no_runtime_done(request_id)
                elif await self._mark_missing(drain, status) and not await self._release(
                    request_id
                ):
                    # A wait nobody can end would hold the environment until the deadline.
                    drain.cancel()
                    await asyncio.gather(drain, return_exceptions=True)
                    await self._drain("invoke", request_id, until)
                    return
            reply = await drain
            if reply is not None and reply.handover == "function":
                self._expect_marks = True
        finally:
            for task in (drain, done):
                task.cancel()

    async def _mark_missing(self, drain: asyncio.Task[Any], status: str) -> bool:
        """After runtimeDone (`status`): whether the drain still waits for a mark that will
        not come, waiting up to the hand-over timeout for one that should."""
        if not self._expect_marks or status in NO_HANDOVER_STATUSES:
            return True
        waited = await asyncio.wait({drain}, timeout=self._settings.handover_timeout)
        if waited[0]:
            return False
        self._reporter.noticed(
            "invoke", f"no hand-over mark within {_ms(self._settings.handover_timeout)} of "
            f"runtimeDone ({HANDOVER_TIMEOUT_ENV}); draining without it"
        )
        return True

    async def _release(self, request_id: str) -> bool:
        """Marks the hand-over of `request_id` as over (its runtime is done); False when the
        collector could not be told."""
        control = self._supervisor.control
        if control is None:
            return False
        try:
            await control.handover(request_id, source="runtime", timeout=RELEASE_TIMEOUT)
        except Exception as exc:
            self._reporter.failed("invoke", f"cannot end the wait for the hand-over: {exc}")
            return False
        return True

    async def _after_runtime_done(self, request_id: str, until: float) -> None:
        if await self._tracker.wait(request_id, until - self._wall()) is None:
            self._no_runtime_done(request_id)
        await self._drain("invoke", request_id, until)

    def _no_runtime_done(self, request_id: str) -> None:
        self.mode = Mode.NEXT_INVOKE
        self._log.warning(
            f"no platform.runtimeDone for {request_id} before its deadline; "
            f"draining {self.mode.value} from now on"
        )

    async def _drain(
        self, reason: str, request_id: str, until: float, *, shutdown: bool = False,
        await_handover: bool = False,
    ) -> Any:
        """Drains until `until` (wall clock), capped by the drain timeout except at SHUTDOWN;
        with `await_handover`, once the hand-over of `request_id` is complete (the wait may
        last until `until`, the exports the drain timeout after it). Returns the DrainReply
        or None. Never raises."""
        control = self._supervisor.control
        budget = until - self._wall()
        if not shutdown and not await_handover:
            budget = min(budget, self._settings.drain_timeout)
        if control is None or budget < MIN_DRAIN_BUDGET:
            self._log.debug(f"drain ({reason}) skipped: budget {budget * 1000:.0f} ms")
            return None
        try:
            async with asyncio.timeout(budget + DRAIN_SLACK):
                reply = await control.drain(
                    timeout=budget, request_id=request_id, reason=reason,
                    spill_remaining=shutdown, await_handover=await_handover,
                    handover_timeout=self._settings.handover_timeout or 0.0,
                    max_drain=self._settings.drain_timeout if await_handover else 0.0,
                )
        except TimeoutError:
            self._reporter.failed(reason, f"no answer within {budget * 1000:.0f} ms")
            return None
        except asyncio.CancelledError:
            if _being_cancelled():
                raise
            # gRPC ends calls on a channel closed under them (the supervisor closes it when
            # the collector dies) with CancelledError; that is a failed drain, not our end.
            self._reporter.failed(reason, "the collector went away during the call")
            return None
        except Exception as exc:
            self._reporter.failed(reason, str(exc) or repr(exc))
            return None
        self._reporter.drained(reason, reply)
        return reply

    async def _on_shutdown(self, event: ShutdownEvent) -> None:
        began = self._clock()
        end = event.deadline_ms / 1000 - self._settings.deadline_margin
        reserve = min(STOP_RESERVE, max(end - self._wall(), 0.0) / 4)
        ready = self._supervisor.control is not None
        reply = await self._drain("shutdown", "", end - reserve, shutdown=True)
        code = await self._supervisor.stop(max(end - self._wall(), 0.05))
        await self._listener.aclose()
        totals = self._reporter.totals
        if reply is not None:
            drained = describe_reply(reply)
        elif ready:
            drained = "the shutdown drain got no reply (see above)"
        else:
            drained = "no shutdown drain (collector not ready)"
        exit_text = "was not running" if code is None else f"stopped ({describe_exit(code)})"
        self._log.info(
            f"shutdown ({event.reason or 'unknown'}) in {(self._clock() - began) * 1000:.0f} ms: "
            f"{drained}; collector {exit_text}; over {_count(self.invocations, 'invocation')} "
            f"{_count(totals.drains, 'drain')} ({totals.failed} failed), dropped "
            f"{totals.dropped}, spilled {totals.spilled}"
        )

    async def _report_error(self, call: Any, error_type: str, message: str) -> None:
        try:
            async with asyncio.timeout(REPORT_ERROR_TIMEOUT):
                await call(error_type, message)
        except (LambdaApiError, TimeoutError) as exc:
            self._log.error(f"could not report {error_type} to Lambda: {exc or 'timed out'}")

    async def _close(self, timeout: float) -> None:
        await self._supervisor.stop(timeout)
        await self._listener.aclose()


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _being_cancelled() -> bool:
    """Whether the current task itself is being cancelled (not merely handed a CancelledError
    by a library)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
