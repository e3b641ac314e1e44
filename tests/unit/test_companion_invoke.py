"""The companion's decisions per event, with in-memory fakes for Lambda, the collector and the
clock: when to drain, with which deadline, and what never stops it."""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass, field
from typing import Any

import pytest

import companion._companion as companion_module
from companion._companion import Companion, Mode
from companion._lambda_api import (
    InvokeEvent,
    LambdaApiError,
    ShutdownEvent,
    SubscribeResult,
    Subscription,
)
from companion._log import Logger
from companion._settings import Settings
from companion._supervisor import StartOutcome, StartReport
from companion._telemetry import RuntimeDoneTracker
from companion.errors import ControlError
from companion.proto import control_pb2

NOW = 1_800_000_000.0


@dataclass
class FakeControl:
    """The collector's control service as the companion sees it. A drain that awaits the
    hand-over waits until `handover()` (the companion's mark) or `mark()` (the function's)."""

    drains: list[dict[str, Any]] = field(default_factory=list)
    handovers: list[tuple[str, str]] = field(default_factory=list)
    fail: bool = False
    fail_handover: bool = False
    channel_closed: bool = False
    marks: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._marked: dict[str, asyncio.Event] = {}

    def _event(self, request_id: str) -> asyncio.Event:
        return self._marked.setdefault(request_id, asyncio.Event())

    def mark(self, request_id: str, source: str = "function") -> None:
        self.marks.setdefault(request_id, source)
        self._event(request_id).set()

    async def drain(self, *, timeout: float, request_id: str = "", reason: str = "manual",
                    spill_remaining: bool = False, await_handover: bool = False,
                    handover_timeout: float = 0.0, max_drain: float = 0.0,
                    ) -> control_pb2.DrainReply:
        call = {"timeout": timeout, "request_id": request_id, "reason": reason,
                "spill": spill_remaining}
        if await_handover:
            call.update(await_handover=True, handover_timeout=handover_timeout,
                        max_drain=max_drain)
        self.drains.append(call)
        if self.fail:
            raise ControlError("Drain on unix:///x failed: UNAVAILABLE: gone")
        if self.channel_closed:
            # What grpc.aio raises in a call whose channel is closed under it.
            raise asyncio.CancelledError()
        handover = ""
        if await_handover:
            await self._event(request_id).wait()
            handover = self.marks[request_id]
        return control_pb2.DrainReply(
            traces=control_pb2.SignalCounts(exported=4), complete=True, handover=handover
        )

    async def handover(self, request_id: str, *, source: str, timeout: float) -> Any:
        self.handovers.append((request_id, source))
        if self.fail_handover:
            raise ControlError("Handover on unix:///x failed: UNIMPLEMENTED: no")
        first = request_id not in self.marks
        self.mark(request_id, source)
        return control_pb2.HandoverReply(first=first)


@dataclass
class FakeSupervisor:
    control: FakeControl | None = field(default_factory=FakeControl)
    first: StartReport = field(default_factory=lambda: StartReport(StartOutcome.READY, "", 0.1))
    stops: list[float] = field(default_factory=list)

    async def run(self) -> None:
        return None

    async def wait_first_start(self, timeout: float) -> StartReport:
        return self.first

    async def stop(self, timeout: float) -> int | None:
        self.stops.append(timeout)
        self.control = None
        return 0


@dataclass
class FakeApi:
    events: list[Any] = field(default_factory=list)
    subscription: Subscription = Subscription.NOT_SUPPORTED
    register_error: bool = False
    errors: list[tuple[str, str]] = field(default_factory=list)

    async def register(self, name: str, events: Any) -> None:
        if self.register_error:
            raise LambdaApiError("cannot connect to 127.0.0.1:9001: refused")

    async def subscribe_telemetry(self, port: int) -> SubscribeResult:
        return SubscribeResult(self.subscription, "Telemetry API is not supported")

    async def next_event(self) -> Any:
        event = self.events.pop(0)
        if isinstance(event, Exception):
            raise event
        return event

    async def init_error(self, error_type: str, message: str) -> None:
        self.errors.append(("init", error_type))

    async def exit_error(self, error_type: str, message: str) -> None:
        self.errors.append(("exit", error_type))


class FakeListener:
    port = 4243

    async def start(self, port: int = 0) -> int:
        return self.port

    async def aclose(self) -> None:
        return None


def make(settings: Settings | None = None, **parts: Any) -> tuple[Companion, io.StringIO]:
    out = io.StringIO()
    companion = Companion(
        settings=settings or Settings(runtime_api="127.0.0.1:1"),
        name="afterflush",
        api=parts.get("api", FakeApi()),
        supervisor=parts.get("supervisor", FakeSupervisor()),
        listener=FakeListener(),
        tracker=parts.get("tracker", RuntimeDoneTracker()),
        log=Logger(out),
        wall=lambda: NOW,
    )
    return companion, out


