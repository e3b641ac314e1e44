"""The benchmark's Lambda function: a little CPU work, then spans, metric points and log records
through the OpenTelemetry API only, and in its response what it produced and how long it took.

The event may set {"spans": N, "work": N}. Without an SDK (the no-telemetry mode) every API call
is a no-op and the work is the same. The response also says when this module finished importing
(`importedAt`, epoch seconds): the runtime calls next right after, so the cold-start part reads
it as "runtime ready".
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

from opentelemetry import metrics, trace

DEFAULT_SPANS = 20
# Rounds of hashing 4 KiB: "a little work", a fixed amount of CPU whatever the CPU share.
DEFAULT_WORK = 50
LOG_RECORDS = 3
BLOCK = b"afterflush" * 410

tracer = trace.get_tracer("afterflush.bench")
meter = metrics.get_meter("afterflush.bench")
orders = meter.create_counter("bench.orders", unit="{order}", description="Orders handled")
work_time = meter.create_histogram("bench.work", unit="ms", description="Time spent working")
# Cumulative counters export every series at each flush: this many points per invocation.
ROUTES = ("orders", "refunds")
METRIC_POINTS = len(ROUTES) + 1
log = logging.getLogger("afterflush.bench")
log.setLevel(logging.INFO)


def handler(event: dict[str, Any] | None, context: Any) -> dict[str, Any]:
    event = event or {}
    spans = int(event.get("spans", DEFAULT_SPANS))
    work = int(event.get("work", DEFAULT_WORK))
    started = time.perf_counter()
    digest = b""
    with tracer.start_as_current_span("handle", attributes={"bench.spans": spans}):
        for index in range(max(spans - 1, 0)):
            with tracer.start_as_current_span("step", attributes={"step.index": index}) as span:
                if index < work:
                    digest = hashlib.sha256(BLOCK + digest).digest()
                span.set_attribute("step.digest", digest[:4].hex())
        for _ in range(max(work - spans + 1, 0)):
            digest = hashlib.sha256(BLOCK + digest).digest()
    elapsed_ms = (time.perf_counter() - started) * 1000
    for route in ROUTES:
        orders.add(1, {"route": route})
    work_time.record(elapsed_ms)
    for index in range(LOG_RECORDS):
        log.info("order step %d of %d done", index + 1, LOG_RECORDS)
    return {
        "requestId": context.aws_request_id,
        "handlerMs": round(elapsed_ms, 3),
        # What this invocation gave the API; the invocation span is the instrumentation's.
        "produced": {"traces": max(spans, 1), "metrics": METRIC_POINTS, "logs": LOG_RECORDS},
        "importedAt": IMPORTED_AT,
    }


# Last: the module is imported once everything above is.
IMPORTED_AT = time.time()
