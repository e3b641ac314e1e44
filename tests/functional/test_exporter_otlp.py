"""What only the otlp (gRPC) exporter does: RetryInfo decides whether RESOURCE_EXHAUSTED is
retried, and UNAVAILABLE on a channel that worked before is retried once at once."""

from __future__ import annotations

from backend import FaultSpec
from collector._component import ExportResult, Outcome
from collector.exporters._tls import TLSConfig
from collector.exporters.otlp import OTLPConfig, OTLPExporter
from tests.fixtures.backend import (
    NO_BACKOFF_WITHIN_TEST,
    deadline_in,
    running_backend,
    started_exporter,
    trace_payload,
)

GENEROUS_SECONDS = 10.0


async def test_resource_exhausted_without_retry_info_is_permanent() -> None:
    async with running_backend() as backend, started_exporter("grpc", backend) as exporter:
        backend.set_faults(FaultSpec(status=429, message="quota exceeded"))
        result = await exporter.export(trace_payload(2), deadline_in(GENEROUS_SECONDS))
        assert (result.outcome, result.reason) == (Outcome.PERMANENT, "grpc RESOURCE_EXHAUSTED")
        assert result.error.endswith("grpc RESOURCE_EXHAUSTED: quota exceeded")
        assert len(backend.requests()) == 1


async def test_unavailable_after_a_working_call_is_retried_at_once() -> None:
    # Given a channel that carried a call, and a backend that then fails one call as a
    # connection lost during a freeze would, with a backoff that would outlast the deadline
    async with (
        running_backend() as backend,
        started_exporter("grpc", backend, retry=NO_BACKOFF_WITHIN_TEST) as exporter,
    ):
        first = await exporter.export(trace_payload(1), deadline_in(GENEROUS_SECONDS))
        backend.set_faults(FaultSpec(reset=True, times=1))
        # When the next export meets it
        second = await exporter.export(trace_payload(1, first=1), deadline_in(GENEROUS_SECONDS))
        # Then it went out again at once and was delivered
        assert (first, second) == (ExportResult.success(), ExportResult.success())
        assert [r.outcome for r in backend.requests()] == ["accepted", "reset", "accepted"]


async def test_unavailable_on_a_fresh_channel_waits_for_the_backoff() -> None:
    # Given a channel that never carried a call (no stale connection to blame)
    async with (
        running_backend() as backend,
        started_exporter("grpc", backend, retry=NO_BACKOFF_WITHIN_TEST) as exporter,
    ):
        backend.set_faults(FaultSpec(status=503, times=1))
        result = await exporter.export(trace_payload(1), deadline_in(1.0))
        # Then the 600s backoff does not fit the deadline: the data is kept, one attempt made
        assert result.outcome is Outcome.RETRYABLE
        assert result.error.endswith(
            "grpc UNAVAILABLE: fault UNAVAILABLE (deadline reached after 1 attempt)"
        )
        assert len(backend.requests()) == 1


async def test_export_before_start_or_after_shutdown_keeps_the_data() -> None:
    async with running_backend() as backend:
        config = OTLPConfig(endpoint=backend.grpc_endpoint, tls=TLSConfig(insecure=True))
        exporter = OTLPExporter("otlp", config)
        early = await exporter.export(trace_payload(1), deadline_in(GENEROUS_SECONDS))
        await exporter.start()
        await exporter.shutdown()
        await exporter.shutdown()  # idempotent
        late = await exporter.export(trace_payload(1), deadline_in(GENEROUS_SECONDS))
        assert early == ExportResult(Outcome.RETRYABLE, error="otlp: exporter not started")
        assert late == ExportResult(Outcome.RETRYABLE, error="otlp: exporter shut down")
        assert backend.requests() == []


async def test_shutdown_without_start_does_nothing() -> None:
    exporter = OTLPExporter("otlp", OTLPConfig(endpoint="127.0.0.1:1"))
    await exporter.shutdown()
    result = await exporter.export(trace_payload(1), deadline_in(GENEROUS_SECONDS))
    assert result == ExportResult(Outcome.RETRYABLE, error="otlp: exporter shut down")