def invoke(rid: str, seconds_left: float) -> InvokeEvent:
    return InvokeEvent(request_id=rid, deadline_ms=int((NOW + seconds_left) * 1000))


async def test_the_drain_waits_for_the_hand_over_until_the_deadline_and_exports_for_the_drain_timeout() -> None:
    supervisor = FakeSupervisor()
    companion, out = make(Settings(function_marks=True), supervisor=supervisor)
    companion.mode = Mode.RUNTIME_DONE
    assert supervisor.control is not None
    # Given the function side's mark (made before the companion even asked)
    supervisor.control.mark("r1")
    # When the INVOKE is handled
    await companion._on_invoke(invoke("r1", 30))
    # Then one drain awaited the hand-over, with the whole invocation as its deadline (less the
    # margin) and the drain timeout for its exports; nothing else was needed
    assert supervisor.control.drains == [{
        "timeout": pytest.approx(29.8), "request_id": "r1", "reason": "invoke", "spill": False,
        "await_handover": True, "handover_timeout": 1.0, "max_drain": 2.0,
    }]
    assert supervisor.control.handovers == []
    assert out.getvalue() == ""


async def test_a_function_without_the_layers_wrapper_is_drained_at_its_runtime_done() -> None:
    supervisor = FakeSupervisor()
    tracker = RuntimeDoneTracker()
    companion, out = make(supervisor=supervisor, tracker=tracker)
    companion.mode = Mode.RUNTIME_DONE
    tracker.mark_done("r1", "success")
    await companion._on_invoke(invoke("r1", 30))
    assert supervisor.control is not None
    # runtimeDone ended the wait for a mark that was not coming
    assert supervisor.control.handovers == [("r1", "runtime")]
    assert [d["request_id"] for d in supervisor.control.drains] == ["r1"]
    assert out.getvalue() == ""


async def test_one_mark_from_the_function_makes_runtime_done_wait_for_the_next_ones() -> None:
    supervisor = FakeSupervisor()
    tracker = RuntimeDoneTracker()
    companion, out = make(Settings(handover_timeout=0.05), supervisor=supervisor, tracker=tracker)
    companion.mode = Mode.RUNTIME_DONE
    control = supervisor.control
    assert control is not None
    # Given a first invocation the function side marked
    control.mark("r1")
    await companion._on_invoke(invoke("r1", 30))
    # When the second one's runtimeDone comes and its mark never does
    tracker.mark_done("r2", "success")
    await companion._on_invoke(invoke("r2", 30))
    # Then the companion waited the hand-over timeout before ending the wait itself, and said so
    assert control.handovers == [("r2", "runtime")]
    assert out.getvalue() == (
        "[afterflush] WARNING drain (invoke): no hand-over mark within 50 ms of runtimeDone "
        "(AFTERFLUSH_HANDOVER_TIMEOUT); draining without it\n"
    )


@pytest.mark.parametrize("status", ["timeout", "failure"])
async def test_a_runtime_that_did_not_post_ends_the_wait_at_once(status: str) -> None:
    supervisor = FakeSupervisor()
    tracker = RuntimeDoneTracker()
    # A hand-over timeout the test would notice: no wait may happen
    companion, out = make(Settings(function_marks=True, handover_timeout=3600.0),
                          supervisor=supervisor, tracker=tracker)
    companion.mode = Mode.RUNTIME_DONE
    tracker.mark_done("r1", status)
    async with asyncio.timeout(10):
        await companion._on_invoke(invoke("r1", 30))
    assert supervisor.control is not None
    assert supervisor.control.handovers == [("r1", "runtime")]
    assert out.getvalue() == ""


async def test_a_wait_the_collector_cannot_be_told_to_end_becomes_a_plain_drain() -> None:
    supervisor = FakeSupervisor(control=FakeControl(fail_handover=True))
    tracker = RuntimeDoneTracker()
    companion, out = make(supervisor=supervisor, tracker=tracker)
    companion.mode = Mode.RUNTIME_DONE
    tracker.mark_done("r1", "success")
    async with asyncio.timeout(10):
        await companion._on_invoke(invoke("r1", 30))
    assert supervisor.control is not None
    assert [(d["request_id"], "await_handover" in d) for d in supervisor.control.drains] == [
        ("r1", True), ("r1", False)
    ]
    assert supervisor.control.drains[1]["timeout"] == 2.0
    assert out.getvalue() == (
        "[afterflush] WARNING drain (invoke) failed: cannot end the wait for the hand-over: "
        "Handover on unix:///x failed: UNIMPLEMENTED: no\n"
        "[afterflush] INFO drains complete again after 1 with problems\n"
    )


