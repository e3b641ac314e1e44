"""The otlp receiver's factory, config checks, binding and shutdown."""

from __future__ import annotations

import asyncio
import errno
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import aiohttp
import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector._component import BuildContext, Kind
from collector._signals import Signal
from collector.errors import ConfigError
from collector.receivers.otlp import (
    FACTORY,
    GRPCServerConfig,
    HTTPServerConfig,
    OTLPReceiverConfig,
    Protocols,
)
from tests.fixtures.receiver import RecordingConsumer, loopback_config, running_receiver, wait_for

TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _one_span(name: str) -> bytes:
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.add(name=name)
    return request.SerializeToString()


def _port_of(endpoint: str) -> int:
    return int(endpoint.rpartition(":")[2])


def _can_connect(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.settimeout(2)
        return probe.connect_ex((host, port)) == 0


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port on 127.0.0.1 that another listener holds for the whole test."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


# --- factory and config -------------------------------------------------------------------


def test_factory_describes_the_otlp_receiver() -> None:
    assert FACTORY.type_name == "otlp"
    assert FACTORY.kind is Kind.RECEIVER
    assert FACTORY.signals == frozenset(Signal)
    assert FACTORY.config_type is OTLPReceiverConfig
    # As in the OpenTelemetry Collector, protocols are off until the config names them.
    assert FACTORY.default_config() == OTLPReceiverConfig(protocols=Protocols())
    assert GRPCServerConfig().endpoint == "localhost:4317"
    assert GRPCServerConfig().max_recv_msg_size_mib == 4
    assert HTTPServerConfig().endpoint == "localhost:4318"
    assert HTTPServerConfig().max_request_body_size == 20 * 1024 * 1024
    assert OTLPReceiverConfig().validate() == [
        ("protocols", "must enable at least one of grpc and http")
    ]


@pytest.mark.parametrize(
    "endpoint",
    ["localhost:4317", "127.0.0.1:0", "[::1]:4317", "0.0.0.0:4317", ":4317", "otel.local:1"],
)
def test_config_accepts_endpoint_forms(endpoint: str) -> None:
    assert GRPCServerConfig(endpoint=endpoint).validate() == []
    assert HTTPServerConfig(endpoint=endpoint).validate() == []


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        ("4317", '"4317" must be host:port'),
        ("localhost", '"localhost" must be host:port'),
        ("localhost:http", '"localhost:http": port must be a number from 0 to 65535'),
        ("localhost:70000", '"localhost:70000": port must be a number from 0 to 65535'),
        ("::1:4317", '"::1:4317": write an IPv6 host in brackets, e.g. [::1]:4317'),
        ("[::zz]:4317", '"[::zz]:4317": "::zz" is not an IPv6 address'),
    ],
)
def test_config_refuses_bad_endpoints(endpoint: str, message: str) -> None:
    assert GRPCServerConfig(endpoint=endpoint).validate() == [("endpoint", message)]


def test_create_refuses_an_invalid_config_naming_every_problem() -> None:
    config = OTLPReceiverConfig(
        protocols=Protocols(
            grpc=GRPCServerConfig(endpoint="nowhere", max_recv_msg_size_mib=0),
            http=HTTPServerConfig(
                max_request_body_size=-1, metrics_url_path="metrics", logs_url_path="/v1/traces"
            ),
        )
    )

    with pytest.raises(ConfigError) as caught:
        FACTORY.create(config, BuildContext("otlp/app", {}))

    assert str(caught.value).splitlines() == [
        'receivers::otlp/app::protocols::grpc::endpoint: "nowhere" must be host:port',
        "receivers::otlp/app::protocols::grpc::max_recv_msg_size_mib: must be > 0",
        "receivers::otlp/app::protocols::http::max_request_body_size: must be > 0",
        'receivers::otlp/app::protocols::http::metrics_url_path: must start with "/", got "metrics"',
        'receivers::otlp/app::protocols::http::logs_url_path: "/v1/traces" is already used by traces_url_path',
    ]


def test_create_refuses_a_config_without_protocols() -> None:
    with pytest.raises(ConfigError) as caught:
        FACTORY.create(FACTORY.default_config(), BuildContext("otlp", {}))

    assert (
        str(caught.value) == "receivers::otlp::protocols: must enable at least one of grpc and http"
    )


# --- binding ------------------------------------------------------------------------------


