"""A sample Lambda function for the afterflush layer. It only uses the OpenTelemetry API: the
layer's otel-instrument wrapper sets up the SDK, and the aws-lambda instrumentation adds the
invocation's span.

Each invocation produces, and reports in its response: the invocation span plus one
"handle-order" span and one span per item, one point of the orders.items counter, and one log
record. The event may say how many items: {"items": 3}.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from opentelemetry import metrics, trace

DEFAULT_ITEMS = 3

tracer = trace.get_tracer("afterflush.example")
items_counter = metrics.get_meter("afterflush.example").create_counter(
    "orders.items", unit="{item}", description="Items handled"
)
log = logging.getLogger("afterflush.example")
log.setLevel(logging.INFO)


def handler(event: dict[str, Any] | None, context: Any) -> dict[str, Any]:
    items = int((event or {}).get("items", DEFAULT_ITEMS))
    started = time.perf_counter()
    with tracer.start_as_current_span("handle-order", attributes={"order.items": items}):
        for index in range(items):
            with tracer.start_as_current_span("process-item", attributes={"item.index": index}):
                pass
    items_counter.add(items, {"service.route": "orders"})
    log.info("handled an order of %d items", items)
    return {
        "requestId": context.aws_request_id,
        "handlerMs": round((time.perf_counter() - started) * 1000, 3),
        # What this invocation gave the SDK; the invocation span is the instrumentation's.
        "produced": {"traces": items + 2, "metrics": 1, "logs": 1},
    }