async def test_with_no_hand_over_wait_the_drain_follows_runtime_done() -> None:
    supervisor = FakeSupervisor()
    tracker = RuntimeDoneTracker()
    companion, _ = make(Settings(handover_timeout=0.0), supervisor=supervisor, tracker=tracker)
    companion.mode = Mode.RUNTIME_DONE
    tracker.mark_done("r1", "success")
    await companion._on_invoke(invoke("r1", 30))
    assert supervisor.control is not None
    assert supervisor.control.drains == [
        {"timeout": 2.0, "request_id": "r1", "reason": "invoke", "spill": False}
    ]


async def test_drain_gets_what_is_left_before_the_deadline_minus_the_margin() -> None:
    supervisor = FakeSupervisor()
    tracker = RuntimeDoneTracker()
    companion, _ = make(Settings(drain_timeout=2.0, deadline_margin=0.25, handover_timeout=0.0),
                        supervisor=supervisor, tracker=tracker)
    companion.mode = Mode.RUNTIME_DONE
    tracker.mark_done("r1", "success")
    await companion._on_invoke(invoke("r1", 1.0))
    assert supervisor.control is not None
    assert supervisor.control.drains[0]["timeout"] == pytest.approx(0.75)


async def test_without_runtime_done_events_the_drain_happens_at_the_invoke_start() -> None:
    supervisor = FakeSupervisor()
    companion, _ = make(supervisor=supervisor)
    companion.mode = Mode.NEXT_INVOKE
    await companion._on_invoke(invoke("r2", 30))
    assert supervisor.control is not None
    assert [(d["request_id"], d["reason"]) for d in supervisor.control.drains] == [("r2", "next-invoke")]


async def test_without_hold_an_invoke_neither_waits_nor_drains() -> None:
    supervisor = FakeSupervisor()
    companion, out = make(Settings(hold=False), supervisor=supervisor)
    companion.mode = Mode.RUNTIME_DONE
    # No runtimeDone will come: a wait would last the whole 30 s.
    await companion._on_invoke(invoke("r4", 30))
    assert supervisor.control is not None
    assert supervisor.control.drains == []
    assert out.getvalue() == ""


async def test_no_drain_and_no_wait_while_the_collector_is_down() -> None:
    supervisor = FakeSupervisor(control=None)
    companion, out = make(supervisor=supervisor)
    companion.mode = Mode.RUNTIME_DONE
    # No runtimeDone will come: a wait would last the whole 30 s.
    await companion._on_invoke(invoke("r3", 30))
    assert out.getvalue() == ""


async def test_no_drain_when_the_deadline_has_passed() -> None:
    supervisor = FakeSupervisor()
    companion, _ = make(supervisor=supervisor)
    companion.mode = Mode.NEXT_INVOKE
    await companion._on_invoke(invoke("late", 0.1))
    assert supervisor.control is not None and supervisor.control.drains == []


async def test_a_failed_drain_is_reported_and_does_not_raise() -> None:
    supervisor = FakeSupervisor(control=FakeControl(fail=True))
    companion, out = make(supervisor=supervisor)
    companion.mode = Mode.NEXT_INVOKE
    await companion._on_invoke(invoke("r4", 30))
    assert out.getvalue() == (
        "[afterflush] WARNING drain (next-invoke) failed: "
        "Drain on unix:///x failed: UNAVAILABLE: gone\n"
    )


async def test_a_drain_cut_by_its_channel_closing_is_a_failure_not_the_companions_end() -> None:
    supervisor = FakeSupervisor(control=FakeControl(channel_closed=True))
    companion, out = make(supervisor=supervisor)
    companion.mode = Mode.NEXT_INVOKE
    await companion._on_invoke(invoke("r5", 30))
    assert out.getvalue() == (
        "[afterflush] WARNING drain (next-invoke) failed: the collector went away during the call\n"
    )