async def test_port_zero_reports_the_bound_ports() -> None:
    async with running_receiver({Signal.TRACES: RecordingConsumer()}) as receiver:
        endpoints = receiver.endpoints

        assert sorted(endpoints) == ["grpc", "http"]
        for endpoint in endpoints.values():
            host, _, port = endpoint.rpartition(":")
            assert host == "127.0.0.1"
            assert int(port) > 0
            assert _can_connect("127.0.0.1", int(port))
        assert _port_of(endpoints["grpc"]) != _port_of(endpoints["http"])


async def test_localhost_listens_on_loopback_of_both_families() -> None:
    config = OTLPReceiverConfig(
        protocols=Protocols(
            grpc=GRPCServerConfig(endpoint="localhost:0"),
            http=HTTPServerConfig(endpoint="localhost:0"),
        )
    )
    ipv6 = _ipv6_loopback()
    async with running_receiver({Signal.TRACES: RecordingConsumer()}, config) as receiver:
        for endpoint in receiver.endpoints.values():
            port = _port_of(endpoint)
            assert endpoint == f"127.0.0.1:{port}"
            assert _can_connect("127.0.0.1", port)
            # Where the machine has ::1, the same port answers there too.
            assert _can_connect("::1", port) is ipv6


async def test_ipv6_endpoint_serves_both_protocols() -> None:
    if not _ipv6_loopback():
        # Without ::1 the receiver must fail to start, naming the endpoint.
        with pytest.raises(OSError, match=r"cannot listen for OTLP/gRPC on \[::1\]:0"):
            async with running_receiver({}, _ipv6_config()):
                pass
        return
    consumer = RecordingConsumer()
    async with running_receiver({Signal.TRACES: consumer}, _ipv6_config()) as receiver:
        assert receiver.endpoints["grpc"].startswith("[::1]:")
        async with grpc.aio.insecure_channel(receiver.endpoints["grpc"]) as channel:
            await channel.unary_unary(TRACE_EXPORT)(_one_span("over grpc"), timeout=5)
        async with aiohttp.ClientSession() as session:
            url = f"http://{receiver.endpoints['http']}/v1/traces"
            async with session.post(
                url, data=_one_span("over http"), headers={"Content-Type": "application/x-protobuf"}
            ) as response:
                assert response.status == 200

    assert [p.data for p in consumer.payloads] == [_one_span("over grpc"), _one_span("over http")]


def _ipv6_config() -> OTLPReceiverConfig:
    return OTLPReceiverConfig(
        protocols=Protocols(
            grpc=GRPCServerConfig(endpoint="[::1]:0"), http=HTTPServerConfig(endpoint="[::1]:0")
        )
    )


@pytest.mark.parametrize(("protocol", "label"), [("grpc", "OTLP/gRPC"), ("http", "OTLP/HTTP")])
async def test_start_fails_naming_the_endpoint_when_the_port_is_taken(
    taken_port: int, protocol: str, label: str
) -> None:
    # Given another process listening on the port one protocol wants, and a free port
    # for the other
    with socket.socket() as reserve:
        reserve.bind(("127.0.0.1", 0))
        free_port = reserve.getsockname()[1]
    ports = {"grpc": free_port, "http": free_port}
    ports[protocol] = taken_port
    config = OTLPReceiverConfig(
        protocols=Protocols(
            grpc=GRPCServerConfig(endpoint=f"127.0.0.1:{ports['grpc']}"),
            http=HTTPServerConfig(endpoint=f"127.0.0.1:{ports['http']}"),
        )
    )
    receiver = FACTORY.create(config, BuildContext("otlp", {Signal.TRACES: RecordingConsumer()}))

    # When it starts
    with pytest.raises(OSError) as caught:
        await receiver.start()

    # Then the error names the receiver, the endpoint and the cause, and nothing stays bound
    assert caught.value.errno == errno.EADDRINUSE
    endpoint = f"127.0.0.1:{taken_port}"
    assert str(caught.value) == (
        f"[Errno {errno.EADDRINUSE}] receiver otlp: cannot listen for {label} on {endpoint}"
        f" ({endpoint}): address already in use"
    )
    with socket.socket() as rebind:
        rebind.bind(("127.0.0.1", free_port))
    await receiver.shutdown()


async def test_start_twice_is_refused() -> None:
    async with running_receiver({Signal.TRACES: RecordingConsumer()}) as receiver:
        with pytest.raises(RuntimeError, match="receiver otlp was already started"):
            await receiver.start()


