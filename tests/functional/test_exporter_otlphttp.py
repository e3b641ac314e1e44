"""What only the otlphttp exporter does: gzip, JSON encoding, per-signal URLs, Retry-After
dates, and the one immediate retry when a pooled connection was closed by the peer."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

from backend import FaultSpec
from collector._component import ExportResult, Outcome
from collector._signals import Signal
from collector.exporters.otlphttp import GZIP_LEVEL, OTLPHTTPConfig, OTLPHTTPExporter
from tests.fixtures.backend import (
    NO_BACKOFF_WITHIN_TEST,
    deadline_in,
    logs_payload,
    running_backend,
    started_exporter,
    trace_payload,
)

GENEROUS_SECONDS = 10.0


async def test_gzip_compresses_the_body_by_default() -> None:
    async with running_backend() as backend, started_exporter("http", backend) as exporter:
        payload = trace_payload(50)
        assert (
            await exporter.export(payload, deadline_in(GENEROUS_SECONDS)) == ExportResult.success()
        )
        [request] = backend.requests()
        assert (request.content_encoding, request.content_type) == (
            "gzip",
            "application/x-protobuf",
        )
        assert request.body_bytes == len(gzip.compress(payload.data, compresslevel=GZIP_LEVEL))
        assert backend.stats()["traces"].unique == 50


async def test_compression_none_sends_the_payload_bytes_as_they_are() -> None:
    async with (
        running_backend() as backend,
        started_exporter("http", backend, compression="none") as exporter,
    ):
        payload = trace_payload(5)
        await exporter.export(payload, deadline_in(GENEROUS_SECONDS))
        [request] = backend.requests()
        assert (request.content_encoding, request.body_bytes) == ("", payload.size)


async def test_json_encoding_delivers_the_same_items_and_reads_json_partial_success() -> None:
    # Given an exporter that speaks OTLP/JSON and a backend rejecting one item
    async with (
        running_backend() as backend,
        started_exporter("http", backend, encoding="json") as exporter,
    ):
        backend.set_faults(FaultSpec(reject=1))
        # When spans are exported
        result = await exporter.export(trace_payload(3, name="json"), deadline_in(GENEROUS_SECONDS))
        # Then the backend decoded the JSON to the same spans and the rejection came back
        assert (result.outcome, result.rejected) == (Outcome.SUCCESS, 1)
        assert backend.requests()[0].content_type == "application/json"
        items = backend.items(Signal.TRACES)
        assert [(i.name, i.trace_id, i.span_id) for i in items] == [
            ("json-1", "0af7651916cd43dd8448eb211c80319c", "0000000000000002"),
            ("json-2", "0af7651916cd43dd8448eb211c80319c", "0000000000000003"),
        ]


async def test_signal_endpoint_replaces_the_base_url_for_that_signal() -> None:
    # Given logs aimed at a path the backend does not serve, traces at the base URL
    async with (
        running_backend() as backend,
        started_exporter(
            "http", backend, logs_endpoint=f"{backend.http_endpoint}/custom/logs"
        ) as exporter,
    ):
        traces = await exporter.export(trace_payload(1), deadline_in(GENEROUS_SECONDS))
        logs = await exporter.export(logs_payload(1), deadline_in(GENEROUS_SECONDS))
        assert traces == ExportResult.success()
        assert (logs.outcome, logs.reason) == (Outcome.PERMANENT, "http 404")
        assert "POST http://127.0.0.1:" in logs.error
        assert "/custom/logs: http 404" in logs.error


async def test_retry_after_as_an_http_date_is_honoured() -> None:
    # Given a throttling answer whose Retry-After is a date (at most a second away) and an
    # exporter whose own backoff would outlast the deadline
    async with (
        running_backend() as backend,
        started_exporter("http", backend, retry=NO_BACKOFF_WITHIN_TEST) as exporter,
    ):
        backend.set_faults(FaultSpec(status=503, retry_after=0, retry_after_as_date=True, times=1))
        result = await exporter.export(trace_payload(1), deadline_in(GENEROUS_SECONDS))
        assert result == ExportResult.success()
        assert [r.outcome for r in backend.requests()] == ["http 503", "accepted"]


async def test_connection_closed_by_the_peer_while_idle_is_retried_at_once() -> None:
    # Given a backend that drops a kept-alive connection when it is used again, and an
    # exporter whose backoff would outlast the deadline
    async with (
        running_backend() as backend,
        started_exporter("http", backend, retry=NO_BACKOFF_WITHIN_TEST) as exporter,
    ):
        backend.set_faults(FaultSpec(close_idle=True))
        first = await exporter.export(trace_payload(1), deadline_in(GENEROUS_SECONDS))
        # When the next export meets the dropped connection
        second = await exporter.export(trace_payload(1, first=1), deadline_in(GENEROUS_SECONDS))
        # Then it went out again at once on a fresh connection
        assert (first, second) == (ExportResult.success(), ExportResult.success())
        requests = backend.requests()
        assert [r.outcome for r in requests] == ["accepted", "closed", "accepted"]
        assert requests[0].peer == requests[1].peer != requests[2].peer
        assert backend.stats()["traces"].unique == 2


async def test_export_before_start_or_after_shutdown_keeps_the_data() -> None:
    async with running_backend() as backend:
        exporter = OTLPHTTPExporter("otlphttp", OTLPHTTPConfig(endpoint=backend.http_endpoint))
        early = await exporter.export(trace_payload(1), deadline_in(GENEROUS_SECONDS))
        await exporter.start()
        await exporter.shutdown()
        await exporter.shutdown()  # idempotent
        late = await exporter.export(trace_payload(1), deadline_in(GENEROUS_SECONDS))
        assert early == ExportResult(Outcome.RETRYABLE, error="otlphttp: exporter not started")
        assert late == ExportResult(Outcome.RETRYABLE, error="otlphttp: exporter shut down")
        assert backend.requests() == []


def test_aiohttp_is_imported_at_the_first_export_not_at_start() -> None:
    # Given a started otlphttp exporter in a fresh interpreter, and a backend that says 200
    script = """
import asyncio, json, sys
from collector import _http11
from collector._signals import Payload, Signal
from collector.exporters.otlphttp import OTLPHTTPConfig, OTLPHTTPExporter

async def ok(request):
    await request.read()
    return _http11.Response(200, {"Content-Type": "application/x-protobuf"})

async def main():
    backend = _http11.Server(ok)
    port = await backend.start("127.0.0.1")
    exporter = OTLPHTTPExporter("otlphttp", OTLPHTTPConfig(endpoint=f"http://127.0.0.1:{port}"))
    await exporter.start()
    after_start = "aiohttp" in sys.modules
    deadline = asyncio.get_running_loop().time() + 10
    result = await exporter.export(Payload(Signal.TRACES, b"", 1), deadline)
    await exporter.shutdown()
    await backend.aclose()
    print(json.dumps([after_start, "aiohttp" in sys.modules, result.outcome.name]))

asyncio.run(main())
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )

    # Then start() left aiohttp unloaded and the first export loaded it and delivered
    assert json.loads(done.stdout) == [False, True, "SUCCESS"]