async def test_the_companion_itself_can_still_be_cancelled_during_a_drain() -> None:
    entered = asyncio.Event()

    class SlowControl(FakeControl):
        async def drain(self, **kwargs: Any) -> Any:
            entered.set()
            await asyncio.Event().wait()

    companion, _ = make(supervisor=FakeSupervisor(control=SlowControl()))
    companion.mode = Mode.NEXT_INVOKE
    task = asyncio.create_task(companion._on_invoke(invoke("r6", 30)))
    async with asyncio.timeout(5):
        await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_shutdown_drains_with_spill_and_keeps_a_reserve_to_stop_the_collector() -> None:
    supervisor = FakeSupervisor()
    control = supervisor.control
    companion, out = make(Settings(deadline_margin=0.2), supervisor=supervisor)
    await companion._on_shutdown(ShutdownEvent(reason="spindown", deadline_ms=int((NOW + 2.0) * 1000)))
    assert control is not None
    # 1.8 s until deadline - margin; 0.3 s of it kept for SIGTERM/SIGKILL.
    [drain] = control.drains
    assert (drain["spill"], drain["reason"]) == (True, "shutdown")
    assert drain["timeout"] == pytest.approx(1.5)
    assert supervisor.stops == [pytest.approx(1.8)]
    assert "shutdown (spindown)" in out.getvalue()
    assert "exported 4 spans, 0 points, 0 log records; collector stopped (status 0)" in out.getvalue()


@pytest.mark.parametrize(
    ("control", "said"),
    [
        (None, "no shutdown drain (collector not ready); collector stopped (status 0)"),
        (FakeControl(fail=True), "the shutdown drain got no reply (see above); collector stopped"),
    ],
)
async def test_the_shutdown_line_says_why_nothing_was_drained(control: Any, said: str) -> None:
    supervisor = FakeSupervisor(control=control)
    companion, out = make(supervisor=supervisor)
    await companion._on_shutdown(ShutdownEvent(reason="timeout", deadline_ms=int((NOW + 2.0) * 1000)))
    [line] = [line for line in out.getvalue().splitlines() if "shutdown (timeout)" in line]
    assert said in line
    assert supervisor.stops == [pytest.approx(1.8)]


async def test_a_whole_life_without_telemetry_events() -> None:
    api = FakeApi(events=[invoke("a", 30), invoke("b", 30), ShutdownEvent("spindown", int((NOW + 2) * 1000))])
    supervisor = FakeSupervisor()
    control = supervisor.control
    companion, out = make(api=api, supervisor=supervisor)
    assert await companion.run() == 0
    assert control is not None
    assert [(d["request_id"], d["reason"]) for d in control.drains] == [
        ("a", "next-invoke"), ("b", "next-invoke"), ("", "shutdown")
    ]
    lines = out.getvalue().splitlines()
    assert lines[0] == (
        "[afterflush] INFO Telemetry API not supported here (Telemetry API is not supported); "
        "draining at the start of each INVOKE and at SHUTDOWN"
    )
    assert lines[1].startswith("[afterflush] INFO ready in ")
    assert lines[1].endswith("collector ready 100 ms); draining at the start of each INVOKE and at SHUTDOWN")
    assert lines[2].startswith("[afterflush] INFO shutdown (spindown) in ")
    assert len(lines) == 3


async def test_registration_failure_is_the_one_reason_to_fail() -> None:
    companion, out = make(api=FakeApi(register_error=True))
    assert await companion.run() == 1
    assert out.getvalue() == (
        "[afterflush] ERROR cannot register as extension afterflush: "
        "cannot connect to 127.0.0.1:9001: refused\n"
    )


async def test_an_unexpected_error_handling_an_invoke_does_not_stop_the_companion() -> None:
    class BrokenTracker(RuntimeDoneTracker):
        async def wait(self, request_id: str, timeout: float) -> str | None:
            raise RuntimeError("boom")

    api = FakeApi(subscription=Subscription.ACTIVE,
                  events=[invoke("x", 30), ShutdownEvent("spindown", int((NOW + 2) * 1000))])
    companion, out = make(api=api, tracker=BrokenTracker())
    assert await companion.run() == 0
    assert "[afterflush] ERROR INVOKE x not handled: RuntimeError('boom')" in out.getvalue()


async def test_event_next_failing_for_good_reports_an_exit_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(companion_module, "NEXT_RETRY_DELAY", 0.0)
    api = FakeApi(events=[LambdaApiError("connection refused")] * 10)
    companion, out = make(api=api)
    assert await companion.run() == 1
    assert api.errors == [("exit", "Extension.Unrecoverable")]
    assert len([line for line in out.getvalue().splitlines() if "event/next failed" in line]) == 10


async def test_strict_init_turns_an_invalid_config_into_an_init_error() -> None:
    api = FakeApi()
    supervisor = FakeSupervisor(
        control=None, first=StartReport(StartOutcome.CONFIG_INVALID, "a::b (c.yaml:3): bad", 0.2)
    )
    companion, out = make(Settings(strict_init=True), api=api, supervisor=supervisor)
    assert await companion.run() == 1
    assert api.errors == [("init", "Extension.ConfigInvalid")]
    assert (
        "[afterflush] ERROR collector config rejected (AFTERFLUSH_STRICT_INIT=true): "
        "a::b (c.yaml:3): bad; failing init"
    ) in out.getvalue()