def test_only_the_configured_protocol_loads_its_library() -> None:
    # Given an http-only receiver started in a fresh interpreter
    script = """
import asyncio, json, sys
from collector._component import BuildContext
from collector.receivers.otlp import FACTORY, HTTPServerConfig, OTLPReceiverConfig, Protocols

async def main():
    config = OTLPReceiverConfig(protocols=Protocols(http=HTTPServerConfig(endpoint="127.0.0.1:0")))
    receiver = FACTORY.create(config, BuildContext("otlp", {}))
    await receiver.start()
    await receiver.shutdown()
    print(json.dumps({"grpc": "grpc" in sys.modules, "aiohttp": "aiohttp" in sys.modules}))

asyncio.run(main())
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )

    # Then neither grpc nor aiohttp was imported (OTLP/HTTP runs on collector._http11)
    assert json.loads(done.stdout) == {"grpc": False, "aiohttp": False}


# --- shutdown -----------------------------------------------------------------------------


async def test_shutdown_is_idempotent_and_safe_without_start() -> None:
    receiver = FACTORY.create(loopback_config(), BuildContext("otlp", {}))
    await receiver.shutdown()
    await receiver.shutdown()

    started = FACTORY.create(loopback_config(), BuildContext("otlp", {}))
    await started.start()
    ports = [_port_of(e) for e in started.endpoints.values()]
    await started.shutdown()
    await started.shutdown()

    for port in ports:
        assert not _can_connect("127.0.0.1", port)


async def _send_http(endpoint: str, body: bytes) -> int:
    async with aiohttp.ClientSession() as session:
        url = f"http://{endpoint}/v1/traces"
        async with session.post(
            url, data=body, headers={"Content-Type": "application/x-protobuf"}
        ) as response:
            return response.status


async def _send_grpc(endpoint: str, body: bytes) -> str:
    async with grpc.aio.insecure_channel(endpoint) as channel:
        await channel.unary_unary(TRACE_EXPORT)(body, timeout=10)
    return "OK"


@pytest.mark.parametrize(
    ("protocol", "send", "ok"), [("http", _send_http, 200), ("grpc", _send_grpc, "OK")]
)
async def test_shutdown_lets_a_request_in_flight_finish_and_refuses_new_connections(
    protocol: str, send: Any, ok: Any
) -> None:
    # Given a request that the consumer is still working on
    consumer = RecordingConsumer()
    consumer.gate = asyncio.Event()
    receiver = FACTORY.create(loopback_config(), BuildContext("otlp", {Signal.TRACES: consumer}))
    receiver.shutdown_grace = 10.0
    await receiver.start()
    try:
        endpoint = receiver.endpoints[protocol]
        request = asyncio.create_task(send(endpoint, _one_span("in flight")))
        await asyncio.wait_for(consumer.entered.wait(), timeout=10)

        # When shutdown starts
        stopping = asyncio.create_task(receiver.shutdown())
        # Then new connections are refused while the request is still in flight
        await wait_for(lambda: not _can_connect("127.0.0.1", _port_of(endpoint)))
        assert not request.done()
        # And once the consumer finishes, the sender gets its success and shutdown ends
        consumer.gate.set()
        assert await asyncio.wait_for(request, timeout=10) == ok
        await asyncio.wait_for(stopping, timeout=10)
    finally:
        consumer.gate.set()
        await receiver.shutdown()

    assert [p.data for p in consumer.payloads] == [_one_span("in flight")]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
async def test_shutdown_does_not_wait_for_a_stuck_request_past_the_grace(protocol: str) -> None:
    # Given a consumer that never finishes, and a short grace
    consumer = RecordingConsumer()
    consumer.gate = asyncio.Event()
    receiver = FACTORY.create(loopback_config(), BuildContext("otlp", {Signal.TRACES: consumer}))
    receiver.shutdown_grace = 0.05
    await receiver.start()
    send = _send_http if protocol == "http" else _send_grpc
    request = asyncio.create_task(send(receiver.endpoints[protocol], _one_span("stuck")))
    try:
        await asyncio.wait_for(consumer.entered.wait(), timeout=10)

        # When shutdown runs, it returns (bounded here so a hang fails the test)
        await asyncio.wait_for(receiver.shutdown(), timeout=10)

        # Then the stuck request was given up and nothing was kept
        with pytest.raises((aiohttp.ClientError, grpc.aio.AioRpcError)):
            await asyncio.wait_for(request, timeout=10)
        assert consumer.payloads == []
    finally:
        request.cancel()
        consumer.gate.set()
        await receiver.shutdown()
