"""Part 4, throughput: spans per second the collector's gRPC and HTTP receivers accept from the
real SDK exporters, spans per second a drain pushes to a zero-latency backend, and the
collector's CPU seconds per 10,000 spans for each.

The collector is the layer's binary (afterflush/bin/afterflush-collector), started with the
environment the companion gives it and pinned to one core (taskset; Go sizes GOMAXPROCS from
that affinity); the SDK exporter runs in this process on another core when there is one. The
buffer is made large enough to hold the whole push and its early export is turned off, so that
receiving and draining are measured apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from bench._deploy import COLLECTOR_IN_LAYER, Workspace, free_port
from bench._environment import COLLECTOR_READY_LINE
from bench._errors import BenchError
from bench._procs import Backend, Process, wait_for

BATCH = 512  # the SDK's batch span processor's default export batch size
READY_TIMEOUT_S = 30.0
PUSH_TIMEOUT_S = 120.0
PER_10K = 10_000


def collector_config(*, grpc_port: int, http_port: int, backend_http: str) -> str:
    return (
        "receivers:\n  otlp:\n    protocols:\n"
        f"      grpc:\n        endpoint: 127.0.0.1:{grpc_port}\n"
        f"      http:\n        endpoint: 127.0.0.1:{http_port}\n"
        "processors:\n  flushcontrol:\n"
        "    max_buffer_size_mib: 512\n    high_water_mark_percent: 0\n"
        f"exporters:\n  otlphttp:\n    endpoint: {backend_http}\n"
        "service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n"
        "      processors: [flushcontrol]\n      exporters: [otlphttp]\n"
    )


def collector_env(control: str) -> dict[str, str]:
    """What the companion gives the collector: its own environment (here this process's, less
    this virtualenv's PYTHON* settings, which the binary does not read) with the control
    endpoint and AFTERFLUSH_HOLD (flushcontrol on) set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update({"AFTERFLUSH_CONTROL_ENDPOINT": control, "AFTERFLUSH_HOLD": "true"})
    return env


def cpus() -> tuple[int, int | None]:
    """The core for the collector, and another for the client (None on one core)."""
    available = sorted(os.sched_getaffinity(0))
    return available[0], (available[1] if len(available) > 1 else None)


@contextlib.contextmanager
def pinned(cpu: int | None) -> Iterator[None]:
    """This process (the SDK exporter) on `cpu` for the block."""
    before = os.sched_getaffinity(0)
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def sdk_batch(size: int) -> Sequence[Any]:
    """`size` finished spans from the real SDK, shaped like the function's steps."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "afterflush-bench"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("afterflush.bench")
    with tracer.start_as_current_span("handle"):
        for index in range(size - 1):
            with tracer.start_as_current_span("step", attributes={"step.index": index,
                                                                  "step.digest": "9f86d081"}):
                pass
    spans = memory.get_finished_spans()
    provider.shutdown()
    return spans


def sdk_exporter(protocol: str, port: int) -> Any:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter(endpoint=f"127.0.0.1:{port}", insecure=True)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    return HttpExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces")


def cpu_seconds(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


async def _control(endpoint: str, action: str, timeout: float) -> Any:
    from companion._control import ControlClient

    client = ControlClient(endpoint)
    try:
        if action == "drain":
            return await client.drain(timeout=timeout, reason="bench")
        return await client.status(timeout=timeout)
    finally:
        await client.aclose()


def control(endpoint: str, action: str, timeout: float = 60.0) -> Any:
    return asyncio.run(_control(endpoint, action, timeout))


def rate(spans: int, seconds: float) -> float | None:
    return round(spans / seconds) if seconds > 0 else None


def per_10k(cpu: float, spans: int) -> float | None:
    return round(cpu * PER_10K / spans, 3) if spans else None


def run_throughput(
    ws: Workspace,
    backend: Backend,
    *,
    spans: int,
    workdir: Path,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    backend.set_latency(0)
    workdir.mkdir(parents=True, exist_ok=True)
    control_endpoint = f"unix://{workdir}/control.sock"
    ports = {"grpc": free_port(), "http": free_port()}
    config = workdir / "collector.yaml"
    config.write_text(collector_config(
        grpc_port=ports["grpc"], http_port=ports["http"], backend_http=backend.http,
    ))
    collector_cpu, client_cpu = cpus()
    collector = Process(
        "collector",
        ["taskset", "-c", str(collector_cpu), str(ws.layer / COLLECTOR_IN_LAYER),
         "--config", str(config)],
        workdir / "collector.log",
        collector_env(control_endpoint),
    )
    batch = sdk_batch(BATCH)
    rounds = max(spans // BATCH, 1)
    result: dict[str, Any] = {
        "spans_per_receiver": rounds * BATCH, "batch": BATCH,
        "collector_cpu": collector_cpu, "client_cpu": client_cpu, "receivers": {}, "drains": [],
    }
    try:
        collector.start()
        # Its stderr is the Collector's zap JSON records: {"level":"info",...,"msg":"ready in
        # 27 ms (pid 1681)",...}.
        ready = wait_for(lambda: COLLECTOR_READY_LINE.search(collector.tail(50)),
                         READY_TIMEOUT_S, "the throughput collector", collector.proc)
        result["collector_ready_ms"] = float(ready["ready"])
        for protocol in ("grpc", "http"):
            exporter = sdk_exporter(protocol, ports[protocol])
            try:
                before_status = control(control_endpoint, "status")
                cpu_before = cpu_seconds(collector.pid)
                failed = 0
                with pinned(client_cpu):
                    started = time.perf_counter()
                    for _ in range(rounds):
                        if exporter.export(batch).name != "SUCCESS":
                            failed += 1
                        if time.perf_counter() - started > PUSH_TIMEOUT_S:
                            raise BenchError(f"{protocol} push took over {PUSH_TIMEOUT_S:g} s")
                    seconds = time.perf_counter() - started
                cpu = cpu_seconds(collector.pid) - cpu_before
                after_status = control(control_endpoint, "status")
            finally:
                exporter.shutdown()
            accepted = int(after_status.accepted_traces - before_status.accepted_traces)
            result["receivers"][protocol] = {
                "accepted": accepted, "failed_exports": failed, "seconds": round(seconds, 3),
                "spans_per_s": rate(accepted, seconds),
                "cpu_s_per_10k_spans": per_10k(cpu, accepted),
                # What one core could take if the sender were infinitely fast.
                "spans_per_cpu_s": rate(accepted, cpu),
            }
            progress(f"{protocol} receiver: {result['receivers'][protocol]['spans_per_s']} "
                     f"spans/s accepted, {result['receivers'][protocol]['cpu_s_per_10k_spans']}"
                     f" CPU s per 10,000 spans")
            cpu_before = cpu_seconds(collector.pid)
            started = time.perf_counter()
            reply = control(control_endpoint, "drain", timeout=PUSH_TIMEOUT_S)
            wall = time.perf_counter() - started
            cpu = cpu_seconds(collector.pid) - cpu_before
            exported = int(reply.traces.exported)
            drain_s = reply.duration_us / 1e6
            result["drains"].append({
                "after": protocol, "exported": exported, "complete": bool(reply.complete),
                "seconds": round(drain_s, 3), "call_seconds": round(wall, 3),
                "spans_per_s": rate(exported, drain_s),
                "cpu_s_per_10k_spans": per_10k(cpu, exported),
            })
            progress(f"drain: {result['drains'][-1]['spans_per_s']} spans/s to the backend")
    finally:
        collector.stop()
    return result
