"""flushcontrol: hold at once, drain in order, keep what was not sent, bound the buffer."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from collector._component import ExportResult, Outcome
from collector._pipeline import Fanout
from collector._signals import Payload, Signal
from collector.errors import BackpressureError, ExportError
from collector.processors.flushcontrol import Budget, FlushController, HoldBuffer, describe


def spans_payload(*names: str) -> Payload:
    request = trace_service_pb2.ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for i, name in enumerate(names):
        span = scope.spans.add()
        span.name = name
        span.trace_id = bytes([1] * 16)
        span.span_id = bytes([i + 1] * 8)
    return Payload(Signal.TRACES, request.SerializeToString(), len(names))


def names_in(payload: Payload) -> list[str]:
    request = Signal.TRACES.decode(payload.data)
    return [s.name for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]


class FakeExporter:
    """Records what it is sent; answers from a script of outcomes (then success)."""

    def __init__(self, id: str, script: list[ExportResult] | None = None) -> None:
        self._id = id
        self.script = list(script or [])
        self.sent: list[list[str]] = []
        self.attempts = 0
        self.hang = asyncio.Event()  # set = do not hang
        self.hang.set()

    @property
    def id(self) -> str:
        return self._id

    async def start(self) -> None: ...

    async def shutdown(self) -> None: ...

    async def export(self, payload: Payload, deadline: float) -> ExportResult:
        self.attempts += 1
        if not self.hang.is_set():
            try:
                async with asyncio.timeout_at(deadline):
                    await self.hang.wait()
            except TimeoutError:
                return ExportResult(Outcome.RETRYABLE, error=f"{self.id}: deadline exceeded")
        result = self.script.pop(0) if self.script else ExportResult.success()
        if result.outcome is Outcome.SUCCESS:
            self.sent.append(names_in(payload))
        return result


def make(exporters: list[FakeExporter], capacity: int = 1 << 20, high_water: int = 0):
    budget = Budget(capacity, high_water)
    buffer = HoldBuffer("traces", Signal.TRACES, exporters, budget, max_request_bytes=1 << 20)
    controller = FlushController([buffer], default_timeout=1.0)
    accepted: list[int] = []
    high: list[bool] = []
    fanout = Fanout(
        "otlp", Signal.TRACES, [buffer], [], controller, retry_after=2.0,
        on_accept=lambda p: accepted.append(p.items), on_high_water=lambda: high.append(True),
    )
    return fanout, controller, buffer, accepted, high


async def test_nothing_is_exported_before_a_drain_and_everything_once_after_it():
    exporter = FakeExporter("otlp")
    fanout, controller, buffer, accepted, _ = make([exporter])

    await fanout.consume(spans_payload("a", "b"))
    await fanout.consume(spans_payload("c"))

    assert exporter.attempts == 0
    assert accepted == [2, 1]
    assert buffer.items == 3

    outcome = await controller.drain(timeout=1.0)

    assert exporter.sent == [["a", "b", "c"]]  # coalesced into one request, in order
    assert outcome.complete is True
    assert outcome.tallies[Signal.TRACES].exported == 3
    assert outcome.tallies[Signal.TRACES].buffered == 0
    assert buffer.budget.used == 0
    assert (await controller.drain(timeout=1.0)).tallies[Signal.TRACES].exported == 0


async def test_drain_keeps_unsent_items_in_order_for_the_next_drain():
    exporter = FakeExporter("otlp", [ExportResult(Outcome.RETRYABLE, error="otlp: 503")])
    fanout, controller, _buffer, _, _ = make([exporter])
    await fanout.consume(spans_payload("a"))

    first = await controller.drain(timeout=1.0)
    await fanout.consume(spans_payload("b"))
    second = await controller.drain(timeout=1.0)

    assert first.complete is False
    assert first.last_error == "otlp: 503"
    assert first.tallies[Signal.TRACES].buffered == 1
    assert second.complete is True
    assert exporter.sent == [["a", "b"]]
    assert controller.totals[Signal.TRACES].exported == 2
    assert controller.last_export_error == "otlp: 503"


async def test_drain_sends_only_what_was_accepted_before_the_call():
    exporter = FakeExporter("otlp")
    exporter.hang.clear()
    fanout, controller, _buffer, _, _ = make([exporter])
    await fanout.consume(spans_payload("before"))

    drain = asyncio.create_task(controller.drain(timeout=5.0))
    for _ in range(1000):  # until the drain has taken its cut-off and is exporting
        if exporter.attempts:
            break
        await asyncio.sleep(0)
    assert exporter.attempts == 1
    await fanout.consume(spans_payload("after"))
    exporter.hang.set()
    outcome = await drain

    assert exporter.sent == [["before"]]
    assert outcome.tallies[Signal.TRACES].exported == 1
    assert outcome.tallies[Signal.TRACES].buffered == 1


async def test_hanging_exporter_returns_at_the_deadline_with_counts():
    exporter = FakeExporter("otlp")
    exporter.hang.clear()
    fanout, controller, _buffer, _, _ = make([exporter])
    await fanout.consume(spans_payload("a", "b"))

    outcome = await controller.drain(timeout=0.05)

    assert outcome.complete is False
    assert outcome.tallies[Signal.TRACES].exported == 0
    assert outcome.tallies[Signal.TRACES].buffered == 2
    assert outcome.last_error == "otlp: deadline exceeded"


async def test_permanent_failure_drops_with_reason_and_partial_success_counts_rejections():
    refusing = FakeExporter("otlphttp", [ExportResult(Outcome.PERMANENT, error="400", reason="http 400")])
    partial = FakeExporter("otlp", [ExportResult.success(rejected=1, error="1 span rejected")])
    fanout, controller, _buffer, _, _ = make([refusing, partial])
    await fanout.consume(spans_payload("a", "b"))

    outcome = await controller.drain(timeout=1.0)

    tally = outcome.tallies[Signal.TRACES]
    assert tally.dropped == {"http 400": 2, "rejected_by_backend": 1}
    assert tally.exported == 1
    assert tally.buffered == 0
    assert outcome.complete is True
    assert describe(outcome) == (
        "exported 1 spans; dropped 2 spans (http 400), 1 spans (rejected_by_backend)"
    )


async def test_each_exporter_keeps_its_own_backlog():
    ok = FakeExporter("a")
    failing = FakeExporter("b", [ExportResult(Outcome.RETRYABLE, error="b down")])
    fanout, controller, buffer, _, _ = make([ok, failing])
    await fanout.consume(spans_payload("x"))

    await controller.drain(timeout=1.0)
    assert ok.sent == [["x"]] and failing.sent == []
    assert buffer.items == 1

    await controller.drain(timeout=1.0)
    assert ok.sent == [["x"]]  # not sent twice to the exporter that already had it
    assert failing.sent == [["x"]]
    assert buffer.items == 0


async def test_full_buffer_answers_with_backpressure_and_changes_nothing():
    payload = spans_payload("a")
    fanout, _controller, buffer, accepted, _ = make([FakeExporter("otlp")], capacity=payload.size * 2)
    await fanout.consume(payload)
    await fanout.consume(payload)

    with pytest.raises(BackpressureError) as raised:
        await fanout.consume(payload)

    assert raised.value.retry_after == 2.0
    assert buffer.items == 2
    assert accepted == [1, 1]


async def test_high_water_mark_is_signalled_when_crossed():
    payload = spans_payload("a")
    fanout, _controller, _buffer, _, high = make(
        [FakeExporter("otlp")], capacity=payload.size * 10, high_water=payload.size * 2
    )
    await fanout.consume(payload)
    assert high == []
    await fanout.consume(payload)
    assert high == [True]


async def test_spill_writes_what_could_not_be_sent_and_counts_it():
    exporter = FakeExporter("otlp", [ExportResult(Outcome.RETRYABLE, error="down")])
    fanout, controller, buffer, _, _ = make([exporter])
    await fanout.consume(spans_payload("a", "b"))
    spilled: list[Payload] = []

    outcome = await controller.drain(timeout=1.0, spill=spilled.append)

    assert [names_in(p) for p in spilled] == [["a", "b"]]
    assert outcome.tallies[Signal.TRACES].spilled == 2
    assert outcome.tallies[Signal.TRACES].buffered == 0
    assert buffer.budget.used == 0


async def test_passthrough_pipeline_exports_before_answering_and_reports_failure():
    exporter = FakeExporter("otlp", [ExportResult.success(), ExportResult(Outcome.RETRYABLE, error="503")])
    controller = FlushController([], default_timeout=1.0)
    fanout = Fanout(
        "otlp", Signal.TRACES, [], [[exporter]], controller, retry_after=1.0,
        on_accept=lambda p: None, on_high_water=lambda: None,
    )
    await fanout.consume(spans_payload("a"))
    assert exporter.sent == [["a"]]
    with pytest.raises(ExportError) as raised:
        await fanout.consume(spans_payload("b"))
    assert raised.value.retryable is True


def test_payloads_of_one_signal_concatenate_into_one_request():
    joined = Payload.join([spans_payload("a"), spans_payload("b", "c")])
    assert joined.items == 3
    assert names_in(joined) == ["a", "b", "c"]
    assert Signal.TRACES.count_items(Signal.TRACES.decode(joined.data)) == 3



async def test_spill_with_no_time_left_drops_and_counts_instead_of_answering_late():
    exporter = FakeExporter("otlp")
    fanout, controller, _buffer, _, _ = make([exporter])
    await fanout.consume(spans_payload("a", "b"))
    spilled: list[Payload] = []

    outcome = await controller.drain(timeout=0.0, spill=spilled.append)

    assert spilled == []
    assert exporter.attempts == 0
    assert outcome.tallies[Signal.TRACES].dropped == {"shutdown_deadline": 2}
    assert outcome.tallies[Signal.TRACES].buffered == 0
    assert outcome.complete is False


async def test_a_request_with_a_bad_id_is_dropped_alone_and_counted():
    exporter = FakeExporter("otlp")
    fanout, controller, _, _, _ = make([exporter])
    bad = Signal.TRACES.request_type()
    bad.resource_spans.add().scope_spans.add().spans.add(
        name="bad", trace_id=b"\x01" * 5, span_id=b"\x02" * 8)
    await fanout.consume(spans_payload("a"))
    await fanout.consume(Payload(Signal.TRACES, bad.SerializeToString(), 1))
    await fanout.consume(spans_payload("b"))

    outcome = await controller.drain(timeout=1.0)

    assert exporter.sent == [["a", "b"]]
    assert outcome.tallies[Signal.TRACES].dropped == {"invalid_ids": 1}
    assert outcome.tallies[Signal.TRACES].exported == 2
    assert outcome.last_error.startswith("traces: a span has an id of the wrong length")
