"""The local OTLP backend itself: what it records, its faults, its control API, and the three
ways tests host it (in the loop, in a thread driven by the real SDK, as a process)."""

from __future__ import annotations

import asyncio
import gzip
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from backend import Backend, FaultSpec
from backend._signals import Signal
from tests.fixtures.backend import BackendProcess, ThreadBackend, running_backend
from tests.fixtures.otlp import (
    JSON,
    PROTOBUF,
    decode_response,
    grpc_export_async,
    http_post,
    logs_payload,
    metrics_payload,
    retry_info,
    trace_payload,
)

TIMEOUT = 10.0


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
        yield session


async def test_stats_count_unique_items_and_duplicates_per_signal(
    http: aiohttp.ClientSession,
) -> None:
    # Given a backend
    async with running_backend() as backend:
        base = backend.http_endpoint
        # When the same spans arrive twice, plus metrics and logs once
        for _ in range(2):
            await http_post(http, f"{base}/v1/traces", trace_payload(4).data)
        await http_post(http, f"{base}/v1/metrics", metrics_payload(3).data)
        await http_post(http, f"{base}/v1/logs", logs_payload(2).data)
        # Then each signal counts what it got, the resent spans as duplicates
        stats = {name: s.to_json() for name, s in backend.stats().items()}
        assert stats == {
            "traces": {
                "items": 8,
                "unique": 4,
                "duplicates": 4,
                "requests": 2,
                "rejected_requests": 0,
                "rejected_items": 0,
            },
            "metrics": {
                "items": 3,
                "unique": 3,
                "duplicates": 0,
                "requests": 1,
                "rejected_requests": 0,
                "rejected_items": 0,
            },
            "logs": {
                "items": 2,
                "unique": 2,
                "duplicates": 0,
                "requests": 1,
                "rejected_requests": 0,
                "rejected_items": 0,
            },
        }
        # and every item carries its request index
        assert [i.request for i in backend.items(Signal.TRACES)] == [0, 0, 0, 0, 1, 1, 1, 1]
        assert [i.name for i in backend.items(Signal.LOGS)] == ["line-0", "line-1"]


async def test_json_and_gzip_bodies_are_decoded(http: aiohttp.ClientSession) -> None:
    async with running_backend() as backend:
        document = trace_payload(2, name="j").as_json()
        answer = await http_post(
            http,
            f"{backend.http_endpoint}/v1/traces",
            gzip.compress(document),
            content_type=JSON,
            headers={"Content-Encoding": "gzip"},
        )
        assert (answer.status, answer.headers["content-type"]) == (200, "application/json")
        assert json.loads(answer.body) == {}
        assert [i.name for i in backend.items(Signal.TRACES)] == ["j-0", "j-1"]
        assert backend.requests()[0].content_encoding == "gzip"


async def test_malformed_body_gets_400_and_is_not_recorded(http: aiohttp.ClientSession) -> None:
    async with running_backend() as backend:
        answer = await http_post(http, f"{backend.http_endpoint}/v1/logs", b"\xff\xff\xff")
        assert answer.status == 400
        assert backend.stats()["logs"].rejected_requests == 1
        assert backend.items(Signal.LOGS) == []


async def test_status_fault_applies_the_given_number_of_times(http: aiohttp.ClientSession) -> None:
    async with running_backend() as backend:
        backend.set_faults(FaultSpec(status=503, times=2), Signal.TRACES)
        url = f"{backend.http_endpoint}/v1/traces"
        statuses = [(await http_post(http, url, trace_payload(1).data)).status for _ in range(3)]
        logs_status = (
            await http_post(http, f"{backend.http_endpoint}/v1/logs", logs_payload(1).data)
        ).status
        assert statuses == [503, 503, 200]
        assert logs_status == 200  # the fault was for traces only
        assert backend.stats()["traces"].rejected_requests == 2


async def test_throttling_fault_sends_retry_after_and_a_status_body(
    http: aiohttp.ClientSession,
) -> None:
    async with running_backend() as backend:
        backend.set_faults(FaultSpec(status=429, retry_after=3, message="slow down"))
        answer = await http_post(http, f"{backend.http_endpoint}/v1/traces", trace_payload(1).data)
        parsed = answer.rpc_status()
        assert (answer.status, answer.headers["retry-after"]) == (429, "3")
        assert (parsed.code, parsed.message) == (8, "slow down")


