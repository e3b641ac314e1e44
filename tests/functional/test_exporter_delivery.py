"""The otlp (gRPC) and otlphttp exporters against the local backend on loopback: delivery,
retries inside the deadline, permanent failures, partial success, secrets, shutdown."""

from __future__ import annotations

import asyncio
import logging
import re
import socket

import pytest

from backend import Backend, FaultSpec
from collector._component import ExportResult, Outcome
from collector._signals import Signal
from tests.fixtures.backend import (
    NO_BACKOFF_WITHIN_TEST,
    PAYLOADS,
    PROTOCOLS,
    deadline_in,
    running_backend,
    started_exporter,
    trace_payload,
)

# Far enough that only the behaviour under test ends an export, never the clock.
GENEROUS_SECONDS = 10.0
REFUSED = {
    "grpc": {503: "grpc UNAVAILABLE", 429: "grpc RESOURCE_EXHAUSTED"},
    "http": {503: "http 503", 429: "http 429"},
}


def outcomes(backend: Backend) -> list[str]:
    return [r.outcome for r in backend.requests()]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("signal", list(Signal), ids=lambda s: s.value)
async def test_export_delivers_every_item_exactly_once(protocol: str, signal: Signal) -> None:
    # Given a backend and an exporter
    async with running_backend() as backend, started_exporter(protocol, backend) as exporter:
        payload = PAYLOADS[signal](7)
        # When one payload is exported
        result = await exporter.export(payload, deadline_in(GENEROUS_SECONDS))
        # Then the backend holds its 7 items once, from one request
        assert result == ExportResult.success()
        stats = backend.stats()[signal.value]
        assert (stats.items, stats.unique, stats.duplicates, stats.requests) == (7, 7, 0, 1)
        assert backend.requests()[0].protocol == protocol


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_spans_arrive_with_their_ids_names_and_attributes(protocol: str) -> None:
    async with running_backend() as backend, started_exporter(protocol, backend) as exporter:
        await exporter.export(trace_payload(3, name="checkout"), deadline_in(GENEROUS_SECONDS))
        items = backend.items(Signal.TRACES)
        assert [(i.name, i.span_id, i.attributes) for i in items] == [
            ("checkout-0", "0000000000000001", {"index": 0}),
            ("checkout-1", "0000000000000002", {"index": 1}),
            ("checkout-2", "0000000000000003", {"index": 2}),
        ]
        assert {i.trace_id for i in items} == {"0af7651916cd43dd8448eb211c80319c"}


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_unavailable_then_success_is_delivered_once_after_one_retry(protocol: str) -> None:
    # Given a backend that answers the first request with 503
    async with running_backend() as backend, started_exporter(protocol, backend) as exporter:
        backend.set_faults(FaultSpec(status=503, times=1))
        # When a payload is exported
        result = await exporter.export(trace_payload(5), deadline_in(GENEROUS_SECONDS))
        # Then the retry delivered it, once
        assert result == ExportResult.success()
        assert outcomes(backend) == [REFUSED[protocol][503], "accepted"]
        stats = backend.stats()["traces"]
        assert (stats.unique, stats.duplicates) == (5, 0)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_throttling_is_retried_after_the_servers_delay_instead_of_the_backoff(
    protocol: str,
) -> None:
    # Given a backend that throttles once, saying "retry now" (Retry-After: 0 / RetryInfo 0s),
    # and an exporter whose own first backoff wait is longer than the deadline
    async with (
        running_backend() as backend,
        started_exporter(protocol, backend, retry=NO_BACKOFF_WITHIN_TEST) as exporter,
    ):
        backend.set_faults(FaultSpec(status=429, retry_after=0, times=1))
        # When a payload is exported
        result = await exporter.export(trace_payload(4), deadline_in(GENEROUS_SECONDS))
        # Then it was retried as the server said, and delivered
        assert result == ExportResult.success()
        assert outcomes(backend) == [REFUSED[protocol][429], "accepted"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_throttling_delay_past_the_deadline_keeps_the_data_without_another_attempt(
    protocol: str,
) -> None:
    async with running_backend() as backend, started_exporter(protocol, backend) as exporter:
        backend.set_faults(FaultSpec(status=429, retry_after=60))
        result = await exporter.export(trace_payload(4), deadline_in(GENEROUS_SECONDS))
        assert result.outcome is Outcome.RETRYABLE
        assert result.error.endswith("(deadline reached after 1 attempt)")
        assert outcomes(backend) == [REFUSED[protocol][429]]


@pytest.mark.parametrize(
    ("protocol", "reason"), [("grpc", "grpc INVALID_ARGUMENT"), ("http", "http 400")]
)
async def test_bad_request_is_permanent_with_its_reason_and_not_retried(
    protocol: str, reason: str
) -> None:
    async with running_backend() as backend, started_exporter(protocol, backend) as exporter:
        backend.set_faults(FaultSpec(status=400, message="span name too long"))
        result = await exporter.export(trace_payload(2), deadline_in(GENEROUS_SECONDS))
        assert (result.outcome, result.reason) == (Outcome.PERMANENT, reason)
        assert result.error.endswith(f"{reason}: span name too long")
        assert len(backend.requests()) == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_hanging_backend_makes_the_export_return_retryable_at_the_deadline(
    protocol: str,
) -> None:
    # Given a backend that accepts the request and never answers
    async with running_backend() as backend, started_exporter(protocol, backend) as exporter:
        backend.set_faults(FaultSpec(hang=True))
        # When a payload is exported with a short deadline
        result = await exporter.export(trace_payload(3), deadline_in(0.3))
        # Then the export returned, keeping the data for a later drain
        assert result.outcome is Outcome.RETRYABLE
        assert result.error.endswith("(deadline reached after 1 attempt)")
        assert outcomes(backend) == ["hang"]
        assert backend.stats()["traces"].items == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_partial_success_reports_the_rejected_count(protocol: str) -> None:
    async with running_backend() as backend, started_exporter(protocol, backend) as exporter:
        backend.set_faults(FaultSpec(reject=3))
        result = await exporter.export(trace_payload(10), deadline_in(GENEROUS_SECONDS))
        assert (result.outcome, result.rejected) == (Outcome.SUCCESS, 3)
        assert result.error.endswith("backend rejected 3 spans: rejected by the test backend")
        stats = backend.stats()["traces"]
        assert (stats.items, stats.rejected_items) == (7, 3)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_headers_reach_the_backend_but_never_any_log_or_error(
    protocol: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "hcaik_01hq6TESTSECRETVALUE"
    caplog.set_level(logging.DEBUG)
    async with (
        running_backend() as backend,
        started_exporter(protocol, backend, headers={"X-Honeycomb-Team": secret}) as exporter,
    ):
        # Given a successful export, then a backend that echoes the key in its refusal
        ok = await exporter.export(trace_payload(1), deadline_in(GENEROUS_SECONDS))
        backend.set_faults(FaultSpec(status=401, message=f"unknown API key {secret}"))
        refused = await exporter.export(trace_payload(1), deadline_in(GENEROUS_SECONDS))
        backend.set_faults(FaultSpec(status=503, message=f"key {secret} over quota"))
        kept = await exporter.export(trace_payload(1), deadline_in(0.2))
    # Then the header arrived with the requests
    assert ok == ExportResult.success()
    assert [r.headers["x-honeycomb-team"] for r in backend.requests()][:2] == [secret, secret]
    # and the secret is in no result, log record, stdout or stderr
    assert refused.outcome is Outcome.PERMANENT
    assert refused.error.endswith("unknown API key ***")
    assert kept.outcome is Outcome.RETRYABLE
    assert "key *** over quota" in kept.error
    captured = capsys.readouterr()
    for text in (refused.error, kept.error, caplog.text, captured.out, captured.err):
        assert secret not in text


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_shutdown_during_a_backoff_wait_ends_the_export_at_once(protocol: str) -> None:
    # Given an export waiting out a long backoff after a 503
    async with (
        running_backend() as backend,
        started_exporter(protocol, backend, retry=NO_BACKOFF_WITHIN_TEST) as exporter,
    ):
        backend.set_faults(FaultSpec(status=503))
        export = asyncio.create_task(exporter.export(trace_payload(2), deadline_in(1200)))
        await backend.wait_for_requests(1)
        # When the exporter shuts down
        await exporter.shutdown()
        async with asyncio.timeout(GENEROUS_SECONDS):
            result = await export
        # Then the export ended, keeping the data, after its one attempt
        assert result.outcome is Outcome.RETRYABLE
        assert result.error.endswith("(exporter shut down after 1 attempt)")
        assert len(backend.requests()) == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_unreachable_backend_is_retryable_with_a_one_line_error(protocol: str) -> None:
    # Given a port nobody listens on
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = {"grpc": f"127.0.0.1:{port}", "http": f"http://127.0.0.1:{port}"}
    # When an export is tried
    async with started_exporter(protocol, dead) as exporter:
        result = await exporter.export(trace_payload(1), deadline_in(0.3))
    # Then the data is kept, with one line saying why
    assert result.outcome is Outcome.RETRYABLE
    assert "\n" not in result.error
    assert re.search(r"\(deadline reached after \d+ attempts?\)$", result.error)
    expected = "grpc UNAVAILABLE" if protocol == "grpc" else "cannot connect"
    assert expected in result.error


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_one_connection_carries_consecutive_exports(protocol: str) -> None:
    async with running_backend() as backend, started_exporter(protocol, backend) as exporter:
        results = [
            await exporter.export(trace_payload(1, first=i), deadline_in(GENEROUS_SECONDS))
            for i in range(3)
        ]
        assert results == [ExportResult.success()] * 3
        assert len({r.peer for r in backend.requests()}) == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_export_after_the_backend_restarted_succeeds_on_a_new_connection(
    protocol: str,
) -> None:
    # Given an exporter whose connection the backend dropped by going down and coming back
    async with running_backend() as backend, started_exporter(protocol, backend) as exporter:
        first = await exporter.export(trace_payload(1), deadline_in(GENEROUS_SECONDS))
        await backend.go_down(0.05)
        await backend.wait_until(lambda: backend.up)
        # When the next export runs
        second = await exporter.export(trace_payload(1, first=1), deadline_in(GENEROUS_SECONDS))
        # Then it is delivered
        assert (first.outcome, second.outcome) == (Outcome.SUCCESS, Outcome.SUCCESS)
        assert backend.stats()["traces"].unique == 2
        assert len({r.peer for r in backend.requests()}) == 2


def _ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback_available(), reason="this machine has no ::1")
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_exporters_and_backend_work_over_ipv6_loopback(protocol: str) -> None:
    async with (
        running_backend(host="::1") as backend,
        started_exporter(protocol, backend) as exporter,
    ):
        result = await exporter.export(trace_payload(2), deadline_in(GENEROUS_SECONDS))
        assert result == ExportResult.success()
        assert backend.requests()[0].peer.startswith("[::1]:")