async def test_grpc_throttling_fault_carries_retry_info_in_the_trailer() -> None:
    async with running_backend() as backend:
        backend.set_faults(FaultSpec(status=429, retry_after=1.5))
        async with grpc.aio.insecure_channel(backend.grpc_endpoint) as channel:
            answer = await grpc_export_async(channel, trace_payload(1), timeout=TIMEOUT)
        info = retry_info(answer.rpc_status())
        assert answer.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (info.retry_delay.seconds, info.retry_delay.nanos) == (1, 500_000_000)


async def test_probability_faults_repeat_exactly_under_the_same_seed(
    http: aiohttp.ClientSession,
) -> None:
    async def run(seed: int) -> list[int]:
        async with running_backend(seed=seed) as backend:
            backend.set_faults(FaultSpec(status=503, probability=0.5))
            url = f"{backend.http_endpoint}/v1/traces"
            return [(await http_post(http, url, trace_payload(1).data)).status for _ in range(20)]

    first, again, other = await run(11), await run(11), await run(12)
    assert first == again
    assert set(first) == {200, 503}
    assert first != other


async def test_partial_success_fault_rejects_the_first_items(http: aiohttp.ClientSession) -> None:
    async with running_backend() as backend:
        backend.set_faults(FaultSpec(reject=2))
        answer = await http_post(http, f"{backend.http_endpoint}/v1/traces", trace_payload(5).data)
        response = decode_response(Signal.TRACES, answer.body)
        assert response.partial_success.rejected_spans == 2
        assert [i.name for i in backend.items(Signal.TRACES)] == ["op-2", "op-3", "op-4"]


async def test_reset_fault_breaks_the_connection_mid_request(http: aiohttp.ClientSession) -> None:
    async with running_backend() as backend:
        backend.set_faults(FaultSpec(reset=True))
        with pytest.raises((aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)):
            await http_post(http, f"{backend.http_endpoint}/v1/traces", trace_payload(1).data)
        assert [r.outcome for r in backend.requests()] == ["reset"]


async def test_hanging_request_is_released_when_the_backend_stops(
    http: aiohttp.ClientSession,
) -> None:
    # Given a request the backend holds without answering
    backend = Backend()
    await backend.start()
    try:
        backend.set_faults(FaultSpec(hang=True))
        request = asyncio.create_task(
            http_post(http, f"{backend.http_endpoint}/v1/traces", trace_payload(1).data)
        )
        await backend.wait_for_requests(1)
    finally:
        # When the backend stops
        await backend.stop()
    # Then the client sees its connection end instead of waiting forever
    with pytest.raises((aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)):
        async with asyncio.timeout(TIMEOUT):
            await request


async def test_down_refuses_connections_then_listens_again_on_the_same_ports(
    http: aiohttp.ClientSession,
) -> None:
    async with running_backend() as backend:
        await backend.go_down(60)
        with pytest.raises(aiohttp.ClientConnectorError):
            await http_post(http, f"{backend.http_endpoint}/v1/traces", trace_payload(1).data)
        assert not backend.up
    async with running_backend() as backend:
        endpoints = backend.endpoints()
        await backend.go_down(0.05)
        await backend.wait_until(lambda: backend.up)
        answer = await http_post(http, f"{backend.http_endpoint}/v1/traces", trace_payload(1).data)
        assert answer.status == 200
        assert backend.endpoints() == endpoints


async def test_control_api_sets_faults_and_reports_stats_items_and_requests(
    http: aiohttp.ClientSession,
) -> None:
    async with running_backend() as backend:
        base = backend.http_endpoint

        async def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
            async with http.request(method, base + path, json=body) as response:
                return response.status, await response.json()

        status, answer = await call(
            "POST", "/_control", {"signal": "logs", "fault": {"status": 400, "times": 1}}
        )
        assert status == 200
        assert answer["faults"]["logs"]["status"] == 400
        logs_status = (await http_post(http, f"{base}/v1/logs", logs_payload(1).data)).status
        await http_post(http, f"{base}/v1/traces", trace_payload(2).data, headers={"X-Key": "k"})
        _, stats = await call("GET", "/_stats")
        _, items = await call("GET", "/_items?signal=traces")
        _, requests = await call("GET", "/_requests?signal=traces")
        assert logs_status == 400
        assert stats["logs"]["rejected_requests"] == 1
        assert stats["traces"]["unique"] == 2
        assert [(i["name"], i["span_id"], i["attributes"]) for i in items] == [
            ("op-0", "0000000000000001", {"index": 0}),
            ("op-1", "0000000000000002", {"index": 1}),
        ]
        assert all(isinstance(i["received"], float) and i["request"] == 1 for i in items)
        assert [(r["index"], r["headers"]["x-key"], r["outcome"]) for r in requests] == [
            (1, "k", "accepted")
        ]
        assert (await call("POST", "/_reset", {}))[0] == 200
        _, stats = await call("GET", "/_stats")
        assert stats["traces"]["items"] == 0


async def test_control_api_rejects_unknown_fields_with_400(http: aiohttp.ClientSession) -> None:
    async with running_backend() as backend:
        async with http.post(
            f"{backend.http_endpoint}/_control", json={"fault": {"status": 503, "colour": 1}}
        ) as response:
            assert response.status == 400
            assert await response.json() == {"error": "unknown fault fields: colour"}


def test_thread_backend_receives_spans_from_the_synchronous_sdk() -> None:
    # Given a backend on its own thread and the SDK's own OTLP/HTTP exporter
    with ThreadBackend() as backend:
        provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
        exporter = OTLPSpanExporter(endpoint=f"{backend.http_endpoint}/v1/traces", timeout=5)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        try:
            # When the function's code ends two spans
            tracer = provider.get_tracer("test")
            for name in ("load-cart", "charge-card"):
                with tracer.start_as_current_span(name):
                    pass
            items = backend.wait_for_items(Signal.TRACES, 2)
        finally:
            provider.shutdown()
        # Then both arrived, once
        assert sorted(i.name for i in items) == ["charge-card", "load-cart"]
        assert backend.stats()["traces"].duplicates == 0


def test_backend_process_serves_until_sigterm_and_reports_on_the_control_api() -> None:
    # Given `python -m backend` with a fault set on its command line
    process = BackendProcess("--fault", '{"signal": "traces", "status": 503, "times": 1}')
    with process:

        def send() -> int:
            request = urllib.request.Request(
                f"{process.http_endpoint}/v1/traces",
                data=trace_payload(3).data,
                headers={"Content-Type": PROTOBUF},
                method="POST",
            )
            try:
                with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                    return int(response.status)
            except urllib.error.HTTPError as exc:
                return exc.code

        # When spans are sent twice
        statuses = [send(), send()]
        stats = process.stats()
        items = process.items(Signal.TRACES)
    # Then the first met the fault, the second was recorded, and SIGTERM ended it cleanly
    # with a last line of stats
    assert statuses == [503, 200]
    assert (stats["traces"]["unique"], stats["traces"]["rejected_requests"]) == (3, 1)
    assert [i["name"] for i in items] == ["op-0", "op-1", "op-2"]
    assert process.returncode == 0
    assert json.loads(process.stderr.strip().splitlines()[-1])["stats"]["traces"]["items"] == 3


async def test_start_on_a_taken_port_fails_and_leaves_nothing_listening() -> None:
    async with running_backend() as taken:
        http_port = int(taken.http_endpoint.rsplit(":", 1)[1])
        second = Backend(http_port=http_port)
        with pytest.raises(OSError):
            await second.start()
        assert not second.up
        await second.stop()


def test_backend_process_on_a_taken_port_exits_with_one_line() -> None:
    with BackendProcess() as first:
        port = first.grpc_endpoint.rsplit(":", 1)[1]
        second = BackendProcess("--grpc-port", port)
        with pytest.raises(AssertionError, match="backend exited at start"):
            second.start()
    # (grpc's own log line about the bind may come before ours)
    assert second.returncode == 1
    assert second.stderr.strip().splitlines()[-1] == (
        f"backend: cannot listen: cannot listen for gRPC on 127.0.0.1:{port}"
    )
